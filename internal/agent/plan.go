package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// Reserves inside the budget. The plan ends before deadline − safety_margin; the tail
// after the container stop (lease release, unmount, lifecycle action) needs a little.
const (
	tailReserve  = 5 * time.Second
	minCallTime  = 2 * time.Second
	drainPoll    = time.Second
	confirmStop  = 3 * time.Second
	quietDownCap = 15 * time.Second
	// stopRetry is the pace of stop attempts after a plan that could not stop Jenkins.
	stopRetry = 5 * time.Second
	// discoveryWait is how long the deregistration waits for a discovery still running.
	discoveryWait = 5 * time.Second
)

// plan is the shutdown plan. Deregistration and quiet-down start at once, in parallel;
// running builds may finish until deadline − safety_margin − stop_grace; then the
// container stops within stop_grace; then the lease is released and EFS unmounted; then
// the lifecycle action is completed. A failing step is logged and counted and never
// blocks the later ones; every step is idempotent, so a resumed plan simply runs again.
func (a *Agent) plan(ctx context.Context, e ending, resumed bool) error {
	a.mu.Lock()
	a.planning = true
	a.deadline = e.deadline
	a.status.Deadline = e.deadline
	a.mu.Unlock()
	a.deps.Metrics.SetDeadline(e.deadline)
	if latched(e.notice.Kind) && !resumed {
		if err := a.latch.store(latchRecord{Kind: e.notice.Kind, Detail: e.notice.Detail, Deadline: e.deadline, Started: a.now()}); err != nil {
			a.log.Error("cannot latch the plan; an agent restart would not resume it", "err", err)
		}
	}
	started := a.now()
	a.setPhase(status.PhaseDraining, fmt.Sprintf("draining: %s, deadline %s", e.notice.Kind, e.deadline.Format(time.RFC3339)))
	_ = a.deps.Notifier.Stopping(fmt.Sprintf("draining for %s", e.notice.Kind))
	a.log.Warn("shutdown plan started", "notice", e.notice.Kind, "deadline", e.deadline,
		"budget", e.deadline.Sub(started).Round(time.Millisecond), "resumed", resumed)

	var failed []string
	fail := func(s status.Step, err error) {
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", s, err))
		}
	}

	// Deregistration and quiet-down, at once and in parallel.
	var wg sync.WaitGroup
	var deregErr, quietErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		cctx, cancel := a.stepContext(ctx, a.end())
		defer cancel()
		deregErr = a.step(cctx, status.StepDeregister, "", func() error {
			a.awaitDiscovery()
			return a.targets.Deregister(cctx, a.id.InstanceID)
		})
	}()
	go func() {
		defer wg.Done()
		cctx, cancel := a.stepContext(ctx, earliest(a.stopAt(), a.now().Add(quietDownCap)))
		defer cancel()
		reason := fmt.Sprintf("Instance %s is ending (%s); builds may finish until %s", a.id.InstanceID, e.notice.Kind,
			a.stopAt().UTC().Format(time.TimeOnly))
		quietErr = a.step(cctx, status.StepQuietDown, "", func() error { return a.deps.Jenkins.QuietDown(cctx, reason) })
	}()

	// Builds may finish while the quiet-down request is still on its way.
	fail(status.StepDrain, a.step(ctx, status.StepDrain, "", func() error { return a.drain(ctx) }))
	wg.Wait()
	fail(status.StepDeregister, deregErr)
	fail(status.StepQuietDown, quietErr)

	stopped := true
	if err := a.step(ctx, status.StepContainerStop, "", func() error { return a.stopContainer(ctx) }); err != nil {
		fail(status.StepContainerStop, err)
		stopped = false
	}

	// The lease is released and the home unmounted only once Jenkins is surely down:
	// a successor must never start while this Jenkins can still write. While it may
	// still run, the lease stays held and renewed, and the stop is retried after the plan.
	if stopped {
		a.stopHold()
	}
	if err := a.step(ctx, status.StepLeaseRelease, "", func() error {
		if !stopped {
			return errors.New("not released: the container may still run; the lease stays held while the stop is retried")
		}
		cctx, cancel := a.stepContext(ctx, a.now().Add(confirmStop))
		defer cancel()
		return a.lease.Release(cctx)
	}); err != nil {
		fail(status.StepLeaseRelease, err)
	} else {
		a.deps.Metrics.SetLeaseHeld(false)
	}
	fail(status.StepUnmount, a.step(ctx, status.StepUnmount, "", func() error {
		if !stopped {
			return errors.New("not unmounted: the container may still use the home")
		}
		cctx, cancel := a.stepContext(ctx, a.end())
		defer cancel()
		return a.mounter.Unmount(cctx)
	}))
	if e.notice.Kind != instance.KindDrill {
		cctx, cancel := a.stepContext(ctx, a.end())
		fail(status.StepLifecycleComplete, a.step(cctx, status.StepLifecycleComplete, "", func() error {
			return a.targets.CompleteLifecycle(cctx, a.id.InstanceID)
		}))
		cancel()
	}

	deadline := a.currentDeadline()
	margin := deadline.Sub(a.now())
	a.deps.Metrics.SetShutdownMargin(margin)
	a.mu.Lock()
	a.status.Margin = margin
	a.planning = false
	a.mu.Unlock()
	if latched(e.notice.Kind) {
		if err := a.latch.store(latchRecord{Kind: e.notice.Kind, Detail: e.notice.Detail, Deadline: e.deadline, Started: started, Finished: a.now()}); err != nil {
			a.log.Error("cannot record the finished plan", "err", err)
		}
	}
	a.report(margin, failed)
	a.setPhase(status.PhaseStopped, fmt.Sprintf("stopped: plan done with %s to spare", margin.Round(time.Millisecond)))
	if !stopped {
		go a.retryStop(ctx)
	}
	if len(failed) > 0 {
		return fmt.Errorf("shutdown plan: %d step(s) failed: %s", len(failed), strings.Join(failed, "; "))
	}
	return nil
}

// awaitDiscovery ends the boot's registration and gives a discovery still under way (a
// notice right after boot) a moment to finish, so that discovered target groups are
// deregistered too.
func (a *Agent) awaitDiscovery() {
	// A registration still under way must not land after the deregistration.
	if a.registered != nil {
		a.registerStop()
		<-a.registered
	}
	wait := min(discoveryWait, max(a.end().Sub(a.now())/4, 0))
	select {
	case <-a.discovered:
	case <-time.After(wait):
		a.log.Warn("target group discovery still running; deregistering from the groups known so far")
	}
}

// retryStop keeps trying to stop a container the plan could not stop, holding the lease
// meanwhile; once Jenkins is down it releases the lease and unmounts the home. If the
// instance ends first, Jenkins ends with it and the lease expires on its own.
func (a *Agent) retryStop(ctx context.Context) {
	t := time.NewTicker(stopRetry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, stopRetry)
		_ = a.deps.Runtime.Kill(cctx)
		running, err := a.deps.Runtime.Running(cctx)
		cancel()
		if err != nil || running {
			a.log.Error("Jenkins container still not confirmed stopped; holding the lease and retrying", "err", err)
			continue
		}
		a.log.Warn("Jenkins container stopped at last; releasing the lease and unmounting")
		a.stopHold()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := a.lease.Release(rctx); err != nil {
			a.log.Error("lease release after the late stop", "err", err)
		} else {
			a.deps.Metrics.SetLeaseHeld(false)
		}
		if err := a.mounter.Unmount(rctx); err != nil {
			a.log.Error("unmount after the late stop", "err", err)
		}
		cancel()
		return
	}
}

// report logs the per-step outcome of the plan in one place.
func (a *Agent) report(margin time.Duration, failed []string) {
	a.mu.Lock()
	steps := a.status.Steps
	a.mu.Unlock()
	for _, s := range steps {
		switch s.Step {
		case status.StepDeregister, status.StepQuietDown, status.StepDrain, status.StepContainerStop,
			status.StepLeaseRelease, status.StepUnmount, status.StepLifecycleComplete:
			outcome := "ok"
			if s.Err != "" {
				outcome = s.Err
			}
			a.log.Info("plan report", "step", s.Step, "duration", s.Duration, "outcome", outcome)
		}
	}
	level := "finished"
	if margin < a.cfg.Interruption.SafetyMargin.D() || len(failed) > 0 {
		level = "finished with problems"
	}
	a.log.Warn("shutdown plan "+level, "margin", margin.Round(time.Millisecond), "failed_steps", len(failed))
}

// drain lets running builds (regular and Pipeline one-off executors) finish until the
// stop time, reporting what still runs.
func (a *Agent) drain(ctx context.Context) error {
	var last string
	for {
		builds := a.lookAtBuilds(ctx)
		if now := strings.Join(builds, ", "); now != last {
			last = now
			if len(builds) > 0 {
				a.emit(status.Event{At: a.now(), Step: status.StepDrain, Message: fmt.Sprintf("%d build(s) running: %s", len(builds), now)})
			}
		}
		if len(builds) == 0 {
			return nil
		}
		left := a.stopAt().Sub(a.now())
		if left <= 0 {
			// Not a failure of the plan: the budget is spent. Jenkins saves Pipelines on
			// stop and the successor resumes them; other builds are aborted.
			msg := fmt.Sprintf("stop time reached with %d build(s) running (Pipelines resume on the next start, others are aborted): %s", len(builds), last)
			a.log.Warn(msg)
			a.emit(status.Event{At: a.now(), Step: status.StepDrain, Message: msg})
			return nil
		}
		select {
		case <-time.After(min(drainPoll, left)):
		case <-a.force:
			return fmt.Errorf("forced stop with %d build(s) running: %s", len(builds), last)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stopContainer stops Jenkins within stop_grace (shortened when time is short) and makes
// sure it is down, killing it if a stop did not take.
func (a *Agent) stopContainer(ctx context.Context) error {
	grace := a.cfg.Jenkins.StopGrace.D()
	if left := a.end().Add(-tailReserve).Sub(a.now()); left < grace {
		grace = max(left, time.Second)
	}
	select {
	case <-a.force:
		grace = min(grace, 5*time.Second)
	default:
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace+10*time.Second)
	defer cancel()
	stopErr := a.deps.Runtime.Stop(cctx, grace)
	if stopErr != nil {
		a.log.Error("container stop failed; killing it", "err", stopErr)
		if err := a.deps.Runtime.Kill(cctx); err != nil {
			return fmt.Errorf("stop: %v; kill: %w", stopErr, err)
		}
	}
	running, err := a.deps.Runtime.Running(cctx)
	if err != nil {
		return fmt.Errorf("cannot confirm the container stopped: %w", err)
	}
	if running {
		return errors.New("the container is still running after stop and kill")
	}
	return stopErr
}

// end is the time by which the whole plan must be done.
func (a *Agent) end() time.Time {
	return a.currentDeadline().Add(-a.cfg.Interruption.SafetyMargin.D())
}

// stopAt is the time the container stop begins: builds may run until then.
func (a *Agent) stopAt() time.Time {
	return a.end().Add(-a.cfg.Jenkins.StopGrace.D() - tailReserve)
}

func (a *Agent) currentDeadline() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.deadline
}

// stepContext bounds one step by its own deadline, with a floor so that even a notice
// found late still gets each call attempted. It outlives the caller's cancellation: the
// plan finishes even while the agent is told to exit.
func (a *Agent) stepContext(ctx context.Context, deadline time.Time) (context.Context, context.CancelFunc) {
	if floor := a.now().Add(minCallTime); deadline.Before(floor) {
		deadline = floor
	}
	return context.WithDeadline(context.WithoutCancel(ctx), deadline)
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// ownFile reports whether a name at the top of the home is one of the agent's own
// (the EFS marker, the lease), which do not make a home "used".
func ownFile(name string) bool {
	return strings.HasPrefix(name, ".jenkins-spot-agent")
}

func owner(fi os.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}
