// Package metrics holds the agent's Prometheus collectors and serves them on
// metrics.listen_address, behind the exporter-toolkit web config (TLS, basic auth).
//
// The names, types and labels are part of the product contract, listed in
// docs/metrics.md (a test keeps that table complete); the alert rules in
// packaging/alerts.yml depend on them.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

const namespace = "jenkins_spot_agent"

// Results of one IMDS request, the values of the result label of
// jenkins_spot_agent_imds_requests_total. Anything but 200 and 404 is blindness.
const (
	IMDSResultOK           = "ok"
	IMDSResultNotFound     = "not_found"
	IMDSResultUnauthorized = "unauthorized"
	IMDSResultError        = "error"
)

// allKinds and allSteps pre-initialise the labelled counters: increase() in an
// alert rule sees nothing when a series is born at 1, so every series must exist at
// 0 before the first notice or failure.
var allKinds = []instance.Kind{
	instance.KindSpotTerminate, instance.KindSpotStop, instance.KindSpotHibernate, instance.KindRebalance,
	instance.KindASGTerminated, instance.KindScheduledEvent, instance.KindSignal, instance.KindDrill,
}

var allSteps = []status.Step{
	status.StepMount, status.StepLease, status.StepContainerStart, status.StepJenkinsReady,
	status.StepDeregister, status.StepQuietDown, status.StepDrain, status.StepContainerStop,
	status.StepLeaseRelease, status.StepUnmount, status.StepLifecycleComplete,
}

// stepBuckets spans a 10 ms lease renewal up to a five-minute Jenkins start, with
// enough resolution around the two-minute Spot budget to see where it goes.
var stepBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 45, 60, 90, 120, 180, 300}

// Metrics is the agent's set of collectors, registered in a registry of its own so
// that nothing global leaks into the scrape. All methods are safe for concurrent use.
type Metrics struct {
	registry *prometheus.Registry
	handler  http.Handler

	phase          *prometheus.GaugeVec
	notices        *prometheus.CounterVec
	deadline       prometheus.Gauge
	imdsRequests   *prometheus.CounterVec
	imdsSuccess    prometheus.Gauge
	stepDuration   *prometheus.HistogramVec
	stepFailures   *prometheus.CounterVec
	runningBuilds  prometheus.Gauge
	leaseHeld      prometheus.Gauge
	shutdownMargin prometheus.Gauge

	noticesByPool    *prometheus.CounterVec
	successorWaiting prometheus.Gauge
	jenkinsRestarts  prometheus.Counter
	abortedBuilds    prometheus.Counter
	jenkinsFailures  *prometheus.CounterVec
	imdsBlind        prometheus.Gauge
	replacements     *prometheus.CounterVec
	heartbeats       *prometheus.CounterVec
	webhook          *prometheus.CounterVec

	// The margin is exported only once a plan has finished: a 0 before that would
	// read as "finished with no time left" and fire the low-margin alert.
	marginOnce sync.Once
	phaseMu    sync.Mutex // concurrent SetPhase calls must not leave two phases at 1
	current    status.Phase
}

// New returns the agent's metrics with build info, Go runtime and process
// collectors. version and revision are what `jenkins-spot-agent version` prints.
func New(version, revision string) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		registry: reg,
		phase: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "phase",
			Help: "1 for the agent's current phase, 0 for the others.",
		}, []string{"phase"}),
		notices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "interruption_notices_total",
			Help: "End-of-instance notices observed, by kind.",
		}, []string{"kind"}),
		deadline: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "termination_deadline_timestamp_seconds",
			Help: "Termination time the agent is working to, as a Unix timestamp; 0 when none.",
		}),
		imdsRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "imds_requests_total",
			Help: "Requests to the instance metadata service, by endpoint and result (ok, not_found, unauthorized, error).",
		}, []string{"endpoint", "result"}),
		imdsSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "imds_last_success_timestamp_seconds",
			Help: "Unix time of the last IMDS poll that gave a definite answer; 0 before the first.",
		}),
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "step_duration_seconds",
			Help:    "Duration of each boot and shutdown step, successful or not.",
			Buckets: stepBuckets,
		}, []string{"step"}),
		stepFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "step_failures_total",
			Help: "Boot and shutdown steps that ended in an error.",
		}, []string{"step"}),
		runningBuilds: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "jenkins_running_builds",
			Help: "Builds running in Jenkins at the last look.",
		}),
		leaseHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "lease_held",
			Help: "1 while this instance holds the lease on JENKINS_HOME.",
		}),
		shutdownMargin: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "shutdown_margin_seconds",
			Help: "Time left before the termination time when the shutdown plan finished; absent until a plan finishes.",
		}),
	}
	m.addCollectors()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "Always 1; the labels name the running build.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)

	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo, m.phase, m.notices, m.deadline, m.imdsRequests, m.imdsSuccess,
		m.stepDuration, m.stepFailures, m.runningBuilds, m.leaseHeld,
	)
	m.registerMore()

	for _, p := range status.Phases {
		m.phase.WithLabelValues(string(p))
	}
	for _, k := range allKinds {
		m.notices.WithLabelValues(string(k))
	}
	for _, s := range allSteps {
		m.stepFailures.WithLabelValues(string(s))
	}

	m.handler = promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:            reg,
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	return m
}

// Registry returns the registry holding every collector, for tests and for adding
// collectors of other packages.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler { return m.handler }

// SetPhase marks p as the current phase and clears the previous one. A phase
// outside status.Phases gets its own series, so a new phase shows up rather than
// vanishing.
func (m *Metrics) SetPhase(p status.Phase) {
	m.phaseMu.Lock()
	defer m.phaseMu.Unlock()
	if m.current != "" && m.current != p {
		m.phase.WithLabelValues(string(m.current)).Set(0)
	}
	m.phase.WithLabelValues(string(p)).Set(1)
	m.current = p
}

// Notice counts one observed notice of kind k.
func (m *Metrics) Notice(k instance.Kind) { m.notices.WithLabelValues(string(k)).Inc() }

// SetDeadline records the termination time being worked to; the zero time clears it.
func (m *Metrics) SetDeadline(t time.Time) { m.setTimestamp(m.deadline, t) }

// IMDSRequest counts one request to IMDS; result is one of the IMDSResult constants.
func (m *Metrics) IMDSRequest(endpoint, result string) {
	m.imdsRequests.WithLabelValues(endpoint, result).Inc()
}

// IMDSSuccess records when IMDS last gave a definite answer (200 or 404).
func (m *Metrics) IMDSSuccess(t time.Time) { m.setTimestamp(m.imdsSuccess, t) }

// ObserveStep records how long a step took and counts it as failed when err is not nil.
func (m *Metrics) ObserveStep(step status.Step, d time.Duration, err error) {
	m.stepDuration.WithLabelValues(string(step)).Observe(d.Seconds())
	if err != nil {
		m.stepFailures.WithLabelValues(string(step)).Inc()
	}
}

// SetShutdownMargin records the time left before the termination time when the
// plan finished; negative when it overran.
func (m *Metrics) SetShutdownMargin(d time.Duration) {
	m.marginOnce.Do(func() { m.registry.MustRegister(m.shutdownMargin) })
	m.shutdownMargin.Set(d.Seconds())
}

// SetRunningBuilds records the number of builds running at the last look.
func (m *Metrics) SetRunningBuilds(n int) { m.runningBuilds.Set(float64(n)) }

// SetLeaseHeld records whether this instance holds the lease on JENKINS_HOME.
func (m *Metrics) SetLeaseHeld(held bool) {
	if held {
		m.leaseHeld.Set(1)
		return
	}
	m.leaseHeld.Set(0)
}

// setTimestamp sets g to t as a Unix timestamp, or 0 for the zero time (a zero
// time.Time would otherwise export as year 1).
func (m *Metrics) setTimestamp(g prometheus.Gauge, t time.Time) {
	if t.IsZero() {
		g.Set(0)
		return
	}
	g.Set(float64(t.UnixNano()) / 1e9)
}

// shutdownTimeout bounds the graceful stop of the metrics server: a scrape takes
// milliseconds, and the agent's own shutdown must not wait on a slow scraper.
const shutdownTimeout = 5 * time.Second

// Serve serves /metrics on listenAddress until ctx ends, then shuts the server down
// gracefully. webConfigFile, when not empty, is an exporter-toolkit web config that
// turns on TLS and basic auth. It returns nil after a shutdown caused by ctx.
func (m *Metrics) Serve(ctx context.Context, listenAddress, webConfigFile string, logger *slog.Logger) error {
	if webConfigFile != "" {
		// Validate before listening so a bad file is reported as such, not as a
		// failed scrape later.
		if err := web.Validate(webConfigFile); err != nil {
			return fmt.Errorf("metrics: web config %s: %w (fix metrics.web_config_file)", webConfigFile, err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.handler)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	addrs := []string{listenAddress}
	flags := &web.FlagConfig{WebListenAddresses: &addrs, WebConfigFile: &webConfigFile}

	errc := make(chan error, 1)
	go func() { errc <- web.ListenAndServe(srv, flags, logger) }()

	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve on %s: %w (check metrics.listen_address)", listenAddress, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		logger.Warn("metrics server did not stop gracefully", "err", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve on %s: %w", listenAddress, err)
	}
	return nil
}
