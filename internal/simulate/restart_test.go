package simulate

import (
	"context"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins/jenkinstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// An agent restarted on the same instance (a crash, an upgrade) adopts its own lease and
// the running Jenkins container: Jenkins is neither stopped nor started again.
func TestRestartedAgentAdoptsLeaseAndJenkins(t *testing.T) {
	testenv.SkipShort(t, "needs Docker and a whole boot")
	t.Parallel()
	mode, exe := runtimeFor(t)
	testenv.Require(t, mode == "always", "adopting a running container needs Docker (the in-process stand-in dies with its agent)")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := testenv.NewLog(t, "timeline and agent logs")
	s, err := newSim(ctx, options(log, mode, exe))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)

	first, err := s.launch(ctx, "A", idA, s.home)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.cleanup(first) })
	if err := first.waitPhase(ctx, status.PhaseServing, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	before := homeState(t, s.home)
	held := peekLease(t, s.home)

	// The agent stops without its plan, as under SIGKILL of the agent alone.
	first.cancel()
	select {
	case err := <-first.done:
		first.done <- err
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not stop")
	}
	if up, err := first.runtime.Running(ctx); err != nil || !up {
		t.Fatalf("Jenkins stopped with its agent (running %v, err %v)", up, err)
	}

	second, err := s.launch(ctx, "A", idA, s.home)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.cleanup(second) })
	if err := second.waitPhase(ctx, status.PhaseServing, time.Minute); err != nil {
		t.Fatal(err)
	}
	after := homeState(t, s.home)
	if after.Instance != before.Instance || !after.Started.Equal(before.Started) || !after.Stopped.IsZero() {
		t.Fatalf("Jenkins was restarted: before %+v, after %+v", before, after)
	}
	if now := peekLease(t, s.home); now.Holder != idA || now.Epoch != held.Epoch || !now.Held {
		t.Fatalf("lease not adopted: was %+v, now %+v", held, now)
	}
}

func homeState(t *testing.T, home string) jenkinstest.HomeState {
	t.Helper()
	st, err := jenkinstest.ReadHomeState(home)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func peekLease(t *testing.T, home string) status.LeaseState {
	t.Helper()
	l, err := lease.New(lease.Options{Dir: home, HolderID: "observer"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := l.Peek(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
