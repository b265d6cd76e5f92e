package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

type running struct {
	a      *Agent
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, r *rig, budget time.Duration) *running {
	t.Helper()
	a, err := r.agent(budget)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	run := &running{a: a, cancel: cancel, done: make(chan error, 1)}
	go func() { run.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-run.done:
			_ = err // ended by the cancel
		case <-time.After(30 * time.Second):
			t.Error("agent did not return after cancel")
		}
	})
	return run
}

// exited waits for Run to return and gives its error back.
func (run *running) exited(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-run.done:
		run.done <- err
		return err
	case <-time.After(within):
		t.Fatalf("the agent did not exit within %s", within)
		return nil
	}
}

func spotNotice(in time.Duration) instance.Notice {
	now := time.Now()
	return instance.Notice{Kind: instance.KindSpotTerminate, Time: now.Add(in), Seen: now, Detail: "terminate"}
}

func serving(t *testing.T, r *rig, budget time.Duration) *running {
	t.Helper()
	run := start(t, r, budget)
	if err := r.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return run
}

func TestBootServesAndSignalsReady(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	serving(t, r, 20*time.Second)
	for _, want := range []string{"mount", "lease-acquire", "prepare", "container-start"} {
		if !r.j.has(want) {
			t.Errorf("boot did not call %s: %v", want, r.j.list())
		}
	}
	if r.j.index("mount") > r.j.index("lease-acquire") || r.j.index("lease-acquire") > r.j.index("container-start") {
		t.Errorf("boot order wrong: %v", r.j.list())
	}
	// READY=1 follows the phase change at once.
	testenv.Eventually(t, "READY=1", func() bool { return strings.Contains(r.notify.joined(), "READY serving") })
	// Back in the target groups once Jenkins answers (after a drill, nobody else would).
	testenv.Eventually(t, "registration", func() bool { return r.j.has("register") })
	if r.j.index("register") < r.j.index("container-start") {
		t.Errorf("registered before Jenkins started: %v", r.j.list())
	}
	// A waiting successor says it is ready once the image is there.
	r.lease.mu.Lock()
	announced := r.lease.announced
	r.lease.mu.Unlock()
	if len(announced) == 0 || !announced[len(announced)-1] {
		t.Errorf("readiness never announced: %v", announced)
	}
}

func TestJenkinsNeverStartsOnAFailedMount(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.mounter.mountErr = errors.New("mount.nfs: access denied by server")
	run := start(t, r, 20*time.Second)
	if err := run.exited(t, 10*time.Second); err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("boot error %v", err)
	}
	if r.j.has("container-start") || r.j.has("lease-acquire") {
		t.Fatalf("went past a failed mount: %v", r.j.list())
	}
}

func TestNoticeDuringLeaseWaitAbortsBootWithoutStartingJenkins(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.lease.home.take("i-other") // another holder, which never releases
	start(t, r, 20*time.Second)
	if err := r.waitPhase(status.PhaseWaitingForLease, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// systemd hears who holds the home (the callback runs just after the phase change).
	testenv.Eventually(t, "STATUS naming the holder", func() bool {
		return strings.Contains(r.notify.joined(), "STATUS waiting for i-other to release JENKINS_HOME")
	})
	r.watch.in <- spotNotice(20 * time.Second)
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if r.j.has("container-start") {
		t.Fatalf("Jenkins started after the notice: %v", r.j.list())
	}
	if !r.j.has("deregister") || !r.j.has("unmount") {
		t.Fatalf("plan did not run: %v", r.j.list())
	}
}

// A large home on a throttled EFS answers 503 for longer than ready_timeout: that is
// loading, not death. ready_timeout bounds silence only.
func TestSlowJenkinsIsLoadingNotDead(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.cfg.Jenkins.ReadyTimeout = config.Duration(500 * time.Millisecond)
	r.jenkins.loadingUntil = time.Now().Add(2500 * time.Millisecond)
	run := start(t, r, 20*time.Second)
	if err := r.waitPhase(status.PhaseServing, 15*time.Second); err != nil {
		t.Fatalf("a loading Jenkins was given up: %v (exit: %v)", err, func() error {
			select {
			case err := <-run.done:
				run.done <- err
				return err
			default:
				return nil
			}
		}())
	}
	if !strings.Contains(r.notify.joined(), "Jenkins is loading (answering 503)") {
		t.Errorf("no loading progress in STATUS=: %s", r.notify.joined())
	}
	if r.j.has("container-stop") {
		t.Errorf("a loading Jenkins was stopped: %v", r.j.list())
	}
}

// A boot that fails after the container started stops it: Jenkins never runs without an
// agent renewing its lease. Silence (no HTTP answer) is what ready_timeout bounds.
func TestSilentJenkinsFailsTheBootAndIsStopped(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.cfg.Jenkins.ReadyTimeout = config.Duration(300 * time.Millisecond)
	r.jenkins.silent = true
	run := start(t, r, 20*time.Second)
	err := run.exited(t, 20*time.Second)
	if err == nil || !strings.Contains(err.Error(), "jenkins.ready_timeout") {
		t.Fatalf("boot error %v", err)
	}
	if r.rt.isRunning() {
		t.Fatalf("Jenkins left running after a failed boot: %v", r.j.list())
	}
	if r.j.index("container-stop") < r.j.index("container-start") {
		t.Fatalf("no stop after the start: %v", r.j.list())
	}
}

// An agent restarted on the same boot needs no IMDS: the identity is cached per boot.
func TestRestartedAgentAdoptsWithoutIMDS(t *testing.T) {
	t.Parallel()
	home, state := t.TempDir(), t.TempDir()
	r := newRig(home, state)
	run := serving(t, r, 20*time.Second)
	run.cancel()
	_ = run.exited(t, 10*time.Second)

	r2 := newRig(home, state)
	r2.md.err = errors.New("IMDS: connection refused")
	r2.rt = r.rt // the container still runs
	serving(t, r2, 20*time.Second)
	r2.md.mu.Lock()
	calls := r2.md.calls
	r2.md.mu.Unlock()
	if calls != 0 {
		t.Errorf("IMDS asked %d times on a restart within the boot", calls)
	}
	if starts := r.rt.startCount(); starts != 1 || r.j.count("container-stop") != 0 {
		t.Errorf("Jenkins was restarted instead of adopted (%d starts): %v", starts, r.j.list())
	}

	// A new boot reads IMDS again.
	r3 := newRig(t.TempDir(), state)
	r3.bootID = "boot-2"
	r3.md.err = errors.New("IMDS: connection refused")
	run3 := start(t, r3, 20*time.Second)
	if err := run3.exited(t, 10*time.Second); err == nil || !strings.Contains(err.Error(), "instance identity") {
		t.Fatalf("a new boot used the old boot's identity: %v", err)
	}
}

// A warm-pool instance prepares (mount, verify, image) and takes no lease until it is
// put in service.
func TestWarmPoolPreparesWithoutTheLease(t *testing.T) {
	t.Parallel()
	testenv.SkipShort(t, "waits several seconds of the plan's clock")
	r := newRig(t.TempDir(), t.TempDir())
	r.md.states = []string{"Warmed:Running", "Warmed:Running", "Warmed:Running"}
	start(t, r, 20*time.Second)
	testenv.Eventually(t, "home mounted and image pulled", func() bool { return r.j.has("mount") && r.j.has("prepare") })
	time.Sleep(500 * time.Millisecond)
	if r.j.has("lease-acquire") {
		t.Fatalf("a warm instance took the lease: %v", r.j.list())
	}
	if !strings.Contains(r.notify.joined(), "warm pool") {
		t.Errorf("warm pool not shown in STATUS=: %s", r.notify.joined())
	}
	r.md.mu.Lock()
	r.md.states = []string{"InService"}
	r.md.mu.Unlock()
	if err := r.waitPhase(status.PhaseServing, 20*time.Second); err != nil {
		t.Fatal(err)
	}
}
