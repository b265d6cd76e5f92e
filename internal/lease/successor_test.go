package lease

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// TestSuccessorAnnouncesItself: a successor waiting on the lease announces itself
// beside it; the holder reads the announcement (and shows it in State after its
// renewals), sees readiness change, sees it go stale once the successor stops, and
// the announcement is withdrawn when the successor takes the lease.
func TestSuccessorAnnouncesItself(t *testing.T) {
	dir := t.TempDir()
	every := 50 * time.Millisecond
	a := newLease(t, dir, "i-a", func(o *Options) {
		o.TTL = 3 * time.Second
		o.ClockSkew = 100 * time.Millisecond
		o.AnnounceInterval = every
	})
	b := newLease(t, dir, "i-b", func(o *Options) { o.AnnounceInterval = every })
	if _, err := a.Acquire(ctxFor(t, 5*time.Second), nil); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := a.Successor(ctxFor(t, 5*time.Second)); ok || err != nil {
		t.Fatalf("Successor() before anyone waits = %v, %v; want none", ok, err)
	}
	go func() { _ = a.Hold(ctxFor(t, time.Minute), nil) }()

	bctx, stopB := context.WithCancel(context.Background())
	defer stopB()
	bDone := make(chan error, 1)
	go func() {
		_, err := b.Acquire(bctx, nil)
		bDone <- err
	}()
	succ := func() (status.Successor, bool) {
		s, ok, err := a.Successor(ctxFor(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return s, ok
	}
	waitFor(t, func() bool { s, ok := succ(); return ok && s.InstanceID == "i-b" && !s.Ready }, "announcement by i-b, not ready")
	b.Announce(true)
	waitFor(t, func() bool { s, ok := succ(); return ok && s.Ready }, "announcement turning ready")
	s, _ := succ()
	if s.Since.IsZero() || s.Updated.Before(s.Since) {
		t.Fatalf("announcement = %+v", s)
	}
	waitFor(t, func() bool { st := a.State(); return st.Successor != nil && st.Successor.Ready }, "the holder's State showing the successor")

	stopB() // the successor dies without withdrawing
	if err := <-bDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("B's Acquire = %v", err)
	}
	waitFor(t, func() bool { _, ok := succ(); return !ok }, "the announcement going stale")

	// A successor that takes the lease withdraws its announcement.
	c := newLease(t, dir, "i-c", func(o *Options) { o.AnnounceInterval = every })
	cDone := make(chan error, 1)
	go func() {
		_, err := c.Acquire(ctxFor(t, time.Minute), nil)
		cDone <- err
	}()
	waitFor(t, func() bool { s, ok := succ(); return ok && s.InstanceID == "i-c" }, "announcement by i-c")
	if err := a.Release(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := <-cDone; err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, err := os.Stat(filepath.Join(dir, DirName, SuccessorName))
		return errors.Is(err, os.ErrNotExist)
	}, "withdrawal of the announcement")
	if _, ok, err := c.Successor(ctxFor(t, 5*time.Second)); ok || err != nil {
		t.Fatalf("the new holder's Successor() = %v, %v; want none", ok, err)
	}
}

// TestSuccessorCannotHarmHolder: whatever sits at the announcement's place (garbage, a
// huge file, a FIFO, a link), the holder's Successor returns at once with an error or
// nothing, and the holder keeps renewing.
func TestSuccessorCannotHarmHolder(t *testing.T) {
	elsewhere := t.TempDir()
	for name, put := range map[string]func(path string) error{
		"garbage": func(p string) error { return os.WriteFile(p, []byte("\x00{{{"), 0o644) },
		"huge":    func(p string) error { return os.WriteFile(p, []byte(strings.Repeat(" ", 1<<20)), 0o644) },
		"fifo":    func(p string) error { return unix.Mkfifo(p, 0o644) },
		"symlink": func(p string) error { return os.Symlink(filepath.Join(elsewhere, "x"), p) },
		"dir":     func(p string) error { return os.Mkdir(p, 0o755) },
		"bad id": func(p string) error {
			return os.WriteFile(p, []byte(`{"instance_id":"i-\n1","since":"2025-01-01T00:00:00Z","updated":"2025-01-01T00:00:00Z","ready":true}`), 0o644)
		},
		"extra": func(p string) error {
			return os.WriteFile(p, []byte(`{"instance_id":"i-1","since":"2025-01-01T00:00:00Z","updated":"2025-01-01T00:00:00Z","ready":true,"stop":true}`), 0o644)
		},
		"trailing": func(p string) error {
			return os.WriteFile(p, []byte(`{"instance_id":"i-1","since":"2025-01-01T00:00:00Z","updated":"2025-01-01T00:00:00Z","ready":true}{}`), 0o644)
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			a := newLease(t, dir, "i-a", func(o *Options) { o.TTL = 3 * time.Second; o.ClockSkew = 100 * time.Millisecond })
			if _, err := a.Acquire(ctxFor(t, 5*time.Second), nil); err != nil {
				t.Fatal(err)
			}
			if err := put(filepath.Join(dir, DirName, SuccessorName)); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { _, _, err := a.Successor(ctxFor(t, 5*time.Second)); done <- err }()
			select {
			case err := <-done:
				if err == nil || errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Successor() = %v, want a refusal", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Successor() hung")
			}
			before := readOnDisk(t, a)
			go func() { _ = a.Hold(ctxFor(t, time.Minute), nil) }()
			waitFor(t, func() bool { return readOnDisk(t, a).Seq > before.Seq+1 }, "renewals")
			if !a.Held() || a.State().Successor != nil {
				t.Fatalf("held %v, successor %+v", a.Held(), a.State().Successor)
			}
		})
	}
}
