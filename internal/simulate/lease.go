package simulate

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// observedLease is the real lease as one simulated instance holds it, plus what a
// rehearsal needs to see and do from outside: the record the instance last waited
// on, when it took the lease, when it fenced its Jenkins, and an abrupt end that
// stands in for the instance dying (renewals simply stop, nothing is released).
type observedLease struct {
	*lease.Lease

	gone     chan struct{}
	goneOnce sync.Once

	mu        sync.Mutex
	waitedOn  status.LeaseState // the record last seen held by another instance
	acquired  time.Time         // when Acquire returned the lease
	fences    []fenceRecord
	holdEnded chan struct{} // closed when the running Hold returns; nil when none runs
}

// fenceRecord is one run of the fence: the holder killing its own Jenkins because it
// could not renew, or because it found the lease taken.
type fenceRecord struct {
	Began, Ended time.Time
	Err          error
}

var _ agent.Lease = (*observedLease)(nil)

func newObservedLease(l *lease.Lease) *observedLease {
	return &observedLease{Lease: l, gone: make(chan struct{})}
}

// Acquire takes the lease as the real one does, noting what it waited on.
func (o *observedLease) Acquire(ctx context.Context, waiting func(status.LeaseState)) (status.LeaseState, error) {
	ctx, cancel := o.alive(ctx)
	defer cancel()
	st, err := o.Lease.Acquire(ctx, func(s status.LeaseState) {
		o.mu.Lock()
		o.waitedOn = s
		o.mu.Unlock()
		if waiting != nil {
			waiting(s)
		}
	})
	if err == nil {
		o.mu.Lock()
		o.acquired = time.Now()
		o.mu.Unlock()
	}
	return st, err
}

// Hold renews as the real lease does until crash, and records every fence.
func (o *observedLease) Hold(ctx context.Context, fence func(context.Context) error) error {
	ended := make(chan struct{})
	defer close(ended)
	o.mu.Lock()
	o.holdEnded = ended
	o.mu.Unlock()
	ctx, cancel := o.alive(ctx)
	defer cancel()
	return o.Lease.Hold(ctx, func(fctx context.Context) error {
		began := time.Now()
		err := fence(fctx)
		o.mu.Lock()
		o.fences = append(o.fences, fenceRecord{Began: began, Ended: time.Now(), Err: err})
		o.mu.Unlock()
		return err
	})
}

// Release releases the lease as the real one does, unless the instance is gone: a dead
// instance writes nothing. (Its agent may still see the renewals end before it is
// cancelled, and run its plan; that plan must not hand the home over cleanly.)
func (o *observedLease) Release(ctx context.Context) error {
	select {
	case <-o.gone:
		return errors.New("the instance is gone (simulated crash): nothing is released")
	default:
	}
	return o.Lease.Release(ctx)
}

// alive is ctx, ended also by crash.
func (o *observedLease) alive(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-o.gone:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// crash ends renewals abruptly, as the death of the instance would: no release, the
// record stays until it expires. It returns once renewing has stopped, or after wait.
func (o *observedLease) crash(wait time.Duration) {
	o.goneOnce.Do(func() { close(o.gone) })
	o.mu.Lock()
	ended := o.holdEnded
	o.mu.Unlock()
	if ended == nil {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ended:
	case <-t.C:
	}
}

// observation is a copy of what the lease saw.
type observation struct {
	WaitedOn status.LeaseState
	Acquired time.Time
	Fences   []fenceRecord
}

func (o *observedLease) observed() observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	return observation{WaitedOn: o.waitedOn, Acquired: o.acquired, Fences: append([]fenceRecord(nil), o.fences...)}
}
