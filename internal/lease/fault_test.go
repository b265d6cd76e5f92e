package lease

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// recordIn reads the lease record of the home at dir as any reader would.
func recordIn(t *testing.T, dir string) Record {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, DirName, RecordName))
	if err != nil {
		t.Fatalf("read the lease record: %v", err)
	}
	rec, err := ParseRecord(data)
	if err != nil {
		t.Fatalf("parse the lease record: %v", err)
	}
	return rec
}

// settled waits (bounded) until the view has no file open: the abandoned request has
// run to its end.
func (s *stallFS) settled(t *testing.T) {
	t.Helper()
	for range 500 {
		s.mu.Lock()
		n := len(s.files)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Log("files still open on the view after 5s")
}

// TestLateRenewalCannotOverwriteSuccessor: A's renewal stalls on a hard mount in the
// middle of its write while it holds the lock; A fences; the server drops A's lock when
// A's NFS lease expires, B takes the lease over; then the stall ends. The abandoned
// renewal must not bring A's record back over B's.
func TestLateRenewalCannotOverwriteSuccessor(t *testing.T) {
	backing := t.TempDir()
	va, vb := mountStallFS(t, backing), mountStallFS(t, backing)
	a := newLease(t, va.dir, "i-a", func(o *Options) { o.TTL = 1500 * time.Millisecond; o.ClockSkew = 100 * time.Millisecond })
	b := newLease(t, vb.dir, "i-b", func(o *Options) { o.TTL = 1500 * time.Millisecond; o.ClockSkew = 100 * time.Millisecond })
	if _, err := a.Acquire(ctxFor(t, 10*time.Second), nil); err != nil {
		t.Fatal(err)
	}
	va.StallAt(func(op, name string) bool {
		return (op == "create" || op == "write") && strings.HasPrefix(name, DirName+"/")
	})
	var fences atomic.Int32
	holdDone := make(chan error, 1)
	go func() {
		holdDone <- a.Hold(ctxFor(t, time.Minute), func(context.Context) error { fences.Add(1); return nil })
	}()
	va.WaitStalled(t, 10*time.Second)
	// A's Jenkins is stopped before anyone may take over...
	for i := 0; fences.Load() == 0; i++ {
		if i > 1000 {
			t.Fatal("A never fenced while its renewal hung")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// ...the server drops A's lock, and B takes the lease.
	va.LoseState()
	stB, err := b.Acquire(ctxFor(t, 30*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	va.Resume()
	va.settled(t)
	if rec := recordIn(t, backing); rec.Holder != "i-b" || rec.Epoch != stB.Epoch {
		t.Fatalf("record after A's stalled renewal ended = %+v; want B's (epoch %d): the late renewal overwrote the successor", rec, stB.Epoch)
	}
	if a.Held() {
		t.Fatal("A reports Held after its fence")
	}
}

// TestAcquireHungHomeKeepsDeadline: every request to the home hangs (a hard mount whose
// server is gone). Acquire must give up at its deadline, from its first file operation.
func TestAcquireHungHomeKeepsDeadline(t *testing.T) {
	backing := t.TempDir()
	v := mountStallFS(t, backing)
	l := newLease(t, v.dir, "i-a", nil)
	v.Stall()
	done := make(chan error, 1)
	go func() {
		_, err := l.Acquire(ctxFor(t, 300*time.Millisecond), nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "deadline") {
			t.Fatalf("Acquire on a hung home = %v, want the deadline", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Acquire on a hung home did not return 30s after its 300ms deadline")
	}
}

// TestAbandonedAttemptChangesNothing: a renewal stalled under the lock outlives its
// deadline. When the stall ends it must not write (the lock was never lost here, so
// the file system would let it), and the holder's state must not move.
func TestAbandonedAttemptChangesNothing(t *testing.T) {
	backing := t.TempDir()
	v := mountStallFS(t, backing)
	l := newLease(t, v.dir, "i-a", nil)
	st, err := l.Acquire(ctxFor(t, 10*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	before := recordIn(t, backing)
	l.mu.Lock()
	lastGood := l.ten.lastGood
	l.mu.Unlock()
	// The second read of the renewal is the one under the lock.
	reads := 0
	v.StallAt(func(op, name string) bool {
		if op == "read" && name == DirName+"/"+RecordName {
			reads++
		}
		return reads == 2
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := l.renew(ctx, st.Epoch); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("renew() through a stall = %v, want its deadline", err)
	}
	v.Resume()
	v.settled(t)
	if after := recordIn(t, backing); after != before {
		t.Fatalf("the abandoned renewal wrote %+v over %+v", after, before)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ten.lastGood != lastGood || l.seen != before {
		t.Fatal("the abandoned renewal changed the holder's state")
	}
}

// TestHungHomeEveryOperationKeepsDeadline: Peek, Successor, Release and the renewal
// all return at their deadline while the home hangs.
func TestHungHomeEveryOperationKeepsDeadline(t *testing.T) {
	backing := t.TempDir()
	v := mountStallFS(t, backing)
	l := newLease(t, v.dir, "i-a", nil)
	st, err := l.Acquire(ctxFor(t, 10*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	v.Stall()
	for _, o := range []struct {
		name string
		op   func(context.Context) error
	}{
		{"Peek", func(ctx context.Context) error { _, err := l.Peek(ctx); return err }},
		{"Successor", func(ctx context.Context) error { _, _, err := l.Successor(ctx); return err }},
		{"renew", func(ctx context.Context) error { _, err := l.renew(ctx, st.Epoch); return err }},
		{"Release", l.Release},
	} {
		name, op := o.name, o.op
		done := make(chan error, 1)
		go func() { done <- op(ctxFor(t, 200*time.Millisecond)) }()
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s on a hung home = %v, want its deadline", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s on a hung home did not return 30s after its deadline", name)
		}
	}
	// The abandoned release may still land: the tenure is in doubt, not renewed, not
	// held; a second Release once the home answers finishes the job.
	if l.Held() {
		t.Fatal("Held is true after a release abandoned in flight")
	}
	v.Resume()
	if err := l.Release(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatalf("Release once the home answers again: %v", err)
	}
	if rec := recordIn(t, backing); !rec.Released || rec.Epoch != st.Epoch {
		t.Fatalf("record after the second Release = %+v", rec)
	}
}
