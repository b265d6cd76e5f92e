package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// handover gives JENKINS_HOME up: the builds the stop will abort are recorded for the
// successor; the instance leaves its target groups; the container stops within
// stop_grace; only once Jenkins is surely down is the lease released (a successor
// starts within one lease poll) and the home unmounted; then the lifecycle action is
// completed.
func (p *planRun) handover(ctx context.Context) {
	a, h := p.a, p.h
	p.recordAborted(ctx)

	dctx, cancel := p.stepContext(ctx, p.doneBy())
	p.run(status.StepDeregister, func() error {
		a.registration.stop() // a registration still under way must not land after this
		a.awaitDiscovery(h, p.doneBy())
		return h.targets.Deregister(dctx, h.id.InstanceID)
	})
	cancel()

	p.stopped = p.run(status.StepContainerStop, func() error { return p.stopContainer(ctx) })

	// The lease is released and the home unmounted only once Jenkins is surely down: a
	// successor must never start while this Jenkins can still write. While it may still
	// run, the lease stays held and renewed, and the stop is retried after the plan.
	if p.stopped {
		a.stopHold()
	}
	released := p.run(status.StepLeaseRelease, func() error {
		if !p.stopped {
			return errNotStopped
		}
		cctx, cancel := p.stepContext(ctx, earliest(a.now().Add(confirmStop), p.doneBy()))
		defer cancel()
		return h.lease.Release(cctx)
	})
	if released {
		a.deps.Metrics.SetLeaseHeld(false)
		ev := status.Event{Kind: status.EventHandover, At: a.now(), Message: "JENKINS_HOME released"}
		if p.successorReady.InstanceID != "" {
			s := p.successorReady
			ev.Successor = &s
			ev.Message = "JENKINS_HOME released to " + s.InstanceID
		}
		a.tl.emit(ev)
	}
	p.run(status.StepUnmount, func() error {
		if !p.stopped {
			return errNotStopped
		}
		cctx, cancel := p.stepContext(ctx, p.doneBy())
		defer cancel()
		return h.mounter.Unmount(cctx)
	})
	// A drill ends no instance, and a detached instance (the replacement was asked for)
	// has left its group and its lifecycle hooks: neither has an action to complete.
	if p.e.notice.Kind != instance.KindDrill && !p.replaced.Load() {
		cctx, cancel := p.stepContext(ctx, p.doneBy())
		p.run(status.StepLifecycleComplete, func() error { return h.targets.CompleteLifecycle(cctx, h.id.InstanceID) })
		cancel()
	}
}

// stopContainer stops Jenkins within stop_grace (shortened when time is short) and
// makes sure it is down, killing it if a stop did not take. The whole step ends before
// the tail reserve, even with a daemon that does not answer.
func (p *planRun) stopContainer(ctx context.Context) error {
	a := p.a
	limit := p.doneBy().Add(-tailReserve)
	grace := a.cfg.Jenkins.StopGrace.D()
	if left := limit.Sub(a.now()) - minCallTime; left < grace {
		grace = max(left, time.Second)
	}
	select {
	case <-a.force:
		grace = min(grace, 5*time.Second)
	default:
	}
	sctx, cancel := p.stepContext(ctx, earliest(a.now().Add(grace+minCallTime), limit))
	stopErr := a.deps.Runtime.Stop(sctx, grace)
	cancel()
	cctx, cancel := p.stepContext(ctx, limit)
	defer cancel()
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
	return nil
}

// recordAborted writes, beside the lease, the builds the stop is about to abort (not
// Pipelines, which are saved and resume), with their parameters, so the successor can
// report them and queue them again.
func (p *planRun) recordAborted(ctx context.Context) {
	a, h := p.a, p.h
	cctx, cancel := context.WithTimeout(ctx, abortedCap)
	defer cancel()
	builds, err := a.deps.Jenkins.RunningBuilds(cctx)
	if err != nil {
		a.log.Warn("cannot list the builds the stop aborts", "err", err)
		return
	}
	for _, b := range builds {
		if b.Pipeline {
			continue
		}
		ab := status.AbortedBuild{Job: b.Job, Number: b.Number, URL: b.URL}
		if params, err := a.deps.Jenkins.BuildParameters(cctx, b.URL); err == nil {
			ab.Parameters = params
		} else {
			a.log.Warn("cannot read a build's parameters", "build", b.URL, "err", err)
		}
		p.aborted = append(p.aborted, ab)
	}
	if len(p.aborted) == 0 {
		return
	}
	a.tl.message(status.StepDrain, fmt.Sprintf("%d build(s) will be aborted by the stop; recorded for the successor", len(p.aborted)))
	rec := abortedRecord{By: h.id.InstanceID, At: a.now(), Builds: p.aborted}
	if err := writeNote(cctx, h.mounter.MountPoint(), abortedNotes, rec); err != nil {
		a.log.Warn("cannot record the aborted builds for the successor", "err", err)
	}
}

// reportAborted reports the builds the previous controller's stop aborted (status, a
// counter, the log) and, with jenkins.requeue_aborted_builds, queues them again.
func (a *Agent) reportAborted(ctx context.Context, h *host) {
	home := h.mounter.MountPoint()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var rec abortedRecord
	ok, err := readNote(cctx, home, abortedNotes, &rec)
	if err != nil {
		a.log.Warn("cannot read the builds the previous controller's stop aborted", "err", err)
		return
	}
	if !ok || len(rec.Builds) == 0 {
		return
	}
	for i, b := range rec.Builds {
		a.log.Warn("build aborted by the previous controller's stop", "job", b.Job, "number", b.Number, "by", rec.By, "at", rec.At)
		if !a.cfg.Jenkins.RequeueAbortedBuilds {
			continue
		}
		cause := fmt.Sprintf("Queued again by jenkins-spot-agent: build #%d was aborted when controller %s stopped at %s",
			b.Number, rec.By, rec.At.UTC().Format(time.RFC3339))
		if err := a.deps.Jenkins.Requeue(cctx, b.Job, b.Parameters, cause); err != nil {
			a.log.Error("cannot queue an aborted build again", "job", b.Job, "number", b.Number, "err", err)
			continue
		}
		rec.Builds[i].Requeued = true
	}
	a.deps.Metrics.AbortedBuilds(len(rec.Builds))
	a.tl.update(func(s *status.Snapshot) { s.Aborted = append(s.Aborted, rec.Builds...) })
	if err := removeNote(cctx, home, abortedNotes); err != nil {
		a.log.Warn("cannot remove the record of aborted builds; they may be reported again", "err", err)
	}
}

// replaced tells why this instance must stay idle: it handed JENKINS_HOME over and its
// group launched a replacement (a stopped or hibernated Spot instance started again
// later must never contend for the home). Empty when it may boot Jenkins.
func (a *Agent) replaced() string {
	rec, err := a.state.replacedRecord()
	if err != nil {
		return fmt.Sprintf("cannot tell whether this instance was replaced (%v); staying idle", err)
	}
	if rec == nil {
		return ""
	}
	return fmt.Sprintf("replaced: this instance handed JENKINS_HOME over at %s (%s) and its Auto Scaling group launched a replacement; "+
		"it no longer contends for the home. Terminate it, or remove %s to let it take the home again",
		rec.At.UTC().Format(time.RFC3339), rec.Notice, a.state.path("replaced.json"))
}
