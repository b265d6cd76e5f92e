package simulate

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// TestFailoverReplacementAtNotice rehearses the failover in both orders, side by side.
// Replacement at the notice: the agent asks the group for the replacement at once
// (DetachInstances, keeping the desired capacity), stays registered and answering
// through the load balancer until the replacement waits ready on the lease, and hands
// over to it; Jenkins is unreachable for less time than when the group replaces the
// instance only once it is gone. Two Jenkins never run at once in either.
func TestFailoverReplacementAtNotice(t *testing.T) {
	testenv.SkipShort(t, "two whole failover rehearsals, in Docker when it answers")
	mode, exe := runtimeFor(t)
	opts := options(testenv.NewLog(t, "timeline and agent logs"), mode, exe)
	opts.Failover, opts.Compare = true, true
	at := rehearse(t, opts)
	after := at.Compared
	if after == nil {
		t.Fatal("Compare returned no run in the other order")
	}
	if at.Order != OrderAtNotice || after.Order != OrderAfterTermination {
		t.Fatalf("orders %q and %q, want %q then %q", at.Order, after.Order, OrderAtNotice, OrderAfterTermination)
	}
	checkSummary(t, at, opts)

	// Asked for at the notice, keeping the desired capacity: the group launches at once.
	if at.ReplacementAsked <= 0 || !slices.Equal(at.detachParams, []string{"false"}) {
		t.Errorf("DetachInstances %s after the notice with ShouldDecrementDesiredCapacity %q, want one call after the notice with false",
			at.ReplacementAsked, at.detachParams)
	}
	if at.ReplacementAsked >= at.HandoverBegan || at.ReplacementUp >= at.HandoverBegan {
		t.Errorf("replacement asked for %s and up %s after the notice, the handover began %s after it: want both before",
			at.ReplacementAsked, at.ReplacementUp, at.HandoverBegan)
	}
	if !at.SuccessorInWindow() {
		t.Errorf("A saw the successor ready %s after the notice and began the handover at %s: want ready first", at.SuccessorReady, at.HandoverBegan)
	}

	// A stayed registered and answering through the load balancer from its registration
	// again after the detach until the successor waited ready on the lease.
	registeredAgain := stepDone(t, at.eventsA, status.StepRequestReplacement)
	ready := successorReady(t, at.eventsA, at.instanceB)
	checked := 0
	for _, sm := range at.reach {
		if sm.At.Before(registeredAgain) || !sm.At.Before(ready) {
			continue
		}
		checked++
		if !sm.registered(instanceA) || !sm.answered(instanceA) || !sm.through(instanceA) {
			t.Errorf("at %s, between A's registration again (%s) and the successor ready (%s), the load balancer had targets %+v: want A registered, answering and routed to",
				sm.At.Format(time.StampMilli), registeredAgain.Format(time.StampMilli), ready.Format(time.StampMilli), sm.Targets)
			break
		}
	}
	if checked == 0 {
		t.Errorf("no round of the load balancer sampler between A's registration again and the successor ready (%d rounds)", len(at.reach))
	}

	// The order without the request: no detach, the group launches only once A is gone.
	if after.ReplacementAsked != 0 || len(after.detachParams) > 0 {
		t.Errorf("DetachInstances in the order without request_replacement: %s after the notice", after.ReplacementAsked)
	}
	if after.ReplacementUp < opts.Budget {
		t.Errorf("replacement up %s after the notice without request_replacement, before the termination at %s", after.ReplacementUp, opts.Budget)
	}
	if after.Lifecycle != "CONTINUE" {
		t.Errorf("lifecycle action in the order without request_replacement %q, want CONTINUE (the group started terminating A)", after.Lifecycle)
	}

	for _, s := range []*Summary{at, after} {
		if s.BothRanAtOnce {
			t.Errorf("%s: both instances' Jenkins were seen running at the same time", s.Order)
		}
		if s.Unreachable <= 0 || s.SuccessorStart <= 0 {
			t.Errorf("%s: unreachable %s, successor's start %s: want both measured", s.Order, s.Unreachable, s.SuccessorStart)
		}
	}
	// The point of the order; the figures themselves go to the benchmark.
	if at.Unreachable >= after.Unreachable {
		t.Errorf("Jenkins unreachable %s with the replacement at the notice, not less than the %s with the replacement after termination",
			at.Unreachable, after.Unreachable)
	}
	t.Logf("unreachable %s (longest %s) at the notice vs %s (longest %s) after termination; successor's start %s and %s",
		ms(at.Unreachable), ms(at.LongestGap), ms(after.Unreachable), ms(after.LongestGap), ms(at.SuccessorStart), ms(after.SuccessorStart))
}

// stepDone is when the step first ended without error on the timeline.
func stepDone(t *testing.T, evs []status.Event, st status.Step) time.Time {
	t.Helper()
	for _, ev := range evs {
		if ev.Step == st && ev.Done {
			if ev.Err != "" {
				t.Fatalf("step %s failed: %s", st, ev.Err)
			}
			return ev.At
		}
	}
	t.Fatalf("step %s never ended on the timeline", st)
	return time.Time{}
}

// successorReady is when the holder first saw the successor's announcement ready.
func successorReady(t *testing.T, evs []status.Event, id string) time.Time {
	t.Helper()
	for _, ev := range evs {
		if ev.Kind == status.EventSuccessor && ev.Successor != nil && ev.Successor.InstanceID == id && ev.Successor.Ready {
			return ev.At
		}
	}
	t.Fatalf("the holder never saw %s announce itself ready", id)
	return time.Time{}
}

func TestFailoverALBRoute(t *testing.T) {
	for _, tc := range []struct {
		name string
		ts   []targetSeen
		want []string
	}{
		{"none registered", nil, nil},
		{"healthy and answering", []targetSeen{{"a", awstest.StateHealthy, true}}, []string{"a"}},
		{"healthy, not answering", []targetSeen{{"a", awstest.StateHealthy, false}}, nil},
		{"only healthy ones get requests", []targetSeen{{"a", awstest.StateHealthy, false}, {"b", awstest.StateInitial, true}}, nil},
		{"fail open: none healthy", []targetSeen{{"a", awstest.StateUnhealthy, false}, {"b", awstest.StateInitial, true}}, []string{"b"}},
		{"fail open: unhealthy but answering", []targetSeen{{"b", awstest.StateUnhealthy, true}}, []string{"b"}},
		{"healthy ones answering", []targetSeen{{"a", awstest.StateHealthy, true}, {"b", awstest.StateHealthy, true}, {"c", awstest.StateUnhealthy, true}}, []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := albRoute(tc.ts); !slices.Equal(got, tc.want) {
				t.Errorf("albRoute(%+v) = %q, want %q", tc.ts, got, tc.want)
			}
		})
	}
	for _, st := range []string{awstest.StateDraining, awstest.StateUnused, ""} {
		if registeredState(st) {
			t.Errorf("registeredState(%q) = true: the load balancer does not route to it", st)
		}
	}
	for _, st := range []string{awstest.StateInitial, awstest.StateHealthy, awstest.StateUnhealthy} {
		if !registeredState(st) {
			t.Errorf("registeredState(%q) = false", st)
		}
	}
}

func TestFailoverOutageMeasure(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	up := func(ms int, via string) reachSample {
		return reachSample{At: at(ms), Reachable: true, Via: []string{via}}
	}
	down := func(ms int) reachSample { return reachSample{At: at(ms)} }
	for _, tc := range []struct {
		name           string
		samples        []reachSample
		notice         time.Time
		total, longest time.Duration
		gaps           int
		end            time.Time
	}{
		{
			name:    "one gap, then the successor",
			samples: []reachSample{up(0, "a"), up(50, "a"), down(100), down(150), down(200), up(250, "b"), up(300, "b")},
			notice:  at(0), total: 150 * time.Millisecond, longest: 150 * time.Millisecond, gaps: 1, end: at(250),
		},
		{
			name:    "a short gap at the detach and the handover gap",
			samples: []reachSample{up(0, "a"), down(50), up(100, "a"), up(150, "a"), down(200), down(250), down(300), up(350, "b")},
			notice:  at(0), total: 200 * time.Millisecond, longest: 150 * time.Millisecond, gaps: 2, end: at(350),
		},
		{
			name:    "before the notice does not count",
			samples: []reachSample{down(0), down(50), up(100, "a"), down(150), up(200, "b")},
			notice:  at(100), total: 50 * time.Millisecond, longest: 50 * time.Millisecond, gaps: 1, end: at(200),
		},
		{
			name:    "the successor never answered: counted to the last round",
			samples: []reachSample{up(0, "a"), down(50), down(100), down(150)},
			notice:  at(0), total: 100 * time.Millisecond, longest: 100 * time.Millisecond, gaps: 1,
		},
		{
			name:    "after the successor answered nothing counts",
			samples: []reachSample{up(0, "a"), up(50, "b"), down(100), down(150), up(200, "b")},
			notice:  at(0), end: at(50),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := measureOutage(tc.samples, tc.notice, "b")
			if o.Total != tc.total || o.Longest != tc.longest || len(o.Gaps) != tc.gaps || !o.End.Equal(tc.end) {
				t.Errorf("measureOutage = total %s longest %s gaps %d end %s, want %s %s %d %s",
					o.Total, o.Longest, len(o.Gaps), o.End.Format(time.StampMilli), tc.total, tc.longest, tc.gaps, tc.end.Format(time.StampMilli))
			}
		})
	}
}

// The Auto Scaling group of a rehearsal launches the replacement itself and an agent
// boots on it (nothing is launched by hand), and the target group's health checks ask
// each instance's own Jenkins: the replacement, waiting on the lease with no Jenkins
// running, goes unhealthy.
func TestFailoverGroupLaunchesAndChecks(t *testing.T) {
	testenv.SkipShort(t, "boots two agents")
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opts := options(testenv.NewLog(t, "timeline and agent logs"), "never", "")
	opts.Failover = true
	s, err := newSim(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	s.mu.Lock()
	s.runCtx = ctx
	s.mu.Unlock()
	t.Cleanup(s.cleanupAll)
	a, err := s.launch(ctx, "A", instanceA, s.home)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.waitPhase(ctx, status.PhaseServing, time.Minute); err != nil {
		t.Fatal(err)
	}

	// The group replaces A once it is gone in the double (A's agent, unaware, serves on).
	s.aws.SetLaunchDelay(0)
	s.aws.TerminateInstance(instanceA)
	var b *host
	select {
	case b = <-s.arrivals:
	case <-ctx.Done():
		t.Fatal("the group launched no replacement, or no agent booted on it")
	}
	if b.name != "B" || b.id.InstanceID == instanceA || s.aws.GroupInstances(GroupName)[b.id.InstanceID] != "InService" {
		t.Fatalf("booted %s (%s), group instances %v: want B on the group's new instance", b.name, b.id.InstanceID, s.aws.GroupInstances(GroupName))
	}
	if err := b.waitPhase(ctx, status.PhaseWaitingForLease, time.Minute); err != nil {
		t.Fatalf("B did not wait on A's lease: %v", err)
	}
	if !s.answersLogin(instanceA) || s.answersLogin(b.id.InstanceID) {
		t.Errorf("GET /login answered: A %v, B %v; want A's Jenkins only", s.answersLogin(instanceA), s.answersLogin(b.id.InstanceID))
	}
	for range healthThreshold {
		s.aws.CheckHealth()
	}
	if st := s.aws.TargetState(TargetGroupARN, b.id.InstanceID); st != awstest.StateUnhealthy {
		t.Errorf("B's target is %s after %d failed health checks, want unhealthy", st, healthThreshold)
	}
}
