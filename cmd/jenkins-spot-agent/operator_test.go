package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/control"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds/imdstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins/jenkinstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/metrics"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/wiring"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

const (
	opARN   = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/jenkins/0123456789abcdef"
	opToken = "feedfacefeedfacefeedfacefeedface"
)

// opRuntime stands in for the container: "running" is the Jenkins double answering.
type opRuntime struct {
	mu      sync.Mutex
	running bool
	exited  chan struct{}
}

func (r *opRuntime) Prepare(context.Context) error { return nil }
func (r *opRuntime) Start(context.Context) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running, r.exited = true, make(chan struct{})
	return false, nil
}

func (r *opRuntime) Stop(context.Context, time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		r.running = false
		close(r.exited)
	}
	return nil
}
func (r *opRuntime) Kill(ctx context.Context) error { return r.Stop(ctx, 0) }
func (r *opRuntime) Running(context.Context) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running, nil
}

func (r *opRuntime) Wait(ctx context.Context) (int64, error) {
	r.mu.Lock()
	ch := r.exited
	r.mu.Unlock()
	select {
	case <-ch:
		return 0, errors.New("stopped")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// TestStatusDrillAndMetricsAgainstARunningAgent runs an agent the way `run` does (control
// socket, metrics endpoint, signal handling) against the doubles, and drives it with the
// `status` and `drill` commands as an operator would.
func TestStatusDrillAndMetricsAgainstARunningAgent(t *testing.T) {
	dir := t.TempDir()
	id := instance.Identity{InstanceID: "i-0123456789abcdef0", AvailabilityZone: "us-east-1a", Region: "us-east-1"}
	md := imdstest.NewServer(id)
	defer md.Close()
	aws := awstest.NewServer()
	defer aws.Close()
	aws.AddTargetGroup(opARN, awstest.Target{ID: id.InstanceID, Port: 8080})
	js, jurl, err := jenkinstest.Start(jenkinstest.Config{Users: map[string]jenkinstest.User{"admin": {Token: opToken, Manage: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer js.Close()

	cfg := config.Default()
	cfg.EFS.FileSystemID = "fs-0123456789abcdef0"
	cfg.EFS.MountPoint = filepath.Join(dir, "home")
	cfg.Jenkins.URL, cfg.Jenkins.User = jurl, "admin"
	cfg.TargetGroups = []config.TargetGroup{{ARN: opARN, Port: 8080}}
	cfg.DiscoverTargetGroups = false
	cfg.Jenkins.StopGrace = config.Duration(2 * time.Second)
	cfg.Jenkins.UID, cfg.Jenkins.GID = os.Getuid(), os.Getgid()
	cfg.Interruption.SafetyMargin = config.Duration(2 * time.Second)
	cfg.Lease.TTL = config.Duration(6 * time.Second)
	cfg.ControlSocket = filepath.Join(dir, "run", "control.sock")
	cfg.StateDir = filepath.Join(dir, "state")
	port := testenv.FreePort(t)
	cfg.Metrics.ListenAddress = "127.0.0.1:" + strconv.Itoa(port)

	log := slog.New(slog.DiscardHandler)
	m := metrics.New("test", "test")
	// The composition root run uses; only the endpoints differ.
	w, err := wiring.New(cfg, opToken, m, wiring.Endpoints{
		IMDS: md.URL(), AWS: aws.URL(), Credentials: aws.Credentials(),
		Home: cfg.EFS.MountPoint, Runtime: &opRuntime{},
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Options{
		Config:        cfg,
		Deps:          w.Deps,
		Logger:        log,
		DefaultBudget: 30 * time.Second,
		BootID:        "operator-test",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := &env{stdout: io.Discard, stderr: io.Discard, log: log}
	served := make(chan error, 1)
	go func() { served <- serveAgent(ctx, e, cfg, a, m, nil, nil) }()

	testenv.Eventually(t, "the agent serving", func() bool {
		st, err := control.QueryStatus(ctx, cfg.ControlSocket)
		return err == nil && st.Phase == status.PhaseServing
	})

	// status, human and JSON.
	out := runMain(t, 0, "status", "--socket", cfg.ControlSocket)
	for _, want := range []string{"serving", id.InstanceID} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	var st status.Snapshot
	if err := json.Unmarshal([]byte(runMain(t, 0, "status", "--json", "--socket", cfg.ControlSocket)), &st); err != nil {
		t.Fatal(err)
	}
	if st.Phase != status.PhaseServing || !st.Lease.Held || st.Lease.Holder != id.InstanceID || st.Watch.LastSuccess.IsZero() {
		t.Fatalf("status --json: %+v", st)
	}

	// The metrics of a running agent pass promtool.
	scrape := opScrape(t, cfg.Metrics.ListenAddress)
	for _, want := range []string{`jenkins_spot_agent_phase{phase="serving"} 1`, "jenkins_spot_agent_lease_held 1", "jenkins_spot_agent_build_info{"} {
		if !strings.Contains(scrape, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	opPromtool(t, scrape)

	// drill: the plan runs now and its timeline streams back.
	out = runMain(t, 0, "drill", "--budget", "20s", "--socket", cfg.ControlSocket)
	for _, want := range []string{"notice", "drill", "deregister", "quiet_down", "container_stop", "lease_release", "unmount", "drill: done"} {
		if !strings.Contains(out, want) {
			t.Errorf("drill output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "lifecycle_complete") {
		t.Errorf("a drill completed a lifecycle action:\n%s", out)
	}
	if got := aws.TargetState(opARN, id.InstanceID); got != "draining" {
		t.Errorf("target %s after the drill", got)
	}
	if !js.QuietingDown() {
		t.Error("Jenkins not in quiet-down after the drill")
	}
	if err := json.Unmarshal([]byte(runMain(t, 0, "status", "--json", "--socket", cfg.ControlSocket)), &st); err != nil {
		t.Fatal(err)
	}
	if st.Phase != status.PhaseStopped || st.Lease.Held {
		t.Fatalf("after the drill: phase %s, lease held %v", st.Phase, st.Lease.Held)
	}
	scrape = opScrape(t, cfg.Metrics.ListenAddress)
	if !strings.Contains(scrape, `jenkins_spot_agent_interruption_notices_total{kind="drill"} 1`) {
		t.Errorf("drill not counted")
	}
	opPromtool(t, scrape)
	runMain(t, 1, "drill", "--budget", "20s", "--socket", cfg.ControlSocket) // a second drill is refused

	a.Stop("terminated")
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("agent exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not exit after the stop signal")
	}
	if _, err := os.Stat(cfg.ControlSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
}

func runMain(t *testing.T, wantCode int, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if code := Main(ctx, args, &out, &errOut); code != wantCode {
		t.Fatalf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, wantCode, out.String(), errOut.String())
	}
	return out.String()
}

func opScrape(t *testing.T, addr string) string {
	t.Helper()
	var body []byte
	testenv.Eventually(t, "a scrape of /metrics", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(resp.Body)
		return err == nil && resp.StatusCode == http.StatusOK
	})
	return string(body)
}

// opPromtool runs `promtool check metrics` on a scrape.
func opPromtool(t *testing.T, scrape string) {
	t.Helper()
	path := testenv.Tool(t, "promtool", "prometheus")
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(scrape)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
