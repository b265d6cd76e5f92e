package contract

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// Mounter mounts, verifies and unmounts the file system that holds JENKINS_HOME.
// Implementations: efs.Mounter (the mount program, the mount table, statfs and the
// marker at the root of the file system) and efstest.Dir (a local directory with the
// same marker). No method may let Jenkins start on a mount point that does not provably
// hold the configured file system: every error of Mount and Verify means "do not start".
type Mounter interface {
	// Mount mounts the file system at MountPoint and proves it is the configured one,
	// as Verify does, writing the marker (the file system id) on a fresh file system.
	// It waits for DNS and retries transient failures (a mount target still being
	// created, a security group not yet in force) until ctx ends, then fails. Idempotent:
	// the verified file system already mounted there (an agent restarted on the same
	// instance) is success, and nothing is mounted over it. Errors, with nothing mounted
	// over anything: something else is mounted there (another source, or a marker that
	// names another file system); the bare mount point holds files but no marker (a
	// Jenkins that ran without the mount wrote them); the mount failed for good (access
	// denied) or until ctx ended; the file system did not answer before ctx's deadline
	// (ctx's error in the chain).
	Mount(ctx context.Context) error
	// Verify proves that the mount point holds the configured file system now: mounted
	// from the expected source and type, and its marker naming the configured id (written
	// on a fresh file system mounted by its name). It blocks on file system reads, each
	// bounded by ctx: on a hung file system it returns at ctx's deadline with ctx's error
	// in the chain. Idempotent. Errors: nothing is mounted (the bare mount point, whose
	// local disk never gets a marker), something else is, the marker names another file
	// system (the message names it), or the file system does not answer.
	Verify(ctx context.Context) error
	// Unmount unmounts whatever is mounted at the mount point, never lazily (a lazy
	// unmount would let a writer still running go on writing while a successor starts).
	// Idempotent: nothing mounted is success. An error means the home is still mounted:
	// a process still uses it, or the file system did not answer before ctx's deadline.
	Unmount(ctx context.Context) error
	// Abort cuts this instance off the home after a fence, so that the killed Jenkins'
	// pending writes never land in a home a successor holds: the mount is forced off,
	// or detached when a process still holds it. Afterwards nothing is mounted at the
	// mount point (Verify fails) until Mount runs again. It blocks on the kernel, bounded
	// by ctx. Idempotent: nothing mounted is success. An error means writes may still
	// land (a busy home was only detached, or could not be cut off): the instance should
	// end.
	Abort(ctx context.Context) error
	// MountPoint is the host path of the home, as configured; it never blocks.
	MountPoint() string
}

// MounterWorld is one host's mount point and the file system meant for it, as a
// MounterHarness makes it: nothing mounted yet, the file system reachable and fresh
// (no marker), the mount point an empty directory.
type MounterWorld struct {
	// Mounter is the implementation under test.
	Mounter Mounter
	// FileSystemID is the file system the implementation is configured with; MountPoint
	// the host path it was given.
	FileSystemID string
	MountPoint   string
	// Reopen returns an implementation for the same mount point and file system, as an
	// agent restarted on the same instance builds it.
	Reopen func() Mounter
	// Mounts is how many file systems are mounted at the mount point now: 0 when it is
	// bare, more than 1 when one was mounted over another.
	Mounts func() int
	// Marker is the file system id the marker at the root of what the mount point shows
	// names ("" when there is none).
	Marker func() string
	// WriteMarker writes a marker naming id at the root of what the mount point shows,
	// as on the home of another file system.
	WriteMarker func(id string)
	// MountForeign mounts, on the bare mount point, a file system the agent did not
	// mount, whose marker names id.
	MountForeign func(id string)
	// LocalFiles writes files into the bare mount point, on the local disk beneath it,
	// as a Jenkins started without the mount does. Nil when the implementation has no
	// disk beneath its mount point; that check is then skipped.
	LocalFiles func()
	// Busy opens a file on the mounted home and keeps it open, as a Jenkins still
	// running does, until the function it returns is called. Nil when the
	// implementation has no processes to hold its home; those checks are skipped then.
	Busy func() (done func())
	// Unreachable makes every later mount attempt fail as a mount target out of reach
	// does (timed out, worth retrying). Nil when the harness cannot; skipped then.
	Unreachable func()
	// Hang makes the mounted file system stop answering, as a hard NFS mount whose
	// server is gone; Resume makes it answer again. Set in the worlds of
	// MounterHarness.Hanging only.
	Hang, Resume func()
}

// MounterHarness builds worlds for the suite.
type MounterHarness struct {
	// New makes a fresh world. Cleanup is the harness's (t.Cleanup).
	New func(t *testing.T) MounterWorld
	// Hanging makes a fresh world whose file system can hang (Hang and Resume set). Nil
	// when the harness cannot; that check is then skipped.
	Hanging func(t *testing.T) MounterWorld
}

// foreignID is the file system whose data the suite puts where the configured one
// should be.
const foreignID = "fs-0fedcba9876543210"

// TestMounter runs the contract against the implementation the harness builds.
func TestMounter(t *testing.T, h MounterHarness) {
	wantMounts := func(t *testing.T, w MounterWorld, n int, when string) {
		t.Helper()
		if got := w.Mounts(); got != n {
			t.Fatalf("%s: %d file systems mounted at %s, want %d", when, got, w.MountPoint, n)
		}
	}

	t.Run("MountVerifiesAndIsIdempotent", func(t *testing.T) {
		w := h.New(t)
		if got := w.Mounter.MountPoint(); got != w.MountPoint {
			t.Errorf("MountPoint = %q, want %q", got, w.MountPoint)
		}
		wantMounts(t, w, 0, "fresh world")
		for i := range 2 {
			if err := w.Mounter.Mount(bounded(t)); err != nil {
				t.Fatalf("Mount #%d: %v", i+1, err)
			}
			wantMounts(t, w, 1, "after Mount")
			if got := w.Marker(); got != w.FileSystemID {
				t.Fatalf("marker after Mount #%d names %q, want %q", i+1, got, w.FileSystemID)
			}
			if err := w.Mounter.Verify(bounded(t)); err != nil {
				t.Fatalf("Verify after Mount #%d: %v", i+1, err)
			}
		}
		// An agent restarted on the same instance finds the home mounted and keeps it: it
		// verifies it before any Mount of its own (a plan resumed after the restart does).
		again := w.Reopen()
		if err := again.Verify(bounded(t)); err != nil {
			t.Fatalf("Verify by a restarted agent before its own Mount: %v", err)
		}
		if err := again.Mount(bounded(t)); err != nil {
			t.Fatalf("Mount by a restarted agent: %v", err)
		}
		wantMounts(t, w, 1, "after a restarted agent's Mount")
		if err := again.Verify(bounded(t)); err != nil {
			t.Fatalf("Verify by a restarted agent: %v", err)
		}
	})

	t.Run("VerifyFailsOnTheBareMountPoint", func(t *testing.T) {
		w := h.New(t)
		for range 2 {
			if err := w.Mounter.Verify(bounded(t)); err == nil {
				t.Fatal("Verify passed with nothing mounted")
			}
		}
		wantMounts(t, w, 0, "after Verify")
		if got := w.Marker(); got != "" {
			t.Errorf("Verify wrote a marker naming %q on the bare mount point's local disk", got)
		}
	})

	t.Run("VerifyFailsOnAnotherFileSystemsData", func(t *testing.T) {
		w := h.New(t)
		if err := w.Mounter.Mount(bounded(t)); err != nil {
			t.Fatalf("Mount: %v", err)
		}
		w.WriteMarker(foreignID)
		err := w.Mounter.Verify(bounded(t))
		if err == nil || !strings.Contains(err.Error(), foreignID) {
			t.Fatalf("Verify with a marker of %s = %v; want an error naming it", foreignID, err)
		}
		if err := w.Mounter.Mount(bounded(t)); err == nil {
			t.Error("Mount passed over another file system's data: Jenkins would start on it")
		}
		if err := w.Reopen().Mount(bounded(t)); err == nil {
			t.Error("a restarted agent's Mount passed over another file system's data")
		}
		wantMounts(t, w, 1, "after the refused Mounts")
		if got := w.Marker(); got != foreignID {
			t.Errorf("marker names %q after the refused Mounts, want %s left as it was", got, foreignID)
		}
	})

	t.Run("MountRefusesAForeignMount", func(t *testing.T) {
		w := h.New(t)
		w.MountForeign(foreignID)
		if err := w.Mounter.Verify(bounded(t)); err == nil {
			t.Error("Verify passed on a file system the agent did not mount, marked as another")
		}
		if err := w.Mounter.Mount(bounded(t)); err == nil {
			t.Error("Mount passed over a foreign mount: Jenkins would start on it")
		}
		if got := w.Mounts(); got > 1 {
			t.Errorf("%d file systems mounted: Mount mounted over the foreign one", got)
		}
		if got := w.Marker(); got != foreignID {
			t.Errorf("the mount point shows a marker naming %q, want the foreign %s untouched", got, foreignID)
		}
	})

	t.Run("MountRefusesFilesOnTheBareMountPoint", func(t *testing.T) {
		w := h.New(t)
		if w.LocalFiles == nil {
			t.Skip("this implementation has no local disk beneath its mount point")
		}
		w.LocalFiles()
		if err := w.Mounter.Mount(bounded(t)); err == nil {
			t.Fatal("Mount passed on a bare mount point holding files but no marker")
		}
		wantMounts(t, w, 0, "after the refused Mount")
		if err := w.Mounter.Verify(bounded(t)); err == nil {
			t.Error("Verify passed on a bare mount point holding files")
		}
		if got := w.Marker(); got != "" {
			t.Errorf("the refused Mount wrote a marker naming %q on the local disk", got)
		}
	})

	t.Run("UnmountIsIdempotent", func(t *testing.T) {
		w := h.New(t)
		if err := w.Mounter.Unmount(bounded(t)); err != nil {
			t.Fatalf("Unmount with nothing mounted: %v", err)
		}
		if err := w.Mounter.Mount(bounded(t)); err != nil {
			t.Fatalf("Mount: %v", err)
		}
		for i := range 2 {
			if err := w.Mounter.Unmount(bounded(t)); err != nil {
				t.Fatalf("Unmount #%d: %v", i+1, err)
			}
			wantMounts(t, w, 0, "after Unmount")
		}
		if err := w.Mounter.Verify(bounded(t)); err == nil {
			t.Error("Verify passed after Unmount")
		}
		// A mount point once unmounted mounts again (a drill, a resumed boot).
		if err := w.Mounter.Mount(bounded(t)); err != nil {
			t.Fatalf("Mount after Unmount: %v", err)
		}
		if err := w.Mounter.Verify(bounded(t)); err != nil {
			t.Errorf("Verify after mounting again: %v", err)
		}
	})

	t.Run("UnmountLeavesABusyHomeMounted", func(t *testing.T) {
		w := h.New(t)
		if w.Busy == nil {
			t.Skip("this implementation has no processes to hold its home")
		}
		if err := w.Mounter.Mount(bounded(t)); err != nil {
			t.Fatalf("Mount: %v", err)
		}
		done := w.Busy()
		if err := w.Mounter.Unmount(bounded(t)); err == nil {
			t.Error("Unmount of a home a process still uses passed")
		}
		wantMounts(t, w, 1, "after Unmount of a busy home (never lazily)")
		done()
		if err := w.Mounter.Unmount(bounded(t)); err != nil {
			t.Fatalf("Unmount once idle: %v", err)
		}
		wantMounts(t, w, 0, "after Unmount once idle")
	})

	t.Run("AbortCutsTheHomeOff", func(t *testing.T) {
		w := h.New(t)
		if err := w.Mounter.Abort(bounded(t)); err != nil {
			t.Fatalf("Abort with nothing mounted: %v", err)
		}
		if err := w.Mounter.Mount(bounded(t)); err != nil {
			t.Fatalf("Mount: %v", err)
		}
		for i := range 2 {
			if err := w.Mounter.Abort(bounded(t)); err != nil {
				t.Fatalf("Abort #%d of an idle home: %v", i+1, err)
			}
			wantMounts(t, w, 0, "after Abort")
		}
		if err := w.Mounter.Verify(bounded(t)); err == nil {
			t.Error("Verify passed after Abort: the home is still reachable through this instance")
		}
		if err := w.Mounter.Mount(bounded(t)); err != nil {
			t.Fatalf("Mount after Abort: %v", err)
		}
		if err := w.Mounter.Verify(bounded(t)); err != nil {
			t.Fatalf("Verify after mounting again: %v", err)
		}

		if w.Busy == nil {
			return
		}
		done := w.Busy()
		defer done()
		if err := callWithin(t, time.Second, w.Mounter.Abort); err == nil {
			t.Error("Abort of a home a process still holds passed: its queued writes may still land")
		}
		wantMounts(t, w, 0, "after Abort of a busy home (detached)")
		if err := w.Mounter.Verify(bounded(t)); err == nil {
			t.Error("Verify passed after Abort of a busy home")
		}
	})

	t.Run("MountGivesUpWhenItsContextEnds", func(t *testing.T) {
		w := h.New(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := w.Mounter.Mount(ctx); err == nil {
			t.Error("Mount with an ended context passed")
		}
		wantMounts(t, w, 0, "after a Mount with an ended context")

		if w.Unreachable == nil {
			return
		}
		w.Unreachable()
		err := callWithin(t, 500*time.Millisecond, w.Mounter.Mount)
		if err == nil {
			t.Fatal("Mount of an unreachable file system passed")
		}
		wantMounts(t, w, 0, "after Mount gave up")
		if err := w.Mounter.Verify(bounded(t)); err == nil {
			t.Error("Verify passed after Mount gave up")
		}
	})

	t.Run("HungFileSystemReturnsAtTheDeadline", func(t *testing.T) {
		if h.Hanging == nil {
			t.Skip("this harness has no file system that can hang")
		}
		w := h.Hanging(t)
		if err := w.Mounter.Mount(bounded(t)); err != nil {
			t.Fatalf("Mount: %v", err)
		}
		w.Hang()
		resumed := false
		defer func() {
			if !resumed {
				w.Resume()
			}
		}()
		for _, op := range []struct {
			name string
			call func(context.Context) error
		}{
			{"Verify", w.Mounter.Verify},
			{"Mount", w.Mounter.Mount},
			{"Unmount", w.Mounter.Unmount},
			{"Abort", w.Mounter.Abort},
		} {
			err := callWithin(t, 200*time.Millisecond, op.call)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s on a hung file system = %v; want an error with the deadline in its chain", op.name, err)
			}
		}
		wantMounts(t, w, 1, "after an Unmount and an Abort that could not finish")
		w.Resume()
		resumed = true
		if err := w.Mounter.Verify(bounded(t)); err != nil {
			t.Errorf("Verify once the file system answers again: %v", err)
		}
	})
}

// callWithin calls call with a context that ends after d and returns its error; a call
// that has not returned well after its deadline fails the test.
func callWithin(t *testing.T, d time.Duration, call func(context.Context) error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- call(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("the call went on %s past its deadline", limit)
		return nil
	}
}
