package lease

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a Clock a test moves by hand.
type fakeClock struct {
	mu   sync.Mutex
	wall time.Time
	mono time.Duration
	boot time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{wall: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC), mono: time.Hour, boot: time.Hour}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wall
}

func (c *fakeClock) Monotonic() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

func (c *fakeClock) Boottime() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.boot
}

// Advance is time passing while the instance runs.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wall, c.mono, c.boot = c.wall.Add(d), c.mono+d, c.boot+d
}

// Suspend is a hibernation: CLOCK_MONOTONIC stops, the others go on.
func (c *fakeClock) Suspend(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wall, c.boot = c.wall.Add(d), c.boot+d
}

// Pause is a hypervisor pause that stopped even CLOCK_BOOTTIME; NTP then steps the
// wall clock.
func (c *fakeClock) Pause(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wall = c.wall.Add(d)
}

// offsetClock is the system clock with the wall clock off by a fixed amount.
type offsetClock struct {
	SystemClock
	off time.Duration
}

func (c offsetClock) Now() time.Time { return time.Now().Add(c.off) }

// holdWithFakeClock acquires with clk and starts Hold; it returns the fence count and
// Hold's result.
func holdWithFakeClock(t *testing.T, dir string, clk *fakeClock, stateDir string) (*Lease, *atomic.Int32, chan error) {
	t.Helper()
	l := newLease(t, dir, "i-a", func(o *Options) {
		o.TTL, o.ClockSkew, o.Clock, o.StateDir = 30*time.Second, 2*time.Second, clk, stateDir
	})
	if _, err := l.Acquire(ctxFor(t, 10*time.Second), nil); err != nil {
		t.Fatal(err)
	}
	var fences atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- l.Hold(ctxFor(t, time.Minute), func(context.Context) error { fences.Add(1); return nil })
	}()
	return l, &fences, done
}

// TestFenceOnResume: after a hibernation (or a pause) longer than the fence point, the
// holder fences at its next look at the clocks, though no renewal timer has fired, and
// its tenure is over for good.
func TestFenceOnResume(t *testing.T) {
	for name, freeze := range map[string]func(*fakeClock, time.Duration){
		"hibernate (CLOCK_BOOTTIME goes on)": (*fakeClock).Suspend,
		"pause (only the wall clock moves)":  (*fakeClock).Pause,
	} {
		t.Run(name, func(t *testing.T) {
			dir, state := t.TempDir(), t.TempDir()
			clk := newFakeClock()
			l, fences, done := holdWithFakeClock(t, dir, clk, state)
			freeze(clk, 40*time.Second)
			select {
			case err := <-done:
				if !errors.Is(err, ErrFenced) {
					t.Fatalf("Hold() after a 40s freeze = %v, want ErrFenced", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Hold did not notice a 40s freeze")
			}
			if fences.Load() != 1 {
				t.Fatalf("fence ran %d times, want 1", fences.Load())
			}
			// No silent un-fencing: time passing normally, or the file system working,
			// does not bring the tenure back.
			clk.Advance(time.Second)
			if l.Held() || l.State().Held {
				t.Fatal("Held is true again after the fence")
			}
			// A restarted agent with the same state dir does not adopt the fenced
			// tenure: it starts a new one.
			again := newLease(t, dir, "i-a", func(o *Options) { o.Clock, o.StateDir = clk, state })
			st, err := again.Acquire(ctxFor(t, 10*time.Second), nil)
			if err != nil {
				t.Fatal(err)
			}
			if st.Epoch != 2 {
				t.Fatalf("Acquire after the fence took epoch %d, want a new epoch 2 (not the fenced 1)", st.Epoch)
			}
		})
	}
}

// TestNoFenceForShortFreeze: a freeze shorter than the fence point, or time passing
// while renewals succeed, does not fence.
func TestNoFenceForShortFreeze(t *testing.T) {
	clk := newFakeClock()
	l, fences, done := holdWithFakeClock(t, t.TempDir(), clk, "")
	clk.Suspend(5 * time.Second)
	for range 6 { // a minute of renewals, ten seconds at a time
		before := l.State().Expires
		clk.Advance(10 * time.Second)
		waitFor(t, func() bool { return l.State().Expires.After(before) }, "a renewal after 10s")
	}
	if !l.Held() || fences.Load() != 0 {
		t.Fatalf("held %v, fences %d; want held, none", l.Held(), fences.Load())
	}
	select {
	case err := <-done:
		t.Fatalf("Hold returned %v", err)
	default:
	}
}

// TestRenewalTimeTakenBeforeIO: the expiry a renewal writes comes from the clock read
// before its first I/O, however long the I/O took.
func TestRenewalTimeTakenBeforeIO(t *testing.T) {
	backing := t.TempDir()
	v := mountStallFS(t, backing)
	clk := newFakeClock()
	l := newLease(t, v.dir, "i-a", func(o *Options) { o.TTL, o.Clock = 30*time.Second, clk })
	st, err := l.Acquire(ctxFor(t, 10*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	start := clk.Now()
	v.StallAt(func(op, name string) bool { return op == "read" && name == DirName+"/"+RecordName })
	done := make(chan error, 1)
	go func() {
		_, err := l.renew(ctxFor(t, time.Minute), st.Epoch)
		done <- err
	}()
	v.WaitStalled(t, 10*time.Second)
	clk.Advance(time.Hour)
	v.Resume()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rec := recordIn(t, backing)
	if !rec.RenewedAt.Equal(start) || !rec.Expires.Equal(start.Add(30*time.Second)) {
		t.Fatalf("renewal wrote renewed_at %s, expires %s; want the time before its I/O (%s) + ttl", rec.RenewedAt, rec.Expires, start)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for range 3000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s within 30s", what)
}
