package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// on_rebalance: notify records the recommendation; drain hands over only to a successor
// waiting ready on the lease, and never leaves Jenkins down with nobody to take over.
func TestRebalancePolicy(t *testing.T) {
	t.Parallel()
	testenv.SkipShort(t, "waits several seconds of the plan's clock")
	for _, policy := range []config.NoticePolicy{config.PolicyNotify, config.PolicyDrain} {
		t.Run(string(policy), func(t *testing.T) {
			r := newRig(t.TempDir(), t.TempDir())
			r.cfg.Interruption.OnRebalance = policy
			run := serving(t, r, 20*time.Second)
			r.watch.in <- instance.Notice{Kind: instance.KindRebalance, Seen: time.Now()}
			testenv.Eventually(t, "the recommendation recorded", func() bool { return len(run.a.Status().Notices) == 1 })
			if err := r.waitPhase(status.PhaseDraining, 3*time.Second); err == nil {
				t.Fatalf("%s drained with no successor waiting: %v", policy, r.j.list())
			}
			r.lease.announce(true)
			within := 20 * time.Second
			if policy == config.PolicyNotify {
				within = 4 * time.Second
			}
			err := r.waitPhase(status.PhaseStopped, within)
			if policy == config.PolicyNotify {
				if err == nil {
					t.Fatal("notify handed over")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !r.j.has("lease-release") {
				t.Fatalf("no handover: %v", r.j.list())
			}
		})
	}
}

// A scheduled event two weeks away is worked to its NotBefore, not to "seen + 2
// minutes": Jenkins keeps serving.
func TestScheduledEventFarAwayDoesNotDrainNow(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.cfg.Interruption.OnScheduledEvent = config.PolicyDrain
	run := serving(t, r, 20*time.Second)
	r.watch.in <- instance.Notice{
		Kind: instance.KindScheduledEvent, Seen: time.Now(), Time: time.Now().Add(14 * 24 * time.Hour),
		EventID: "instance-event-0d59937288b749b32", Code: "instance-stop",
	}
	testenv.Eventually(t, "the event pending in status", func() bool { return run.a.Status().Pending != "" })
	if err := r.waitPhase(status.PhaseDraining, 3*time.Second); err == nil {
		t.Fatalf("an event two weeks away drained Jenkins: %v", r.j.list())
	}
	if !strings.Contains(run.a.Status().Pending, "instance-stop") {
		t.Errorf("pending = %q", run.a.Status().Pending)
	}
}

// A scheduled stop inside the lead time asks for the replacement, serves until the
// successor is ready, and hands over; after the reboot the same event, still listed,
// is not acted on again.
func TestScheduledStopHandsOverAndIsRememberedAcrossReboots(t *testing.T) {
	t.Parallel()
	testenv.SkipShort(t, "waits several seconds of the plan's clock")
	home, state := t.TempDir(), t.TempDir()
	r := newRig(home, state)
	r.cfg.Interruption.OnScheduledEvent = config.PolicyDrain
	r.targets.inGroup = true
	run := serving(t, r, 20*time.Second)
	ev := instance.Notice{
		Kind: instance.KindScheduledEvent, Seen: time.Now(), Time: time.Now().Add(10 * time.Minute),
		EventID: "instance-event-0d59937288b749b32", Code: "instance-stop",
	}
	r.watch.in <- ev
	testenv.Eventually(t, "the replacement request", func() bool { return r.j.has("request-replacement") })
	time.Sleep(1500 * time.Millisecond)
	if r.j.has("quiet-down") {
		t.Fatalf("quiet-down minutes before the event, with no successor ready: %v", r.j.list())
	}
	r.lease.announce(true)
	if err := r.waitPhase(status.PhaseStopped, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	run.cancel()
	_ = run.exited(t, 10*time.Second)

	// After the reboot the event is still listed.
	r2 := newRig(home, state)
	r2.bootID = "boot-2"
	r2.cfg.Interruption.OnScheduledEvent = config.PolicyDrain
	if err := os.Remove(filepath.Join(state, "replaced.json")); err != nil {
		t.Fatal(err) // the stop asked for a replacement, so the instance was replaced
	}
	run2 := serving(t, r2, 20*time.Second)
	ev.Seen = time.Now()
	r2.watch.in <- ev
	testenv.Eventually(t, "the event recorded", func() bool { return len(run2.a.Status().Notices) == 1 })
	if err := r2.waitPhase(status.PhaseDraining, 3*time.Second); err == nil || r2.j.has("request-replacement") {
		t.Fatalf("the same event was acted on again after the reboot: %v", r2.j.list())
	}
}
