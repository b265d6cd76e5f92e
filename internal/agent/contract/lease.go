package contract

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// Lease is the single-writer lease on JENKINS_HOME: a record beside the data that names
// the one instance allowed to run Jenkins on it. Implementation: lease.Lease (a locked
// record file on the home). One value is one instance's handle; its methods are safe
// for concurrent use, and Hold runs in its own goroutine while Jenkins runs.
type Lease interface {
	// Acquire takes the lease and returns the tenure (Held, this instance as Holder, its
	// epoch). A free or released lease is taken at once, with an epoch above every one
	// before. This instance's own unreleased record (an agent restarted on the same
	// instance) is adopted at once, epoch unchanged. A record of another holder is
	// waited for while it is live: it is taken at the poll after a release, or once it
	// stayed unchanged (no renewal) for the holder's ttl and an allowance on this
	// instance's own clock. While it waits it announces this instance as the successor
	// (see Announce), and calls waiting with the holder's state when it first finds the
	// lease held and whenever the holder's record changes. Errors, with the lease not
	// held and the record unchanged: ctx ended (its error in the chain, the message
	// names the holder waited for); the record cannot be read or parsed (never
	// overwritten: that could make two writers; at once, without waiting for ctx).
	Acquire(ctx context.Context, waiting func(status.LeaseState)) (status.LeaseState, error)
	// Announce sets what this instance says of itself while Acquire waits: ready means
	// the home is mounted and verified and the image present, so it can start Jenkins at
	// once. It may come before or during Acquire and never blocks; Acquire writes it.
	Announce(ready bool)
	// Hold renews the tenure Acquire began until ctx ends or Release runs, then returns
	// nil; a tenure whose Hold ended with ctx goes on (a restarted agent adopts it). If
	// the record shows another holder or epoch, it calls fence once, ends the tenure and
	// returns an error naming the holder found; if renewals keep failing, it calls fence
	// once before the lease can lapse and returns an error. After an error Held is false
	// until Acquire succeeds again, with a new epoch.
	Hold(ctx context.Context, fence func(context.Context) error) error
	// Release gives the tenure up (the record marked released) so that a waiting
	// successor takes it at its next poll. It blocks on the file system, bounded by ctx.
	// Idempotent: releasing again, or without a tenure, is no error. It never touches a
	// record another holder took meanwhile (that is an error). An error means the
	// tenure was not released.
	Release(ctx context.Context) error
	// Held reports whether this instance holds the lease now: a tenure acquired and not
	// released, lost or fenced. It never blocks.
	Held() bool
	// State is this instance's view: Held as Held says, the holder and epoch of the
	// record as last read or written, and the successor last read by Successor. It never
	// blocks.
	State() status.LeaseState
	// Successor reads the announcement of an instance waiting on the lease: false when
	// there is none, when it is stale (its instance stopped refreshing it) or when it
	// names this instance. It blocks on one read, bounded by ctx; an error means the
	// announcement could not be read. What it returns is also State().Successor.
	Successor(ctx context.Context) (status.Successor, bool, error)
}

// LeaseWorld is one home with no lease record yet, as a LeaseHarness makes it.
type LeaseWorld struct {
	// New returns a lease on the home for the instance id, as the agent builds it at
	// boot: a second one for the same id is that agent restarted on the same instance.
	// Its ttl is short (seconds at most): the suite waits one out.
	New func(id string) Lease
	// TakeOver makes the instance id take the lease at once whoever holds it, as a
	// successor does when EC2 reports the holder terminated while it still runs.
	TakeOver func(id string)
	// Corrupt replaces the record with bytes no implementation writes (a torn write, an
	// operator's edit); Corrupted reports whether the record still holds them.
	Corrupt   func()
	Corrupted func() bool
}

// LeaseHarness builds worlds for the suite.
type LeaseHarness struct {
	// New makes a fresh world. Cleanup is the harness's (t.Cleanup).
	New func(t *testing.T) LeaseWorld
	// Unreadable is the error that Acquire wraps when the record cannot be read.
	Unreadable error
}

// states records the calls of Acquire's waiting callback.
type states struct {
	mu    sync.Mutex
	seen  []status.LeaseState
	first chan struct{}
}

func newStates() *states { return &states{first: make(chan struct{})} }

func (s *states) waiting(st status.LeaseState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) == 0 {
		close(s.first)
	}
	s.seen = append(s.seen, st)
}

func (s *states) all() []status.LeaseState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]status.LeaseState(nil), s.seen...)
}

// wantWaitedFor checks that every waiting call named holder at epoch, held.
func (s *states) wantWaitedFor(t *testing.T, holder string, epoch uint64) {
	t.Helper()
	seen := s.all()
	if len(seen) == 0 {
		t.Errorf("waiting was never called while %s held the lease", holder)
	}
	for _, st := range seen {
		if !st.Held || st.Holder != holder || st.Epoch != epoch {
			t.Errorf("waiting called with %+v, want held by %s epoch %d", st, holder, epoch)
		}
	}
}

type acquired struct {
	st  status.LeaseState
	err error
}

func acquireAsync(ctx context.Context, l Lease, waiting func(status.LeaseState)) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		st, err := l.Acquire(ctx, waiting)
		ch <- acquired{st, err}
	}()
	return ch
}

func acquireResult(t *testing.T, ch <-chan acquired, what string) acquired {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(limit):
		t.Fatalf("%s: Acquire did not return", what)
		return acquired{}
	}
}

func mustAcquire(t *testing.T, l Lease, id string) status.LeaseState {
	t.Helper()
	st, err := l.Acquire(bounded(t), func(s status.LeaseState) { t.Errorf("%s waited for %+v on a lease nobody holds", id, s) })
	if err != nil {
		t.Fatalf("%s: Acquire: %v", id, err)
	}
	if !st.Held || st.Holder != id || st.Epoch == 0 || !l.Held() {
		t.Fatalf("%s: Acquire = %+v (Held() = %v); want held by %s with an epoch", id, st, l.Held(), id)
	}
	return st
}

// holdAsync runs Hold and returns its result and the number of fence calls so far.
func holdAsync(ctx context.Context, l Lease) (<-chan error, func() int) {
	var mu sync.Mutex
	fences := 0
	done := make(chan error, 1)
	go func() {
		done <- l.Hold(ctx, func(fctx context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			fences++
			return nil
		})
	}()
	return done, func() int {
		mu.Lock()
		defer mu.Unlock()
		return fences
	}
}

func holdResult(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(limit):
		t.Fatalf("%s: Hold did not return", what)
		return nil
	}
}

// heldBy proves, the way another instance finds it, that holder holds the lease: a
// probe's Acquire waits for it until its short deadline.
func heldBy(t *testing.T, w LeaseWorld, holder string) {
	t.Helper()
	seen := newStates()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := w.New("i-probe").Acquire(ctx, seen.waiting)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a probe's Acquire = %v; want it to wait for %s until its deadline", err, holder)
	}
	for _, st := range seen.all() {
		if st.Holder != holder {
			t.Fatalf("the probe found the lease held by %+v, want %s", st, holder)
		}
	}
	if len(seen.all()) == 0 {
		t.Fatalf("the probe was never told who holds the lease, want %s", holder)
	}
}

// eventually polls cond until it holds, for up to limit.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLease runs the contract against the implementation the harness builds.
func TestLease(t *testing.T, h LeaseHarness) {
	t.Run("AFreeLeaseIsTakenAtOnce", func(t *testing.T) {
		w := h.New(t)
		a := w.New("i-a")
		if a.Held() || a.State().Held {
			t.Fatalf("Held before Acquire: %v, %+v", a.Held(), a.State())
		}
		if err := a.Release(bounded(t)); err != nil {
			t.Fatalf("Release without a tenure: %v", err)
		}
		st := mustAcquire(t, a, "i-a")
		if s := a.State(); !s.Held || s.Holder != "i-a" || s.Epoch != st.Epoch {
			t.Errorf("State = %+v, want held by i-a at epoch %d", s, st.Epoch)
		}
		heldBy(t, w, "i-a")
	})

	t.Run("ASecondHolderWaitsThenTakesItAfterARelease", func(t *testing.T) {
		w := h.New(t)
		a, b := w.New("i-a"), w.New("i-b")
		st := mustAcquire(t, a, "i-a")
		hctx, stopHold := context.WithCancel(context.Background())
		defer stopHold()
		held, fences := holdAsync(hctx, a)

		seen := newStates()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := b.Acquire(ctx, seen.waiting)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "i-a") {
			t.Fatalf("i-b's Acquire while i-a holds = %v; want the deadline in the chain and the holder named", err)
		}
		seen.wantWaitedFor(t, "i-a", st.Epoch)
		if b.Held() || b.State().Held {
			t.Fatalf("i-b reports the lease held after a failed Acquire: %+v", b.State())
		}
		if !a.Held() {
			t.Fatal("i-a lost the lease to a successor that only waited")
		}

		seen = newStates()
		got := acquireAsync(bounded(t), b, seen.waiting)
		select {
		case <-seen.first:
		case r := <-got:
			t.Fatalf("i-b's Acquire = %+v, %v while i-a holds; want it to wait", r.st, r.err)
		}
		for i := range 2 {
			if err := a.Release(bounded(t)); err != nil {
				t.Fatalf("Release #%d: %v", i+1, err)
			}
		}
		r := acquireResult(t, got, "after the release")
		if r.err != nil || !r.st.Held || r.st.Holder != "i-b" || r.st.Epoch <= st.Epoch {
			t.Fatalf("i-b's Acquire after the release = %+v, %v; want held by i-b above epoch %d", r.st, r.err, st.Epoch)
		}
		seen.wantWaitedFor(t, "i-a", st.Epoch)
		if err := holdResult(t, held, "after Release"); err != nil {
			t.Errorf("i-a's Hold after its Release = %v, want nil", err)
		}
		if n := fences(); n != 0 {
			t.Errorf("a clean release fenced %d times", n)
		}
		if a.Held() || a.State().Held {
			t.Errorf("i-a reports the lease held after its Release: %+v", a.State())
		}
		if !b.Held() {
			t.Error("i-b does not report the lease it took")
		}
		if err := a.Release(bounded(t)); err != nil {
			t.Errorf("Release of a released tenure: %v", err)
		}
		heldBy(t, w, "i-b")
	})

	t.Run("ARestartedHolderAdoptsItsTenure", func(t *testing.T) {
		w := h.New(t)
		a := w.New("i-a")
		st := mustAcquire(t, a, "i-a")
		again := w.New("i-a")
		if got := mustAcquire(t, again, "i-a"); got.Epoch != st.Epoch {
			t.Errorf("the restarted holder's epoch = %d, want %d adopted", got.Epoch, st.Epoch)
		}
		if got := mustAcquire(t, a, "i-a"); got.Epoch != st.Epoch {
			t.Errorf("a second Acquire's epoch = %d, want %d", got.Epoch, st.Epoch)
		}
		if err := again.Release(bounded(t)); err != nil {
			t.Fatalf("Release by the restarted holder: %v", err)
		}
		if got := mustAcquire(t, w.New("i-a"), "i-a"); got.Epoch <= st.Epoch {
			t.Errorf("the epoch after a release = %d, want a new tenure above %d", got.Epoch, st.Epoch)
		}
	})

	t.Run("HoldEndsWithItsContextAndTheTenureGoesOn", func(t *testing.T) {
		w := h.New(t)
		a := w.New("i-a")
		st := mustAcquire(t, a, "i-a")
		ctx, cancel := context.WithCancel(context.Background())
		held, fences := holdAsync(ctx, a)
		cancel()
		if err := holdResult(t, held, "with its context cancelled"); err != nil {
			t.Errorf("Hold with its context cancelled = %v, want nil", err)
		}
		if n := fences(); n != 0 {
			t.Errorf("Hold fenced %d times when its context ended", n)
		}
		if got := mustAcquire(t, w.New("i-a"), "i-a"); got.Epoch != st.Epoch {
			t.Errorf("epoch after the Hold ended = %d, want the tenure %d adopted", got.Epoch, st.Epoch)
		}
	})

	t.Run("AnAbandonedLeaseIsTakenOnceItStaysUnrenewed", func(t *testing.T) {
		w := h.New(t)
		a, b := w.New("i-a"), w.New("i-b")
		st := mustAcquire(t, a, "i-a") // and never renewed: the holder is gone
		seen := newStates()
		r := acquireResult(t, acquireAsync(bounded(t), b, seen.waiting), "for an abandoned lease")
		if r.err != nil || r.st.Holder != "i-b" || r.st.Epoch <= st.Epoch {
			t.Fatalf("i-b's Acquire = %+v, %v; want held by i-b above epoch %d", r.st, r.err, st.Epoch)
		}
		seen.wantWaitedFor(t, "i-a", st.Epoch)
		if a.Held() {
			t.Error("the holder that stopped renewing still reports the lease held after its ttl")
		}
		_ = a.Release(bounded(t)) // too late: it must not release i-b's tenure
		heldBy(t, w, "i-b")
	})

	t.Run("HoldFencesOnceWhenAnotherHolderTakesTheRecord", func(t *testing.T) {
		w := h.New(t)
		a := w.New("i-a")
		mustAcquire(t, a, "i-a")
		held, fences := holdAsync(bounded(t), a)
		w.TakeOver("i-b")
		err := holdResult(t, held, "after a takeover")
		if err == nil || !strings.Contains(err.Error(), "i-b") {
			t.Fatalf("Hold after i-b took the record = %v; want an error naming i-b", err)
		}
		if n := fences(); n != 1 {
			t.Errorf("fence called %d times, want once", n)
		}
		if a.Held() || a.State().Held {
			t.Errorf("i-a reports the lease held after losing it: %+v", a.State())
		}
		_ = a.Release(bounded(t)) // its tenure is over: it must not release i-b's
		heldBy(t, w, "i-b")
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if _, err := a.Acquire(ctx, nil); err == nil {
			t.Error("the holder that lost the lease took it back while i-b holds it")
		}
	})

	t.Run("TheHolderSeesAWaitingSuccessorAndItsReadiness", func(t *testing.T) {
		w := h.New(t)
		a, b := w.New("i-a"), w.New("i-b")
		mustAcquire(t, a, "i-a")
		hctx, stopHold := context.WithCancel(context.Background())
		defer stopHold()
		held, _ := holdAsync(hctx, a)
		successor := func(l Lease) (status.Successor, bool) {
			s, ok, err := l.Successor(bounded(t))
			if err != nil {
				t.Fatalf("Successor: %v", err)
			}
			return s, ok
		}
		if s, ok := successor(a); ok {
			t.Fatalf("Successor with nobody waiting = %+v", s)
		}

		b.Announce(false)
		bctx, stopB := context.WithCancel(context.Background())
		defer stopB()
		got := acquireAsync(bctx, b, nil)
		eventually(t, "i-b announced, not ready", func() bool {
			s, ok := successor(a)
			return ok && s.InstanceID == "i-b" && !s.Ready
		})
		b.Announce(true)
		eventually(t, "i-b announced ready", func() bool {
			s, ok := successor(a)
			return ok && s.InstanceID == "i-b" && s.Ready
		})
		s, _ := successor(a)
		if s.Since.IsZero() || s.Updated.Before(s.Since) {
			t.Errorf("announcement %+v: want the start of the wait and a later update", s)
		}
		if st := a.State(); st.Successor == nil || st.Successor.InstanceID != "i-b" || !st.Successor.Ready {
			t.Errorf("State after Successor = %+v, want i-b ready as successor", st)
		}
		if s, ok := successor(b); ok {
			t.Errorf("the waiting instance sees itself as its successor: %+v", s)
		}

		stopB() // the successor goes away without taking the lease
		if r := acquireResult(t, got, "cancelled"); !errors.Is(r.err, context.Canceled) {
			t.Fatalf("i-b's Acquire = %+v, %v; want context.Canceled", r.st, r.err)
		}
		eventually(t, "i-b's announcement going stale", func() bool {
			_, ok := successor(a)
			return !ok
		})
		if st := a.State(); st.Successor != nil {
			t.Errorf("State shows the stale successor %+v", st.Successor)
		}
		stopHold()
		if err := holdResult(t, held, "stopped"); err != nil {
			t.Errorf("Hold = %v", err)
		}
	})

	t.Run("AnUnreadableRecordIsAnErrorNeverATakeover", func(t *testing.T) {
		w := h.New(t)
		w.Corrupt()
		a := w.New("i-a")
		for i := range 2 {
			ctx := bounded(t)
			_, err := a.Acquire(ctx, nil)
			if !errors.Is(err, h.Unreadable) {
				t.Fatalf("Acquire #%d over an unreadable record = %v; want the unreadable error", i+1, err)
			}
			if ctx.Err() != nil {
				t.Fatalf("Acquire #%d waited for its context on an unreadable record", i+1)
			}
		}
		if a.Held() || a.State().Held {
			t.Errorf("Held after a refused Acquire: %+v", a.State())
		}
		if !w.Corrupted() {
			t.Error("the unreadable record was overwritten")
		}
	})

	t.Run("AcquireEndsWithItsContextAndTakesNothing", func(t *testing.T) {
		w := h.New(t)
		a := w.New("i-a")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := a.Acquire(ctx, nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire with an ended context = %v, want context.Canceled in the chain", err)
		}
		if a.Held() || a.State().Held {
			t.Errorf("Held after a cancelled Acquire: %+v", a.State())
		}
		mustAcquire(t, w.New("i-b"), "i-b") // the cancelled attempt left nothing to wait for
	})
}
