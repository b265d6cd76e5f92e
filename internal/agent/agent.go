// Package agent is the orchestrator: it boots Jenkins on a verified EFS home under the
// single-writer lease, watches for the end of the instance from the first second, and
// runs the shutdown plan against the termination time. It reads top to bottom: Run,
// boot, serve, then the plan in plan.go.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// DefaultBudget is the time a plan works to when its trigger names no termination time:
// a stop signal, an Auto Scaling termination, a drain on rebalance, a drill.
const DefaultBudget = config.SpotBudget

// resumeLeaseWait bounds taking the lease back for a resumed plan.
const resumeLeaseWait = 3 * time.Second

// discoveryTimeout bounds the boot-time lookup of target groups.
const discoveryTimeout = 30 * time.Second

// readyProbeCap is the longest pause between two readiness probes.
const readyProbeCap = 200 * time.Millisecond

// Options configure an Agent.
type Options struct {
	Config config.Config
	Deps   Deps
	Logger *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// BootID identifies the current boot for the plan latch; default the kernel's.
	BootID string
	// DefaultBudget overrides DefaultBudget (simulate compresses it).
	DefaultBudget time.Duration
	// OnEvent sees every timeline event (simulate prints them).
	OnEvent func(status.Event)
}

// Agent runs one controller instance's Jenkins from boot to the end of the instance.
type Agent struct {
	cfg    config.Config
	deps   Deps
	log    *slog.Logger
	now    func() time.Time
	budget time.Duration
	latch  latch

	ends  chan ending
	force chan struct{}
	once  sync.Once

	// Set once the identity is known.
	id      instance.Identity
	mounter Mounter
	lease   Lease
	targets Targets

	discovered chan struct{} // closed when target group discovery has ended

	runCtx context.Context
	// The registration after boot; the plan stops it before it deregisters.
	registerStop context.CancelFunc
	registered   chan struct{}
	holdCancel   context.CancelFunc
	holdDone     chan struct{}
	leaseLost    chan error

	mu       sync.Mutex
	status   status.Snapshot
	subs     map[int]func(status.Event)
	nextSub  int
	planning bool
	deadline time.Time
}

// ending asks the agent to run the shutdown plan (or, for leave-running, to exit).
type ending struct {
	notice       instance.Notice
	deadline     time.Time
	leaveRunning bool
	done         chan error
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
		cfg:       opts.Config,
		deps:      d,
		log:       opts.Logger,
		now:       opts.Now,
		budget:    opts.DefaultBudget,
		ends:      make(chan ending, 4),
		force:     make(chan struct{}),
		leaseLost: make(chan error, 1),
		subs:      map[int]func(status.Event){},
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
	a.latch = latch{path: filepath.Join(a.cfg.StateDir, "plan-latch.json"), bootID: bootID}
	if opts.OnEvent != nil {
		a.subscribe(opts.OnEvent)
	}
	a.status.Phase = status.PhaseBooting
	a.status.Since = a.now()
	return a, nil
}

// Run is the service: identity, watcher, boot, serve, and the plan when the end comes.
// It returns nil once a plan has run and the agent is told to exit, and an error when the
// boot fails (systemd restarts the agent, which resumes where it can).
func (a *Agent) Run(ctx context.Context) error {
	a.runCtx = ctx
	a.setPhase(status.PhaseBooting, "reading the instance identity from IMDS")
	id, err := a.identify(ctx)
	if err != nil {
		return err
	}
	if err := a.assemble(ctx, id); err != nil {
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

	rec, err := a.latch.load()
	if err != nil {
		return err
	}
	if rec != nil && !rec.Finished.IsZero() {
		a.log.Warn("the shutdown plan already ran on this boot; not starting Jenkins again",
			"notice", rec.Kind, "finished", rec.Finished)
		a.setPhase(status.PhaseStopped, "shutdown plan finished; waiting for the instance to end")
		return a.linger(ctx)
	}
	if rec != nil {
		a.log.Warn("resuming the shutdown plan interrupted by an agent restart", "notice", rec.Kind, "deadline", rec.Deadline)
		a.resumeLease(ctx)
		a.plan(ctx, ending{notice: instance.Notice{Kind: rec.Kind, Detail: rec.Detail, Seen: rec.Started}, deadline: rec.Deadline}, true)
		return a.linger(ctx)
	}

	bootCtx, cancelBoot := context.WithCancel(ctx)
	defer cancelBoot()
	booted := make(chan error, 1)
	go func() { booted <- a.boot(bootCtx) }()
	select {
	case e := <-a.ends:
		// A notice during boot aborts the boot: Jenkins is not started with too little time.
		cancelBoot()
		<-booted
		return a.finish(ctx, e)
	case err := <-booted:
		if err != nil {
			a.setPhase(status.PhaseStopped, "boot failed: "+err.Error())
			a.abandonBoot()
			return err
		}
	case <-ctx.Done():
		cancelBoot()
		<-booted
		return ctx.Err()
	}
	return a.serve(ctx)
}

// Stop is the first stop signal: shutdown runs the plan with the default budget,
// leave-running exits and leaves Jenkins to the next agent (an upgrade).
func (a *Agent) Stop(sig string) {
	n := instance.Notice{Kind: instance.KindSignal, Seen: a.now(), Detail: sig}
	a.recordNotice(n)
	e := ending{notice: n, deadline: n.Seen.Add(a.budget), leaveRunning: a.cfg.Interruption.OnStopSignal == "leave-running"}
	select {
	case a.ends <- e:
	default:
	}
}

// StopNow is the second stop signal: builds are no longer waited for.
func (a *Agent) StopNow() {
	a.hurry("second stop signal: stopping Jenkins now, no longer waiting for builds")
}

// hurry makes the plan stop Jenkins without waiting for builds.
func (a *Agent) hurry(why string) {
	a.once.Do(func() {
		a.log.Warn(why)
		close(a.force)
	})
}

// resumeLease takes the lease back for a plan resumed after an agent restart, so that it
// is renewed while Jenkins drains and released once it is down. The agent adopts its own
// record at once. If the home is no longer mounted, the plan had stopped Jenkins already
// and there is nothing to hold; if another controller holds the lease, this Jenkins may
// not run a moment longer.
func (a *Agent) resumeLease(ctx context.Context) {
	vctx, cancel := context.WithTimeout(ctx, resumeLeaseWait)
	defer cancel()
	if err := a.mounter.Verify(vctx); err != nil {
		a.log.Info("JENKINS_HOME is not mounted any more; resuming the plan without the lease", "err", err)
		return
	}
	if _, err := a.lease.Acquire(vctx, func(s status.LeaseState) {}); err != nil {
		a.hurry("another controller holds JENKINS_HOME: stopping this Jenkins at once")
		return
	}
	a.startHold()
}

// Drill runs the shutdown plan now, as if a notice with the given budget had arrived,
// and streams the timeline to emit until the plan is done.
func (a *Agent) Drill(ctx context.Context, budget time.Duration, emit func(status.Event)) error {
	if budget <= 0 {
		budget = a.budget
	}
	a.mu.Lock()
	busy := a.planning || a.status.Phase == status.PhaseStopped
	a.mu.Unlock()
	if busy {
		return errors.New("drill: a shutdown plan has already run or is running")
	}
	if emit != nil {
		defer a.unsubscribe(a.subscribe(emit))
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
	a.mu.Lock()
	st := a.status
	st.Notices = slices.Clone(st.Notices)
	st.Running = slices.Clone(st.Running)
	st.Steps = slices.Clone(st.Steps)
	l := a.lease
	a.mu.Unlock()
	st.Watch = a.deps.Watcher.Health()
	if l != nil {
		st.Lease = l.State()
		st.Lease.Held = l.Held()
	}
	return st
}

// Healthy reports whether the watcher has seen IMDS answer within window; systemd's
// watchdog is fed only while it has.
func (a *Agent) Healthy(window time.Duration) bool {
	h := a.deps.Watcher.Health()
	if h.LastSuccess.IsZero() {
		a.mu.Lock()
		started := a.status.Since
		a.mu.Unlock()
		return a.now().Sub(started) < window
	}
	return a.now().Sub(h.LastSuccess) < window
}

// identify reads the identity, retrying briefly: IMDS can lag the first second of boot.
func (a *Agent) identify(ctx context.Context) (instance.Identity, error) {
	var lastErr error
	for attempt, wait := 0, 200*time.Millisecond; attempt < 6; attempt, wait = attempt+1, wait*2 {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		id, err := a.deps.Metadata.Identity(cctx)
		cancel()
		if err == nil {
			a.log.Info("instance identity", "instance", id.InstanceID, "az", id.AvailabilityZone, "region", id.Region,
				"market", id.Market, "asg", id.AutoScalingGroup)
			return id, nil
		}
		lastErr = err
		a.log.Warn("instance identity not available yet", "err", err, "attempt", attempt+1)
		if !sleep(ctx, wait) {
			return instance.Identity{}, ctx.Err()
		}
	}
	return instance.Identity{}, fmt.Errorf("instance identity: %w", lastErr)
}

// assemble builds the adapters that depend on the identity.
func (a *Agent) assemble(ctx context.Context, id instance.Identity) error {
	a.id = id
	a.mu.Lock()
	a.status.InstanceID = id.InstanceID
	a.mu.Unlock()
	m, err := a.deps.NewMounter(id)
	if err != nil {
		return fmt.Errorf("efs: %w", err)
	}
	l, err := a.deps.NewLease(id, m.MountPoint())
	if err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	t, err := a.deps.NewTargets(ctx, id)
	if err != nil {
		return fmt.Errorf("target groups: %w", err)
	}
	a.mu.Lock() // Status reads the lease from the control socket's goroutines
	a.mounter, a.lease, a.targets = m, l, t
	a.mu.Unlock()

	// The instance's target groups and Auto Scaling group are looked up once, now, and
	// cached: the APIs throttle during mass interruptions. Neither a notice during boot
	// nor a resumed plan cancels the lookup; the plan waits a little for it.
	a.discovered = make(chan struct{})
	go func() {
		defer close(a.discovered)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), discoveryTimeout)
		defer cancel()
		if err := a.targets.Discover(dctx, a.id); err != nil {
			a.log.Warn("target group discovery failed; only configured target groups will be deregistered", "err", err)
		}
	}()
	return nil
}

// boot mounts and verifies the home, takes the lease, and starts Jenkins. The image is
// pulled while the lease is awaited, so a successor is ready the moment it is released.
func (a *Agent) boot(ctx context.Context) error {
	a.setPhase(status.PhaseMounting, "mounting EFS "+a.cfg.EFS.FileSystemID)
	if err := a.extending(ctx, func() error {
		return a.step(ctx, status.StepMount, "", func() error { return a.mounter.Mount(ctx) })
	}); err != nil {
		return fmt.Errorf("mount JENKINS_HOME: %w", err)
	}
	if err := a.giveHome(); err != nil {
		return err
	}

	pulled := make(chan error, 1)
	go func() { pulled <- a.deps.Runtime.Prepare(ctx) }()

	a.setPhase(status.PhaseWaitingForLease, "taking the JENKINS_HOME lease")
	if err := a.extending(ctx, func() error {
		return a.step(ctx, status.StepLease, "", func() error {
			_, err := a.lease.Acquire(ctx, func(s status.LeaseState) {
				msg := fmt.Sprintf("waiting for %s to release JENKINS_HOME", s.Holder)
				a.log.Info(msg, "holder", s.Holder, "epoch", s.Epoch, "expires", s.Expires)
				_ = a.deps.Notifier.Status(msg)
				a.emit(status.Event{At: a.now(), Step: status.StepLease, Message: msg})
			})
			return err
		})
	}); err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	a.startHold()
	a.deps.Metrics.SetLeaseHeld(true)

	a.setPhase(status.PhaseStartingJenkins, "starting Jenkins")
	// The mount may have changed during a long lease wait; Jenkins only ever starts on a
	// verified home.
	if err := a.mounter.Verify(ctx); err != nil {
		return fmt.Errorf("mount JENKINS_HOME: verification before start: %w", err)
	}
	if err := a.extending(ctx, func() error {
		select {
		case err := <-pulled:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}); err != nil {
		return fmt.Errorf("jenkins image: %w", err)
	}
	if err := a.startJenkins(ctx); err != nil {
		return err
	}
	// The phase is serving before systemd hears READY=1, so status and metrics already
	// agree with it.
	a.setPhase(status.PhaseServing, "serving")
	_ = a.deps.Notifier.Ready("serving: Jenkins answers")
	rctx, stop := context.WithCancel(ctx)
	a.registerStop, a.registered = stop, make(chan struct{})
	go func() {
		defer close(a.registered)
		a.register(rctx)
	}()
	return nil
}

// register puts the instance (back) in its target groups once Jenkins answers: Auto
// Scaling registers an instance only when it launches it, so after a drill or a stop and
// start of the agent nobody else would. Registering a registered target changes nothing.
func (a *Agent) register(ctx context.Context) {
	select {
	case <-a.discovered:
	case <-ctx.Done():
		return
	}
	ctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
	defer cancel()
	if err := a.targets.Register(ctx, a.id.InstanceID); err != nil {
		a.log.Error("registering in the target groups failed; the load balancer may not reach Jenkins", "err", err)
	}
}

// startJenkins starts (or adopts) the container and waits until Jenkins answers.
func (a *Agent) startJenkins(ctx context.Context) error {
	var adopted bool
	if err := a.step(ctx, status.StepContainerStart, "", func() error {
		var err error
		adopted, err = a.deps.Runtime.Start(ctx)
		return err
	}); err != nil {
		return fmt.Errorf("start jenkins container: %w", err)
	}
	if adopted {
		a.log.Info("adopted the running Jenkins container")
	}
	return a.extending(ctx, func() error {
		return a.step(ctx, status.StepJenkinsReady, "", func() error { return a.waitReady(ctx) })
	})
}

// waitReady polls Jenkins until it answers or jenkins.ready_timeout passes.
func (a *Agent) waitReady(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, a.cfg.Jenkins.ReadyTimeout.D())
	defer cancel()
	interval := 50 * time.Millisecond
	for {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		err := a.deps.Jenkins.Probe(pctx)
		pcancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !sleep(ctx, interval) {
			if parent.Err() != nil {
				return fmt.Errorf("waiting for jenkins: %w", parent.Err())
			}
			return fmt.Errorf("jenkins did not answer within jenkins.ready_timeout %s (last: %v); see `docker logs %s`",
				a.cfg.Jenkins.ReadyTimeout.D(), err, a.cfg.Jenkins.ContainerName)
		}
		// Capped low: READY=1 should follow Jenkins' first answer within a few hundred
		// milliseconds, and a probe of /login costs Jenkins next to nothing.
		interval = min(interval*2, readyProbeCap)
	}
}

// giveHome hands a fresh home to the container's user, so Jenkins does not run as root.
// Only a home that holds nothing but the agent's own files counts as fresh.
func (a *Agent) giveHome() error {
	home := a.mounter.MountPoint()
	uid, gid := a.cfg.Jenkins.UID, a.cfg.Jenkins.GID
	fi, err := os.Stat(home)
	if err != nil {
		return fmt.Errorf("jenkins home: %w", err)
	}
	if owner(fi) == uid {
		return nil
	}
	entries, err := os.ReadDir(home)
	if err != nil {
		return fmt.Errorf("jenkins home: %w", err)
	}
	for _, e := range entries {
		if !ownFile(e.Name()) {
			a.log.Warn("JENKINS_HOME is not owned by the Jenkins user; leaving its ownership alone",
				"home", home, "want_uid", uid, "hint", "chown -R "+fmt.Sprint(uid)+":"+fmt.Sprint(gid)+" the home if Jenkins cannot write it")
			return nil
		}
	}
	if err := os.Chown(home, uid, gid); err != nil {
		if errors.Is(err, os.ErrPermission) {
			a.log.Warn("cannot give the fresh home to the Jenkins user (not root)", "home", home)
			return nil
		}
		return fmt.Errorf("jenkins home: give it to %d:%d: %w", uid, gid, err)
	}
	a.log.Info("fresh JENKINS_HOME given to the Jenkins user", "home", home, "uid", uid, "gid", gid)
	return nil
}

// startHold renews the lease until the plan releases it. A holder that cannot renew kills
// Jenkins before its lease lapses.
func (a *Agent) startHold() {
	// Renewals outlive a boot cancelled by a notice, but not the agent's Run.
	ctx, cancel := context.WithCancel(a.runCtx)
	a.holdCancel, a.holdDone = cancel, make(chan struct{})
	go func() {
		defer close(a.holdDone)
		err := a.lease.Hold(ctx, func(fctx context.Context) error {
			a.log.Error("lease renewal failing: killing Jenkins before the lease can lapse")
			a.deps.Metrics.SetLeaseHeld(false)
			return a.deps.Runtime.Kill(fctx)
		})
		if err != nil && ctx.Err() == nil {
			a.leaseLost <- err
		}
	}()
}

// stopHold ends renewals; the plan calls it once the container is down.
func (a *Agent) stopHold() {
	if a.holdCancel != nil {
		a.holdCancel()
		<-a.holdDone
		a.holdCancel = nil
	}
}

// abandonBoot cleans up after a failed boot. A Jenkins container that was started is
// stopped first: once this agent exits nobody renews the lease, and Jenkins must not
// outlive it. The lease stays recorded as ours, so the restarted agent adopts it at once
// (otherwise it expires after its ttl).
func (a *Agent) abandonBoot() {
	if a.holdCancel == nil {
		return // the lease was never taken, so Jenkins was never started
	}
	grace := a.cfg.Jenkins.StopGrace.D()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(a.runCtx), grace+15*time.Second)
	defer cancel()
	if err := a.deps.Runtime.Stop(ctx, grace); err != nil {
		a.log.Error("stopping Jenkins after a failed boot", "err", err)
		_ = a.deps.Runtime.Kill(ctx)
	}
	a.stopHold()
}

// serve watches the running controller until the end comes: it restarts a crashed
// Jenkins while it holds the lease, and hands over to the plan on a notice.
func (a *Agent) serve(ctx context.Context) error {
	exited := make(chan int64, 1)
	a.watchContainer(ctx, exited)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var down bool
	var backoff time.Duration
	var retryAt, nextLook time.Time
	for {
		select {
		case e := <-a.ends:
			return a.finish(ctx, e)
		case err := <-a.leaseLost:
			a.log.Error("lost the JENKINS_HOME lease to another instance; Jenkins was stopped", "err", err)
			a.deps.Metrics.SetLeaseHeld(false)
			a.plan(ctx, ending{notice: instance.Notice{Kind: instance.KindSignal, Seen: a.now(), Detail: "lease lost"}, deadline: a.now().Add(a.budget)}, false)
			return fmt.Errorf("lease lost: %w", err)
		case code := <-exited:
			down = true
			backoff = nextBackoff(backoff)
			retryAt = a.now().Add(backoff)
			a.log.Error("Jenkins container exited", "exit_code", code, "restart_in", backoff)
			_ = a.deps.Notifier.Status(fmt.Sprintf("Jenkins exited with %d; restarting in %s", code, backoff))
		case <-tick.C:
			held := a.lease.Held()
			a.deps.Metrics.SetLeaseHeld(held)
			if down && held && !a.now().Before(retryAt) {
				if err := a.startJenkins(ctx); err != nil {
					backoff = nextBackoff(backoff)
					retryAt = a.now().Add(backoff)
					a.log.Error("restarting Jenkins failed", "err", err, "retry_in", backoff)
					continue
				}
				down = false
				a.mu.Lock()
				a.status.Restarts++
				a.mu.Unlock()
				a.log.Info("Jenkins restarted after a crash")
				_ = a.deps.Notifier.Status("serving")
				a.watchContainer(ctx, exited)
			}
			if !down && !a.now().Before(nextLook) {
				nextLook = a.now().Add(30 * time.Second)
				a.lookAtBuilds(ctx)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// watchContainer reports the next exit of the Jenkins container.
func (a *Agent) watchContainer(ctx context.Context, exited chan<- int64) {
	go func() {
		code, err := a.deps.Runtime.Wait(ctx)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("cannot watch the Jenkins container", "err", err)
			}
			return
		}
		select {
		case exited <- code:
		case <-ctx.Done():
		}
	}()
}

// lookAtBuilds refreshes the running builds shown in status and metrics.
func (a *Agent) lookAtBuilds(ctx context.Context) []string {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	builds, err := a.deps.Jenkins.RunningBuilds(cctx)
	if err != nil {
		a.log.Debug("cannot list running builds", "err", err)
		return nil
	}
	a.deps.Metrics.SetRunningBuilds(len(builds))
	a.mu.Lock()
	a.status.Running = builds
	a.mu.Unlock()
	return builds
}

// dispatch turns notices into endings according to the configured policy.
func (a *Agent) dispatch(ctx context.Context, notices <-chan instance.Notice) {
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-notices:
			a.recordNotice(n)
			switch {
			case n.Kind == instance.KindRebalance && a.cfg.Interruption.OnRebalance != "drain",
				n.Kind == instance.KindScheduledEvent && a.cfg.Interruption.OnScheduledEvent != "drain":
				a.log.Warn("notice recorded; policy is notify, not draining", "kind", n.Kind, "detail", n.Detail)
				continue
			}
			deadline := a.deadlineFor(n)
			if a.tighten(deadline) {
				continue
			}
			select {
			case a.ends <- ending{notice: n, deadline: deadline}:
			default:
			}
		}
	}
}

// deadlineFor is the termination time a notice is worked to: the time it names (even
// when found late), never later than the default budget from when it was seen.
func (a *Agent) deadlineFor(n instance.Notice) time.Time {
	limit := n.Seen.Add(a.budget)
	if !n.Time.IsZero() && n.Time.Before(limit) {
		return n.Time
	}
	return limit
}

// tighten moves the deadline of a running plan earlier, and reports whether a plan runs.
func (a *Agent) tighten(deadline time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.planning {
		return false
	}
	if deadline.Before(a.deadline) {
		a.deadline = deadline
		a.status.Deadline = deadline
		a.deps.Metrics.SetDeadline(deadline)
		a.log.Warn("a later notice moved the deadline earlier", "deadline", deadline)
	}
	return true
}

func (a *Agent) recordNotice(n instance.Notice) {
	a.deps.Metrics.Notice(n.Kind)
	a.log.Warn("notice", "kind", n.Kind, "time", n.Time, "detail", n.Detail)
	a.mu.Lock()
	a.status.Notices = append(a.status.Notices, n)
	a.mu.Unlock()
	a.emit(status.Event{At: a.now(), Notice: &n, Message: string(n.Kind) + " " + n.Detail})
}

// finish runs the plan for an ending, then lingers until told to exit.
func (a *Agent) finish(ctx context.Context, e ending) error {
	if e.leaveRunning {
		a.log.Warn("stop signal with on_stop_signal=leave-running: exiting and leaving Jenkins running; "+
			"a restarted agent adopts it before the lease expires", "lease_ttl", a.cfg.Lease.TTL.D())
		a.stopHold()
		return nil
	}
	err := a.plan(ctx, e, false)
	if e.done != nil {
		e.done <- err
	}
	return a.linger(ctx)
}

// linger keeps metrics and status up after the plan until the next stop signal. A drill
// is refused; a notice that comes now has nothing left to end.
func (a *Agent) linger(ctx context.Context) error {
	for {
		select {
		case e := <-a.ends:
			switch {
			case e.done != nil:
				e.done <- errors.New("the shutdown plan has already run; restart the agent to boot Jenkins again")
			case e.notice.Kind == instance.KindSignal:
				return nil
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// setPhase records a phase change for status, metrics, systemd and the timeline.
func (a *Agent) setPhase(p status.Phase, msg string) {
	a.mu.Lock()
	changed := a.status.Phase != p
	a.status.Phase = p
	if changed {
		a.status.Since = a.now()
	}
	a.mu.Unlock()
	a.deps.Metrics.SetPhase(p)
	_ = a.deps.Notifier.Status(msg)
	if changed {
		a.log.Info("phase", "phase", p, "status", msg)
		a.emit(status.Event{At: a.now(), Phase: p, Message: msg})
	}
}

// step runs one named step: timed, logged, counted and put on the timeline.
func (a *Agent) step(ctx context.Context, s status.Step, msg string, f func() error) error {
	start := a.now()
	a.emit(status.Event{At: start, Step: s, Message: msg})
	err := f()
	d := a.now().Sub(start)
	a.deps.Metrics.ObserveStep(s, d, err)
	ev := status.Event{At: a.now(), Step: s, Duration: d, Done: true, Message: msg}
	if err != nil {
		ev.Err = err.Error()
		a.log.Error("step failed", "step", s, "duration", d, "err", err)
	} else {
		a.log.Info("step done", "step", s, "duration", d)
	}
	a.mu.Lock()
	a.status.Steps = append(a.status.Steps, ev)
	a.mu.Unlock()
	a.emit(ev)
	return err
}

// extending keeps systemd's start timeout open while a long step runs.
func (a *Agent) extending(ctx context.Context, f func() error) error {
	const window = 30 * time.Second
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(window / 3)
		defer t.Stop()
		_ = a.deps.Notifier.ExtendTimeout(window)
		for {
			select {
			case <-t.C:
				_ = a.deps.Notifier.ExtendTimeout(window)
			case <-stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	err := f()
	close(stop)
	wg.Wait()
	return err
}

func (a *Agent) subscribe(f func(status.Event)) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nextSub++
	a.subs[a.nextSub] = f
	return a.nextSub
}

func (a *Agent) unsubscribe(id int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.subs, id)
}

func (a *Agent) emit(ev status.Event) {
	a.mu.Lock()
	subs := make([]func(status.Event), 0, len(a.subs))
	for _, f := range a.subs {
		subs = append(subs, f)
	}
	a.mu.Unlock()
	for _, f := range subs {
		f(ev)
	}
}

func nextBackoff(d time.Duration) time.Duration {
	if d == 0 {
		return time.Second
	}
	return min(2*d, time.Minute)
}

// sleep waits d or until ctx ends; it reports whether the full time passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
