package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
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
		case <-run.done:
		case <-time.After(30 * time.Second):
			t.Error("agent did not return after cancel")
		}
	})
	return run
}

func spotNotice(in time.Duration) instance.Notice {
	now := time.Now()
	return instance.Notice{Kind: instance.KindSpotTerminate, Time: now.Add(in), Seen: now, Detail: "terminate"}
}

func TestBootServesAndSignalsReady(t *testing.T) {
	r := newRig(t.TempDir(), t.TempDir())
	start(t, r, 20*time.Second)
	if err := r.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"mount", "lease-acquire", "verify", "prepare", "container-start"} {
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
}

func TestJenkinsNeverStartsOnAFailedMount(t *testing.T) {
	r := newRig(t.TempDir(), t.TempDir())
	r.mounter.mountErr = errors.New("mount.nfs: access denied by server")
	run := start(t, r, 20*time.Second)
	select {
	case err := <-run.done:
		run.done <- err
		if err == nil || !strings.Contains(err.Error(), "access denied") {
			t.Fatalf("boot error %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("boot did not fail")
	}
	if r.j.has("container-start") || r.j.has("lease-acquire") {
		t.Fatalf("went past a failed mount: %v", r.j.list())
	}
}

func TestNoticeDuringLeaseWaitAbortsBootWithoutStartingJenkins(t *testing.T) {
	r := newRig(t.TempDir(), t.TempDir())
	r.lease.wait = make(chan struct{}) // another holder never releases
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

func TestPlanRunsInOrderAndBeforeTheDeadline(t *testing.T) {
	r := newRig(t.TempDir(), t.TempDir())
	r.jenkins.builds = []string{"job/nightly/7/", "job/deploy/3/"}
	r.jenkins.until = time.Now().Add(time.Hour) // set again once the notice comes
	run := start(t, r, 20*time.Second)
	if err := r.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	r.jenkins.mu.Lock()
	r.jenkins.until = time.Now().Add(1500 * time.Millisecond)
	r.jenkins.mu.Unlock()
	n := spotNotice(15 * time.Second)
	r.watch.in <- n
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	calls := r.j.list()
	order := []string{"container-stop", "lease-release", "unmount", "lifecycle-complete"}
	for i := 1; i < len(order); i++ {
		if r.j.index(order[i-1]) > r.j.index(order[i]) {
			t.Fatalf("%s after %s: %v", order[i-1], order[i], calls)
		}
	}
	for _, first := range []string{"deregister", "quiet-down"} {
		if r.j.index(first) > r.j.index("container-stop") {
			t.Fatalf("%s not before the stop: %v", first, calls)
		}
	}
	st := run.a.Status()
	end := n.Time.Add(-r.cfg.Interruption.SafetyMargin.D())
	if st.Margin < r.cfg.Interruption.SafetyMargin.D() {
		t.Fatalf("plan ended %s before the termination, past the safety margin (end %s)", st.Margin, end)
	}
	if !st.Deadline.Equal(n.Time) {
		t.Fatalf("worked to %s, not the notice's time %s", st.Deadline, n.Time)
	}
	var drained bool
	for _, ev := range st.Steps {
		if ev.Step == status.StepDrain && ev.Err == "" && ev.Duration >= time.Second {
			drained = true
		}
	}
	if !drained {
		t.Fatalf("drain did not wait for the builds: %+v", st.Steps)
	}
}

func TestFailedStepDoesNotBlockLaterSteps(t *testing.T) {
	r := newRig(t.TempDir(), t.TempDir())
	r.targets.deregErr = errors.New("TargetGroupNotFound")
	start(t, r, 20*time.Second)
	if err := r.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	r.watch.in <- spotNotice(15 * time.Second)
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"quiet-down", "container-stop", "lease-release", "unmount", "lifecycle-complete"} {
		if !r.j.has(want) {
			t.Errorf("%s skipped after a failed deregistration: %v", want, r.j.list())
		}
	}
}

func TestLeaseKeptAndHomeMountedWhenContainerWillNotStop(t *testing.T) {
	r := newRig(t.TempDir(), t.TempDir())
	start(t, r, 20*time.Second)
	if err := r.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	r.rt.mu.Lock()
	r.rt.stayUp = true
	r.rt.mu.Unlock()
	r.watch.in <- spotNotice(15 * time.Second)
	if err := r.waitPhase(status.PhaseStopped, 40*time.Second); err != nil {
		t.Fatal(err)
	}
	if r.j.has("lease-release") || r.j.has("unmount") {
		t.Fatalf("released or unmounted while Jenkins may run: %v", r.j.list())
	}
	if !r.j.has("container-kill") {
		t.Fatalf("no kill after a failed stop: %v", r.j.list())
	}
	if !r.lease.Held() {
		t.Fatal("lease let go while Jenkins may still run")
	}
	// Once the daemon answers again, the retried kill takes and the home is handed on.
	r.rt.mu.Lock()
	r.rt.stayUp = false
	r.rt.mu.Unlock()
	testenv.Eventually(t, "the late release and unmount", func() bool { return r.j.has("lease-release") && r.j.has("unmount") })
	if r.j.index("lease-release") > r.j.index("unmount") {
		t.Fatalf("unmounted before releasing: %v", r.j.list())
	}
}

func TestRebalancePolicy(t *testing.T) {
	for _, policy := range []string{"notify", "drain"} {
		t.Run(policy, func(t *testing.T) {
			r := newRig(t.TempDir(), t.TempDir())
			r.cfg.Interruption.OnRebalance = policy
			run := start(t, r, 20*time.Second)
			if err := r.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			r.watch.in <- instance.Notice{Kind: instance.KindRebalance, Seen: time.Now()}
			err := r.waitPhase(status.PhaseDraining, 3*time.Second)
			if policy == "notify" {
				if err == nil {
					t.Fatal("notify policy drained")
				}
				if got := run.a.Status().Notices; len(got) != 1 || got[0].Kind != instance.KindRebalance {
					t.Fatalf("rebalance not recorded: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFinishedPlanIsNeverRepeatedOnThisBoot(t *testing.T) {
	home, state := t.TempDir(), t.TempDir()
	r := newRig(home, state)
	run := start(t, r, 20*time.Second)
	if err := r.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	r.watch.in <- spotNotice(15 * time.Second)
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	run.cancel()
	<-run.done
	run.done <- nil

	// The agent restarts on the same boot: it must not boot Jenkins again.
	r2 := newRig(home, state)
	start(t, r2, 20*time.Second)
	if err := r2.waitPhase(status.PhaseStopped, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if r2.j.has("container-start") || r2.j.has("mount") {
		t.Fatalf("a finished plan let Jenkins boot again: %v", r2.j.list())
	}
	// After a reboot (a stopped Spot instance started again) the latch no longer applies.
	r3 := newRig(home, state)
	r3.bootID = "boot-2"
	start(t, r3, 20*time.Second)
	if err := r3.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestInterruptedPlanResumesWithoutBootingJenkins(t *testing.T) {
	home, state := t.TempDir(), t.TempDir()
	deadline := time.Now().Add(15 * time.Second)
	l := latch{path: filepath.Join(state, "plan-latch.json"), bootID: "boot-1"}
	if err := l.store(latchRecord{Kind: instance.KindSpotTerminate, Deadline: deadline, Started: time.Now()}); err != nil {
		t.Fatal(err)
	}
	r := newRig(home, state)
	run := start(t, r, 20*time.Second)
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if r.j.has("container-start") {
		t.Fatalf("booted Jenkins in the middle of a plan: %v", r.j.list())
	}
	for _, want := range []string{"discover", "lease-acquire", "deregister", "container-stop", "lease-release", "unmount"} {
		if !r.j.has(want) {
			t.Errorf("resumed plan skipped %s: %v", want, r.j.list())
		}
	}
	if r.j.index("lease-acquire") > r.j.index("container-stop") {
		t.Errorf("the lease was taken back only after the stop: %v", r.j.list())
	}
	if got := run.a.Status().Deadline; !got.Equal(deadline.Round(0)) && !got.Equal(deadline) {
		t.Errorf("resumed plan works to %s, not the latched %s", got, deadline)
	}
	rec, err := l.load()
	if err != nil || rec == nil || rec.Finished.IsZero() {
		t.Fatalf("latch not finished: %+v %v", rec, err)
	}
}

func TestUnreadableLatchStopsTheBoot(t *testing.T) {
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, "plan-latch.json"), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := newRig(t.TempDir(), state)
	run := start(t, r, 20*time.Second)
	select {
	case err := <-run.done:
		run.done <- err
		if err == nil || !strings.Contains(err.Error(), "remove it") {
			t.Fatalf("got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no error")
	}
	if r.j.has("container-start") {
		t.Fatal("started Jenkins past an unreadable latch")
	}
}

func TestCrashedJenkinsIsRestartedWhileLeaseHeld(t *testing.T) {
	r := newRig(t.TempDir(), t.TempDir())
	run := start(t, r, 20*time.Second)
	if err := r.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	r.rt.crash(137)
	deadline := time.Now().Add(15 * time.Second)
	for run.a.Status().Restarts < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("not restarted: %v", r.j.list())
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.rt.mu.Lock()
	starts := r.rt.starts
	r.rt.mu.Unlock()
	if starts != 2 {
		t.Fatalf("starts = %d", starts)
	}
}

func TestSignalRunsPlanAndLeaveRunningDoesNot(t *testing.T) {
	for _, policy := range []string{"shutdown", "leave-running"} {
		t.Run(policy, func(t *testing.T) {
			r := newRig(t.TempDir(), t.TempDir())
			r.cfg.Interruption.OnStopSignal = policy
			run := start(t, r, 20*time.Second)
			if err := r.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			run.a.Stop("terminated")
			if policy == "leave-running" {
				select {
				case err := <-run.done:
					run.done <- err
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("did not exit")
				}
				if r.j.has("container-stop") || r.j.has("lease-release") {
					t.Fatalf("leave-running stopped Jenkins: %v", r.j.list())
				}
				return
			}
			if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			if !r.j.has("container-stop") || !r.j.has("lease-release") {
				t.Fatalf("signal plan incomplete: %v", r.j.list())
			}
		})
	}
}

func TestSecondSignalStopsWaitingForBuilds(t *testing.T) {
	r := newRig(t.TempDir(), t.TempDir())
	r.jenkins.builds = []string{"job/forever/1/"}
	run := start(t, r, 60*time.Second)
	if err := r.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	run.a.Stop("terminated")
	if err := r.waitPhase(status.PhaseDraining, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	run.a.StopNow()
	if err := r.waitPhase(status.PhaseStopped, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	var forced bool
	for _, ev := range run.a.Status().Steps {
		if ev.Step == status.StepDrain && strings.Contains(ev.Err, "forced stop") {
			forced = true
		}
	}
	if !forced {
		t.Fatalf("drain not cut short: %+v", run.a.Status().Steps)
	}
}

func TestLateNoticeWorksToTheTimeItNames(t *testing.T) {
	r := newRig(t.TempDir(), t.TempDir())
	run := start(t, r, 60*time.Second)
	if err := r.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// Found 110 s into its two minutes: 10 s are left, not 120.
	n := instance.Notice{Kind: instance.KindSpotTerminate, Seen: time.Now(), Time: time.Now().Add(10 * time.Second)}
	r.watch.in <- n
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := run.a.Status().Deadline; !got.Equal(n.Time) {
		t.Fatalf("deadline %s, want %s", got, n.Time)
	}
}

func TestDrillRunsThePlanAndStreamsIt(t *testing.T) {
	r := newRig(t.TempDir(), t.TempDir())
	run := start(t, r, 20*time.Second)
	if err := r.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var steps []status.Step
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run.a.Drill(ctx, 20*time.Second, func(ev status.Event) {
		mu.Lock()
		defer mu.Unlock()
		if ev.Done {
			steps = append(steps, ev.Step)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(steps) < 5 || r.j.has("lifecycle-complete") {
		t.Fatalf("drill steps %v, calls %v (a drill must not complete a lifecycle action)", steps, r.j.list())
	}
	if err := run.a.Drill(ctx, 20*time.Second, nil); err == nil {
		t.Fatal("a second drill after the plan was accepted")
	}
}

// systemd's watchdog is fed only while IMDS answered recently: a blind or wedged watcher
// gets the agent restarted.
func TestHealthyFollowsTheWatchersSight(t *testing.T) {
	r := newRig(t.TempDir(), t.TempDir())
	a, err := r.agent(20 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Healthy(10 * time.Second) {
		t.Error("unhealthy before the first poll, within the window of the start")
	}
	r.watch.health = status.WatchHealth{LastSuccess: time.Now()}
	if !a.Healthy(10 * time.Second) {
		t.Error("unhealthy right after a good poll")
	}
	r.watch.health = status.WatchHealth{LastSuccess: time.Now().Add(-time.Minute), ConsecutiveFails: 60}
	if a.Healthy(10 * time.Second) {
		t.Error("healthy after a minute of blindness")
	}
}

// A plan resumed while another controller holds the home does not wait for builds: this
// Jenkins must stop at once.
func TestResumedPlanWithoutTheLeaseStopsAtOnce(t *testing.T) {
	home, state := t.TempDir(), t.TempDir()
	l := latch{path: filepath.Join(state, "plan-latch.json"), bootID: "boot-1"}
	if err := l.store(latchRecord{Kind: instance.KindSpotTerminate, Deadline: time.Now().Add(90 * time.Second), Started: time.Now()}); err != nil {
		t.Fatal(err)
	}
	r := newRig(home, state)
	r.lease.wait = make(chan struct{}) // held by i-other
	r.jenkins.builds = []string{"job/forever/1/"}
	run := start(t, r, 20*time.Second)
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	var drain status.Event
	for _, ev := range run.a.Status().Steps {
		if ev.Step == status.StepDrain {
			drain = ev
		}
	}
	if !strings.Contains(drain.Err, "forced stop") {
		t.Fatalf("drain waited for builds without the lease: %+v", drain)
	}
	if !r.j.has("container-stop") {
		t.Fatalf("Jenkins not stopped: %v", r.j.list())
	}
}

// failingJenkins never answers, as a Jenkins that cannot start.
type failingJenkins struct{ *fakeJenkins }

func (failingJenkins) Probe(context.Context) error { return errors.New("503: jenkins is not ready") }

// A boot that fails after the container started stops it: Jenkins never runs without an
// agent renewing its lease.
func TestFailedBootStopsTheStartedJenkins(t *testing.T) {
	r := newRig(t.TempDir(), t.TempDir())
	r.cfg.Jenkins.ReadyTimeout = config.Duration(300 * time.Millisecond)
	deps := r.deps()
	deps.Jenkins = failingJenkins{r.jenkins}
	a, err := New(Options{Config: r.cfg, Deps: deps, BootID: "boot-1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Run(ctx); err == nil || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("boot error %v", err)
	}
	if up, _ := r.rt.Running(ctx); up {
		t.Fatalf("Jenkins left running after a failed boot: %v", r.j.list())
	}
	if r.j.index("container-stop") < r.j.index("container-start") {
		t.Fatalf("no stop after the start: %v", r.j.list())
	}
}

// After the plan the agent stays up for status and metrics: a late notice does not end
// it, a stop signal does.
func TestAfterThePlanOnlyAStopSignalEndsTheAgent(t *testing.T) {
	r := newRig(t.TempDir(), t.TempDir())
	run := start(t, r, 20*time.Second)
	if err := r.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	r.watch.in <- instance.Notice{Kind: instance.KindASGTerminated, Seen: time.Now()}
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	r.watch.in <- spotNotice(10 * time.Second)
	select {
	case err := <-run.done:
		t.Fatalf("a late notice ended the agent: %v", err)
	case <-time.After(2 * time.Second):
	}
	if got := len(run.a.Status().Notices); got != 2 {
		t.Errorf("late notice not recorded: %d notices", got)
	}
	run.a.Stop("terminated")
	select {
	case err := <-run.done:
		run.done <- err
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stop signal did not end the agent")
	}
}
