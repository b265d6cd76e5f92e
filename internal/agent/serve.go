package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

const (
	// reconcileEvery is how often the container's state is inspected, beside the wait
	// for its exit: a wait lost with a restarted dockerd must not hide a stopped Jenkins.
	reconcileEvery = 5 * time.Second
	// rewatchAfter is the pause before the wait for the container's exit is armed again
	// after it failed (the daemon went away).
	rewatchAfter = time.Second
	// lookEvery is how often the running builds are looked at while serving.
	lookEvery = 30 * time.Second
	// successorEvery is how often the holder reads a successor's announcement.
	successorEvery = 2 * time.Second
)

// supervisor is what serve knows of the Jenkins container.
type supervisor struct {
	down      bool // the container is not running
	backoff   time.Duration
	retryAt   time.Time // next restart attempt
	restarted chan error
	cancel    context.CancelFunc // ends a restart under way; nil when none
	exited    chan int64
	waitErr   chan error
}

// serve supervises the running controller until the end comes: it restarts a Jenkins
// that stopped (a crash, a dockerd restart) while it holds the lease, never reports
// serving while the container does not run, and hands over to the plan at once on a
// notice or a stop signal, whatever it is doing.
func (a *Agent) serve(ctx context.Context, h *host) error {
	sv := &supervisor{restarted: make(chan error, 1), exited: make(chan int64, 1), waitErr: make(chan error, 1)}
	a.watchContainer(ctx, sv)
	go a.lookAtBuildsEvery(ctx)
	go a.watchSuccessor(ctx, h)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	nextReconcile := a.now().Add(reconcileEvery)
	holdEnded := a.holdEnded()
	for {
		select {
		case e := <-a.ends:
			sv.abortRestart(a)
			return a.finish(ctx, h, e)
		case <-holdEnded:
			if a.holdErr() == nil {
				// Renewals stopped without losing the tenure: the agent is going away
				// (its context ended), and a restarted agent adopts the lease.
				holdEnded = nil
				continue
			}
			sv.abortRestart(a)
			return a.leaseOver(ctx, h)
		case code := <-sv.exited:
			a.containerDown(sv, exitReason(code))
		case err := <-sv.waitErr:
			a.log.Warn("lost sight of the Jenkins container (did dockerd restart?); looking again", "err", err)
			nextReconcile = a.now()
			time.AfterFunc(rewatchAfter, func() { a.watchContainer(ctx, sv) })
		case err := <-sv.restarted:
			sv.cancel = nil
			if err != nil {
				sv.backoff = nextBackoff(sv.backoff)
				sv.retryAt = a.now().Add(sv.backoff)
				a.log.Error("restarting Jenkins failed", "err", err, "retry_in", sv.backoff)
				a.tl.say(fmt.Sprintf("restarting Jenkins failed: %v; retrying in %s", err, sv.backoff))
				continue
			}
			sv.down, sv.backoff = false, 0
			a.tl.update(func(s *status.Snapshot) { s.Restarts++ })
			a.deps.Metrics.JenkinsRestarted()
			a.log.Info("Jenkins started again")
			a.tl.setPhase(status.PhaseServing, "serving")
			a.watchContainer(ctx, sv)
		case <-tick.C:
			a.tl.pulse.beat(a.now())
			a.deps.Metrics.SetLeaseHeld(h.lease.Held())
			if !a.now().Before(nextReconcile) && sv.cancel == nil {
				nextReconcile = a.now().Add(reconcileEvery)
				a.reconcile(ctx, sv)
			}
			if sv.down && sv.cancel == nil && !a.now().Before(sv.retryAt) && h.lease.Held() {
				a.restart(ctx, h, sv)
			}
			a.fireArmed()
		case <-ctx.Done():
			sv.abortRestart(a)
			return ctx.Err()
		}
	}
}

// containerDown records that Jenkins is not running, once per outage.
func (a *Agent) containerDown(sv *supervisor, why string) {
	if sv.down {
		return
	}
	sv.down = true
	sv.backoff = nextBackoff(sv.backoff)
	sv.retryAt = a.now().Add(sv.backoff)
	a.log.Error("Jenkins is not running", "why", why, "restart_in", sv.backoff)
	a.tl.setPhase(status.PhaseStartingJenkins, fmt.Sprintf("%s; starting it again in %s", why, sv.backoff))
}

// reconcile asks the daemon whether the container runs, beside the wait for its exit.
func (a *Agent) reconcile(ctx context.Context, sv *supervisor) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	running, err := a.deps.Runtime.Running(cctx)
	cancel()
	switch {
	case err != nil:
		a.log.Warn("cannot ask the Docker daemon whether Jenkins runs", "err", err)
	case !running:
		a.containerDown(sv, "the Jenkins container is not running")
	}
}

// restart starts Jenkins again in the background, so that a notice is acted on at once
// even while a slow Jenkins loads. The home is verified again first: Jenkins only ever
// starts on a verified mount.
func (a *Agent) restart(ctx context.Context, h *host, sv *supervisor) {
	rctx, cancel := context.WithCancel(ctx)
	sv.cancel = cancel
	a.tl.setPhase(status.PhaseStartingJenkins, "starting Jenkins again")
	go func() {
		err := h.mounter.Verify(rctx)
		if err != nil {
			err = fmt.Errorf("mount JENKINS_HOME: verification before restart: %w", err)
		} else {
			err = a.startJenkins(rctx)
		}
		sv.restarted <- err
	}()
}

// abortRestart ends a restart under way and waits for it to give up.
func (sv *supervisor) abortRestart(a *Agent) {
	if sv.cancel != nil {
		sv.cancel()
		logEnd(a.log, "restart", <-sv.restarted)
		sv.cancel = nil
	}
}

// watchContainer reports the next exit of the Jenkins container, or the failure of the
// wait itself (the daemon went away), so that serve can look again.
func (a *Agent) watchContainer(ctx context.Context, sv *supervisor) {
	go func() {
		code, err := a.deps.Runtime.Wait(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			select {
			case sv.waitErr <- err:
			default:
			}
			return
		}
		select {
		case sv.exited <- code:
		default:
		}
	}()
}

// leaseOver handles the end of the tenure while serving: another controller holds the
// home, or renewals stalled and the fence stopped Jenkins. This Jenkins is down (the
// fence killed it); the plan makes sure of it and leaves, and the agent exits with an
// error so that systemd starts it again to wait on the lease like any successor.
func (a *Agent) leaseOver(ctx context.Context, h *host) error {
	err := a.holdErr()
	a.log.Error("the JENKINS_HOME lease is no longer ours; Jenkins was stopped", "err", err)
	a.deps.Metrics.SetLeaseHeld(false)
	// The killed Jenkins may have left writes queued on a stalled mount: cut the home
	// off before a successor can take it (the earliest takeover is one allowance after
	// the fence point).
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortWithin)
	if aerr := h.mounter.Abort(actx); aerr != nil {
		a.log.Error("CANNOT CUT THIS INSTANCE OFF JENKINS_HOME after the fence; end the instance", "err", aerr)
		a.tl.say("fenced, but the home could not be cut off: end this instance")
	}
	cancel()
	a.hurry("lease lost: stopping Jenkins at once")
	_ = a.runPlan(ctx, h, ending{notice: signalNotice(a.now(), "lease lost"), deadline: a.now().Add(a.budget)}, false)
	return fmt.Errorf("lease lost: %w", err)
}

// abortWithin bounds cutting the home off after a fence: well within the time between
// the fence point and the earliest takeover (ttl 30 s: 9 s).
const abortWithin = 5 * time.Second

// holdErr is why the renewals ended: nil while they run or when they stopped without
// an error.
func (a *Agent) holdErr() error {
	a.holdMu.Lock()
	defer a.holdMu.Unlock()
	if a.hold == nil {
		return nil
	}
	return a.hold.err
}

// lookAtBuildsEvery refreshes the running builds shown in status and metrics.
func (a *Agent) lookAtBuildsEvery(ctx context.Context) {
	t := time.NewTicker(lookEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_, _ = a.lookAtBuilds(ctx)
		case <-ctx.Done():
			return
		}
	}
}

// lookAtBuilds lists the running builds; an error means unknown (counted, reported).
func (a *Agent) lookAtBuilds(ctx context.Context) ([]status.Build, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	builds, err := a.deps.Jenkins.RunningBuilds(cctx)
	if err != nil {
		a.deps.Metrics.JenkinsAPIFailure("running_builds")
		a.tl.update(func(s *status.Snapshot) { s.BuildListFailures++ })
		return nil, err
	}
	urls := make([]string, 0, len(builds))
	for _, b := range builds {
		urls = append(urls, b.URL)
	}
	a.deps.Metrics.SetRunningBuilds(len(builds))
	a.tl.update(func(s *status.Snapshot) { s.Running = urls })
	return builds, nil
}

// watchSuccessor follows the announcement of an instance waiting on the lease, for
// status, metrics, the timeline and the advisory notices that hand over only to it.
func (a *Agent) watchSuccessor(ctx context.Context, h *host) {
	t := time.NewTicker(successorEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			a.readSuccessor(ctx, h)
		case <-ctx.Done():
			return
		}
	}
}

// readSuccessor reads the successor's announcement and publishes a change.
func (a *Agent) readSuccessor(ctx context.Context, h *host) (status.Successor, bool) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	s, ok, err := h.lease.Successor(cctx)
	cancel()
	if err != nil {
		a.log.Debug("cannot read the successor's announcement", "err", err)
		return status.Successor{}, false
	}
	a.deps.Metrics.SetSuccessorWaiting(ok && s.Ready)
	a.successor.publish(a, s, ok)
	return s, ok
}

// takeOver finishes what a predecessor left: a quiet-down it never ended (an adopted
// Jenkins after a drill or an interrupted plan), and the builds its stop aborted.
func (a *Agent) takeOver(ctx context.Context, h *host) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if quiet, err := a.deps.Jenkins.QuietingDown(cctx); err == nil && quiet && !a.plan.running() {
		if err := a.deps.Jenkins.CancelQuietDown(cctx); err != nil {
			a.log.Warn("Jenkins is still in quiet-down from an earlier plan and could not be taken out of it", "err", err)
		} else {
			a.log.Info("Jenkins was left in quiet-down by an earlier plan; quiet-down cancelled")
		}
	}
	a.reportAborted(ctx, h)
}

// exitReason explains an exit of the Jenkins container.
func exitReason(code int64) string {
	switch code {
	case guardRefused:
		return "the lease guard refused to start Jenkins: the lease record does not name this instance"
	case 137, 143:
		return fmt.Sprintf("Jenkins was killed (exit %d): a crash, the kernel's OOM killer, or the lease guard's fence", code)
	}
	return fmt.Sprintf("Jenkins exited with code %d", code)
}

// guardRefused is the exit code of the lease guard when the record does not give this
// instance a live lease.
const guardRefused = 75

func nextBackoff(d time.Duration) time.Duration {
	if d == 0 {
		return time.Second
	}
	return min(2*d, time.Minute)
}
