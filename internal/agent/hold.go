package agent

import (
	"context"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// hold is one run of lease renewals. It ends when stopped, when the lease is released,
// or with an error when the tenure is over (another controller took the home, or a
// renewal stall fenced Jenkins).
type hold struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error // valid once done is closed
}

// startHold renews the lease until the plan releases it. A holder that cannot renew
// kills Jenkins before its lease lapses (the fence). Renewals outlive a boot cancelled
// by a notice; Run stops them when it returns.
func (a *Agent) startHold(ctx context.Context, h *host) {
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	hd := &hold{cancel: cancel, done: make(chan struct{})}
	a.holdMu.Lock()
	a.hold = hd
	a.holdMu.Unlock()
	a.deps.Metrics.SetLeaseHeld(true)
	go func() {
		defer close(hd.done)
		hd.err = h.lease.Hold(hctx, func(fctx context.Context) error {
			a.log.Error("lease renewal failing: killing Jenkins before the lease can lapse")
			a.deps.Metrics.SetLeaseHeld(false)
			return a.deps.Runtime.Kill(fctx)
		})
		if hd.err != nil && hctx.Err() == nil {
			a.deps.Metrics.SetLeaseHeld(false)
			a.tl.emit(status.Event{Kind: status.EventLeaseLost, At: a.now(), Message: hd.err.Error()})
		}
	}()
}

// ended is closed when the renewals have stopped on their own (nil when none run).
func (a *Agent) holdEnded() <-chan struct{} {
	a.holdMu.Lock()
	defer a.holdMu.Unlock()
	if a.hold == nil {
		return nil
	}
	return a.hold.done
}

// stopHold ends renewals without releasing the lease; the plan calls it once the
// container is down, and leave-running before the agent exits.
func (a *Agent) stopHold() {
	a.holdMu.Lock()
	hd := a.hold
	a.hold = nil
	a.holdMu.Unlock()
	if hd != nil {
		hd.cancel()
		<-hd.done
	}
}

// resumeLease takes the lease back for a plan resumed after an agent restart, so that
// it is renewed while Jenkins drains and released once it is down. The agent adopts its
// own record at once. If the home is no longer mounted, the plan had stopped Jenkins
// already and there is nothing to hold; if another controller holds the lease, this
// Jenkins may not run a moment longer.
func (a *Agent) resumeLease(ctx context.Context, h *host) {
	vctx, cancel := context.WithTimeout(ctx, resumeLeaseWait)
	defer cancel()
	if err := h.mounter.Verify(vctx); err != nil {
		a.log.Info("JENKINS_HOME is not mounted any more; resuming the plan without the lease", "err", err)
		return
	}
	if _, err := h.lease.Acquire(vctx, func(status.LeaseState) {}); err != nil {
		a.hurry("another controller holds JENKINS_HOME: stopping this Jenkins at once")
		return
	}
	a.startHold(ctx, h)
}

// resumeLeaseWait bounds taking the lease back for a resumed plan.
const resumeLeaseWait = 3 * time.Second
