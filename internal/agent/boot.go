package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/clock"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

const (
	// identityDeadline bounds reading the identity at boot: IMDS can lag or throttle for
	// a while, and only one that stays away this long is fatal. systemd's start timeout
	// is kept open meanwhile.
	identityDeadline = 5 * time.Minute
	// discoveryTimeout bounds the boot-time lookup of target groups.
	discoveryTimeout = 30 * time.Second
	// readyProbeCap is the longest pause between two readiness probes.
	readyProbeCap = 200 * time.Millisecond
	// loadingReport is how often the STATUS= line reports a Jenkins still loading.
	loadingReport = 5 * time.Second
	// warmPoll is how often a warm-pool instance asks whether it entered service.
	warmPoll = 5 * time.Second
	// extendWindow is how far each EXTEND_TIMEOUT_USEC opens systemd's timeout.
	extendWindow = 30 * time.Second
)

// identifyUnlessStopped is identify, cut short by what ends the agent while IMDS may
// take minutes to answer. Without an identity cached on this boot no agent started
// anything on it, so a stop signal then ends the agent at once (stopped, exit 0) and a
// drill is refused. With one, a stop signal waits for the boot, which runs the plan
// for it (an agent restarted beside a running Jenkins hands it over).
func (a *Agent) identifyUnlessStopped(ctx context.Context) (id instance.Identity, stopped bool, err error) {
	if id, ok := a.state.identity(); ok {
		a.log.Info("instance identity from this boot's cache", "instance", id.InstanceID, "az", id.AvailabilityZone, "region", id.Region)
		return id, false, nil
	}
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		id  instance.Identity
		err error
	}
	read := make(chan result, 1)
	go func() {
		id, err := a.identify(ictx)
		read <- result{id, err}
	}()
	started := a.now()
	slow := time.NewTicker(extendWindow)
	defer slow.Stop()
	for {
		select {
		case r := <-read:
			return r.id, false, r.err
		case <-slow.C:
			waited := a.now().Sub(started).Round(time.Second)
			a.log.Warn("instance metadata (IMDS) does not answer yet; still retrying", "waited", waited, "gives_up_after", identityDeadline)
			a.tl.setPhase(status.PhaseBooting, fmt.Sprintf("reading the instance identity: IMDS does not answer yet (%s)", waited))
		case e := <-a.ends:
			if e.done != nil {
				e.done <- errors.New("drill: the agent is still reading the instance identity; nothing runs yet")
				continue
			}
			cancel()
			<-read
			a.log.Warn("stop signal before the instance identity was read: nothing started, nothing to hand over", "signal", e.notice.Detail)
			a.tl.setPhase(status.PhaseStopped, "stopped before boot: "+e.notice.Detail)
			return instance.Identity{}, true, nil
		}
	}
}

// identify returns IMDS's identity of this instance, read with retries until
// identityDeadline, and caches it for this boot (so a restarted agent needs no IMDS to
// adopt its lease and Jenkins).
func (a *Agent) identify(ctx context.Context) (instance.Identity, error) {
	ictx, cancel := context.WithTimeout(ctx, identityDeadline)
	defer cancel()
	var id instance.Identity
	err := a.extending(ictx, func() error {
		var err error
		id, err = a.deps.Metadata.Identity(ictx)
		return err
	})
	if err != nil {
		return instance.Identity{}, fmt.Errorf("instance identity (IMDS, retried for up to %s): %w", identityDeadline, err)
	}
	a.log.Info("instance identity", "instance", id.InstanceID, "type", id.InstanceType, "az", id.AvailabilityZone,
		"region", id.Region, "market", id.Market, "asg", id.AutoScalingGroup)
	if err := a.state.storeIdentity(id); err != nil {
		a.log.Warn("cannot cache the identity; a restarted agent will need IMDS", "err", err)
	}
	return id, nil
}

// assemble builds the adapters that depend on the identity and starts the one-time
// discovery of the instance's target groups.
func (a *Agent) assemble(ctx context.Context, id instance.Identity) (*host, error) {
	a.tl.update(func(s *status.Snapshot) { s.InstanceID = id.InstanceID })
	m, err := a.deps.NewMounter(id)
	if err != nil {
		return nil, fmt.Errorf("efs: %w", err)
	}
	l, err := a.deps.NewLease(id, m.MountPoint())
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	t, err := a.deps.NewTargets(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("target groups: %w", err)
	}
	h := &host{id: id, mounter: m, lease: l, targets: t, discovered: make(chan struct{})}
	a.host.Store(h)

	// Looked up once, now, and cached: the APIs throttle during mass interruptions.
	// Neither a notice during boot nor a resumed plan cancels the lookup; the plan waits
	// a little for it.
	go func() {
		defer close(h.discovered)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), discoveryTimeout)
		defer cancel()
		if err := t.Discover(dctx, id); err != nil {
			a.log.Warn("target group discovery failed; only the configured target groups will be deregistered", "err", err)
		}
	}()
	return h, nil
}

// boot mounts and verifies the home, takes the lease, and starts Jenkins.
func (a *Agent) boot(ctx context.Context, h *host) error {
	warm := a.warmPoolState(ctx)
	a.tl.setPhase(status.PhaseMounting, "mounting EFS "+a.cfg.EFS.FileSystemID)
	if err := a.extending(ctx, func() error {
		return a.tl.step(status.StepMount, func() error { return h.mounter.Mount(ctx) })
	}); err != nil {
		return fmt.Errorf("mount JENKINS_HOME: %w", err)
	}
	if err := a.giveHome(ctx, h); err != nil {
		return err
	}

	image := a.prepare(ctx)
	if warm {
		if err := a.waitInService(ctx, image); err != nil {
			return err
		}
	}

	a.tl.setPhase(status.PhaseWaitingForLease, "taking the JENKINS_HOME lease")
	go func() { // announce readiness once the image is present too
		select {
		case <-image.done:
			if image.err == nil {
				h.lease.Announce(true)
			}
		case <-ctx.Done():
		}
	}()
	var waitedOn string
	if err := a.extending(ctx, func() error {
		return a.tl.step(status.StepLease, func() error {
			_, err := h.lease.Acquire(ctx, func(s status.LeaseState) {
				if s.Holder == waitedOn {
					return // a renewal by the same holder: nothing new to say
				}
				waitedOn = s.Holder
				msg := fmt.Sprintf("waiting for %s to release JENKINS_HOME", s.Holder)
				a.log.Info(msg, "holder", s.Holder, "epoch", s.Epoch, "expires", s.Expires)
				a.tl.say(msg)
				a.tl.message(status.StepLease, msg)
			})
			return err
		})
	}); err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	a.startHold(ctx, h)

	a.tl.setPhase(status.PhaseStartingJenkins, "starting Jenkins")
	// The mount may have changed during a long lease wait; Jenkins only ever starts on a
	// verified home.
	if err := h.mounter.Verify(ctx); err != nil {
		return fmt.Errorf("mount JENKINS_HOME: verification before start: %w", err)
	}
	if err := a.extending(ctx, image.wait(ctx)); err != nil {
		return fmt.Errorf("jenkins image: %w", err)
	}
	if err := a.startJenkins(ctx); err != nil {
		return err
	}
	// The phase is serving before systemd hears READY=1, so status and metrics already
	// agree with it.
	a.tl.setPhase(status.PhaseServing, "serving")
	_ = a.deps.Notifier.Ready("serving: Jenkins answers")
	a.registration.start(ctx, func(ctx context.Context) { a.register(ctx, h) })
	go a.takeOver(context.WithoutCancel(ctx), h)
	return nil
}

// warmPoolState reports whether the instance sits in the group's warm pool: it then
// prepares (mount, verify, image) but takes no lease until it enters service. An
// unreadable state counts as in service: a warm instance that boots Jenkins only waits
// on the lease like any successor.
func (a *Agent) warmPoolState(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	state, err := a.deps.Metadata.TargetLifecycleState(cctx)
	if err != nil {
		a.log.Warn("cannot read the Auto Scaling target lifecycle state; booting as in service", "err", err)
		return false
	}
	return strings.HasPrefix(state, "Warmed:")
}

// waitInService holds a warm-pool instance, prepared, until its group puts it in service.
func (a *Agent) waitInService(ctx context.Context, image *preparation) error {
	if err := a.extending(ctx, image.wait(ctx)); err != nil {
		return fmt.Errorf("jenkins image: %w", err)
	}
	a.tl.setPhase(status.PhaseWaitingForLease, "warm pool: home verified and image present; waiting to enter service")
	return a.extending(ctx, func() error {
		for {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			state, err := a.deps.Metadata.TargetLifecycleState(cctx)
			cancel()
			if err == nil && !strings.HasPrefix(state, "Warmed:") {
				a.log.Info("left the warm pool", "target_lifecycle_state", state)
				return nil
			}
			if !clock.Sleep(ctx, warmPoll) {
				return ctx.Err()
			}
		}
	})
}

// registration is a registration in the target groups under way.
type registration struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (r *registration) start(ctx context.Context, f func(context.Context)) {
	ctx, cancel := context.WithCancel(ctx)
	r.mu.Lock()
	r.cancel = cancel
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f(ctx)
	}()
}

// stop ends a registration under way and waits for it.
func (r *registration) stop() {
	r.mu.Lock()
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	r.wg.Wait()
}

// preparation is the image pull, which runs beside the lease wait.
type preparation struct {
	done chan struct{}
	err  error
}

func (a *Agent) prepare(ctx context.Context) *preparation {
	p := &preparation{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.err = a.deps.Runtime.Prepare(ctx)
	}()
	return p
}

// wait returns a func that waits for the image, for extending.
func (p *preparation) wait(ctx context.Context) func() error {
	return func() error {
		select {
		case <-p.done:
			return p.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// register puts the instance (back) in its target groups once Jenkins answers: Auto
// Scaling registers an instance only when it launches it, so after a drill or a stop and
// start of the agent nobody else would. Registering a registered target changes nothing.
// The plan's deregistration waits for it, so a late registration never undoes it.
func (a *Agent) register(ctx context.Context, h *host) {
	select {
	case <-h.discovered:
	case <-ctx.Done():
		return
	}
	ctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
	defer cancel()
	if err := h.targets.Register(ctx, h.id.InstanceID); err != nil && ctx.Err() == nil {
		a.log.Error("registering in the target groups failed; the load balancer may not reach Jenkins", "err", err)
	}
}

// startJenkins starts (or adopts) the container and waits until Jenkins answers.
func (a *Agent) startJenkins(ctx context.Context) error {
	var adopted bool
	if err := a.tl.step(status.StepContainerStart, func() error {
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
		return a.tl.step(status.StepJenkinsReady, func() error { return a.waitReady(ctx) })
	})
}

// waitReady polls Jenkins until it serves. A Jenkins answering 503 is loading (a large
// home on a throttled EFS can take minutes): the wait goes on, with progress in
// STATUS=. jenkins.ready_timeout bounds silence: no HTTP answer at all. A container that
// exits meanwhile ends the wait at once.
func (a *Agent) waitReady(ctx context.Context) error {
	silence := a.cfg.Jenkins.ReadyTimeout.D()
	start := a.now()
	lastAnswer, checked := start, start
	var reported time.Time // the first 503 is reported at once
	interval := 50 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ready, err := a.deps.Jenkins.Ready(pctx)
		cancel()
		now := a.now()
		switch {
		case err == nil && ready:
			return nil
		case err == nil:
			lastAnswer = now
			if now.Sub(reported) >= loadingReport {
				reported = now
				a.tl.say(fmt.Sprintf("Jenkins is loading (answering 503) for %s", now.Sub(start).Round(time.Second)))
			}
		case now.Sub(lastAnswer) >= silence:
			return fmt.Errorf("jenkins gave no answer for jenkins.ready_timeout %s (last: %v); see `docker logs %s`",
				silence, err, a.cfg.Jenkins.ContainerName)
		}
		if now.Sub(checked) >= loadingReport {
			checked = now
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			running, rerr := a.deps.Runtime.Running(cctx)
			cancel()
			if rerr == nil && !running {
				return fmt.Errorf("the Jenkins container exited while starting; see `docker logs %s`", a.cfg.Jenkins.ContainerName)
			}
		}
		if !clock.Sleep(ctx, interval) {
			return fmt.Errorf("waiting for jenkins: %w", ctx.Err())
		}
		// Capped low: READY=1 should follow Jenkins' first answer within a few hundred
		// milliseconds, and a probe of /login costs Jenkins next to nothing.
		interval = min(interval*2, readyProbeCap)
	}
}

// abandonBoot cleans up after a failed boot. A Jenkins container that was started is
// stopped first: once this agent exits nobody renews the lease, and Jenkins must not
// outlive it. The lease stays recorded as ours, so the restarted agent adopts it at once
// (otherwise it expires after its ttl).
func (a *Agent) abandonBoot(ctx context.Context) {
	if a.holdEnded() == nil {
		return // the lease was never taken, so Jenkins was never started
	}
	grace := a.cfg.Jenkins.StopGrace.D()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace+15*time.Second)
	defer cancel()
	if err := a.deps.Runtime.Stop(cctx, grace); err != nil {
		a.log.Error("stopping Jenkins after a failed boot", "err", err)
		_ = a.deps.Runtime.Kill(cctx)
	}
	a.stopHold()
}

// extending keeps systemd's start timeout open while a long step runs.
func (a *Agent) extending(ctx context.Context, f func() error) error {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(extendWindow / 3)
		defer t.Stop()
		_ = a.deps.Notifier.ExtendTimeout(extendWindow)
		for {
			select {
			case <-t.C:
				_ = a.deps.Notifier.ExtendTimeout(extendWindow)
			case <-stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	var err error
	a.tl.beating(func() { err = f() })
	close(stop)
	<-done
	return err
}
