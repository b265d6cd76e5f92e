package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// At a Spot notice with no successor waiting, the group is asked for the replacement at
// once; Jenkins stays registered and answering (no deregistration) until the successor
// waits ready, even with the builds done; then the handover runs.
func TestSpotNoticeAsksForTheReplacementAndServesUntilItIsReady(t *testing.T) {
	t.Parallel()
	testenv.SkipShort(t, "waits several seconds of the plan's clock")
	r := newRig(t.TempDir(), t.TempDir())
	r.targets.inGroup = true
	serving(t, r, 60*time.Second)
	r.watch.in <- spotNotice(60 * time.Second)
	testenv.Eventually(t, "the replacement request", func() bool { return r.j.has("request-replacement") })
	time.Sleep(2 * time.Second)
	if r.j.has("deregister") || r.j.has("container-stop") {
		t.Fatalf("handed over before a successor was ready: %v", r.j.list())
	}
	r.lease.announce(false)
	time.Sleep(1500 * time.Millisecond)
	if r.j.has("deregister") {
		t.Fatalf("handed over to a successor that is not ready: %v", r.j.list())
	}
	r.lease.announce(true)
	if err := r.waitPhase(status.PhaseStopped, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	hand := r.eventsOf(status.EventHandover)
	if len(hand) != 1 || hand[0].Successor == nil || hand[0].Successor.InstanceID != "i-0bbbbbbbbbbbbbbb2" {
		t.Fatalf("handover events %+v", hand)
	}
	done := r.eventsOf(status.EventPlanDone)
	if len(done) != 1 || done[0].Report.HandedOverTo != "i-0bbbbbbbbbbbbbbb2" {
		t.Fatalf("plan report %+v", done)
	}
	if len(r.eventsOf(status.EventSuccessor)) == 0 {
		t.Error("the successor's announcement is not on the timeline")
	}
	// Detached from its group, the instance has no lifecycle action left to complete.
	if r.j.has("lifecycle-complete") {
		t.Errorf("completed a lifecycle action after the detach: %v", r.j.list())
	}
}

// A successor already waiting: no replacement is asked for, and the handover follows
// the builds at once.
func TestWaitingSuccessorMeansNoReplacementRequest(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.targets.inGroup = true
	r.lease.announce(true)
	serving(t, r, 60*time.Second)
	r.watch.in <- spotNotice(60 * time.Second)
	if err := r.waitPhase(status.PhaseStopped, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if r.j.has("request-replacement") {
		t.Fatalf("asked for a replacement with a successor waiting: %v", r.j.list())
	}
}

// Outside an Auto Scaling group nothing comes: the handover follows the builds.
func TestNoSuccessorExpectedHandsOverWhenBuildsAreDone(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.targets.inGroup = false
	run := serving(t, r, 60*time.Second)
	r.watch.in <- spotNotice(60 * time.Second)
	if err := r.waitPhase(status.PhaseStopped, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if m := run.a.Status().Margin; m < 40*time.Second {
		t.Fatalf("waited for a successor that could not come: %s left", m)
	}
}

// A stop or hibernation hands the home over and the group launches a replacement: the
// instance, started again later, stays idle instead of contending for the home.
func TestReplacedInstanceStaysIdleWhenStartedAgain(t *testing.T) {
	t.Parallel()
	testenv.SkipShort(t, "waits several seconds of the plan's clock")
	home, state := t.TempDir(), t.TempDir()
	r := newRig(home, state)
	r.targets.inGroup = true
	run := serving(t, r, 20*time.Second)
	now := time.Now()
	r.watch.in <- instance.Notice{Kind: instance.KindSpotStop, Seen: now, Time: now.Add(15 * time.Second), Detail: "stop"}
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if !r.j.has("request-replacement") {
		t.Fatalf("no replacement asked for at a stop notice: %v", r.j.list())
	}
	run.cancel()
	_ = run.exited(t, 10*time.Second)

	// Started again after the stop: a new boot.
	r3 := newRig(home, state)
	r3.bootID = "boot-3"
	run3 := start(t, r3, 20*time.Second)
	if err := r3.waitPhase(status.PhaseStopped, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if r3.j.has("lease-acquire") || r3.j.has("container-start") {
		t.Fatalf("a replaced instance contended for the home: %v", r3.j.list())
	}
	if why := run3.a.Status().Replaced; !strings.Contains(why, "replaced") || !strings.Contains(why, "replaced.json") {
		t.Fatalf("status does not say why the instance is idle: %q", why)
	}
	// Removing the record lets it take the home again.
	if err := os.Remove(filepath.Join(state, "replaced.json")); err != nil {
		t.Fatal(err)
	}
	r4 := newRig(home, state)
	r4.bootID = "boot-4"
	serving(t, r4, 20*time.Second)
}

// The builds the stop aborts are recorded on the home; the successor reports them and,
// when configured, queues them again with their parameters and a cause.
func TestAbortedBuildsAreRecordedAndQueuedAgainOnTheSuccessor(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	if err := os.Mkdir(filepath.Join(home, ownDir), 0o755); err != nil {
		t.Fatal(err)
	}
	r := newRig(home, t.TempDir())
	free := build("nightly", 7, false)
	r.jenkins.builds = []status.Build{free, build("deploy", 3, true)}
	r.jenkins.params = map[string]map[string]string{free.URL: {"BRANCH": "main"}}
	serving(t, r, 20*time.Second)
	r.watch.in <- spotNotice(12 * time.Second)
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	done := r.eventsOf(status.EventPlanDone)
	if len(done) != 1 || len(done[0].Report.Aborted) != 1 || done[0].Report.Aborted[0] != free.URL {
		t.Fatalf("plan report aborted = %+v", done)
	}

	r2 := newRig(home, t.TempDir())
	r2.cfg.Jenkins.RequeueAbortedBuilds = true
	run2 := serving(t, r2, 20*time.Second)
	testenv.Eventually(t, "the aborted build reported", func() bool { return len(run2.a.Status().Aborted) == 1 })
	got := run2.a.Status().Aborted[0]
	if got.Job != "nightly" || got.Number != 7 || got.Parameters["BRANCH"] != "main" || !got.Requeued {
		t.Fatalf("aborted build %+v", got)
	}
	r2.jenkins.mu.Lock()
	requeued := r2.jenkins.requeued
	r2.jenkins.mu.Unlock()
	if len(requeued) != 1 || !strings.Contains(requeued[0], "aborted when controller i-0123456789abcdef0 stopped") {
		t.Fatalf("requeued %v", requeued)
	}
	if _, err := os.Stat(filepath.Join(home, ownDir, abortedNotes)); !os.IsNotExist(err) {
		t.Errorf("the record stays after it was reported: %v", err)
	}
}

// The record on the home is never read through a link the Jenkins user put there.
func TestAbortedRecordThroughASymlinkIsRefused(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	if err := os.Mkdir(filepath.Join(home, ownDir), 0o755); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(secret, []byte(`{"by":"root-only secret"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(home, ownDir, abortedNotes)); err != nil {
		t.Fatal(err)
	}
	var rec abortedRecord
	ok, err := readNote(context.Background(), home, abortedNotes, &rec)
	if ok || err == nil || strings.Contains(err.Error(), "root-only secret") {
		t.Fatalf("read through a link: ok=%v err=%v", ok, err)
	}
	if err := unix.Mkfifo(filepath.Join(home, ownDir, "fifo.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if ok, err := readNote(ctx, home, "fifo.json", &rec); ok || err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("a FIFO: ok=%v err=%v", ok, err)
	}
}

// A group-started termination lets builds run up to asg_max_drain with lifecycle
// heartbeats, and a Spot notice moves the deadline in.
func TestGroupTerminationSendsHeartbeatsWhileBuildsRun(t *testing.T) {
	t.Parallel()
	testenv.SkipShort(t, "waits several seconds of the plan's clock")
	r := newRig(t.TempDir(), t.TempDir())
	r.cfg.Interruption.ASGMaxDrain = config.Duration(30 * time.Minute)
	r.jenkins.builds = []status.Build{build("long", 1, false)}
	run := serving(t, r, 20*time.Second)
	r.watch.in <- instance.Notice{Kind: instance.KindASGTerminated, Seen: time.Now(), Detail: "Terminated"}
	if err := r.waitPhase(status.PhaseDraining, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Until(run.a.Status().Deadline); d < 29*time.Minute {
		t.Fatalf("a group termination worked to %s, not asg_max_drain", d)
	}
	testenv.Eventually(t, "lifecycle heartbeats", func() bool { return r.j.count("heartbeat") >= 3 })
	n := spotNotice(12 * time.Second)
	r.watch.in <- n
	if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := run.a.Status().Deadline; !got.Equal(n.Time) {
		t.Fatalf("the Spot notice did not move the deadline in: %s, want %s", got, n.Time)
	}
}
