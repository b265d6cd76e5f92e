package contract

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Runtime runs the Jenkins container. Implementations: container.Runtime (Docker
// Engine) and containertest.Runtime (the double).
type Runtime interface {
	// Prepare makes the image available per the pull policy. It blocks on the pull
	// (minutes for a first pull of the Jenkins image). Idempotent. Errors: the image is
	// absent and may not be pulled, the registry failed, or the daemon is unavailable.
	Prepare(ctx context.Context) error
	// Start makes Jenkins run: it adopts (adopted=true, nothing restarted) a container
	// that already runs with the same configuration, starts a stopped one, or creates
	// one. It blocks on the daemon, not on Jenkins being ready. Idempotent: a second
	// Start adopts. Errors: the image is missing (Prepare first), a foreign container
	// holds the name, the daemon is unavailable (then the container's state is
	// unknown; calling Start again later is safe).
	Start(ctx context.Context) (adopted bool, err error)
	// Stop sends SIGTERM and SIGKILL after grace, cut so that the kill comes before
	// ctx's deadline. It blocks until the container has stopped. Idempotent: a stopped
	// or absent container is no error. Errors: the daemon is unavailable, or ctx ended
	// first (the stop may still complete).
	Stop(ctx context.Context, grace time.Duration) error
	// Kill sends SIGKILL at once (the fence). It blocks on the daemon only. Idempotent.
	// Errors: the daemon is unavailable.
	Kill(ctx context.Context) error
	// Running reports whether the container runs. One question to the daemon; an
	// absent container is false. Errors: the daemon is unavailable: the state is then
	// unknown, never "stopped".
	Running(ctx context.Context) (bool, error)
	// Wait blocks until the container is not running and returns its exit code (at
	// once for a stopped one). Errors: ctx ended (its error in the chain); the daemon
	// became unavailable (at once, not at ctx's end; ask Running when it is back);
	// there is no container.
	Wait(ctx context.Context) (exitCode int64, err error)
}

// Unavailable reports whether err says the runtime's daemon cannot be reached, the
// way the agent tells it without importing the adapter: an error in the chain with an
// Unavailable() bool method that returns true.
func Unavailable(err error) bool {
	var u interface{ Unavailable() bool }
	return errors.As(err, &u) && u.Unavailable()
}

// RuntimeWorld is one container's world, as a RuntimeHarness makes it: no container
// yet, the image available to Prepare.
type RuntimeWorld struct {
	// Runtime is the adapter under test.
	Runtime Runtime
	// Reopen returns a Runtime for the same container, as a restarted agent builds it
	// from the same configuration.
	Reopen func() Runtime
	// Starts counts the starts of Jenkins so far (an adoption is not one). A start
	// counts once Jenkins handles signals, so the suite waits for it before stopping.
	Starts func() int
	// Crash makes the running Jenkins exit by itself; CrashCode is the exit code the
	// runtime must then report.
	Crash     func()
	CrashCode int64
	// DaemonDown and DaemonUp kill the daemon (as SIGKILL would) and bring it back
	// (without live-restore). Nil when the harness cannot; those checks are skipped.
	DaemonDown, DaemonUp func()
}

// RuntimeHarness builds worlds for the suite.
type RuntimeHarness struct {
	// New makes a fresh world; ignoreTerm asks for a Jenkins that ignores SIGTERM.
	// Cleanup is the harness's (t.Cleanup).
	New func(t *testing.T, ignoreTerm bool) RuntimeWorld
}

// limit bounds every call of the suite: no call may hang a test.
const limit = time.Minute

func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	return ctx
}

type waitResult struct {
	code int64
	err  error
}

func waitAsync(rt Runtime, ctx context.Context) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		code, err := rt.Wait(ctx)
		ch <- waitResult{code, err}
	}()
	return ch
}

func within(t *testing.T, ch <-chan waitResult, what string) waitResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(limit):
		t.Fatalf("%s: Wait did not return", what)
		return waitResult{}
	}
}

func mustStart(t *testing.T, rt Runtime) bool {
	t.Helper()
	adopted, err := rt.Start(bounded(t))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return adopted
}

// started starts Jenkins and waits until it counts start number n.
func started(t *testing.T, w RuntimeWorld, n int) {
	t.Helper()
	if mustStart(t, w.Runtime) {
		t.Fatal("Start adopted when nothing ran")
	}
	waitStarts(t, w, n)
}

func waitStarts(t *testing.T, w RuntimeWorld, n int) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for w.Starts() < n {
		if time.Now().After(deadline) {
			t.Fatalf("Jenkins counted %d starts, want %d", w.Starts(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func wantRunning(t *testing.T, rt Runtime, want bool) {
	t.Helper()
	running, err := rt.Running(bounded(t))
	if err != nil || running != want {
		t.Fatalf("Running = %v, %v; want %v, nil", running, err, want)
	}
}

// TestRuntime runs the contract against the implementation the harness builds.
func TestRuntime(t *testing.T, h RuntimeHarness) {
	t.Run("AbsentContainer", func(t *testing.T) {
		w := h.New(t, false)
		wantRunning(t, w.Runtime, false)
		if err := w.Runtime.Stop(bounded(t), time.Second); err != nil {
			t.Errorf("Stop of an absent container: %v", err)
		}
		if err := w.Runtime.Kill(bounded(t)); err != nil {
			t.Errorf("Kill of an absent container: %v", err)
		}
	})

	t.Run("StartThenAdopt", func(t *testing.T) {
		w := h.New(t, false)
		for range 2 {
			if err := w.Runtime.Prepare(bounded(t)); err != nil {
				t.Fatalf("Prepare: %v", err)
			}
		}
		started(t, w, 1)
		wantRunning(t, w.Runtime, true)
		if !mustStart(t, w.Runtime) {
			t.Error("a second Start did not adopt the running container")
		}
		if !mustStart(t, w.Reopen()) {
			t.Error("a restarted agent's Start did not adopt the running container")
		}
		if n := w.Starts(); n != 1 {
			t.Errorf("Jenkins started %d times, want 1: adoption restarts nothing", n)
		}
	})

	t.Run("StopIsGracefulAndIdempotent", func(t *testing.T) {
		w := h.New(t, false)
		started(t, w, 1)
		if err := w.Runtime.Stop(bounded(t), 20*time.Second); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		wantRunning(t, w.Runtime, false)
		if r := within(t, waitAsync(w.Runtime, bounded(t)), "after Stop"); r.err != nil || r.code != 0 {
			t.Errorf("Wait after a graceful stop = %d, %v; want 0 (Jenkins ended on SIGTERM)", r.code, r.err)
		}
		if err := w.Runtime.Stop(bounded(t), 20*time.Second); err != nil {
			t.Errorf("Stop of a stopped container: %v", err)
		}
		// A stopped container starts again: the same Jenkins home, a new start.
		started(t, w, 2)
		wantRunning(t, w.Runtime, true)
	})

	t.Run("StopKillsWhenGraceRunsOut", func(t *testing.T) {
		w := h.New(t, true)
		started(t, w, 1)
		// A grace far past the deadline is cut to it: the kill comes in time.
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		defer cancel()
		if err := w.Runtime.Stop(ctx, time.Hour); err != nil {
			t.Fatalf("Stop with a grace past the deadline: %v", err)
		}
		if ctx.Err() != nil {
			t.Error("Stop returned after its deadline")
		}
		if r := within(t, waitAsync(w.Runtime, bounded(t)), "after a forced stop"); r.err != nil || r.code != 137 {
			t.Errorf("Wait = %d, %v; want 137 (SIGKILL)", r.code, r.err)
		}
	})

	t.Run("KillIsImmediateAndIdempotent", func(t *testing.T) {
		w := h.New(t, true)
		started(t, w, 1)
		waited := waitAsync(w.Runtime, bounded(t))
		if err := w.Runtime.Kill(bounded(t)); err != nil {
			t.Fatalf("Kill: %v", err)
		}
		if r := within(t, waited, "after Kill"); r.err != nil || r.code != 137 {
			t.Errorf("Wait = %d, %v; want 137", r.code, r.err)
		}
		if err := w.Runtime.Kill(bounded(t)); err != nil {
			t.Errorf("Kill of a stopped container: %v", err)
		}
	})

	t.Run("WaitReportsACrash", func(t *testing.T) {
		w := h.New(t, false)
		started(t, w, 1)
		waited := waitAsync(w.Runtime, bounded(t))
		w.Crash()
		if r := within(t, waited, "after a crash"); r.err != nil || r.code != w.CrashCode {
			t.Fatalf("Wait = %d, %v; want the crash's %d", r.code, r.err, w.CrashCode)
		}
		wantRunning(t, w.Runtime, false)
		// Waiting on a stopped container answers at once, with the same code.
		if r := within(t, waitAsync(w.Runtime, bounded(t)), "on a stopped container"); r.err != nil || r.code != w.CrashCode {
			t.Errorf("second Wait = %d, %v", r.code, r.err)
		}
		started(t, w, 2)
		wantRunning(t, w.Runtime, true)
	})

	t.Run("WaitHonoursItsContext", func(t *testing.T) {
		w := h.New(t, false)
		started(t, w, 1)
		ctx, cancel := context.WithCancel(context.Background())
		waited := waitAsync(w.Runtime, ctx)
		cancel()
		if r := within(t, waited, "with its context cancelled"); !errors.Is(r.err, context.Canceled) {
			t.Errorf("Wait = %d, %v; want context.Canceled", r.code, r.err)
		}
		wantRunning(t, w.Runtime, true)
	})

	t.Run("DaemonGoneAndBack", func(t *testing.T) {
		w := h.New(t, false)
		if w.DaemonDown == nil {
			t.Skip("this harness cannot take its daemon down")
		}
		started(t, w, 1)
		waited := waitAsync(w.Runtime, bounded(t))
		time.Sleep(200 * time.Millisecond) // Wait's request is in before the daemon goes
		w.DaemonDown()
		if r := within(t, waited, "with the daemon gone"); !Unavailable(r.err) {
			t.Fatalf("Wait with the daemon gone = %d, %v; want an Unavailable error at once", r.code, r.err)
		}
		if running, err := w.Runtime.Running(bounded(t)); !Unavailable(err) {
			t.Errorf("Running with the daemon gone = %v, %v; want an Unavailable error, never a plain false", running, err)
		}
		if _, err := w.Runtime.Start(bounded(t)); !Unavailable(err) {
			t.Errorf("Start with the daemon gone = %v; want an Unavailable error", err)
		}
		w.DaemonUp()
		wantRunning(t, w.Runtime, false) // a daemon without live-restore stops what ran
		started(t, w, 2)
		wantRunning(t, w.Runtime, true)
	})
}
