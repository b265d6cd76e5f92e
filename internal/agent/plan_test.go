package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

func TestPlanRunsInOrderAndBeforeTheDeadline(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.jenkins.builds = []status.Build{build("nightly", 7, false), build("deploy", 3, true)}
	r.jenkins.until = time.Now().Add(time.Hour) // set again once the notice comes
	run := serving(t, r, 20*time.Second)
	r.jenkins.set(func(f *fakeJenkins) { f.until = time.Now().Add(1500 * time.Millisecond) })
	n := spotNotice(15 * time.Second)
	r.watch.in <- n
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	calls := r.j.list()
	order := []string{"quiet-down", "deregister", "container-stop", "lease-release", "unmount", "lifecycle-complete"}
	for i := 1; i < len(order); i++ {
		if r.j.index(order[i-1]) > r.j.index(order[i]) {
			t.Fatalf("%s after %s: %v", order[i-1], order[i], calls)
		}
	}
	st := run.a.Status()
	if st.Margin < r.cfg.Interruption.SafetyMargin.D() {
		t.Fatalf("plan ended %s before the termination, past the safety margin", st.Margin)
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
	// Jenkins stays registered and answering while the builds run.
	if dereg, quiet := r.j.index("deregister"), r.j.index("quiet-down"); dereg < quiet {
		t.Fatalf("deregistered before the quiet-down: %v", calls)
	}
	done := r.eventsOf(status.EventPlanDone)
	if len(done) != 1 || done[0].Report == nil || done[0].Report.Margin <= 0 {
		t.Fatalf("plan_done event = %+v", done)
	}
}

func TestFailedStepDoesNotBlockLaterSteps(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.targets.deregErr = errors.New("TargetGroupNotFound")
	serving(t, r, 20*time.Second)
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
	t.Parallel()
	testenv.SkipShort(t, "waits several seconds of the plan's clock")
	r := newRig(t.TempDir(), t.TempDir())
	serving(t, r, 20*time.Second)
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

// A stop signal runs the plan and ends the agent with success once it is done (systemd
// would otherwise wait TimeoutStopSec and SIGKILL it on every stop); leave-running exits
// at once and leaves Jenkins to the next agent.
func TestStopSignalRunsThePlanAndEndsTheAgent(t *testing.T) {
	t.Parallel()
	for _, policy := range []config.StopSignalPolicy{config.StopShutdown, config.StopLeaveRunning} {
		t.Run(string(policy), func(t *testing.T) {
			r := newRig(t.TempDir(), t.TempDir())
			r.cfg.Interruption.OnStopSignal = policy
			run := serving(t, r, 20*time.Second)
			run.a.Stop("terminated")
			if err := run.exited(t, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			if policy == config.StopLeaveRunning {
				if r.j.has("container-stop") || r.j.has("lease-release") {
					t.Fatalf("leave-running stopped Jenkins: %v", r.j.list())
				}
				return
			}
			if !r.j.has("container-stop") || !r.j.has("lease-release") || !r.j.has("unmount") {
				t.Fatalf("signal plan incomplete: %v", r.j.list())
			}
			if r.j.has("request-replacement") {
				t.Errorf("a stop signal asked the group for a replacement: %v", r.j.list())
			}
		})
	}
}

func TestSecondSignalStopsWaitingForBuilds(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.jenkins.builds = []status.Build{build("forever", 1, false)}
	run := serving(t, r, 60*time.Second)
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
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	run := serving(t, r, 60*time.Second)
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

// An executor list that cannot be read is unknown, never "no builds": the drain keeps
// waiting until it can be read, and the failed reads are counted.
func TestUnreadableBuildListIsNotNoBuilds(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.jenkins.builds = []status.Build{build("nightly", 7, false)}
	run := serving(t, r, 30*time.Second)
	r.jenkins.set(func(f *fakeJenkins) {
		f.faults = append(f.faults, fakeFault{method: "RunningBuilds", kind: "500", left: 3})
		f.until = time.Now() // the build is done, but the list cannot be read for 3 s
	})
	r.watch.in <- spotNotice(25 * time.Second)
	if err := r.waitPhase(status.PhaseStopped, 40*time.Second); err != nil {
		t.Fatal(err)
	}
	st := run.a.Status()
	var drain status.Event
	for _, ev := range st.Steps {
		if ev.Step == status.StepDrain && ev.Done {
			drain = ev
		}
	}
	if drain.Duration < 2*time.Second {
		t.Fatalf("the drain ended after %s although the build list could not be read", drain.Duration)
	}
	if st.BuildListFailures < 3 {
		t.Errorf("failed reads counted %d, want 3", st.BuildListFailures)
	}
}

// Pipelines parked in the queue by the quiet-down cannot finish: the drain does not
// wait for them.
func TestParkedPipelinesAreNotWaitedFor(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	parked := build("deploy", 3, true)
	parked.Parked = true
	r.jenkins.builds = []status.Build{parked}
	run := serving(t, r, 60*time.Second)
	r.watch.in <- spotNotice(60 * time.Second)
	if err := r.waitPhase(status.PhaseStopped, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, ev := range run.a.Status().Steps {
		if ev.Step == status.StepDrain && ev.Done && ev.Duration > 5*time.Second {
			t.Fatalf("the drain waited %s for a parked Pipeline", ev.Duration)
		}
	}
}

func TestDrillRunsThePlanAndStreamsIt(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	run := serving(t, r, 20*time.Second)
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
	if len(steps) < 5 || r.j.has("lifecycle-complete") || r.j.has("request-replacement") {
		t.Fatalf("drill steps %v, calls %v (a drill neither completes a lifecycle action nor asks for a replacement)", steps, r.j.list())
	}
	if err := run.a.Drill(ctx, 20*time.Second, nil); err == nil {
		t.Fatal("a second drill after the plan was accepted")
	}
}

// After a plan started by a notice the agent stays up for status and metrics: a late
// notice does not end it, a stop signal does.
func TestAfterANoticePlanOnlyAStopSignalEndsTheAgent(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	run := serving(t, r, 20*time.Second)
	r.watch.in <- spotNotice(15 * time.Second)
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	r.watch.in <- instance.Notice{Kind: instance.KindRebalance, Seen: time.Now()}
	select {
	case err := <-run.done:
		t.Fatalf("a late notice ended the agent: %v", err)
	case <-time.After(2 * time.Second):
	}
	if got := len(run.a.Status().Notices); got != 2 {
		t.Errorf("late notice not recorded: %d notices", got)
	}
	run.a.Stop("terminated")
	if err := run.exited(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// The plan ends before deadline − safety_margin even with a Docker daemon that does not
// answer the stop.
func TestPlanDoesNotOverrunWithAHungDaemon(t *testing.T) {
	t.Parallel()
	testenv.SkipShort(t, "waits several seconds of the plan's clock")
	r := newRig(t.TempDir(), t.TempDir())
	r.cfg.Jenkins.StopGrace = config.Duration(5 * time.Second)
	deps := r.deps()
	deps.Runtime = hungStop{r.rt}
	a, err := New(Options{Config: r.cfg, Deps: deps, BootID: "boot-1", OnEvent: func(ev status.Event) {
		r.mu.Lock()
		r.seen = append(r.seen, ev)
		r.mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() { _ = a.Run(ctx) }()
	if err := r.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	n := spotNotice(14 * time.Second)
	r.watch.in <- n
	if err := r.waitPhase(status.PhaseStopped, 40*time.Second); err != nil {
		t.Fatal(err)
	}
	if m := a.Status().Margin; m < r.cfg.Interruption.SafetyMargin.D() {
		t.Fatalf("the plan overran: %s left, safety margin %s", m, r.cfg.Interruption.SafetyMargin.D())
	}
}

// hungStop is a runtime whose daemon takes every stop, kill and inspect until the
// caller gives up.
type hungStop struct{ *fakeRuntime }

func (h hungStop) Stop(ctx context.Context, _ time.Duration) error {
	<-ctx.Done()
	return ctx.Err()
}

func (h hungStop) Kill(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}
