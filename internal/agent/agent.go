// Package agent is the orchestrator: it boots Jenkins on a verified EFS home under the
// single-writer lease, supervises it, watches for the end of the instance from the first
// second, and runs the shutdown plan against the termination time.
//
// It reads top to bottom: Run (this file), then boot.go (identity, mount, lease, start),
// serve.go (supervision while serving), plan.go, drain.go and handover.go (the shutdown
// plan: quiet-down and the replacement, the drain, the handover), notices.go (what each
// notice does), timeline.go (phase, steps, events and status), hold.go (lease renewals
// and the fence), state.go (what survives an agent restart on the local disk) and
// home.go (the agent's own files on the home).
package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// DefaultBudget is the time a plan works to when its trigger names no termination time:
// a stop signal, a drain on rebalance, a drill.
const DefaultBudget = config.SpotBudget

// Options configure an Agent.
type Options struct {
	Config config.Config
	Deps   Deps
	Logger *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// BootID identifies the current boot for the plan latch and the identity cache;
	// default the kernel's.
	BootID string
	// DefaultBudget overrides DefaultBudget (simulate compresses it).
	DefaultBudget time.Duration
	// OnEvent sees every timeline event (simulate prints them, webhooks send them).
	OnEvent func(status.Event)
}

// Agent runs one controller instance's Jenkins from boot to the end of the instance.
type Agent struct {
	cfg    config.Config
	deps   Deps
	log    *slog.Logger
	now    func() time.Time
	budget time.Duration
	state  stateDir
	tl     *timeline

	ends      chan ending   // what ends serving: notices, stop signals, drills
	force     chan struct{} // closed by the second stop signal
	forceOnce sync.Once

	host         atomic.Pointer[host] // set once the identity is known
	registration registration         // the registration after boot, which the deregistration ends first
	holdMu       sync.Mutex
	hold         *hold     // the running lease renewal, nil when none
	plan         planClock // the deadline of the running plan
	// armed is an advisory notice that hands over once a successor waits ready.
	armed     atomic.Pointer[ending]
	successor successorView // the last announcement of a successor on the lease
}

// host is this instance and the adapters that depend on its identity.
type host struct {
	id         instance.Identity
	mounter    Mounter
	lease      Lease
	targets    Targets
	discovered chan struct{} // closed when target group discovery has ended
}

// New checks the dependencies and returns an agent ready to Run.
func New(opts Options) (*Agent, error) {
	d := opts.Deps
	if d.Metadata == nil || d.Watcher == nil || d.NewMounter == nil || d.NewLease == nil ||
		d.NewTargets == nil || d.Runtime == nil || d.Jenkins == nil {
		return nil, errors.New("agent: a dependency is missing")
	}
	if d.Notifier == nil {
		d.Notifier = noNotifier{}
	}
	if d.Metrics == nil {
		d.Metrics = noRecorder{}
	}
	a := &Agent{
		cfg:    opts.Config,
		deps:   d,
		log:    opts.Logger,
		now:    opts.Now,
		budget: opts.DefaultBudget,
		ends:   make(chan ending, 4),
		force:  make(chan struct{}),
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.budget <= 0 {
		a.budget = DefaultBudget
	}
	bootID := opts.BootID
	if bootID == "" {
		bootID = ReadBootID()
	}
	a.state = stateDir{dir: a.cfg.StateDir, bootID: bootID}
	a.tl = newTimeline(a.now, a.log, d.Notifier, d.Metrics)
	if opts.OnEvent != nil {
		a.tl.subscribe(opts.OnEvent)
	}
	return a, nil
}

// Run is the service: identity, watcher, boot, serve, and the plan when the end comes.
// It returns nil once a plan started by a stop signal is done, or, after a plan started
// by a notice, at the next stop signal. It returns an error when the boot fails or the
// lease is lost (systemd restarts the agent, which resumes where it can).
func (a *Agent) Run(ctx context.Context) error {
	defer a.stopHold()
	a.tl.setPhase(status.PhaseBooting, "reading the instance identity")
	id, stopped, err := a.identifyUnlessStopped(ctx)
	if err != nil || stopped {
		return err
	}
	h, err := a.assemble(ctx, id)
	if err != nil {
		return err
	}

	// The watcher runs from the first second, during boot too.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	notices := make(chan instance.Notice, 16)
	go func() {
		if err := a.deps.Watcher.Run(watchCtx, notices); err != nil && watchCtx.Err() == nil {
			a.log.Error("interruption watcher stopped", "err", err)
		}
	}()
	go a.dispatch(watchCtx, notices)

	if why := a.replaced(); why != "" {
		a.tl.update(func(s *status.Snapshot) { s.Replaced = why })
		a.log.Warn(why)
		a.tl.setPhase(status.PhaseStopped, why)
		return a.linger(ctx)
	}
	rec, err := a.state.latch()
	if err != nil {
		return err
	}
	if rec != nil && !rec.Finished.IsZero() {
		a.log.Warn("the shutdown plan already ran on this boot; not starting Jenkins again",
			"notice", rec.Kind, "finished", rec.Finished)
		a.tl.setPhase(status.PhaseStopped, "shutdown plan finished; waiting for the instance to end")
		return a.linger(ctx)
	}
	if rec != nil {
		a.log.Warn("resuming the shutdown plan interrupted by an agent restart", "notice", rec.Kind, "deadline", rec.Deadline)
		a.resumeLease(ctx, h)
		e := ending{notice: rec.notice(), deadline: rec.Deadline, replace: rec.Replace}
		_ = a.runPlan(ctx, h, e, true)
		return a.linger(ctx)
	}

	bootCtx, cancelBoot := context.WithCancel(ctx)
	defer cancelBoot()
	booted := make(chan error, 1)
	go func() { booted <- a.boot(bootCtx, h) }()
	select {
	case e := <-a.ends:
		// A notice during boot aborts the boot: Jenkins is not started with too little time.
		cancelBoot()
		logEnd(a.log, "boot", <-booted)
		return a.finish(ctx, h, e)
	case err := <-booted:
		if err != nil {
			a.tl.setPhase(status.PhaseStopped, "boot failed: "+err.Error())
			a.abandonBoot(ctx)
			return err
		}
	case <-ctx.Done():
		cancelBoot()
		logEnd(a.log, "boot", <-booted)
		return ctx.Err()
	}
	return a.serve(ctx, h)
}

// Stop is the first stop signal (SIGTERM, SIGINT): with on_stop_signal shutdown the
// plan runs with the default budget and the agent exits when it is done; with
// leave-running the agent exits at once and leaves Jenkins to the next agent (an upgrade).
func (a *Agent) Stop(sig string) {
	n := instance.Notice{Kind: instance.KindSignal, Seen: a.now(), Detail: sig}
	a.recordNotice(n)
	e := ending{notice: n, deadline: n.Seen.Add(a.budget), leaveRunning: a.cfg.Interruption.OnStopSignal == config.StopLeaveRunning}
	select {
	case a.ends <- e:
	default:
	}
}

// StopNow is the second stop signal: builds are no longer waited for.
func (a *Agent) StopNow() {
	a.hurry("second stop signal: stopping Jenkins now, no longer waiting for builds")
}

// hurry makes the plan stop Jenkins without waiting for builds or a successor.
func (a *Agent) hurry(why string) {
	a.forceOnce.Do(func() {
		a.log.Warn(why)
		close(a.force)
	})
}

// Drill runs the shutdown plan now, as if a notice with the given budget had arrived,
// and streams the timeline to emit until the plan is done.
func (a *Agent) Drill(ctx context.Context, budget time.Duration, emit func(status.Event)) error {
	if budget <= 0 {
		budget = a.budget
	}
	if a.plan.running() || a.tl.snapshot().Phase == status.PhaseStopped {
		return errors.New("drill: a shutdown plan has already run or is running")
	}
	if emit != nil {
		defer a.tl.unsubscribe(a.tl.subscribe(emit))
	}
	n := instance.Notice{Kind: instance.KindDrill, Seen: a.now(), Detail: "drill over the control socket"}
	a.recordNotice(n)
	done := make(chan error, 1)
	select {
	case a.ends <- ending{notice: n, deadline: n.Seen.Add(budget), done: done}:
	default:
		return errors.New("drill: the agent is already ending")
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status is the agent's current state, for the control socket.
func (a *Agent) Status() status.Snapshot {
	st := a.tl.snapshot()
	st.Watch = a.deps.Watcher.Health()
	if h := a.host.Load(); h != nil {
		st.Lease = h.lease.State()
	}
	return st
}

// Alive reports whether the agent's own loops made progress within window: systemd's
// watchdog is fed only while they do. IMDS blindness does not count: it shows in
// metrics and status, and a restart would not cure it.
func (a *Agent) Alive(window time.Duration) bool {
	return a.now().Sub(a.tl.pulse.last()) < window
}

// finish runs the plan for an ending. A plan started by a stop signal ends the agent;
// after any other it lingers for status and metrics until a stop signal.
func (a *Agent) finish(ctx context.Context, h *host, e ending) error {
	if e.leaveRunning {
		a.log.Warn("stop signal with on_stop_signal=leave-running: exiting and leaving Jenkins running; "+
			"a restarted agent adopts it before the lease expires", "lease_ttl", a.cfg.Lease.TTL.D())
		a.stopHold()
		return nil
	}
	err := a.runPlan(ctx, h, e, false)
	if e.done != nil {
		e.done <- err
	}
	if e.notice.Kind == instance.KindSignal {
		return nil
	}
	return a.linger(ctx)
}

// linger keeps metrics and status up after the plan until the next stop signal. A drill
// is refused; a notice that comes now has nothing left to end.
func (a *Agent) linger(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case e := <-a.ends:
			switch {
			case e.done != nil:
				e.done <- errors.New("the shutdown plan has already run; restart the agent to boot Jenkins again")
			case e.notice.Kind == instance.KindSignal:
				return nil
			}
		case <-t.C:
			a.tl.pulse.beat(a.now())
		case <-ctx.Done():
			return nil
		}
	}
}

// logEnd logs how a goroutine cut short by its context ended (usually: the context).
func logEnd(log *slog.Logger, what string, err error) {
	if err != nil {
		log.Debug(what+" ended", "err", err)
	}
}
