package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// The agent's fakes behave like the adapters, as the contracts in internal/agent/contract
// say: contract_test.go runs each suite against them. Each fake is a small model of its
// world (a mount table, a lease record, a container daemon, a Jenkins controller, a
// group and its target groups); tests steer the world, never the answers.

// journal records calls across all fakes, in order, so tests can assert the plan's order.
type journal struct {
	mu    sync.Mutex
	calls []string
}

func (j *journal) add(s string) {
	j.mu.Lock()
	j.calls = append(j.calls, s)
	j.mu.Unlock()
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.calls)
}

func (j *journal) has(s string) bool { return slices.Contains(j.list(), s) }

// index returns the position of the first call s, or -1.
func (j *journal) index(s string) int { return slices.Index(j.list(), s) }

// count returns how many times s was called.
func (j *journal) count(s string) int {
	n := 0
	for _, c := range j.list() {
		if c == s {
			n++
		}
	}
	return n
}

// fakeDaemonUnavailable is the runtime's error while its daemon cannot be reached.
type fakeDaemonUnavailable struct{ what string }

func (e fakeDaemonUnavailable) Error() string {
	return e.what + ": cannot connect to the Docker daemon: is it running?"
}

func (fakeDaemonUnavailable) Unavailable() bool { return true }

// fakeStopMargin is how long before the caller's deadline Stop kills a Jenkins that
// ignores SIGTERM, as container.Runtime keeps.
const fakeStopMargin = 2 * time.Second

// fakeRuntime is one container in a daemon: Jenkins runs until stopped (SIGTERM, or
// SIGKILL after the grace when it ignores SIGTERM), killed or crashed; the daemon may
// go away and come back without live-restore, stopping what ran.
type fakeRuntime struct {
	j          *journal
	mu         sync.Mutex
	exists     bool
	running    bool
	exit       int64
	starts     int // starts of Jenkins; an adoption is none
	down       bool
	ignoreTerm bool
	stayUp     bool          // the daemon stops answering stop and kill: the container keeps running
	changed    chan struct{} // closed and replaced whenever the container's state changes
	gone       chan struct{} // closed when the daemon goes away
}

func newFakeRuntime(j *journal) *fakeRuntime {
	return &fakeRuntime{j: j, changed: make(chan struct{}), gone: make(chan struct{})}
}

func (r *fakeRuntime) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *fakeRuntime) Prepare(ctx context.Context) error {
	r.j.add("prepare")
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return fakeDaemonUnavailable{"prepare image"}
	}
	return nil
}

func (r *fakeRuntime) Start(ctx context.Context) (bool, error) {
	r.j.add("container-start")
	if err := ctx.Err(); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.down:
		return false, fakeDaemonUnavailable{"start container"}
	case r.running:
		return true, nil
	}
	r.exists, r.running, r.exit = true, true, 0
	r.starts++
	r.notifyLocked()
	return false, nil
}

// end records Jenkins' exit with code, if it still runs.
func (r *fakeRuntime) end(code int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running && !r.down {
		r.running, r.exit = false, code
		r.notifyLocked()
	}
}

func (r *fakeRuntime) Stop(ctx context.Context, grace time.Duration) error {
	r.j.add("container-stop")
	r.mu.Lock()
	switch {
	case r.down:
		r.mu.Unlock()
		return fakeDaemonUnavailable{"stop container"}
	case r.stayUp:
		r.mu.Unlock()
		return errors.New("stop container: the daemon did not answer")
	case !r.running:
		r.mu.Unlock()
		return nil
	}
	ignoreTerm := r.ignoreTerm
	r.mu.Unlock()
	if !ignoreTerm {
		r.end(0)
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		grace = min(grace, max(time.Until(dl)-fakeStopMargin, 0))
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-t.C:
		r.end(137)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop container: %w", ctx.Err())
	}
}

func (r *fakeRuntime) Kill(ctx context.Context) error {
	r.j.add("container-kill")
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	switch {
	case r.down:
		r.mu.Unlock()
		return fakeDaemonUnavailable{"kill container"}
	case r.stayUp:
		r.mu.Unlock()
		return errors.New("kill container: the daemon did not answer")
	}
	r.mu.Unlock()
	r.end(137)
	return nil
}

func (r *fakeRuntime) Running(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return false, fakeDaemonUnavailable{"inspect container"}
	}
	return r.running, nil
}

func (r *fakeRuntime) Wait(ctx context.Context) (int64, error) {
	for {
		r.mu.Lock()
		switch {
		case r.down:
			r.mu.Unlock()
			return 0, fakeDaemonUnavailable{"wait for container"}
		case !r.exists:
			r.mu.Unlock()
			return 0, errors.New("wait for container: no such container")
		case !r.running:
			code := r.exit
			r.mu.Unlock()
			return code, nil
		}
		changed, gone := r.changed, r.gone
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-gone:
			return 0, fakeDaemonUnavailable{"wait for container"}
		case <-changed:
		}
	}
}

// crash makes the running container exit with code.
func (r *fakeRuntime) crash(code int64) { r.end(code) }

// daemonDown makes the daemon unreachable, as a SIGKILL of dockerd does: every call
// fails, waits end at once, and Jenkins goes on running under its shim.
func (r *fakeRuntime) daemonDown() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.down {
		r.down = true
		close(r.gone)
		r.notifyLocked()
	}
}

// daemonUp brings the daemon back without live-restore: it stops what ran.
func (r *fakeRuntime) daemonUp() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.down {
		return
	}
	r.down = false
	r.gone = make(chan struct{})
	if r.running {
		r.running, r.exit = false, 0
		if r.ignoreTerm {
			r.exit = 137
		}
	}
	r.notifyLocked()
}

// daemonRestart is dockerd killed and started again without live-restore: every wait
// ends with an error and the container is stopped, silently.
func (r *fakeRuntime) daemonRestart() {
	r.daemonDown()
	r.daemonUp()
}

func (r *fakeRuntime) isRunning() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running
}

func (r *fakeRuntime) startCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.starts
}
