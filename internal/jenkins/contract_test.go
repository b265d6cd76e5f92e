package jenkins_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent/contract"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins/jenkinstest"
)

var _ contract.Jenkins = (*jenkins.Client)(nil)

// The client, talking to the double in this process, passes the agent's contract
// for Jenkins.
func TestContract(t *testing.T) {
	contract.TestJenkins(t, contract.JenkinsHarness{New: newInProcessWorld, NoAnswer: jenkins.ErrNoAnswer})
}

// The client passes it too against the double run as a program (this test binary
// again, running jenkinstest.Main): its flags, its own SIGTERM handling and its home
// across two processes are what a container of the simulator runs.
func TestContractProcess(t *testing.T) {
	contract.TestJenkins(t, contract.JenkinsHarness{New: newProcessWorld, NoAnswer: jenkins.ErrNoAnswer})
}

// TestJenkinsDoubleProcess is not a test: TestContractProcess runs this test binary
// with it to run the double as a program.
func TestJenkinsDoubleProcess(t *testing.T) {
	if os.Getenv("JENKINS_DOUBLE_PROCESS") != "1" {
		t.Skip("runs only as the double's process of TestContractProcess")
	}
	args := os.Args[slices.Index(os.Args, "--")+1:]
	os.Exit(jenkinstest.Main(context.Background(), args, os.Stdout, os.Stderr))
}

// contractConfig is the double a contract.JenkinsSetup describes: the suite's jobs,
// the agent's user (token, Manage) and a viewer.
func contractConfig(t *testing.T, s contract.JenkinsSetup) jenkinstest.Config {
	cfg := jenkinstest.Config{
		Users: map[string]jenkinstest.User{
			"agent":  {Token: token, Manage: true},
			"viewer": {Token: "viewer-token"},
		},
		Jobs: map[string]jenkinstest.Job{
			contract.JobFreestyle: {},
			contract.JobPipeline:  {Pipeline: true},
			contract.JobNode:      {Pipeline: true, NodeAfter: time.Nanosecond},
			contract.JobParams: {Params: []jenkinstest.Param{
				{Name: "TARGET", Default: "staging"},
				{Name: "DRY_RUN", Default: "true", Kind: jenkinstest.ParamBoolean},
				{Name: "SECRET", Default: "hunter2", Kind: jenkinstest.ParamPassword},
			}},
			contract.JobDisabled: {Disabled: true},
		},
		Home:         t.TempDir(),
		QuietingDown: s.QuietingDown,
	}
	if s.Loading {
		cfg.StartupDelay = time.Hour
	}
	for _, b := range s.Builds {
		cfg.Boot = append(cfg.Boot, jenkinstest.Boot{Job: b.Job, Params: b.Params})
	}
	for _, f := range s.Faults {
		path := map[string]string{"": "*", "Ready": "/login", "RunningBuilds": "/computer/api/json", "QuietingDown": "/api/json"}[f.Method]
		if path == "" {
			t.Fatalf("contract fault for method %q: the double cannot", f.Method)
		}
		cfg.Faults = append(cfg.Faults, jenkinstest.Fault{Path: path, Kind: jenkinstest.FaultKind(f.Kind), Times: f.Times})
	}
	return cfg
}

func contractClient(t *testing.T, url string, s contract.JenkinsSetup) *jenkins.Client {
	if s.Viewer {
		return newClient(t, jenkins.Options{URL: url, User: "viewer", Token: "viewer-token"})
	}
	return agentClient(t, url)
}

// inProcessWorld is a double in this process.
type inProcessWorld struct {
	setup contract.JenkinsSetup
	cfg   jenkinstest.Config
	srv   *jenkinstest.Server
}

func newInProcessWorld(t *testing.T, s contract.JenkinsSetup) (contract.Jenkins, contract.JenkinsWorld) {
	w := &inProcessWorld{setup: s, cfg: contractConfig(t, s)}
	srv, url, err := jenkinstest.Start(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	w.srv = srv
	return contractClient(t, url, s), w
}

func (w *inProcessWorld) Stop(ctx context.Context) error { return w.srv.Shutdown(ctx) }

func (w *inProcessWorld) Successor(t *testing.T) contract.Jenkins {
	cfg := w.cfg
	cfg.Boot, cfg.QuietingDown, cfg.Faults, cfg.StartupDelay = nil, false, nil, 0
	srv, url, err := jenkinstest.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return contractClient(t, url, w.setup)
}

// processWorld is a double run as a program.
type processWorld struct {
	setup contract.JenkinsSetup
	cfg   jenkinstest.Config
	cmd   *exec.Cmd
	done  chan error
}

func newProcessWorld(t *testing.T, s contract.JenkinsSetup) (contract.Jenkins, contract.JenkinsWorld) {
	w := &processWorld{setup: s, cfg: contractConfig(t, s)}
	url := w.start(t, w.cfg)
	return contractClient(t, url, s), w
}

var listening = regexp.MustCompile(`listening on (http://127\.0\.0\.1:\d+)`)

// start runs the double with cfg's flags and returns its URL once it listens.
func (w *processWorld) start(t *testing.T, cfg jenkinstest.Config) string {
	t.Helper()
	args, err := cfg.Args()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestJenkinsDoubleProcess$", "--", "--listen", "127.0.0.1:0"}, args...)...)
	// Under -race the child would sleep a second at exit to flush its reports.
	cmd.Env = append(os.Environ(), "JENKINS_DOUBLE_PROCESS=1", "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				lines <- m[1]
			}
		}
		done <- cmd.Wait()
	}()
	w.cmd, w.done = cmd, done
	t.Cleanup(func() {
		// A case that did not stop its double stops it now; SIGKILL if it hangs.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("double exited: %v\n%s", err, stderr.String())
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("double did not exit within 15 s of SIGTERM (%v)\n%s", <-done, stderr.String())
		}
	})
	select {
	case url := <-lines:
		return url
	case err := <-done:
		t.Fatalf("double exited before listening: %v\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("double did not listen within 30 s\n%s", stderr.String())
	}
	return ""
}

// Stop sends SIGTERM, as docker stop does, and waits for the exit.
func (w *processWorld) Stop(ctx context.Context) error {
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case err := <-w.done:
		w.done <- err // for the cleanup
		if err != nil {
			return fmt.Errorf("double exited: %w", err)
		}
		return nil
	case <-ctx.Done():
		return errors.New("double did not exit after SIGTERM")
	}
}

func (w *processWorld) Successor(t *testing.T) contract.Jenkins {
	cfg := w.cfg
	cfg.Boot, cfg.QuietingDown, cfg.Faults, cfg.StartupDelay = nil, false, nil, 0
	next := &processWorld{setup: w.setup, cfg: cfg}
	return contractClient(t, next.start(t, cfg), w.setup)
}
