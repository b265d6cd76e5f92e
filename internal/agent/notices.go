package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/clock"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// ending asks the agent to run the shutdown plan (or, for leave-running, to exit).
type ending struct {
	notice   instance.Notice
	deadline time.Time // the termination time worked to
	// patientUntil: until then the plan serves as usual (no quiet-down) unless a
	// successor waits ready; for scheduled events far ahead. Zero: quiet-down at once.
	patientUntil time.Time
	// replace asks the Auto Scaling group for the replacement at once (Spot notices,
	// scheduled stop and retirement).
	replace bool
	// heartbeat keeps the group's termination lifecycle action alive while builds run
	// (a termination the group started).
	heartbeat    bool
	leaveRunning bool
	done         chan error // a drill waits for the plan's outcome
}

// Scheduled event codes (IMDS events/maintenance/scheduled).
const (
	codeInstanceStop       = "instance-stop"
	codeInstanceRetirement = "instance-retirement"
)

// dispatch turns notices into endings according to the configured policy.
func (a *Agent) dispatch(ctx context.Context, notices <-chan instance.Notice) {
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-notices:
			a.recordNotice(n)
			e, ok := a.endingFor(ctx, n)
			if !ok {
				continue
			}
			a.end(e)
		}
	}
}

// end hands an ending to the main flow, or moves a running plan's deadline earlier.
func (a *Agent) end(e ending) {
	if a.plan.tighten(e.deadline) {
		a.deps.Metrics.SetDeadline(a.plan.deadline())
		a.tl.update(func(s *status.Snapshot) { s.Deadline = a.plan.deadline() })
		a.log.Warn("a later notice moved the deadline earlier", "deadline", a.plan.deadline())
		return
	}
	select {
	case a.ends <- e:
	default:
	}
}

// endingFor is the policy: what a notice does.
func (a *Agent) endingFor(ctx context.Context, n instance.Notice) (ending, bool) {
	in := a.cfg.Interruption
	switch n.Kind {
	case instance.KindSpotTerminate, instance.KindSpotStop, instance.KindSpotHibernate:
		return ending{notice: n, deadline: a.deadlineFor(n), replace: in.RequestReplacement}, true
	case instance.KindASGTerminated:
		// The group terminates the instance itself (scale-in, instance refresh, Capacity
		// Rebalancing): builds may run up to asg_max_drain, with lifecycle heartbeats.
		drain := in.ASGMaxDrain.D()
		if h := a.host.Load(); h != nil {
			if limit := h.targets.LifecycleWaitLimit(); limit > 0 && limit < drain {
				drain = limit
			}
		}
		return ending{notice: n, deadline: n.Seen.Add(drain), heartbeat: true}, true
	case instance.KindRebalance:
		if in.OnRebalance != config.PolicyDrain {
			a.log.Warn("rebalance recommendation recorded; on_rebalance is notify")
			return ending{}, false
		}
		a.arm(ending{notice: n}, "rebalance recommendation: handing over as soon as a successor waits ready on the lease")
		return ending{}, false
	case instance.KindScheduledEvent:
		return a.scheduled(ctx, n)
	}
	return ending{}, false
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

// scheduled handles a scheduled event: worked to its NotBefore and remembered by its
// EventId across reboots, so an event still listed after the reboot it announced does
// not drain Jenkins again. A stop or retirement asks for the replacement
// scheduled_event_lead ahead and hands over when the successor is ready; other events
// (reboots, maintenance) hand over only to a successor already waiting ready.
func (a *Agent) scheduled(ctx context.Context, n instance.Notice) (ending, bool) {
	in := a.cfg.Interruption
	if in.OnScheduledEvent != config.PolicyDrain {
		a.log.Warn("scheduled event recorded; on_scheduled_event is notify", "event", n.EventID, "code", n.Code, "not_before", n.Time)
		return ending{}, false
	}
	seen, err := a.state.events()
	if err != nil {
		a.log.Warn("cannot read the scheduled events already handled", "err", err)
	}
	rec, known := seen[n.EventID]
	if known && !rec.Acted.IsZero() {
		a.log.Info("scheduled event already handled; not draining again", "event", n.EventID, "acted", rec.Acted)
		return ending{}, false
	}
	if !known {
		rec = eventRecord{Code: n.Code, NotBefore: n.Time, Seen: n.Seen}
		if err := a.state.rememberEvent(n.EventID, rec, a.now()); err != nil {
			a.log.Warn("cannot remember the scheduled event; a reboot may handle it again", "err", err)
		}
	}
	notBefore := n.Time
	if notBefore.IsZero() {
		notBefore = n.Seen.Add(a.budget)
	}
	if n.Code != codeInstanceStop && n.Code != codeInstanceRetirement {
		a.arm(ending{notice: n, deadline: notBefore},
			fmt.Sprintf("scheduled %s at %s: handing over as soon as a successor waits ready", n.Code, notBefore.UTC().Format(time.RFC3339)))
		return ending{}, false
	}
	e := ending{
		notice:       n,
		deadline:     notBefore,
		patientUntil: notBefore.Add(-a.budget),
		replace:      in.RequestReplacement,
	}
	at := notBefore.Add(-in.ScheduledEventLead.D())
	pending := fmt.Sprintf("scheduled %s at %s: replacement asked for at %s", n.Code,
		notBefore.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	a.tl.update(func(s *status.Snapshot) { s.Pending = pending })
	a.log.Warn(pending, "event", n.EventID)
	if wait := at.Sub(a.now()); wait > 0 {
		go func() {
			if clock.Sleep(ctx, wait) {
				a.end(e)
			}
		}()
		return ending{}, false
	}
	return e, true
}

// arm keeps an advisory notice until a successor waits ready on the lease: Jenkins is
// never left down on a live instance with nobody to take over.
func (a *Agent) arm(e ending, pending string) {
	a.armed.Store(&e)
	a.tl.update(func(s *status.Snapshot) { s.Pending = pending })
	a.log.Warn(pending)
}

// fireArmed starts the plan of an armed advisory notice once a successor waits ready.
func (a *Agent) fireArmed() {
	e := a.armed.Load()
	if e == nil || !a.successor.ready() {
		return
	}
	a.armed.Store(nil)
	now := a.now()
	fired := *e
	fired.deadline = now.Add(a.budget)
	if !e.deadline.IsZero() && e.deadline.Before(fired.deadline) {
		fired.deadline = e.deadline
	}
	a.log.Warn("a successor waits ready: handing over for the advisory notice", "notice", e.notice.Kind, "successor", a.successor.view().InstanceID)
	a.end(fired)
}

// recordNotice counts a notice, with the capacity pool it hit, and puts it on the
// timeline and in status.
func (a *Agent) recordNotice(n instance.Notice) {
	if h := a.host.Load(); h != nil {
		n.InstanceType, n.AvailabilityZone = h.id.InstanceType, h.id.AvailabilityZone
	}
	a.deps.Metrics.Notice(n.Kind)
	a.deps.Metrics.NoticeInPool(n.Kind, n.InstanceType, n.AvailabilityZone)
	a.log.Warn("notice", "kind", n.Kind, "time", n.Time, "detail", n.Detail, "event", n.EventID,
		"instance_type", n.InstanceType, "az", n.AvailabilityZone)
	a.tl.update(func(s *status.Snapshot) { s.Notices = append(s.Notices, n) })
	a.tl.emit(status.Event{Kind: status.EventNotice, At: a.now(), Notice: &n, Message: string(n.Kind) + " " + n.Detail})
}

func signalNotice(now time.Time, detail string) instance.Notice {
	return instance.Notice{Kind: instance.KindSignal, Seen: now, Detail: detail}
}

// planClock is the deadline of the running plan, which a later notice may move earlier.
type planClock struct {
	mu      sync.Mutex
	active  bool
	current time.Time
}

func (c *planClock) begin(deadline time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.active, c.current = true, deadline
}

func (c *planClock) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.active = false
}

func (c *planClock) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.active
}

func (c *planClock) deadline() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current
}

// tighten moves a running plan's deadline earlier, and reports whether a plan runs.
func (c *planClock) tighten(deadline time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.active {
		return false
	}
	if !deadline.IsZero() && deadline.Before(c.current) {
		c.current = deadline
	}
	return true
}

// successorView is the last announcement of a successor waiting on the lease.
type successorView struct {
	mu   sync.Mutex
	last status.Successor
	ok   bool
}

// publish records an announcement and puts a change on the timeline.
func (v *successorView) publish(a *Agent, s status.Successor, ok bool) {
	v.mu.Lock()
	changed := ok != v.ok || s.InstanceID != v.last.InstanceID || s.Ready != v.last.Ready
	v.last, v.ok = s, ok
	v.mu.Unlock()
	if !changed {
		return
	}
	msg := "no successor waits on the lease"
	if ok {
		msg = fmt.Sprintf("successor %s waits on the lease since %s (ready: %t)", s.InstanceID, s.Since.UTC().Format(time.TimeOnly), s.Ready)
	}
	a.log.Info(msg)
	ev := status.Event{Kind: status.EventSuccessor, At: a.now(), Message: msg}
	if ok {
		ev.Successor = &s
	}
	a.tl.emit(ev)
}

func (v *successorView) ready() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ok && v.last.Ready
}

func (v *successorView) view() status.Successor {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.last
}
