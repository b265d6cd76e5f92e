package lease

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// TestSkewCannotMakeTwoHolders: the successor's wall clock is an hour ahead of (or
// behind) the holder's. While the holder renews, the successor never takes the lease,
// and it reports the skew it measured; once renewals stop, it takes over after the
// record stayed unchanged for ttl + allowance on its own clock.
func TestSkewCannotMakeTwoHolders(t *testing.T) {
	if testing.Short() {
		t.Skip("waits several ttls; skipped in -short")
	}
	for _, off := range []time.Duration{time.Hour, -time.Hour, 10 * time.Second} {
		t.Run(off.String(), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			// A ttl long enough that a slow fsync on a loaded machine does not fence A.
			ttl, allowance := 2*time.Second, 100*time.Millisecond
			a := newLease(t, dir, "i-a", func(o *Options) { o.TTL, o.ClockSkew = ttl, allowance })
			b := newLease(t, dir, "i-b", func(o *Options) { o.TTL, o.ClockSkew, o.Clock = ttl, allowance, offsetClock{off: off} })
			if _, err := a.Acquire(ctxFor(t, 5*time.Second), nil); err != nil {
				t.Fatal(err)
			}
			hctx, stop := context.WithCancel(context.Background())
			defer stop()
			holdDone := make(chan error, 1)
			go func() { holdDone <- a.Hold(hctx, nil) }()
			if _, err := b.Acquire(ctxFor(t, 2*ttl), nil); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("B's Acquire while A renews, B's clock off by %s = %v; want to keep waiting", off, err)
			}
			if got := b.State().ClockSkew; (got - off).Abs() > time.Second {
				t.Fatalf("B measured a clock skew of %s, want about %s", got, off)
			}
			stop() // A stops renewing, without a release
			if err := <-holdDone; err != nil {
				t.Fatal(err)
			}
			last := readOnDisk(t, a)
			began := time.Now()
			if _, err := b.Acquire(ctxFor(t, time.Minute), nil); err != nil {
				t.Fatal(err)
			}
			if waited := time.Since(began); waited < ttl {
				t.Fatalf("B took over %s after A's last renewal was on disk; want at least the ttl %s", waited, ttl)
			}
			if rec := readOnDisk(t, b); rec.Holder != "i-b" || rec.Epoch != last.Epoch+1 {
				t.Fatalf("record = %+v", rec)
			}
		})
	}
}

// TestHolderNotTerminatedIsNotGone: EC2 states other than terminated (shutting-down,
// stopping, stopped, running) mean the holder may still write: the lease's
// HolderTerminated answers false for them, and the successor keeps waiting while the
// holder renews; terminated lets it take over at once.
func TestHolderNotTerminatedIsNotGone(t *testing.T) {
	dir := t.TempDir()
	a := newLease(t, dir, "i-a", func(o *Options) { o.TTL = 3 * time.Second; o.ClockSkew = 100 * time.Millisecond })
	if _, err := a.Acquire(ctxFor(t, 5*time.Second), nil); err != nil {
		t.Fatal(err)
	}
	go func() { _ = a.Hold(ctxFor(t, time.Minute), nil) }()
	var wg sync.WaitGroup
	for _, state := range []string{"running", "shutting-down", "stopping", "stopped"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var asked atomic.Value
			b := newLease(t, dir, "i-b-"+state, func(o *Options) {
				o.HolderTerminated = func(_ context.Context, id string) (bool, error) {
					asked.Store(id)
					return state == "terminated", nil
				}
			})
			_, err := b.Acquire(ctxFor(t, time.Second), nil)
			if id, _ := asked.Load().(string); id != "i-a" {
				t.Errorf("%s: HolderTerminated asked about %q, want i-a", state, id)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("holder %s: B's Acquire = %v; want to keep waiting while A renews", state, err)
			}
		}()
	}
	wg.Wait()
	b := newLease(t, dir, "i-b", func(o *Options) {
		o.HolderTerminated = func(context.Context, string) (bool, error) { return true, nil } // terminated
	})
	if _, err := b.Acquire(ctxFor(t, 5*time.Second), nil); err != nil {
		t.Fatalf("holder terminated: B's Acquire = %v, want the lease at once", err)
	}
}

// TestEpochAtMaximumIsRefused: a record at the largest epoch cannot be followed by a
// new tenure (it would wrap to 0 and never be read again): Acquire says so.
func TestEpochAtMaximumIsRefused(t *testing.T) {
	dir := t.TempDir()
	l := newLease(t, dir, "i-a", nil)
	if err := os.MkdirAll(filepath.Join(dir, DirName), 0o755); err != nil {
		t.Fatal(err)
	}
	rec := Record{Holder: "i-z", Epoch: math.MaxUint64, Released: true, Seq: 5}
	if err := os.WriteFile(l.RecordPath(), rec.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := l.Acquire(ctxFor(t, 5*time.Second), nil)
	if err == nil || !strings.Contains(err.Error(), "epoch is at its maximum") || !strings.Contains(err.Error(), "remove "+l.RecordPath()) {
		t.Fatalf("Acquire over epoch %d = %v; want a clear error saying what to do", uint64(math.MaxUint64), err)
	}
	if got := recordIn(t, dir); got != rec {
		t.Fatalf("the record was changed: %+v", got)
	}
}

// TestNeverAdoptsBelowAnEpochSeen: this instance saw epoch 5 (another holder's); the
// record now shows its own older epoch 4 (a write from before went back in time). It
// must not adopt epoch 4: it waits like for a stranger, then takes epoch 6.
func TestNeverAdoptsBelowAnEpochSeen(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	if err := saveEpochs(state, epochs{Seen: 5}); err != nil {
		t.Fatal(err)
	}
	l := newLease(t, dir, "i-a", func(o *Options) {
		o.StateDir = state
		o.TTL = 300 * time.Millisecond
		o.ClockSkew = 10 * time.Millisecond
	})
	if err := os.MkdirAll(filepath.Join(dir, DirName), 0o755); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	old := Record{Holder: "i-a", Epoch: 4, Seq: 2, RenewedAt: now, Expires: now.Add(300 * time.Millisecond)}
	if err := os.WriteFile(l.RecordPath(), old.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	var waited bool
	st, err := l.Acquire(ctxFor(t, 10*time.Second), func(status.LeaseState) { waited = true })
	if err != nil {
		t.Fatal(err)
	}
	if !waited || st.Epoch != 6 {
		t.Fatalf("waited %v, epoch %d; want a wait, then epoch 6", waited, st.Epoch)
	}
	e, err := loadEpochs(state)
	if err != nil || e.Seen != 6 {
		t.Fatalf("state after acquiring = %+v, %v; want seen 6", e, err)
	}
}

// TestRefusesLinksAndSpecialFiles: the Jenkins user owns the home's root and could
// put a link or a FIFO where the lease's files go. None is followed or opened for I/O,
// none hangs, and the error says what to do.
func TestRefusesLinksAndSpecialFiles(t *testing.T) {
	elsewhere := t.TempDir()
	for name, setup := range map[string]func(t *testing.T, dir string){
		"directory is a symlink": func(t *testing.T, dir string) {
			if err := os.Symlink(elsewhere, filepath.Join(dir, DirName)); err != nil {
				t.Fatal(err)
			}
		},
		"record is a symlink": func(t *testing.T, dir string) {
			mkLeaseDir(t, dir)
			if err := os.Symlink(filepath.Join(elsewhere, "target"), filepath.Join(dir, DirName, RecordName)); err != nil {
				t.Fatal(err)
			}
		},
		"record is a FIFO": func(t *testing.T, dir string) {
			mkLeaseDir(t, dir)
			if err := unix.Mkfifo(filepath.Join(dir, DirName, RecordName), 0o644); err != nil {
				t.Fatal(err)
			}
		},
		"record is a directory": func(t *testing.T, dir string) {
			mkLeaseDir(t, dir)
			if err := os.Mkdir(filepath.Join(dir, DirName, RecordName), 0o755); err != nil {
				t.Fatal(err)
			}
		},
		"directory is a regular file": func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, DirName), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		},
		"directory writable by others": func(t *testing.T, dir string) {
			mkLeaseDir(t, dir)
			if err := os.Chmod(filepath.Join(dir, DirName), 0o777); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			setup(t, dir)
			l := newLease(t, dir, "i-a", nil)
			done := make(chan error, 1)
			go func() {
				_, err := l.Acquire(ctxFor(t, 5*time.Second), nil)
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("Acquire hung")
			}
			if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "remove it") && !strings.Contains(err.Error(), "chmod") {
				t.Fatalf("Acquire = %v; want a refusal that says what to do", err)
			}
			if _, err := l.Peek(ctxFor(t, 5*time.Second)); err == nil {
				t.Fatal("Peek read through it")
			}
			if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
				t.Fatalf("the lease wrote through a link: %v", entries)
			}
		})
	}
	// Owned by another user (the Jenkins user, uid 1000): only root can set this up.
	if os.Geteuid() == 0 {
		dir := t.TempDir()
		mkLeaseDir(t, dir)
		if err := os.Chown(filepath.Join(dir, DirName), 1000, 1000); err != nil {
			t.Fatal(err)
		}
		_, err := newLease(t, dir, "i-a", nil).Acquire(ctxFor(t, 5*time.Second), nil)
		if err == nil || !strings.Contains(err.Error(), "belongs to uid 1000") {
			t.Fatalf("Acquire with the lease directory owned by uid 1000 = %v, want a refusal", err)
		}
	}
}

func mkLeaseDir(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, DirName), 0o755); err != nil {
		t.Fatal(err)
	}
}
