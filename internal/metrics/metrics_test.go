package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// promtool returns the path of promtool, skipping the test when it is missing
// outside CI, where a missing tool must fail instead.
func promtool(t *testing.T) string {
	t.Helper()
	return testenv.Tool(t, "promtool", "prometheus")
}

func runPromtool(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool(t), args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// exercised returns metrics with every series touched, so lint sees all of them.
func exercised() *Metrics {
	m := New("1.2.3", "abc123")
	m.SetPhase(status.PhaseServing)
	m.Notice(instance.KindRebalance)
	m.SetDeadline(time.Unix(1700000000, 0))
	m.IMDSRequest("spot/instance-action", IMDSResultNotFound)
	m.IMDSRequest("spot/instance-action", IMDSResultError)
	m.IMDSSuccess(time.Unix(1700000000, 500_000_000))
	m.ObserveStep(status.StepMount, 1200*time.Millisecond, nil)
	m.ObserveStep(status.StepDeregister, 3*time.Second, errors.New("throttled"))
	m.SetShutdownMargin(-2 * time.Second)
	m.SetRunningBuilds(3)
	m.SetLeaseHeld(true)
	m.NoticeInPool(instance.KindSpotTerminate, "m7g.large", "us-east-1a")
	m.SetSuccessorWaiting(true)
	m.JenkinsRestarted()
	m.AbortedBuilds(2)
	m.JenkinsAPIFailure(JenkinsCallRunningBuilds)
	m.SetIMDSBlind(true)
	m.ReplacementRequested(ReplacementRequested)
	m.LifecycleHeartbeat(HeartbeatOK)
	m.WebhookNotification(WebhookDropped)
	return m
}

func TestLint(t *testing.T) {
	m := exercised()
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestValues(t *testing.T) {
	m := exercised()
	m.SetPhase(status.PhaseDraining)
	m.SetPhase(status.PhaseStopped)
	m.Notice(instance.KindRebalance)
	m.SetLeaseHeld(false)
	m.SetDeadline(time.Time{})

	want := `
# HELP jenkins_spot_agent_interruption_notices_total End-of-instance notices observed, by kind.
# TYPE jenkins_spot_agent_interruption_notices_total counter
jenkins_spot_agent_interruption_notices_total{kind="asg_terminated"} 0
jenkins_spot_agent_interruption_notices_total{kind="drill"} 0
jenkins_spot_agent_interruption_notices_total{kind="rebalance"} 2
jenkins_spot_agent_interruption_notices_total{kind="scheduled_event"} 0
jenkins_spot_agent_interruption_notices_total{kind="signal"} 0
jenkins_spot_agent_interruption_notices_total{kind="spot_hibernate"} 0
jenkins_spot_agent_interruption_notices_total{kind="spot_stop"} 0
jenkins_spot_agent_interruption_notices_total{kind="spot_terminate"} 0
# HELP jenkins_spot_agent_phase 1 for the agent's current phase, 0 for the others.
# TYPE jenkins_spot_agent_phase gauge
jenkins_spot_agent_phase{phase="booting"} 0
jenkins_spot_agent_phase{phase="draining"} 0
jenkins_spot_agent_phase{phase="mounting"} 0
jenkins_spot_agent_phase{phase="serving"} 0
jenkins_spot_agent_phase{phase="starting_jenkins"} 0
jenkins_spot_agent_phase{phase="stopped"} 1
jenkins_spot_agent_phase{phase="waiting_for_lease"} 0
# HELP jenkins_spot_agent_lease_held 1 while this instance holds the lease on JENKINS_HOME.
# TYPE jenkins_spot_agent_lease_held gauge
jenkins_spot_agent_lease_held 0
# HELP jenkins_spot_agent_termination_deadline_timestamp_seconds Termination time the agent is working to, as a Unix timestamp; 0 when none.
# TYPE jenkins_spot_agent_termination_deadline_timestamp_seconds gauge
jenkins_spot_agent_termination_deadline_timestamp_seconds 0
# HELP jenkins_spot_agent_imds_last_success_timestamp_seconds Unix time of the last IMDS poll that gave a definite answer; 0 before the first.
# TYPE jenkins_spot_agent_imds_last_success_timestamp_seconds gauge
jenkins_spot_agent_imds_last_success_timestamp_seconds 1.7000000005e+09
# HELP jenkins_spot_agent_shutdown_margin_seconds Time left before the termination time when the shutdown plan finished; absent until a plan finishes.
# TYPE jenkins_spot_agent_shutdown_margin_seconds gauge
jenkins_spot_agent_shutdown_margin_seconds -2
# HELP jenkins_spot_agent_jenkins_running_builds Builds running in Jenkins at the last look.
# TYPE jenkins_spot_agent_jenkins_running_builds gauge
jenkins_spot_agent_jenkins_running_builds 3
`
	names := []string{
		"jenkins_spot_agent_interruption_notices_total", "jenkins_spot_agent_phase",
		"jenkins_spot_agent_lease_held", "jenkins_spot_agent_termination_deadline_timestamp_seconds",
		"jenkins_spot_agent_imds_last_success_timestamp_seconds", "jenkins_spot_agent_shutdown_margin_seconds",
		"jenkins_spot_agent_jenkins_running_builds",
	}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}

	failures := testutil.ToFloat64(m.stepFailures.WithLabelValues(string(status.StepDeregister)))
	if failures != 1 {
		t.Errorf("deregister failures = %v, want 1", failures)
	}
	if got := testutil.ToFloat64(m.stepFailures.WithLabelValues(string(status.StepMount))); got != 0 {
		t.Errorf("mount failures = %v, want 0 (it succeeded)", got)
	}
	if n := testutil.CollectAndCount(m.stepDuration); n != 2 {
		t.Errorf("step duration series = %d, want 2", n)
	}
}

// TestFreshState checks what a scrape shows before anything happened: every phase
// and every counter series present at 0, no shutdown margin.
func TestFreshState(t *testing.T) {
	m := New("dev", "unknown")
	if n := testutil.CollectAndCount(m.phase); n != len(status.Phases) {
		t.Errorf("phase series = %d, want %d", n, len(status.Phases))
	}
	if n := testutil.CollectAndCount(m.notices); n != len(allKinds) {
		t.Errorf("notice series = %d, want %d", n, len(allKinds))
	}
	if n := testutil.CollectAndCount(m.stepFailures); n != len(allSteps) {
		t.Errorf("step failure series = %d, want %d", n, len(allSteps))
	}
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range families {
		seen[f.GetName()] = true
	}
	if seen["jenkins_spot_agent_shutdown_margin_seconds"] {
		t.Error("shutdown margin exported before any plan finished; the low-margin alert would fire")
	}
	for _, name := range []string{"jenkins_spot_agent_build_info", "go_goroutines", "process_start_time_seconds"} {
		if !seen[name] {
			t.Errorf("%s missing", name)
		}
	}
}

// serve starts m.Serve on a free loopback port and returns its base URL and a
// function that stops it and returns Serve's error.
func serve(t *testing.T, m *Metrics, webConfig string) (string, func() error) {
	t.Helper()
	// ListenAndServe takes an address, not a listener: reserve a free port, release
	// it, and retry the rare case where something else took it meanwhile.
	for attempt := 0; attempt < 5; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()

		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { errc <- m.Serve(ctx, addr, webConfig, discard()) }()

		if err := waitListening(ctx, addr, errc); err != nil {
			cancel()
			if errors.Is(err, syscall.EADDRINUSE) {
				continue
			}
			t.Fatal(err)
		}
		stop := func() error { cancel(); return <-errc }
		t.Cleanup(func() { cancel() })
		return "http://" + addr, stop
	}
	t.Fatal("no free port after 5 attempts")
	return "", nil
}

// waitListening polls until addr accepts a connection or Serve failed.
func waitListening(ctx context.Context, addr string, errc chan error) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("serve ended early: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("server on %s never listened", addr)
		case <-time.After(10 * time.Millisecond):
		}
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
	}
}

func get(t *testing.T, url, user, pass string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func TestServeScrapeCheckedByPromtool(t *testing.T) {
	m := exercised()
	base, stop := serve(t, m, "")
	code, body := get(t, base+"/metrics", "", "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d: %s", code, body)
	}
	for _, want := range []string{
		`jenkins_spot_agent_build_info{goversion="go`,
		`jenkins_spot_agent_phase{phase="serving"} 1`,
		`jenkins_spot_agent_step_duration_seconds_bucket{step="mount",le="2.5"} 1`,
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	runPromtool(t, body, "check", "metrics")

	if err := stop(); err != nil {
		t.Errorf("Serve after cancel = %v, want nil", err)
	}
}

func TestServeBasicAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "basic_auth_users:\n  prometheus: %s\n", hash), 0o600); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, nil, "check", "web-config", cfg)

	base, stop := serve(t, New("dev", "unknown"), cfg)
	if code, _ := get(t, base+"/metrics", "", ""); code != http.StatusUnauthorized {
		t.Errorf("scrape without credentials = %d, want 401", code)
	}
	if code, _ := get(t, base+"/metrics", "prometheus", "wrong"); code != http.StatusUnauthorized {
		t.Errorf("scrape with a wrong password = %d, want 401", code)
	}
	code, body := get(t, base+"/metrics", "prometheus", "s3cret")
	if code != http.StatusOK || !bytes.Contains(body, []byte("jenkins_spot_agent_build_info")) {
		t.Errorf("scrape with the password = %d, want 200 with metrics", code)
	}
	if err := stop(); err != nil {
		t.Errorf("Serve after cancel = %v, want nil", err)
	}
}

func TestServeRejectsBadWebConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(cfg, []byte("basic_auth_users: [not, a, map]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := New("dev", "unknown").Serve(ctx, "127.0.0.1:0", cfg, discard())
	if err == nil || !strings.Contains(err.Error(), "web_config_file") {
		t.Errorf("Serve with a bad web config = %v, want an error naming metrics.web_config_file", err)
	}
}

func TestServeAddressInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err = New("dev", "unknown").Serve(ctx, l.Addr().String(), "", discard())
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Serve on a taken port = %v, want EADDRINUSE", err)
	}
}

func BenchmarkObserveStep(b *testing.B) {
	m := New("dev", "unknown")
	for b.Loop() {
		m.ObserveStep(status.StepDrain, 1500*time.Millisecond, nil)
	}
}

func BenchmarkSetPhase(b *testing.B) {
	m := New("dev", "unknown")
	for b.Loop() {
		m.SetPhase(status.PhaseServing)
	}
}

func BenchmarkScrape(b *testing.B) {
	m := exercised()
	for b.Loop() {
		if _, err := m.Registry().Gather(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSetPhaseUnknown: a phase this build does not know is shown, and cleared
// again like any other.
func TestSetPhaseUnknown(t *testing.T) {
	m := New("dev", "unknown")
	m.SetPhase("upgrading")
	m.SetPhase(status.PhaseServing)
	if got := testutil.ToFloat64(m.phase.WithLabelValues("upgrading")); got != 0 {
		t.Errorf("previous unknown phase = %v, want 0", got)
	}
	if got := testutil.ToFloat64(m.phase.WithLabelValues(string(status.PhaseServing))); got != 1 {
		t.Errorf("serving = %v, want 1", got)
	}
}
