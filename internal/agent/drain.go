package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// bePatient serves as usual, without quiet-down, while a scheduled event is far ahead:
// until a successor waits ready or patientUntil comes.
func (p *planRun) bePatient(ctx context.Context) {
	a := p.a
	if !a.now().Before(p.e.patientUntil) {
		return
	}
	a.tl.say(fmt.Sprintf("serving until a successor is ready, or until %s", p.e.patientUntil.UTC().Format(time.RFC3339)))
	for a.now().Before(p.e.patientUntil) {
		if s, ok := a.readSuccessor(ctx, p.h); ok {
			p.successorSeen = true
			if s.Ready {
				return
			}
		}
		select {
		case <-time.After(min(drainPoll, p.e.patientUntil.Sub(a.now()))):
		case <-a.force:
			return
		case <-ctx.Done():
			return
		}
		a.tl.pulse.beat(a.now())
	}
}

// drain lets running builds finish until the stop time, and waits for an expected
// successor to be ready. An executor list that cannot be read is unknown: the drain
// goes on until it can be read or the stop time comes.
func (p *planRun) drain(ctx context.Context) error {
	a := p.a
	var last string
	unknown := 0
	for {
		a.tl.pulse.beat(a.now())
		builds, err := a.lookAtBuilds(ctx)
		if err != nil && p.jenkinsGone(ctx) {
			// Jenkins does not run at all (it never started here, it crashed, dockerd
			// stopped it): no build can be running, whatever its API cannot say.
			builds, err = nil, nil
		}
		var active []string
		for _, b := range builds {
			if !b.Parked {
				active = append(active, b.URL)
			}
		}
		if err != nil {
			unknown++
			if unknown == 1 {
				a.tl.message(status.StepDrain, fmt.Sprintf("running builds unknown (%v); still waiting", err))
			}
		} else {
			unknown = 0
			if now := strings.Join(active, ", "); now != last {
				last = now
				if len(active) > 0 {
					a.tl.message(status.StepDrain, fmt.Sprintf("%d build(s) running: %s", len(active), now))
				}
			}
		}
		s, ok := a.readSuccessor(ctx, p.h)
		if ok {
			p.successorSeen = true
			p.successorReady = s
		}
		expect := p.expectSuccessor()
		done := err == nil && len(active) == 0
		left := p.stopAt().Sub(a.now())
		switch {
		case left <= 0:
			// Not a failure of the plan: the budget is spent. Jenkins saves Pipelines on
			// stop and the successor resumes them; other builds are aborted.
			msg := "stop time reached"
			switch {
			case err != nil:
				msg += fmt.Sprintf(" with running builds unknown (%v)", err)
			case len(active) > 0:
				msg += fmt.Sprintf(" with %d build(s) running (Pipelines resume on the next start, others are aborted): %s", len(active), last)
			case expect:
				msg += " before a successor was ready; handing over anyway"
			}
			a.log.Warn(msg)
			a.tl.message(status.StepDrain, msg)
			return nil
		case done && (!expect || (ok && s.Ready)):
			return nil
		case done && !p.waitingReported:
			p.waitingReported = true
			a.tl.message(status.StepDrain, fmt.Sprintf("builds done; serving until the successor waits ready on the lease (at the latest until %s)",
				p.stopAt().UTC().Format(time.TimeOnly)))
		}
		p.heartbeat(ctx)
		select {
		case <-time.After(min(drainPoll, left)):
		case <-a.force:
			if !done {
				return fmt.Errorf("forced stop with %d build(s) running: %s", len(active), last)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// jenkinsGone reports whether the daemon says for sure that the Jenkins container does
// not run. An error is unknown, never gone.
func (p *planRun) jenkinsGone(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	running, err := p.a.deps.Runtime.Running(cctx)
	return err == nil && !running
}

// heartbeat keeps the group's lifecycle action alive during a termination it started.
func (p *planRun) heartbeat(ctx context.Context) {
	a, h := p.a, p.h
	if !p.e.heartbeat || a.now().Sub(p.lastHeartbeat) < h.targets.HeartbeatInterval() {
		return
	}
	p.lastHeartbeat = a.now()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := h.targets.Heartbeat(cctx, h.id.InstanceID)
	if errors.Is(err, instance.ErrNoLifecycleAction) {
		a.deps.Metrics.LifecycleHeartbeat("failed")
		a.hurry("the Auto Scaling group no longer waits for the lifecycle action: handing over now")
		return
	}
	if err != nil {
		a.deps.Metrics.LifecycleHeartbeat("failed")
		a.log.Warn("lifecycle heartbeat failed; the group may end the instance before builds are done", "err", err)
		return
	}
	a.deps.Metrics.LifecycleHeartbeat("ok")
}
