package agent

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

func TestCrashedJenkinsIsRestartedWhileLeaseHeld(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	run := serving(t, r, 20*time.Second)
	r.rt.crash(137)
	testenv.Eventually(t, "a restart", func() bool { return run.a.Status().Restarts >= 1 })
	r.rt.mu.Lock()
	starts := r.rt.starts
	r.rt.mu.Unlock()
	if starts != 2 {
		t.Fatalf("starts = %d", starts)
	}
	// The mount is verified again before Jenkins starts again.
	calls := r.j.list()
	first := slices.Index(calls, "container-start")
	second := first + 1 + slices.Index(calls[first+1:], "container-start")
	if !slices.Contains(calls[first+1:second], "verify") {
		t.Fatalf("restarted without verifying the mount: %v", calls)
	}
}

// dockerd killed and started again (no live-restore): the wait for the container's
// exit ends with an error and the daemon stops the container silently. The agent must
// notice within seconds, never say serving while Jenkins is down, and start it again.
func TestDockerdRestartIsNoticedAndJenkinsStartedAgain(t *testing.T) {
	t.Parallel()
	testenv.SkipShort(t, "waits several seconds of the plan's clock")
	r := newRig(t.TempDir(), t.TempDir())
	run := serving(t, r, 20*time.Second)
	r.rt.daemonRestart()
	if err := r.waitPhase(status.PhaseStartingJenkins, 15*time.Second); err != nil {
		t.Fatalf("Jenkins down but still reported serving: %v", err)
	}
	if err := r.waitPhase(status.PhaseServing, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if !r.rt.isRunning() {
		t.Fatal("serving, but the container does not run")
	}
	if got := run.a.Status().Restarts; got != 1 {
		t.Errorf("restarts = %d, want 1", got)
	}
	// And the watch is armed again: a crash after that is seen too.
	r.rt.crash(1)
	testenv.Eventually(t, "the second restart", func() bool { return run.a.Status().Restarts >= 2 })
}

// A notice while a crashed Jenkins is being started again (and loads for a long time)
// is acted on at once: the plan does not wait for the restart.
func TestNoticeDuringARestartIsActedOnAtOnce(t *testing.T) {
	t.Parallel()
	testenv.SkipShort(t, "waits several seconds of the plan's clock")
	r := newRig(t.TempDir(), t.TempDir())
	serving(t, r, 20*time.Second)
	r.jenkins.set(func(f *fakeJenkins) { f.loadingUntil = time.Now().Add(time.Hour) })
	r.rt.crash(137)
	testenv.Eventually(t, "the restart under way", func() bool { return r.j.count("container-start") >= 2 })
	noticed := time.Now()
	r.watch.in <- spotNotice(15 * time.Second)
	if err := r.waitPhase(status.PhaseDraining, 3*time.Second); err != nil {
		t.Fatalf("the notice waited for the restart: %v", err)
	}
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	_ = noticed
	if r.rt.isRunning() {
		t.Fatal("Jenkins still runs after the plan")
	}
}

// systemd's watchdog is fed while the agent's own loops make progress, IMDS blind or
// not: blindness shows in status and metrics, never as a restart of the fence holder.
func TestAliveWhileIMDSIsDark(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	run := serving(t, r, 20*time.Second)
	r.watch.mu.Lock()
	r.watch.health = status.WatchHealth{LastSuccess: time.Now().Add(-10 * time.Minute), ConsecutiveFails: 600, LastError: "timeout"}
	r.watch.mu.Unlock()
	time.Sleep(2500 * time.Millisecond)
	if !run.a.Alive(2 * time.Second) {
		t.Fatal("a serving agent with IMDS dark is reported dead")
	}
	if st := run.a.Status(); st.Watch.ConsecutiveFails != 600 {
		t.Errorf("blindness not shown in status: %+v", st.Watch)
	}
	// A wedged main loop is not alive.
	a, err := r.agent(20 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a.now = func() time.Time { return time.Now().Add(time.Minute) }
	if a.Alive(30 * time.Second) {
		t.Error("an agent with no progress for a minute is alive")
	}
}

// Another controller took the lease: Jenkins is fenced and the agent ends with an error
// so that systemd starts it again as a successor.
func TestLostLeaseStopsJenkinsAndEndsTheAgent(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.jenkins.builds = []status.Build{build("forever", 1, false)}
	run := serving(t, r, 60*time.Second)
	r.lease.home.take("i-other")
	err := run.exited(t, 20*time.Second)
	if err == nil || !strings.Contains(err.Error(), "lease lost") {
		t.Fatalf("exit %v", err)
	}
	if r.rt.isRunning() {
		t.Fatal("Jenkins runs without the lease")
	}
	if len(r.eventsOf(status.EventLeaseLost)) == 0 {
		t.Error("no lease_lost event for webhooks")
	}
	// The home is cut off at once, before anything else of the plan: the killed
	// Jenkins' queued writes must not land in a successor's home.
	if i, q := r.j.index("abort"), r.j.index("quiet-down"); i < 0 || (q >= 0 && i > q) {
		t.Errorf("the home was not cut off first after the fence: %v", r.j.list())
	}
}

// An adopted Jenkins left in quiet-down by an earlier plan is taken out of it.
func TestAdoptedJenkinsLeftInQuietDownIsCancelled(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.jenkins.quieting = true
	serving(t, r, 20*time.Second)
	testenv.Eventually(t, "cancelQuietDown", func() bool { return r.j.has("cancel-quiet-down") })
}

// The notice carries the capacity pool it hit.
func TestNoticeCarriesTheCapacityPool(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.cfg.Interruption.OnRebalance = "notify"
	run := serving(t, r, 20*time.Second)
	r.watch.in <- instance.Notice{Kind: instance.KindRebalance, Seen: time.Now()}
	testenv.Eventually(t, "the notice in status", func() bool { return len(run.a.Status().Notices) == 1 })
	n := run.a.Status().Notices[0]
	if n.InstanceType != "m7g.large" || n.AvailabilityZone != "us-east-1a" {
		t.Fatalf("notice pool = %q/%q", n.InstanceType, n.AvailabilityZone)
	}
}
