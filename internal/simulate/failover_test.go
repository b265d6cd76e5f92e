package simulate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/clock"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// The fault scenarios of the single-writer lease. Each starts A serving and B waiting on
// the lease, then ends A in one way; the sampler watches both runtimes throughout, and
// two Jenkins seen running at once fails the scenario whatever else happened.

const (
	idA = "i-0aaaaaaaaaaaaaaa1"
	idB = "i-0bbbbbbbbbbbbbbb2"
	// skew is the lease's allowance for clock error: a successor waits until the
	// expiry plus this.
	skew = lease.DefaultClockSkew
)

func TestFailoverAfterKill(t *testing.T) {
	testenv.SkipShort(t, "a failover of two simulated instances")
	t.Parallel()
	mode, exe := runtimeFor(t)
	f := killScenario(t, mode, exe)
	t.Logf("A killed with %s of its lease left; B's container start call came %s after the kill (%s past the remaining ttl; the allowance is %s)",
		ms(f.Remaining), ms(f.Wait), ms(f.Wait-f.Remaining), skew)
}

func TestFailoverAfterBlockedRenewals(t *testing.T) {
	testenv.SkipShort(t, "a failover of two simulated instances")
	t.Parallel()
	testenv.Root(t, "this scenario bind-mounts the home")
	mode, exe := runtimeFor(t)
	f := fenceScenario(t, mode, exe)
	t.Logf("renewals blocked → A killed its Jenkins after %s; that was %s before its lease lapsed; B's container start call came %s after the fence",
		ms(f.BlockedToFence), ms(f.FenceBeforeExpiry), ms(f.FenceToStart))
}

// TestFailoverAfterFailedStop: A's runtime can neither stop nor kill Jenkins during the
// plan (a hung Docker daemon). A's Jenkins may still run, so A must not let its lease
// lapse while it lives; B must not start.
func TestFailoverAfterFailedStop(t *testing.T) {
	testenv.SkipShort(t, "a failover of two simulated instances")
	t.Parallel()
	mode, exe := runtimeFor(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := newPair(t, ctx, mode, exe, func(_ testing.TB, s *sim) string {
		s.wrapRuntime = func(name string, rt agent.Runtime) agent.Runtime {
			if name == "A" {
				return hungRuntime{rt}
			}
			return rt
		}
		return s.home
	})
	p.s.notice(p.a)
	if err := p.a.waitPhase(ctx, status.PhaseStopped, p.s.opts.Budget+time.Minute); err != nil {
		t.Fatalf("A's plan did not finish: %v", err)
	}
	// Well past the lease's expiry and allowance had A stopped renewing.
	if !clock.Sleep(ctx, leaseTTL+skew+3*time.Second) {
		t.Fatal(ctx.Err())
	}
	rep := p.sampler.stop()
	if rep.Both {
		t.Errorf("TWO JENKINS RAN AT ONCE: the sampler saw A's and B's running at %s", rep.FirstBoth.Format(time.StampMilli))
	}
	if ph := p.b.agent.Status().Phase; ph != status.PhaseWaitingForLease {
		t.Errorf("B is %s while A's Jenkins may still run; want it still waiting for the lease", ph)
	}
}

// hungRuntime is a runtime whose daemon no longer answers stop or kill requests.
type hungRuntime struct{ agent.Runtime }

func (hungRuntime) Stop(context.Context, time.Duration) error {
	return errors.New("the Docker daemon does not answer")
}

func (hungRuntime) Kill(context.Context) error {
	return errors.New("the Docker daemon does not answer")
}

func TestFailoverAfterNotice(t *testing.T) {
	testenv.SkipShort(t, "a failover of two simulated instances")
	t.Parallel()
	mode, exe := runtimeFor(t)
	f := cleanScenario(t, mode, exe)
	t.Logf("A released → B's container start call %s; Jenkins down %s (A's stop began → B answers)", ms(f.Handover), ms(f.Downtime))
}

// pair is a failover rehearsal driven step by step by a test: A serving, B waiting on
// the lease, and the sampler watching both runtimes from then on.
type pair struct {
	s       *sim
	log     *testenv.Buffer
	a, b    *host
	sampler *sampler
}

// newPair sets up a rehearsal and starts A, then B. setup, when not nil, adjusts the
// rehearsal first and returns where A sees the home (B sees the shared directory).
func newPair(t testing.TB, ctx context.Context, mode, exe string, setup func(t testing.TB, s *sim) string) *pair {
	t.Helper()
	log := testenv.NewLog(t, "timeline and agent logs")
	s, err := newSim(ctx, options(log, mode, exe))
	if err != nil {
		t.Fatalf("set up the rehearsal: %v", err)
	}
	t.Cleanup(s.close)
	home := s.home
	if setup != nil {
		home = setup(t, s)
	}
	p := &pair{s: s, log: log}
	p.a = p.launch(t, ctx, "A", idA, home)
	if err := p.a.waitPhase(ctx, status.PhaseServing, 2*time.Minute); err != nil {
		t.Fatalf("A did not reach serving: %v", err)
	}
	p.b = p.launch(t, ctx, "B", idB, s.home)
	if err := p.b.waitPhase(ctx, status.PhaseWaitingForLease, time.Minute); err != nil {
		t.Fatalf("B did not wait for the lease: %v", err)
	}
	p.sampler = startSampler(ctx, p.a, p.b)
	t.Cleanup(func() { p.sampler.stop() })
	return p
}

func (p *pair) launch(t testing.TB, ctx context.Context, name, id, home string) *host {
	t.Helper()
	in, err := p.s.launch(ctx, name, id, home)
	if err != nil {
		t.Fatalf("launch %s: %v", name, err)
	}
	t.Cleanup(func() { p.s.cleanup(in) })
	return in
}

// takeover waits for B to serve and checks what the sampler saw: B's Jenkins ran, and
// only after A's was last seen running.
func (p *pair) takeover(t testing.TB, ctx context.Context) {
	t.Helper()
	if err := p.b.waitPhase(ctx, status.PhaseServing, time.Minute); err != nil {
		t.Fatalf("B did not take over: %v", err)
	}
	rep := p.sampler.stop()
	if rep.Both {
		t.Errorf("TWO JENKINS RAN AT ONCE: the sampler saw A's and B's running at %s", rep.FirstBoth.Format(time.StampMilli))
	}
	lastA, firstB := rep.LastRunning[0], rep.FirstRunning[1]
	switch {
	case firstB.IsZero():
		t.Errorf("the sampler never saw B's Jenkins running (%d rounds, %d errors)", rep.Rounds, rep.Errors)
	case !lastA.IsZero() && !lastA.Before(firstB):
		t.Errorf("A's Jenkins was last seen running at %s, not before B's was first seen at %s",
			lastA.Format(time.StampMilli), firstB.Format(time.StampMilli))
	}
}

// containerStartCall is when B's agent called the runtime to start Jenkins.
func containerStartCall(t testing.TB, in *host) time.Time {
	t.Helper()
	for _, ev := range in.eventsCopy() {
		if ev.Step == status.StepContainerStart && !ev.Done {
			return ev.At
		}
	}
	t.Fatalf("%s never called the runtime to start Jenkins", in.name)
	return time.Time{}
}

// killFigures measure a takeover after the holder died without releasing.
type killFigures struct {
	Remaining time.Duration // A's lease left at the kill
	Wait      time.Duration // the kill → B's container start call
}

// killScenario: A dies at once (as under SIGKILL of the whole instance): its renewals
// stop, its agent stops without running the plan, its Jenkins is killed. B must see
// the record A last wrote unchanged for the ttl plus the allowance, on its own clock,
// and then take over: never before A's expiry plus the allowance.
func killScenario(t testing.TB, mode, exe string) killFigures {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := newPair(t, ctx, mode, exe, nil)
	killed := crash(t, p.a)
	p.takeover(t, ctx)

	seen := p.b.lease.observed()
	start := containerStartCall(t, p.b)
	f := killFigures{Remaining: seen.WaitedOn.Expires.Sub(killed), Wait: start.Sub(killed)}
	if seen.WaitedOn.Holder != idA {
		t.Fatalf("B last waited on a lease held by %q, want A (%s)", seen.WaitedOn.Holder, idA)
	}
	if f.Remaining <= 0 {
		t.Fatalf("A's lease had already expired at the kill (%s): the scenario tested nothing", f.Remaining)
	}
	// Never before the expiry: the lease rule, on one clock, so no timing enters here.
	if lapse := seen.WaitedOn.Expires.Add(skew); seen.Acquired.Before(lapse) || start.Before(lapse) {
		t.Errorf("B took the lease at %s and called start at %s, before A's lease lapsed at %s (expiry %s + %s allowance)",
			seen.Acquired.Format(time.StampMilli), start.Format(time.StampMilli), lapse.Format(time.StampMilli),
			seen.WaitedOn.Expires.Format(time.StampMilli), skew)
	}
	// B trusts no clock but its own: it takes the record once it has seen it unchanged
	// for the ttl plus the allowance, counted from its first sight of A's last renewal,
	// which came up to ttl/3 after that renewal when B arrived between two. 2 s cover
	// B's poll and the steps before the start call.
	if over := f.Wait - f.Remaining; over >= leaseTTL/3+skew+2*time.Second {
		t.Errorf("B started %s after the kill, %s past the remaining ttl; want under ttl/3 + the %s allowance + 2s", f.Wait, over, skew)
	}
	return f
}

// crash ends an instance abruptly, as a SIGKILL of the whole instance would: renewals
// stop, the agent stops without running its plan, and its Jenkins is killed. It returns
// the moment renewals had stopped.
func crash(t testing.TB, in *host) time.Time {
	t.Helper()
	in.lease.crash(10 * time.Second)
	at := time.Now()
	in.cancel()
	select {
	case err := <-in.done:
		in.done <- err // for cleanup
	case <-time.After(30 * time.Second):
		t.Fatalf("%s's agent did not stop within 30s of its context ending", in.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := in.runtime.Kill(ctx); err != nil {
		t.Fatalf("kill %s's Jenkins: %v", in.name, err)
	}
	if up, err := in.runtime.Running(ctx); err != nil || up {
		t.Fatalf("%s's Jenkins still running after the kill (running %v, err %v)", in.name, up, err)
	}
	return at
}

// fenceFigures measure a holder's self-fencing when it cannot renew.
type fenceFigures struct {
	BlockedToFence    time.Duration // A's home read-only → A's fence began
	FenceBeforeExpiry time.Duration // A's fence done → its lease's expiry
	FenceToStart      time.Duration // A's fence done → B's container start call
}

// fenceScenario: A's view of the home turns read-only while B's stays writable, so A
// can no longer renew but still sees the record. A must kill its own Jenkins before its
// lease can lapse; B must start Jenkins only after that; A must then find the lease
// taken and stop without starting Jenkins again.
func fenceScenario(t testing.TB, mode, exe string) fenceFigures {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var view string
	p := newPair(t, ctx, mode, exe, func(t testing.TB, s *sim) string {
		view = bindView(t, s.home, filepath.Join(s.opts.WorkDir, "a-view"))
		return view
	})
	if err := unix.Mount("", view, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount A's view %s read-only: %v", view, err)
	}
	blocked := time.Now()
	p.takeover(t, ctx)

	seenA, seenB := p.a.lease.observed(), p.b.lease.observed()
	start := containerStartCall(t, p.b)
	if len(seenA.Fences) == 0 {
		t.Fatal("A never fenced: its Jenkins kept running without a renewable lease")
	}
	fence := seenA.Fences[0]
	if fence.Err != nil {
		t.Errorf("A's fence failed: %v", fence.Err)
	}
	if seenB.WaitedOn.Holder != idA {
		t.Fatalf("B last waited on a lease held by %q, want A (%s)", seenB.WaitedOn.Holder, idA)
	}
	f := fenceFigures{
		BlockedToFence:    fence.Began.Sub(blocked),
		FenceBeforeExpiry: seenB.WaitedOn.Expires.Sub(fence.Ended),
		FenceToStart:      start.Sub(fence.Ended),
	}
	// The point of the fence: A's Jenkins is gone before anyone may take the lease.
	if !fence.Ended.Before(seenB.WaitedOn.Expires) {
		t.Errorf("A's fence ended at %s, not before its lease expired at %s",
			fence.Ended.Format(time.StampMilli), seenB.WaitedOn.Expires.Format(time.StampMilli))
	}
	if !start.After(fence.Ended) || seenB.Acquired.Before(seenB.WaitedOn.Expires.Add(skew)) {
		t.Errorf("B took the lease at %s and called start at %s; A's fence ended at %s and its lease lapsed at %s",
			seenB.Acquired.Format(time.StampMilli), start.Format(time.StampMilli), fence.Ended.Format(time.StampMilli),
			seenB.WaitedOn.Expires.Add(skew).Format(time.StampMilli))
	}

	// A reads the record through its read-only view, finds B's tenure, runs its plan
	// and ends, without starting Jenkins again.
	select {
	case err := <-p.a.done:
		p.a.done <- err
		if err == nil || !strings.Contains(err.Error(), "lease lost") {
			t.Errorf("A's agent ended with %v, want a lease-lost error", err)
		}
		if ph := p.a.agent.Status().Phase; ph != status.PhaseStopped {
			t.Errorf("A's agent ended in phase %s, want %s", ph, status.PhaseStopped)
		}
	case <-time.After(time.Minute):
		t.Errorf("A's agent did not end within a minute of B's takeover; it is %s", p.a.agent.Status().Phase)
	}
	if up, err := p.a.runtime.Running(ctx); err != nil || up {
		t.Errorf("A's Jenkins after the takeover: running %v (err %v), want stopped", up, err)
	}
	return f
}

// bindView makes view a second path onto home, as a bind mount that the test can turn
// read-only for one instance alone. It is in this (the host's) mount namespace, where
// dockerd resolves the containers' bind mounts too. Cleanup unmounts it, never lazily:
// a view still in use is an error to see, not to hide.
func bindView(t testing.TB, home, view string) string {
	t.Helper()
	if err := os.Mkdir(view, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(home, view, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s onto %s: %v", home, view, err)
	}
	t.Cleanup(func() {
		var err error
		for range 50 {
			if err = unix.Unmount(view, 0); err == nil || errors.Is(err, unix.EINVAL) {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Errorf("unmount %s: %v; unmount it by hand (umount %s)", view, err, view)
	})
	return view
}

// cleanFigures measure a clean handover.
type cleanFigures struct {
	Handover time.Duration // A's lease release → B's container start call
	Downtime time.Duration // A's container stop began → B's Jenkins answered
}

// cleanScenario: the Spot notice reaches A, which drains, stops Jenkins and releases the
// lease; B must start Jenkins within 2 s of the release, and not before it.
func cleanScenario(t testing.TB, mode, exe string) cleanFigures {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := newPair(t, ctx, mode, exe, nil)
	p.s.notice(p.a)
	if err := p.a.waitPhase(ctx, status.PhaseStopped, p.s.opts.Budget+time.Minute); err != nil {
		t.Fatalf("A's plan did not finish: %v", err)
	}
	p.takeover(t, ctx)

	var released, stopped, ready status.Event
	for _, ev := range p.a.eventsCopy() {
		switch {
		case ev.Step == status.StepLeaseRelease && ev.Done:
			released = ev
		case ev.Step == status.StepContainerStop && ev.Done:
			stopped = ev
		}
	}
	for _, ev := range p.b.eventsCopy() {
		if ev.Step == status.StepJenkinsReady && ev.Done && ready.At.IsZero() {
			ready = ev
		}
	}
	if released.At.IsZero() || released.Err != "" {
		t.Fatalf("A did not release the lease cleanly: %+v", released)
	}
	seen := p.b.lease.observed()
	start := containerStartCall(t, p.b)
	f := cleanFigures{Handover: start.Sub(released.At), Downtime: ready.At.Sub(stopped.At.Add(-stopped.Duration))}
	if seen.WaitedOn.Holder != idA || seen.Acquired.Before(released.At.Add(-released.Duration)) {
		t.Errorf("B took the lease at %s after waiting on %q; A's release began at %s",
			seen.Acquired.Format(time.StampMilli), seen.WaitedOn.Holder, released.At.Add(-released.Duration).Format(time.StampMilli))
	}
	if f.Handover <= 0 || f.Handover >= 2*time.Second {
		t.Errorf("handover (A released → B's container start call) %s, want within (0, 2s)", f.Handover)
	}
	return f
}
