package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// fakeLeaseHome is the lease record, and the successor's announcement beside it, on one
// home that every instance's fakeLease reads and writes.
type fakeLeaseHome struct {
	mu         sync.Mutex
	holder     string
	epoch      uint64
	released   bool
	version    uint64 // grows with every write: a waiting instance times the record by it
	unreadable bool   // the record holds bytes no holder wrote
	succ       *status.Successor
}

// take makes instance id take the lease at once, whoever holds it, with a new epoch.
func (h *fakeLeaseHome) take(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holder, h.released = id, false
	h.epoch++
	h.version++
}

var (
	errFakeUnreadable = errors.New("lease record unreadable")
	errFakeFenced     = errors.New("lease fenced")
)

// fakeLease is one instance's handle on a fakeLeaseHome. A record of another holder is
// waited for until it is released, or unchanged for ttl plus skew; the holder renews
// every ttl/3 and stops holding ttl - skew - ttl/6 after its last renewal.
type fakeLease struct {
	j                  *journal
	home               *fakeLeaseHome
	id                 string
	ttl, skew, poll    time.Duration
	announceEvery      time.Duration // a waiting instance's refresh; stale after three
	mu                 sync.Mutex
	ten                *fakeTenure
	seenHolder         string // the record as last read or written
	seenEpoch          uint64
	ready              bool
	announced          []bool
	successor          *status.Successor
	lastAnnounced      time.Time
	lastAnnouncedReady bool
}

type fakeTenure struct {
	epoch    uint64
	lastGood time.Time
	ended    bool
	done     chan struct{}
}

// newFakeLease is the lease of instance id on a home of its own, with the timing of
// production: nothing lapses during a test.
func newFakeLease(j *journal, id string) *fakeLease {
	return &fakeLease{
		j: j, home: &fakeLeaseHome{}, id: id,
		ttl: 30 * time.Second, skew: 2 * time.Second, poll: 10 * time.Millisecond, announceEvery: time.Hour,
	}
}

// successorID is the instance that announces itself beside the lease in tests.
const successorID = "i-0bbbbbbbbbbbbbbb2"

// announce makes a successor appear beside the lease, as its waiting Acquire would.
func (l *fakeLease) announce(ready bool) {
	h := l.home
	h.mu.Lock()
	defer h.mu.Unlock()
	since := time.Now()
	if h.succ != nil && h.succ.InstanceID == successorID {
		since = h.succ.Since
	}
	h.succ = &status.Successor{InstanceID: successorID, Since: since, Updated: time.Now(), Ready: ready}
}

func (l *fakeLease) fencePoint() time.Duration { return l.ttl - l.skew - l.ttl/6 }

func (l *fakeLease) Acquire(ctx context.Context, waiting func(status.LeaseState)) (status.LeaseState, error) {
	l.j.add("lease-acquire")
	h := l.home
	var (
		reported   *status.LeaseState
		observed   uint64
		observedAt time.Time
		since      time.Time
	)
	for {
		if err := ctx.Err(); err != nil {
			if reported == nil {
				return status.LeaseState{}, fmt.Errorf("acquire lease: %w", err)
			}
			return status.LeaseState{}, fmt.Errorf("acquire lease: still held by %s (epoch %d): %w", reported.Holder, reported.Epoch, err)
		}
		l.mu.Lock()
		ready := l.ready
		l.mu.Unlock()
		now := time.Now()
		h.mu.Lock()
		if h.unreadable {
			h.mu.Unlock()
			return status.LeaseState{}, fmt.Errorf("acquire lease: %w: make sure no other controller runs on this home, then remove the record", errFakeUnreadable)
		}
		changed := reported == nil || observed != h.version
		if changed {
			observed, observedAt = h.version, now
		}
		take := h.holder == "" || h.released || (!changed && now.Sub(observedAt) >= l.ttl+l.skew)
		if take || h.holder == l.id {
			if take {
				h.holder, h.released = l.id, false
				h.epoch++
			}
			h.version++
			if h.succ != nil && h.succ.InstanceID == l.id {
				h.succ = nil // withdrawn: this instance holds the lease now
			}
			epoch := h.epoch
			h.mu.Unlock()
			return l.begin(epoch), nil
		}
		// Waiting: announced as the successor, refreshed every announceEvery.
		if since.IsZero() {
			since = now
		}
		l.mu.Lock()
		if l.lastAnnounced.IsZero() || now.Sub(l.lastAnnounced) >= l.announceEvery || ready != l.lastAnnouncedReady {
			h.succ = &status.Successor{InstanceID: l.id, Since: since, Updated: now, Ready: ready}
			l.lastAnnounced, l.lastAnnouncedReady = now, ready
		}
		st := status.LeaseState{Held: true, Holder: h.holder, Epoch: h.epoch}
		l.seenHolder, l.seenEpoch = st.Holder, st.Epoch
		l.mu.Unlock()
		h.mu.Unlock()
		if changed {
			reported = &st
			if waiting != nil {
				waiting(st)
			}
		}
		t := time.NewTimer(l.poll)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// begin starts (or, for an adopted record, carries on) the tenure of epoch.
func (l *fakeLease) begin(epoch uint64) status.LeaseState {
	l.mu.Lock()
	if l.ten != nil && !l.ten.ended && l.ten.epoch != epoch {
		l.endLocked()
	}
	if l.ten == nil || l.ten.ended {
		l.ten = &fakeTenure{epoch: epoch, done: make(chan struct{})}
	}
	l.ten.lastGood = time.Now()
	l.seenHolder, l.seenEpoch = l.id, epoch
	l.lastAnnounced = time.Time{}
	l.mu.Unlock()
	return l.State()
}

// endLocked ends the tenure and wakes Hold; l.mu is held.
func (l *fakeLease) endLocked() {
	if l.ten != nil && !l.ten.ended {
		l.ten.ended = true
		close(l.ten.done)
	}
}

func (l *fakeLease) Announce(ready bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ready = ready
	l.announced = append(l.announced, ready)
}

func (l *fakeLease) Hold(ctx context.Context, fence func(context.Context) error) error {
	l.mu.Lock()
	ten := l.ten
	l.mu.Unlock()
	if ten == nil || ten.ended {
		return errors.New("hold lease: not acquired; call Acquire first")
	}
	h := l.home
	tick := time.NewTicker(l.poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ten.done:
			return nil
		case <-tick.C:
		}
		now := time.Now()
		var lost error
		l.mu.Lock()
		h.mu.Lock()
		switch {
		case ten.ended:
		case h.unreadable: // the renewal fails; the holder stops before its lease can lapse
			if since := now.Sub(ten.lastGood); since >= l.fencePoint() {
				lost = fmt.Errorf("%w: no renewal succeeded in %s", errFakeFenced, since.Round(time.Millisecond))
			}
		case h.holder != l.id || h.epoch != ten.epoch:
			lost = fmt.Errorf("lease lost: taken by %s (epoch %d, ours was %d)", h.holder, h.epoch, ten.epoch)
			l.seenHolder, l.seenEpoch = h.holder, h.epoch
		case h.released:
			lost = errors.New("lease lost: the record was marked released by someone else")
		case now.Sub(ten.lastGood) >= l.ttl/3:
			h.version++
			ten.lastGood = now
		}
		h.mu.Unlock()
		if lost != nil {
			l.endLocked()
		}
		l.mu.Unlock()
		if lost != nil {
			if fence != nil {
				fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.ttl)
				_ = fence(fctx)
				cancel()
			}
			return fmt.Errorf("hold lease: %w", lost)
		}
	}
}

func (l *fakeLease) Release(ctx context.Context) error {
	l.j.add("lease-release")
	l.mu.Lock()
	defer l.mu.Unlock()
	ten := l.ten
	if ten == nil || ten.ended {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	h := l.home
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.holder != l.id || h.epoch != ten.epoch {
		l.endLocked()
		return fmt.Errorf("release lease: lease lost: taken by %s (epoch %d, ours was %d)", h.holder, h.epoch, ten.epoch)
	}
	if !h.released {
		h.released = true
		h.version++
	}
	l.endLocked()
	return nil
}

func (l *fakeLease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heldLocked()
}

func (l *fakeLease) heldLocked() bool {
	return l.ten != nil && !l.ten.ended && time.Since(l.ten.lastGood) < l.fencePoint()
}

func (l *fakeLease) State() status.LeaseState {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := status.LeaseState{Held: l.heldLocked(), Holder: l.seenHolder, Epoch: l.seenEpoch}
	if l.successor != nil {
		s := *l.successor
		st.Successor = &s
	}
	return st
}

func (l *fakeLease) Successor(ctx context.Context) (status.Successor, bool, error) {
	if err := ctx.Err(); err != nil {
		return status.Successor{}, false, fmt.Errorf("read successor: %w", err)
	}
	l.home.mu.Lock()
	var s *status.Successor
	if a := l.home.succ; a != nil && a.InstanceID != l.id && time.Since(a.Updated) <= 3*l.announceEvery {
		c := *a
		s = &c
	}
	l.home.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.successor = s
	if s == nil {
		return status.Successor{}, false, nil
	}
	return *s, true, nil
}
