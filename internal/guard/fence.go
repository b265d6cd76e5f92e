package guard

import (
	"errors"
	"fmt"
	"time"
)

// Lease is what the guard needs to know of the lease record.
type Lease struct {
	// Holder is the instance id the record names.
	Holder string
	// Released is set by a clean release.
	Released bool
	// RenewedAt is when the holder last renewed; Expires is when the lease lapses
	// unless renewed again. Their difference is the lease's ttl.
	RenewedAt, Expires time.Time
}

// Why names what made the guard stop Jenkins.
type Why string

// The reasons a Fence stops Jenkins.
const (
	// WhyNone: keep running.
	WhyNone Why = ""
	// WhyOtherHolder: the record names another instance, which may already write.
	WhyOtherHolder Why = "another holder"
	// WhyReleased: the lease was released; a successor may take it at once.
	WhyReleased Why = "released"
	// WhyGone: the record vanished; the lease package reads that as a lost lease.
	WhyGone Why = "record gone"
	// WhyLapsing: no renewal was seen before the fence point.
	WhyLapsing Why = "not renewed"
)

// Fence decides from the reads of the lease record when Jenkins must stop. It is pure:
// the caller reads the record and brings the clock, so the rule is tested with a fake
// clock and the runner with real processes.
//
// Jenkins is stopped at the guard's fence point of the last renewal it saw,
// renewed_at + ttl - skew - ttl/12 (ttl = expires - renewed_at), and killed no later
// than expires - skew, so it is gone before any successor may believe the lease lapsed.
// The guard's point is ttl/12 after the agent's own (renewed_at + ttl - skew - ttl/6):
// a live agent fences first, and the guard, which sees a renewal only once its write
// has landed, does not stop Jenkins under an agent whose renewal is merely slow. A record that names another holder, is released or is gone stops
// Jenkins at once, with no grace: a successor may already be writing. A read that
// fails or does not parse changes nothing; a read that hangs cannot delay the fence,
// since the caller checks the fence point on its own timer.
type Fence struct {
	holder string
	skew   time.Duration

	good    Lease // the last record read that names holder and is live
	hasGood bool
	why     Why
	detail  string
}

// NewFence returns a Fence for holder with the given allowance for clock error.
func NewFence(holder string, skew time.Duration) *Fence {
	return &Fence{holder: holder, skew: skew}
}

// errGone is the read outcome of a record that does not exist.
var errGone = errors.New("lease record does not exist")

// Observe takes one read of the record: rec when err is nil, errGone when the record
// does not exist, any other error when the read or the parse failed. Once the fence
// has decided to stop, later reads change nothing.
func (f *Fence) Observe(now time.Time, rec Lease, err error) {
	if f.why != WhyNone {
		return
	}
	switch {
	case errors.Is(err, errGone):
		f.stop(WhyGone, "the lease record vanished")
	case err != nil:
		// A failed read is no news; the fence point of the last good read stands.
	case rec.Holder != f.holder:
		f.stop(WhyOtherHolder, fmt.Sprintf("the lease record names %s, not %s", rec.Holder, f.holder))
	case rec.Released:
		f.stop(WhyReleased, "the lease was released")
	default:
		if !f.hasGood || !rec.RenewedAt.Before(f.good.RenewedAt) {
			f.good, f.hasGood = rec, true
		}
		f.Check(now)
	}
}

// Check stops Jenkins when the fence point of the last good read has passed (or when
// there was none), and reports the decision so far.
func (f *Fence) Check(now time.Time) (Why, string) {
	if f.why == WhyNone {
		if !f.hasGood {
			f.stop(WhyLapsing, "no lease record naming this holder was read")
		} else if at := f.FenceAt(); !now.Before(at) {
			f.stop(WhyLapsing, fmt.Sprintf("the lease was last renewed at %s and not since; its fence point %s has passed",
				f.good.RenewedAt.Format(time.RFC3339Nano), at.Format(time.RFC3339Nano)))
		}
	}
	return f.why, f.detail
}

func (f *Fence) stop(why Why, detail string) {
	f.why, f.detail = why, detail
}

// Stopping reports the decision so far without looking at the clock.
func (f *Fence) Stopping() (Why, string) { return f.why, f.detail }

// FenceAt is the guard's fence point of the last good read: renewed_at + ttl - skew -
// ttl/12, half-way between the agent's own fence point and expires - skew. The zero
// time when no good record was read.
func (f *Fence) FenceAt() time.Time {
	if !f.hasGood {
		return time.Time{}
	}
	ttl := f.good.Expires.Sub(f.good.RenewedAt)
	return f.good.RenewedAt.Add(ttl - f.skew - ttl/12)
}

// KillAt is the moment a stop that began at stopAt must become SIGKILL: after grace,
// but never later than expires - skew for a lapsing lease, and at once when another
// holder may already write (another holder, released, gone).
func (f *Fence) KillAt(stopAt time.Time, grace time.Duration) time.Time {
	switch f.why {
	case WhyOtherHolder, WhyReleased, WhyGone:
		return stopAt
	}
	at := stopAt.Add(grace)
	if f.hasGood {
		if limit := f.good.Expires.Add(-f.skew); limit.Before(at) {
			at = limit
		}
	}
	if at.Before(stopAt) {
		return stopAt
	}
	return at
}

// Last is the last good record read, and whether there was one.
func (f *Fence) Last() (Lease, bool) { return f.good, f.hasGood }
