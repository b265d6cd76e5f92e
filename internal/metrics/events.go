package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

// Calls to the Jenkins API whose failures are counted, the values of the call label
// of jenkins_spot_agent_jenkins_api_failures_total. A running-builds list that could
// not be read means "unknown", never "no builds".
const (
	JenkinsCallRunningBuilds   = "running_builds"
	JenkinsCallQuietDown       = "quiet_down"
	JenkinsCallCancelQuietDown = "cancel_quiet_down"
	JenkinsCallProbe           = "probe"
)

var allJenkinsCalls = []string{JenkinsCallRunningBuilds, JenkinsCallQuietDown, JenkinsCallCancelQuietDown, JenkinsCallProbe}

// Results of a request to the Auto Scaling group for a replacement instance, the
// values of the result label of jenkins_spot_agent_replacement_requests_total.
const (
	// ReplacementRequested: the group accepted the request and launches a replacement.
	ReplacementRequested = "requested"
	// ReplacementSkipped: none was asked for (a successor waits already, the instance
	// is in no group, or the setting is off).
	ReplacementSkipped = "skipped"
	// ReplacementFailed: the call failed; the group replaces the instance only after
	// it is gone.
	ReplacementFailed = "failed"
)

var allReplacementResults = []string{ReplacementRequested, ReplacementSkipped, ReplacementFailed}

// Results of one lifecycle action heartbeat, the values of the result label of
// jenkins_spot_agent_lifecycle_heartbeats_total.
const (
	HeartbeatOK     = "ok"
	HeartbeatFailed = "failed"
)

// Results of one webhook notification, the values of the result label of
// jenkins_spot_agent_webhook_notifications_total.
const (
	// WebhookSent: the receiver answered 2xx.
	WebhookSent = "sent"
	// WebhookFailed: every attempt failed (timeout, refused, non-2xx).
	WebhookFailed = "failed"
	// WebhookDropped: the queue was full; the notification was never sent.
	WebhookDropped = "dropped"
)

// unknownLabel stands in for a capacity pool the notice did not name: an empty label
// value would read as a missing label in PromQL.
const unknownLabel = "unknown"

func (m *Metrics) addCollectors() {
	m.noticesByPool = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "interruption_notices_by_pool_total",
		Help: "End-of-instance notices observed, by kind and by the capacity pool (instance type and Availability Zone) they hit.",
	}, []string{"kind", "instance_type", "availability_zone"})
	m.successorWaiting = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "successor_waiting",
		Help: "1 while another instance waits ready on the lease to take JENKINS_HOME over.",
	})
	m.jenkinsRestarts = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "jenkins_restarts_total",
		Help: "Jenkins containers started again by the agent after they stopped (crash, dockerd restart).",
	})
	m.abortedBuilds = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "aborted_builds_total",
		Help: "Builds the container stop aborted (Pipelines, which resume, are not counted).",
	})
	m.jenkinsFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "jenkins_api_failures_total",
		Help: "Calls to the Jenkins API that failed, by call; a running-builds list that failed is unknown, not empty.",
	}, []string{"call"})
	m.imdsBlind = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "imds_blind",
		Help: "1 while the last IMDS request gave no definite answer (anything but 200 or 404).",
	})
	m.replacements = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "replacement_requests_total",
		Help: "Requests to the Auto Scaling group for a replacement instance at a notice, by result (requested, skipped, failed).",
	}, []string{"result"})
	m.heartbeats = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "lifecycle_heartbeats_total",
		Help: "Lifecycle action heartbeats sent to keep a group-started termination waiting for builds, by result (ok, failed).",
	}, []string{"result"})
	m.webhook = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "webhook_notifications_total",
		Help: "Webhook notifications, by result: sent, failed (every attempt failed) or dropped (queue full).",
	}, []string{"result"})
}

// registerMore registers the collectors of addCollectors and creates every known
// series at 0, so that increase() in a rule sees the first event.
func (m *Metrics) registerMore() {
	m.registry.MustRegister(m.noticesByPool, m.successorWaiting, m.jenkinsRestarts, m.abortedBuilds,
		m.jenkinsFailures, m.imdsBlind, m.replacements, m.heartbeats, m.webhook)
	for _, c := range allJenkinsCalls {
		m.jenkinsFailures.WithLabelValues(c)
	}
	for _, r := range allReplacementResults {
		m.replacements.WithLabelValues(r)
	}
	for _, r := range []string{HeartbeatOK, HeartbeatFailed} {
		m.heartbeats.WithLabelValues(r)
	}
	for _, r := range []string{WebhookSent, WebhookFailed, WebhookDropped} {
		m.webhook.WithLabelValues(r)
	}
}

// NoticeInPool counts one notice of kind k in the capacity pool it hit: the instance
// type and Availability Zone of the instance (instance.Notice InstanceType and
// AvailabilityZone). Empty values are counted as "unknown". Pools are few (the group's
// instance types × its zones), so the series stay bounded.
func (m *Metrics) NoticeInPool(k instance.Kind, instanceType, zone string) {
	if instanceType == "" {
		instanceType = unknownLabel
	}
	if zone == "" {
		zone = unknownLabel
	}
	m.noticesByPool.WithLabelValues(string(k), instanceType, zone).Inc()
}

// SetSuccessorWaiting records whether another instance waits ready on the lease.
func (m *Metrics) SetSuccessorWaiting(waiting bool) { setBool(m.successorWaiting, waiting) }

// JenkinsRestarted counts one start of Jenkins again after its container stopped.
func (m *Metrics) JenkinsRestarted() { m.jenkinsRestarts.Inc() }

// AbortedBuilds adds n builds aborted by the container stop; n <= 0 adds nothing.
func (m *Metrics) AbortedBuilds(n int) {
	if n > 0 {
		m.abortedBuilds.Add(float64(n))
	}
}

// JenkinsAPIFailure counts one failed call to the Jenkins API; call is one of the
// JenkinsCall constants (another value gets its own series).
func (m *Metrics) JenkinsAPIFailure(call string) { m.jenkinsFailures.WithLabelValues(call).Inc() }

// SetIMDSBlind records whether the last IMDS request gave no definite answer.
func (m *Metrics) SetIMDSBlind(blind bool) { setBool(m.imdsBlind, blind) }

// ReplacementRequested counts one decision on asking the group for a replacement;
// result is one of the Replacement constants.
func (m *Metrics) ReplacementRequested(result string) { m.replacements.WithLabelValues(result).Inc() }

// LifecycleHeartbeat counts one lifecycle action heartbeat; result is HeartbeatOK or
// HeartbeatFailed.
func (m *Metrics) LifecycleHeartbeat(result string) { m.heartbeats.WithLabelValues(result).Inc() }

// WebhookNotification counts one webhook notification; result is one of the Webhook
// constants.
func (m *Metrics) WebhookNotification(result string) { m.webhook.WithLabelValues(result).Inc() }

func setBool(g prometheus.Gauge, v bool) {
	if v {
		g.Set(1)
		return
	}
	g.Set(0)
}
