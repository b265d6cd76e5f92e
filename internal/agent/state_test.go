package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// A plan resumed while another controller holds the home does not wait for builds: this
// Jenkins must stop at once.
func TestResumedPlanWithoutTheLeaseStopsAtOnce(t *testing.T) {
	t.Parallel()
	home, state := t.TempDir(), t.TempDir()
	if err := (stateDir{dir: state, bootID: "boot-1"}).storeLatch(latchRecord{
		Kind:     instance.KindSpotTerminate,
		Deadline: time.Now().Add(90 * time.Second), Started: time.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	r := newRig(home, state)
	r.mounter.host.mount(r.cfg.EFS.FileSystemID) // by the agent before its restart
	r.lease.home.take("i-other")
	r.jenkins.builds = []status.Build{build("forever", 1, false)}
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

func TestFinishedPlanIsNeverRepeatedOnThisBoot(t *testing.T) {
	t.Parallel()
	home, state := t.TempDir(), t.TempDir()
	r := newRig(home, state)
	run := serving(t, r, 20*time.Second)
	r.watch.in <- spotNotice(15 * time.Second)
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	run.cancel()
	_ = run.exited(t, 10*time.Second)

	// The agent restarts on the same boot: it must not boot Jenkins again.
	r2 := newRig(home, state)
	start(t, r2, 20*time.Second)
	if err := r2.waitPhase(status.PhaseStopped, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if r2.j.has("container-start") || r2.j.has("lease-acquire") {
		t.Fatalf("booted again after a finished plan: %v", r2.j.list())
	}
}

func TestInterruptedPlanResumesWithoutBootingJenkins(t *testing.T) {
	t.Parallel()
	home, state := t.TempDir(), t.TempDir()
	if err := (stateDir{dir: state, bootID: "boot-1"}).storeLatch(latchRecord{
		Kind:     instance.KindSpotTerminate,
		Deadline: time.Now().Add(20 * time.Second), Started: time.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	r := newRig(home, state)
	start(t, r, 20*time.Second)
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if r.j.has("container-start") {
		t.Fatalf("a resumed plan booted Jenkins: %v", r.j.list())
	}
	for _, want := range []string{"deregister", "container-stop", "unmount", "lifecycle-complete"} {
		if !r.j.has(want) {
			t.Errorf("resumed plan skipped %s: %v", want, r.j.list())
		}
	}
}

func TestUnreadableLatchStopsTheBoot(t *testing.T) {
	t.Parallel()
	home, state := t.TempDir(), t.TempDir()
	if err := (stateDir{dir: state}).write("plan-latch.json", map[string]string{"boot_id": "boot-1"}); err != nil {
		t.Fatal(err)
	}
	r := newRig(home, state)
	run := start(t, r, 20*time.Second)
	if err := run.exited(t, 10*time.Second); err == nil || !strings.Contains(err.Error(), "plan latch") {
		t.Fatalf("boot error %v", err)
	}
	if r.j.has("container-start") {
		t.Fatal("Jenkins started with an unreadable latch")
	}
}
