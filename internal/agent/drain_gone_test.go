package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// The drain waits for running builds, and a build list that cannot be read is unknown,
// never "no builds". But when the daemon says that the Jenkins container does not run
// at all, no build can be running: the drain must not wait until the stop time for a
// Jenkins that is not there. The budgets below put the stop time minutes away, far
// beyond the bounds of the waits.

// A stop signal to an agent that waits on the lease (a successor stopped by systemctl
// stop, or at shutdown) never started Jenkins: it ends at once.
func TestStopSignalWhileWaitingOnTheLeaseEndsAtOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.lease.home.take("i-other") // another instance holds the lease and never releases it
	r.jenkins.silent = true      // nothing listens on Jenkins' port
	run := start(t, r, 10*time.Minute)
	if err := r.waitPhase(status.PhaseWaitingForLease, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	run.a.Stop("terminated")
	if err := run.exited(t, 20*time.Second); err != nil {
		t.Fatalf("the agent did not end after the stop signal: %v; journal %v", err, r.j.list())
	}
	if r.j.has("container-start") {
		t.Errorf("Jenkins was started after a stop signal during the lease wait: %v", r.j.list())
	}
}

// IMDS may take minutes to answer at boot (the identity is retried until its deadline).
// A stop signal then must not wait for it: nothing has started, so the agent ends at
// once, without error (systemd would otherwise wait TimeoutStopSec, then SIGKILL), and a
// drill is refused rather than left hanging.
func TestStopSignalWhileReadingTheIdentityEndsAtOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.md.silent = true // IMDS never answers
	run := start(t, r, 10*time.Minute)
	for r.md.readCalls() == 0 {
		time.Sleep(5 * time.Millisecond) // until the agent asks IMDS
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := run.a.Drill(ctx, time.Minute, nil); err == nil || !strings.Contains(err.Error(), "identity") {
		t.Errorf("drill while the identity is read: %v; want it refused, naming the identity", err)
	}
	run.a.Stop("terminated")
	if err := run.exited(t, 10*time.Second); err != nil {
		t.Fatalf("after a stop signal during the identity read: %v; want the agent ended without error", err)
	}
	if got := run.a.Status().Phase; got != status.PhaseStopped {
		t.Errorf("phase after the stop: %s; want %s", got, status.PhaseStopped)
	}
	if r.j.has("mount") || r.j.has("container-start") {
		t.Errorf("something started after a stop signal during the identity read: %v", r.j.list())
	}
}

// An agent restarted on a boot where an agent ran before (its identity cached, its
// Jenkins maybe still running) hands over on a stop signal, even one that comes before
// it got going: the plan runs, IMDS or not.
func TestStopSignalAtTheStartOfARestartedAgentRunsThePlan(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	r := newRig(t.TempDir(), state)
	if err := (stateDir{dir: state, bootID: r.bootID}).storeIdentity(r.md.id); err != nil {
		t.Fatal(err)
	}
	r.md.silent = true // IMDS never answers: the cache must do
	a, err := r.agent(10 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	a.Stop("terminated") // queued before Run, as a SIGTERM caught at process start
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := a.Run(ctx); err != nil {
		t.Fatalf("Run after a stop signal: %v", err)
	}
	if !r.j.has("container-stop") {
		t.Errorf("no plan ran for the stop signal of a restarted agent: %v", r.j.list())
	}
	if r.j.has("container-start") {
		t.Errorf("Jenkins was started after a stop signal: %v", r.j.list())
	}
}

// dockerd restarted during the drain (or Jenkins crashed): the container is down and
// its API answers nothing. The handover starts without waiting for the stop time.
func TestJenkinsGoneDuringTheDrainEndsTheDrain(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.jenkins.builds = []status.Build{build("nightly", 7, false)}
	r.jenkins.until = time.Now().Add(time.Hour)
	serving(t, r, 10*time.Minute)
	r.watch.in <- spotNotice(10 * time.Minute)
	if err := r.waitPhase(status.PhaseDraining, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	r.rt.daemonRestart()
	r.jenkins.set(func(f *fakeJenkins) { f.silent = true })
	if err := r.waitPhase(status.PhaseStopped, 20*time.Second); err != nil {
		t.Fatalf("the plan still drains a Jenkins whose container is down: %v; journal %v", err, r.j.list())
	}
	for _, want := range []string{"container-stop", "lease-release", "unmount"} {
		if !r.j.has(want) {
			t.Errorf("handover without %s: %v", want, r.j.list())
		}
	}
}

// A Jenkins that is up but does not answer may still run builds: the drain goes on
// waiting for it (see TestUnreadableBuildListIsNotNoBuilds); only a container that
// surely does not run ends it.
func TestUnreadableListOfARunningJenkinsIsStillUnknown(t *testing.T) {
	t.Parallel()
	r := newRig(t.TempDir(), t.TempDir())
	r.jenkins.builds = []status.Build{build("nightly", 7, false)}
	serving(t, r, 10*time.Minute)
	r.jenkins.set(func(f *fakeJenkins) {
		f.faults = append(f.faults, fakeFault{method: "RunningBuilds", kind: "500", left: -1})
		f.until = time.Now()
	})
	r.watch.in <- spotNotice(10 * time.Minute)
	if err := r.waitPhase(status.PhaseDraining, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := r.waitPhase(status.PhaseStopped, 3*time.Second); err == nil {
		t.Fatalf("the drain ended while Jenkins ran and its builds were unknown: %v", r.j.list())
	}
	if r.j.has("container-stop") {
		t.Errorf("Jenkins stopped while its builds were unknown: %v", r.j.list())
	}
}
