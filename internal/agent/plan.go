package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
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
	// discoveryWait is how long the plan waits for a discovery still running.
	discoveryWait = 5 * time.Second
	// abortedCap bounds recording the builds the stop aborts.
	abortedCap = 3 * time.Second
)

// planRun is one run of the shutdown plan.
//
// At once: quiet-down (no new builds; the queue is kept) and, for a Spot notice, the
// request to the Auto Scaling group for the replacement, which boots while this
// controller keeps serving, registered and answering. Running builds may finish until
// the stop time (deadline − safety_margin − stop_grace − a reserve); Pipelines parked in
// the queue by the quiet-down are not waited for. The handover starts when the builds
// are done and either a successor waits ready on the lease or none is to be expected,
// and otherwise at the stop time: deregistration, the container stop, lease release,
// unmount, the lifecycle action. A failing step is logged and counted and never blocks
// the later ones; every step is idempotent, so a resumed plan simply runs again.
type planRun struct {
	a       *Agent
	h       *host
	e       ending
	resumed bool
	started time.Time

	mu      sync.Mutex // failed is appended to by the steps that run beside the drain
	failed  []string
	stopped bool // the container is surely down
	aborted []status.AbortedBuild

	// The replacement: pending while the request is under way, then whether the group
	// launched one.
	replacement     chan struct{}
	replaced        atomic.Bool
	successorSeen   bool
	successorReady  status.Successor
	lastHeartbeat   time.Time
	waitingReported bool
}

// runPlan runs the shutdown plan for an ending and reports its outcome.
func (a *Agent) runPlan(ctx context.Context, h *host, e ending, resumed bool) error {
	p := &planRun{a: a, h: h, e: e, resumed: resumed, started: a.now(), replacement: make(chan struct{})}
	p.begin()
	p.requestReplacement(ctx)
	p.bePatient(ctx)

	var quiet sync.WaitGroup
	quiet.Add(1)
	go func() { defer quiet.Done(); p.quietDown(ctx) }()
	p.run(status.StepDrain, func() error { return p.drain(ctx) })
	quiet.Wait()
	<-p.replacement

	p.handover(ctx)
	return p.finish(ctx)
}

// begin latches the plan and publishes its deadline.
func (p *planRun) begin() {
	a, e := p.a, p.e
	a.plan.begin(e.deadline)
	a.armed.Store(nil)
	a.tl.update(func(s *status.Snapshot) { s.Deadline = e.deadline; s.Pending = "" })
	a.deps.Metrics.SetDeadline(e.deadline)
	if latched(e.notice.Kind) && !p.resumed {
		rec := latchRecord{
			Kind: e.notice.Kind, Detail: e.notice.Detail, EventID: e.notice.EventID,
			Deadline: e.deadline, Started: p.started, Replace: e.replace,
		}
		if err := a.state.storeLatch(rec); err != nil {
			a.log.Error("cannot latch the plan; an agent restart would not resume it", "err", err)
		}
		if e.notice.EventID != "" {
			_ = a.state.rememberEvent(e.notice.EventID, eventRecord{Code: e.notice.Code, NotBefore: e.deadline, Seen: e.notice.Seen, Acted: p.started}, p.started)
		}
	}
	a.tl.setPhase(status.PhaseDraining, fmt.Sprintf("draining: %s, deadline %s", e.notice.Kind, e.deadline.UTC().Format(time.RFC3339)))
	a.log.Warn("shutdown plan started", "notice", e.notice.Kind, "deadline", e.deadline,
		"budget", e.deadline.Sub(p.started).Round(time.Millisecond), "resumed", p.resumed)
}

// run runs one step and keeps its failure for the report.
func (p *planRun) run(s status.Step, f func() error) bool {
	if err := p.a.tl.step(s, f); err != nil {
		p.mu.Lock()
		p.failed = append(p.failed, fmt.Sprintf("%s: %v", s, err))
		p.mu.Unlock()
		return false
	}
	return true
}

// requestReplacement asks the group for the replacement in the background, unless a
// successor already waits on the lease.
func (p *planRun) requestReplacement(ctx context.Context) {
	a, h := p.a, p.h
	if !p.e.replace {
		close(p.replacement)
		return
	}
	if s, ok := a.readSuccessor(ctx, h); ok {
		a.log.Info("a successor already waits on the lease; no replacement asked for", "successor", s.InstanceID)
		p.successorSeen = true
		close(p.replacement)
		return
	}
	go func() {
		defer close(p.replacement)
		a.awaitDiscovery(h, p.doneBy())
		cctx, cancel := p.stepContext(ctx, p.stopAt())
		defer cancel()
		var requested bool
		ok := p.run(status.StepRequestReplacement, func() error {
			var err error
			requested, err = h.targets.RequestReplacement(cctx, h.id)
			return err
		})
		switch {
		case !ok:
			a.deps.Metrics.ReplacementRequested("failed")
		case requested:
			p.replaced.Store(true)
			a.deps.Metrics.ReplacementRequested("requested")
			a.tl.message(status.StepRequestReplacement, "the Auto Scaling group launches the replacement; serving until it waits ready on the lease")
		default:
			a.deps.Metrics.ReplacementRequested("skipped")
			a.tl.message(status.StepRequestReplacement, "not in an Auto Scaling group: no replacement to ask for")
		}
	}()
}

// expectSuccessor reports whether the handover should wait for a successor: one was
// asked for (or the request is still under way), or one has announced itself.
func (p *planRun) expectSuccessor() bool {
	select {
	case <-p.replacement:
		return p.replaced.Load() || p.successorSeen
	default:
		return p.e.replace || p.successorSeen
	}
}

// quietDown puts Jenkins in quiet-down, with a reason every user sees in the banner.
func (p *planRun) quietDown(ctx context.Context) {
	a := p.a
	_ = a.deps.Notifier.Stopping(fmt.Sprintf("draining for %s", p.e.notice.Kind))
	cctx, cancel := p.stepContext(ctx, earliest(p.stopAt(), a.now().Add(quietDownCap)))
	defer cancel()
	reason := quietDownReason(p.e.notice.Kind, p.stopAt())
	p.run(status.StepQuietDown, func() error { return a.deps.Jenkins.QuietDown(cctx, reason) })
}

// quietDownReason is the banner text: when the controller moves, and that it comes back
// by itself.
func quietDownReason(k instance.Kind, stopAt time.Time) string {
	what := "This Jenkins controller is moving to a new instance"
	switch k {
	case instance.KindSpotTerminate, instance.KindSpotStop, instance.KindSpotHibernate:
		what += " (the Spot instance is being reclaimed)"
	case instance.KindDrill:
		what = "Rehearsal: this Jenkins controller is moving to a new instance"
	case instance.KindSignal:
		what = "This Jenkins controller is stopping for maintenance"
	}
	return fmt.Sprintf("%s. Running builds may finish until %s UTC; new builds wait in the queue. "+
		"Jenkins comes back by itself in a few minutes, with the queue; nothing to do.", what, stopAt.UTC().Format(time.TimeOnly))
}

// finish reports the plan, remembers it, and leaves the agent stopped.
func (p *planRun) finish(ctx context.Context) error {
	a := p.a
	margin := a.plan.deadline().Sub(a.now())
	a.deps.Metrics.SetShutdownMargin(margin)
	a.tl.update(func(s *status.Snapshot) { s.Margin = margin })
	a.plan.end()
	if latched(p.e.notice.Kind) {
		rec := latchRecord{
			Kind: p.e.notice.Kind, Detail: p.e.notice.Detail, EventID: p.e.notice.EventID,
			Deadline: p.e.deadline, Started: p.started, Replace: p.e.replace, Finished: a.now(),
		}
		if err := a.state.storeLatch(rec); err != nil {
			a.log.Error("cannot record the finished plan", "err", err)
		}
	}
	if p.replaced.Load() {
		rec := replacedRecord{At: a.now(), Notice: string(p.e.notice.Kind), Epoch: p.h.lease.State().Epoch}
		if err := a.state.storeReplaced(rec); err != nil {
			a.log.Error("cannot record that this instance was replaced; if it starts again it waits on the lease", "err", err)
		}
	}
	report := &status.PlanReport{Notice: p.e.notice, Deadline: a.plan.deadline(), Margin: margin, Failed: p.failed, HandedOverTo: p.successorReady.InstanceID}
	for _, b := range p.aborted {
		report.Aborted = append(report.Aborted, b.URL)
	}
	p.report(margin)
	a.tl.emit(status.Event{
		Kind: status.EventPlanDone, At: a.now(), Report: report,
		Message: fmt.Sprintf("plan done with %s to spare", margin.Round(time.Millisecond)),
	})
	a.tl.setPhase(status.PhaseStopped, fmt.Sprintf("stopped: plan done with %s to spare", margin.Round(time.Millisecond)))
	if !p.stopped {
		go a.retryStop(ctx, p.h)
	}
	if len(p.failed) > 0 {
		return fmt.Errorf("shutdown plan: %d step(s) failed: %s", len(p.failed), strings.Join(p.failed, "; "))
	}
	return nil
}

// report logs the per-step outcome of the plan in one place.
func (p *planRun) report(margin time.Duration) {
	a := p.a
	for _, s := range a.tl.snapshot().Steps {
		if s.At.Before(p.started) {
			continue
		}
		outcome := "ok"
		if s.Err != "" {
			outcome = s.Err
		}
		a.log.Info("plan report", "step", s.Step, "duration", s.Duration, "outcome", outcome)
	}
	level := "finished"
	if margin < a.cfg.Interruption.SafetyMargin.D() || len(p.failed) > 0 {
		level = "finished with problems"
	}
	a.log.Warn("shutdown plan "+level, "margin", margin.Round(time.Millisecond), "failed_steps", len(p.failed),
		"aborted_builds", len(p.aborted), "successor", p.successorReady.InstanceID)
}

// doneBy is the time by which the whole plan must be done.
func (p *planRun) doneBy() time.Time {
	return p.a.plan.deadline().Add(-p.a.cfg.Interruption.SafetyMargin.D())
}

// stopAt is the time the handover begins at the latest: builds may run until then.
func (p *planRun) stopAt() time.Time {
	return p.doneBy().Add(-p.a.cfg.Jenkins.StopGrace.D() - tailReserve)
}

// stepContext bounds one call by its own deadline, with a floor so that even a notice
// found late still gets each call attempted. It outlives the caller's cancellation: the
// plan finishes even while the agent is told to exit.
func (p *planRun) stepContext(ctx context.Context, deadline time.Time) (context.Context, context.CancelFunc) {
	if floor := p.a.now().Add(minCallTime); deadline.Before(floor) {
		deadline = floor
	}
	return context.WithDeadline(context.WithoutCancel(ctx), deadline)
}

// awaitDiscovery gives a discovery still under way (a notice right after boot) a moment
// to finish, so that the group and its target groups are known.
func (a *Agent) awaitDiscovery(h *host, doneBy time.Time) {
	wait := min(discoveryWait, max(doneBy.Sub(a.now())/4, 0))
	select {
	case <-h.discovered:
	case <-time.After(wait):
		a.log.Warn("target group discovery still running; going on with what is known so far")
	}
}

// retryStop keeps trying to stop a container the plan could not stop, holding the lease
// meanwhile; once Jenkins is down it releases the lease and unmounts the home. If the
// instance ends first, Jenkins ends with it and the lease expires on its own.
func (a *Agent) retryStop(ctx context.Context, h *host) {
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
		if err := h.lease.Release(rctx); err != nil {
			a.log.Error("lease release after the late stop", "err", err)
		} else {
			a.deps.Metrics.SetLeaseHeld(false)
		}
		if err := h.mounter.Unmount(rctx); err != nil {
			a.log.Error("unmount after the late stop", "err", err)
		}
		cancel()
		return
	}
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// errNotStopped explains the steps skipped after a container that may still run.
var errNotStopped = errors.New("the container may still run; the lease stays held and the home mounted while the stop is retried")
