package guard

import (
	"errors"
	"testing"
	"time"
)

const me = "i-0abc1234def567890"

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// renewed is the record as a holder writes it at at, with the given ttl.
func renewed(holder string, at time.Time, ttl time.Duration) Lease {
	return Lease{Holder: holder, RenewedAt: at, Expires: at.Add(ttl)}
}

func wantRunning(t *testing.T, f *Fence, now time.Time) {
	t.Helper()
	if why, detail := f.Check(now); why != WhyNone {
		t.Fatalf("at %s: stopping (%s: %s), want running", now.Sub(t0), why, detail)
	}
}

func wantStop(t *testing.T, f *Fence, now time.Time, want Why) {
	t.Helper()
	if why, detail := f.Check(now); why != want {
		t.Fatalf("at %s: %q (%s), want %q", now.Sub(t0), why, detail, want)
	}
}

// TestFencePointFollowsTheAgents: with a ttl of 30s and a skew of 2s the agent fences
// itself 30 - 2 - 5 = 23s after its last renewal began; the guard, which sees a renewal
// only once its write landed, stops Jenkins 2.5s later, at 25.5s, and kills it no later
// than 28s, before the expiry at 30s.
func TestFencePointFollowsTheAgents(t *testing.T) {
	f := NewFence(me, 2*time.Second)
	f.Observe(t0, renewed(me, t0, 30*time.Second), nil)
	if got, want := f.FenceAt(), t0.Add(25500*time.Millisecond); !got.Equal(want) {
		t.Fatalf("FenceAt = %s, want %s", got.Sub(t0), want.Sub(t0))
	}
	wantRunning(t, f, t0.Add(25500*time.Millisecond-time.Nanosecond))
	wantStop(t, f, t0.Add(25500*time.Millisecond), WhyLapsing)
	if got, want := f.KillAt(t0.Add(25500*time.Millisecond), 30*time.Second), t0.Add(28*time.Second); !got.Equal(want) {
		t.Errorf("KillAt with a 30s grace = %s, want %s (expires - skew)", got.Sub(t0), want.Sub(t0))
	}
	if got, want := f.KillAt(t0.Add(25*time.Second), 2*time.Second), t0.Add(27*time.Second); !got.Equal(want) {
		t.Errorf("KillAt with a 2s grace = %s, want %s", got.Sub(t0), want.Sub(t0))
	}
	// A stop that only begins after expires - skew kills at once.
	if got, want := f.KillAt(t0.Add(29*time.Second), 30*time.Second), t0.Add(29*time.Second); !got.Equal(want) {
		t.Errorf("late KillAt = %s, want %s", got.Sub(t0), want.Sub(t0))
	}
}

// TestFenceRenewalsKeepItRunning: renewals every ttl/3, as the agent makes them, and a
// restarted agent's new tenure (same holder) keep Jenkins running for hours.
func TestFenceRenewalsKeepItRunning(t *testing.T) {
	ttl := 30 * time.Second
	f := NewFence(me, 2*time.Second)
	now := t0
	for i := range 1000 {
		if i == 500 {
			// The agent dies; a new one adopts the lease 15s later, still in time.
			now = now.Add(15 * time.Second)
		}
		f.Observe(now, renewed(me, now, ttl), nil)
		// The guard reads every second in between.
		for range 10 {
			now = now.Add(time.Second)
			wantRunning(t, f, now)
		}
	}
}

// TestFenceFailedReadsKeepTheFencePoint: reads that fail, do not parse or hang change
// nothing: the fence point of the last good read stands, and passes.
func TestFenceFailedReadsKeepTheFencePoint(t *testing.T) {
	f := NewFence(me, 2*time.Second)
	f.Observe(t0, renewed(me, t0, 30*time.Second), nil)
	for s := time.Second; s < 25*time.Second; s += time.Second {
		f.Observe(t0.Add(s), Lease{}, errors.New("read lease record: input/output error"))
		wantRunning(t, f, t0.Add(s))
	}
	// From 25.5s on no read returns at all (a hung mount): Check alone stops it.
	wantStop(t, f, t0.Add(25500*time.Millisecond), WhyLapsing)
}

// TestFenceStopsAtOnce: another holder, a release or a vanished record stop at once,
// with no grace, however fresh the last renewal.
func TestFenceStopsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		rec  Lease
		err  error
		want Why
	}{
		{"another holder", renewed("i-0fedcba9876543210", t0.Add(time.Second), 30*time.Second), nil, WhyOtherHolder},
		{"released", Lease{Holder: me, Released: true, RenewedAt: t0.Add(time.Second), Expires: t0.Add(time.Second)}, nil, WhyReleased},
		{"gone", Lease{}, errGone, WhyGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFence(me, 2*time.Second)
			f.Observe(t0, renewed(me, t0, 30*time.Second), nil)
			now := t0.Add(time.Second)
			f.Observe(now, tc.rec, tc.err)
			wantStop(t, f, now, tc.want)
			if got := f.KillAt(now, 30*time.Second); !got.Equal(now) {
				t.Errorf("KillAt = %s after the stop, want at once", got.Sub(now))
			}
			// A later renewal by this holder does not undo a stop.
			f.Observe(now.Add(time.Second), renewed(me, now.Add(time.Second), 30*time.Second), nil)
			wantStop(t, f, now.Add(time.Second), tc.want)
		})
	}
}

// TestFenceWithoutGoodRead: nothing read that names this holder means no lease.
func TestFenceWithoutGoodRead(t *testing.T) {
	f := NewFence(me, 2*time.Second)
	f.Observe(t0, Lease{}, errors.New("parse lease record: unexpected EOF"))
	wantStop(t, f, t0, WhyLapsing)
	if !f.FenceAt().IsZero() {
		t.Errorf("FenceAt = %s, want zero without a good read", f.FenceAt())
	}
}

// TestFenceFirstReadAlreadyLapsing: a record whose fence point has passed (an agent
// dead for a while, its container started again by hand) stops at once.
func TestFenceFirstReadAlreadyLapsing(t *testing.T) {
	f := NewFence(me, 2*time.Second)
	f.Observe(t0.Add(26*time.Second), renewed(me, t0, 30*time.Second), nil)
	wantStop(t, f, t0.Add(26*time.Second), WhyLapsing)
}

// TestFenceIgnoresAnOlderRecord: a stale read (an NFS attribute cache) never pulls the
// fence point back, nor pushes it forward.
func TestFenceIgnoresAnOlderRecord(t *testing.T) {
	f := NewFence(me, 2*time.Second)
	f.Observe(t0.Add(10*time.Second), renewed(me, t0.Add(10*time.Second), 30*time.Second), nil)
	f.Observe(t0.Add(11*time.Second), renewed(me, t0, 30*time.Second), nil)
	if got, want := f.FenceAt(), t0.Add(35500*time.Millisecond); !got.Equal(want) {
		t.Fatalf("FenceAt = %s, want %s", got.Sub(t0), want.Sub(t0))
	}
	wantRunning(t, f, t0.Add(30*time.Second))
}

// TestFenceOtherTTLs: the rule scales with the ttl the record carries.
func TestFenceOtherTTLs(t *testing.T) {
	for _, tc := range []struct {
		ttl, skew, fence time.Duration
	}{
		{12 * time.Second, 2 * time.Second, 9 * time.Second},
		{60 * time.Second, 2 * time.Second, 53 * time.Second},
		{6 * time.Second, time.Second, 4500 * time.Millisecond},
	} {
		f := NewFence(me, tc.skew)
		f.Observe(t0, renewed(me, t0, tc.ttl), nil)
		if got := f.FenceAt().Sub(t0); got != tc.fence {
			t.Errorf("ttl %s skew %s: fence point %s, want %s", tc.ttl, tc.skew, got, tc.fence)
		}
		if kill := f.KillAt(f.FenceAt(), time.Hour); !kill.Before(t0.Add(tc.ttl)) {
			t.Errorf("ttl %s: kill at %s, not before the expiry", tc.ttl, kill.Sub(t0))
		}
	}
}
