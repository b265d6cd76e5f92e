package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

// TestEventMetricsValues checks each recorder method against the exposition an
// operator scrapes: names, labels, and that counters and gauges move as documented.
func TestEventMetricsValues(t *testing.T) {
	m := New("dev", "unknown")
	m.NoticeInPool(instance.KindSpotTerminate, "m7g.large", "us-east-1a")
	m.NoticeInPool(instance.KindSpotTerminate, "m7g.large", "us-east-1a")
	m.NoticeInPool(instance.KindRebalance, "", "")
	m.SetSuccessorWaiting(true)
	m.SetSuccessorWaiting(false)
	m.JenkinsRestarted()
	m.JenkinsRestarted()
	m.AbortedBuilds(3)
	m.AbortedBuilds(0)
	m.AbortedBuilds(-1)
	m.JenkinsAPIFailure(JenkinsCallRunningBuilds)
	m.SetIMDSBlind(true)
	m.ReplacementRequested(ReplacementFailed)
	m.LifecycleHeartbeat(HeartbeatOK)
	m.LifecycleHeartbeat(HeartbeatOK)
	m.WebhookNotification(WebhookSent)
	m.WebhookNotification(WebhookDropped)

	want := `
# HELP jenkins_spot_agent_interruption_notices_by_pool_total End-of-instance notices observed, by kind and by the capacity pool (instance type and Availability Zone) they hit.
# TYPE jenkins_spot_agent_interruption_notices_by_pool_total counter
jenkins_spot_agent_interruption_notices_by_pool_total{availability_zone="unknown",instance_type="unknown",kind="rebalance"} 1
jenkins_spot_agent_interruption_notices_by_pool_total{availability_zone="us-east-1a",instance_type="m7g.large",kind="spot_terminate"} 2
# HELP jenkins_spot_agent_successor_waiting 1 while another instance waits ready on the lease to take JENKINS_HOME over.
# TYPE jenkins_spot_agent_successor_waiting gauge
jenkins_spot_agent_successor_waiting 0
# HELP jenkins_spot_agent_jenkins_restarts_total Jenkins containers started again by the agent after they stopped (crash, dockerd restart).
# TYPE jenkins_spot_agent_jenkins_restarts_total counter
jenkins_spot_agent_jenkins_restarts_total 2
# HELP jenkins_spot_agent_aborted_builds_total Builds the container stop aborted (Pipelines, which resume, are not counted).
# TYPE jenkins_spot_agent_aborted_builds_total counter
jenkins_spot_agent_aborted_builds_total 3
# HELP jenkins_spot_agent_jenkins_api_failures_total Calls to the Jenkins API that failed, by call; a running-builds list that failed is unknown, not empty.
# TYPE jenkins_spot_agent_jenkins_api_failures_total counter
jenkins_spot_agent_jenkins_api_failures_total{call="cancel_quiet_down"} 0
jenkins_spot_agent_jenkins_api_failures_total{call="probe"} 0
jenkins_spot_agent_jenkins_api_failures_total{call="quiet_down"} 0
jenkins_spot_agent_jenkins_api_failures_total{call="running_builds"} 1
# HELP jenkins_spot_agent_imds_blind 1 while the last IMDS request gave no definite answer (anything but 200 or 404).
# TYPE jenkins_spot_agent_imds_blind gauge
jenkins_spot_agent_imds_blind 1
# HELP jenkins_spot_agent_replacement_requests_total Requests to the Auto Scaling group for a replacement instance at a notice, by result (requested, skipped, failed).
# TYPE jenkins_spot_agent_replacement_requests_total counter
jenkins_spot_agent_replacement_requests_total{result="failed"} 1
jenkins_spot_agent_replacement_requests_total{result="requested"} 0
jenkins_spot_agent_replacement_requests_total{result="skipped"} 0
# HELP jenkins_spot_agent_lifecycle_heartbeats_total Lifecycle action heartbeats sent to keep a group-started termination waiting for builds, by result (ok, failed).
# TYPE jenkins_spot_agent_lifecycle_heartbeats_total counter
jenkins_spot_agent_lifecycle_heartbeats_total{result="failed"} 0
jenkins_spot_agent_lifecycle_heartbeats_total{result="ok"} 2
# HELP jenkins_spot_agent_webhook_notifications_total Webhook notifications, by result: sent, failed (every attempt failed) or dropped (queue full).
# TYPE jenkins_spot_agent_webhook_notifications_total counter
jenkins_spot_agent_webhook_notifications_total{result="dropped"} 1
jenkins_spot_agent_webhook_notifications_total{result="failed"} 0
jenkins_spot_agent_webhook_notifications_total{result="sent"} 1
`
	names := []string{
		"jenkins_spot_agent_interruption_notices_by_pool_total", "jenkins_spot_agent_successor_waiting",
		"jenkins_spot_agent_jenkins_restarts_total", "jenkins_spot_agent_aborted_builds_total",
		"jenkins_spot_agent_jenkins_api_failures_total", "jenkins_spot_agent_imds_blind",
		"jenkins_spot_agent_replacement_requests_total", "jenkins_spot_agent_lifecycle_heartbeats_total",
		"jenkins_spot_agent_webhook_notifications_total",
	}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

// TestEventMetricsFresh: before anything happens, the counters an alert takes
// increase() of exist at 0, and the gauges read 0.
func TestEventMetricsFresh(t *testing.T) {
	m := New("dev", "unknown")
	for name, want := range map[string]int{
		"jenkins_spot_agent_jenkins_restarts_total":      1,
		"jenkins_spot_agent_aborted_builds_total":        1,
		"jenkins_spot_agent_successor_waiting":           1,
		"jenkins_spot_agent_imds_blind":                  1,
		"jenkins_spot_agent_jenkins_api_failures_total":  len(allJenkinsCalls),
		"jenkins_spot_agent_replacement_requests_total":  len(allReplacementResults),
		"jenkins_spot_agent_lifecycle_heartbeats_total":  2,
		"jenkins_spot_agent_webhook_notifications_total": 3,
	} {
		if n, err := testutil.GatherAndCount(m.Registry(), name); err != nil || n != want {
			t.Errorf("%s: %d series (%v), want %d at start", name, n, err, want)
		}
	}
	if got := testutil.ToFloat64(m.successorWaiting); got != 0 {
		t.Errorf("successor_waiting = %v at start, want 0", got)
	}
}
