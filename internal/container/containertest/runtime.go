package containertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container"
)

// RuntimeOptions shape the Runtime double's world.
type RuntimeOptions struct {
	// ImagePresent puts the image in the daemon from the start; otherwise Prepare
	// pulls it (unless Pull is never).
	ImagePresent bool
	// Pull is the pull policy: always, if-missing (default) or never.
	Pull string
	// IgnoreTerm makes Jenkins ignore SIGTERM: a stop waits out its grace and kills.
	IgnoreTerm bool
	// TermDelay is how long Jenkins takes to stop cleanly after SIGTERM (default 0).
	TermDelay time.Duration
}

// stopMargin mirrors container.Runtime: a grace is cut so that the kill comes this
// long before the caller's deadline.
const stopMargin = 2 * time.Second

// Runtime is a stand-in for container.Runtime: one container in a daemon that lives
// in memory. Jenkins in it starts, stops on SIGTERM (or ignores it), dies on SIGKILL
// with 137 and may Crash; the daemon may go down (DaemonDown) and come back
// (DaemonUp), stopping what ran as a dockerd without live-restore does. It passes the
// same contract as the real Runtime (internal/agent/contract). A restarted agent uses
// the same value: the container lives in the daemon, not in the agent. Safe for
// concurrent use.
type Runtime struct {
	opts RuntimeOptions

	mu      sync.Mutex
	image   bool
	exists  bool
	running bool
	exit    int64
	starts  int
	down    bool
	changed chan struct{} // closed and replaced on every change Wait may care about
}

// NewRuntime returns a Runtime double with no container yet.
func NewRuntime(opts RuntimeOptions) *Runtime {
	if opts.Pull == "" {
		opts.Pull = container.PullIfMissing
	}
	return &Runtime{opts: opts, image: opts.ImagePresent, changed: make(chan struct{})}
}

// notifyLocked wakes every Wait; r.mu is held.
func (r *Runtime) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func unavailable(what string) error {
	return fmt.Errorf("%s: %w (double)", what, container.ErrDaemonUnavailable)
}

// Prepare makes the image present according to the pull policy.
func (r *Runtime) Prepare(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.down:
		return unavailable("prepare image")
	case r.opts.Pull == container.PullNever && !r.image:
		return errors.New("image is not present and jenkins.pull is never (double)")
	}
	r.image = true
	return nil
}

// Start runs Jenkins, or adopts it when it runs already.
func (r *Runtime) Start(ctx context.Context) (adopted bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.down:
		return false, unavailable("start container")
	case r.running:
		return true, nil
	case !r.image:
		return false, errors.New("create container: image is not present: run Prepare (jenkins.pull) first (double)")
	}
	r.exists, r.running, r.exit = true, true, 0
	r.starts++
	r.notifyLocked()
	return false, nil
}

// Stop sends SIGTERM and, after the grace (cut to the caller's deadline), SIGKILL.
func (r *Runtime) Stop(ctx context.Context, grace time.Duration) error {
	r.mu.Lock()
	if r.down {
		r.mu.Unlock()
		return unavailable("stop container")
	}
	if !r.running {
		r.mu.Unlock()
		return nil
	}
	r.mu.Unlock()

	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl) - stopMargin; left < grace {
			grace = max(left, 0).Truncate(time.Second)
		}
	}
	took, code := grace, int64(137)
	if !r.opts.IgnoreTerm && r.opts.TermDelay <= grace {
		took, code = r.opts.TermDelay, 0
	}
	t := time.NewTimer(took)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		// dockerd would go on with the stop; the caller no longer waits for it.
		go func() {
			<-t.C
			r.end(code)
		}()
		return fmt.Errorf("stop container: %w", ctx.Err())
	}
	r.end(code)
	return nil
}

// end records an exit if Jenkins still runs.
func (r *Runtime) end(code int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running && !r.down {
		r.running, r.exit = false, code
		r.notifyLocked()
	}
}

// Kill sends SIGKILL: Jenkins exits with 137 at once.
func (r *Runtime) Kill(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return unavailable("kill container")
	}
	if r.running {
		r.running, r.exit = false, 137
		r.notifyLocked()
	}
	return nil
}

// Running reports whether Jenkins runs.
func (r *Runtime) Running(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return false, unavailable("inspect container")
	}
	return r.running, nil
}

// Wait blocks until Jenkins is not running and returns its exit code.
func (r *Runtime) Wait(ctx context.Context) (int64, error) {
	for {
		r.mu.Lock()
		switch {
		case r.down:
			r.mu.Unlock()
			return 0, unavailable("wait for container")
		case !r.exists:
			r.mu.Unlock()
			return 0, errors.New("wait for container: no such container (double)")
		case !r.running:
			code := r.exit
			r.mu.Unlock()
			return code, nil
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-changed:
		}
	}
}

// Crash makes Jenkins exit by itself with code, as a crash or an OOM kill would.
func (r *Runtime) Crash(code int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		r.running, r.exit = false, code
		r.notifyLocked()
	}
}

// DaemonDown makes the daemon unreachable, as a SIGKILL of dockerd does: every call
// fails with container.ErrDaemonUnavailable, Wait returns at once, and Jenkins goes on
// running under its shim.
func (r *Runtime) DaemonDown() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = true
	r.notifyLocked()
}

// DaemonUp brings the daemon back without live-restore: it stops what ran (a clean
// SIGTERM exit, or 137 for a Jenkins that ignores it).
func (r *Runtime) DaemonUp() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = false
	if r.running {
		r.running, r.exit = false, 0
		if r.opts.IgnoreTerm {
			r.exit = 137
		}
	}
	r.notifyLocked()
}

// Starts is how many times Jenkins was started (an adoption is not a start).
func (r *Runtime) Starts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.starts
}
