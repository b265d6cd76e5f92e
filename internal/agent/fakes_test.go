package agent

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// The agent's fakes behave like the adapters as their contracts in deps.go say
// (idempotent stops, unknown build lists as errors, a wait that ends when the daemon
// goes away); contract_test.go runs the contract suites against them.

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

type fakeMetadata struct {
	mu     sync.Mutex
	id     instance.Identity
	err    error    // Identity fails with it
	states []string // target lifecycle states returned in turn; the last one stays
	calls  int
}

func (f *fakeMetadata) Identity(ctx context.Context) (instance.Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return instance.Identity{}, f.err
	}
	return f.id, nil
}

func (f *fakeMetadata) TargetLifecycleState(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.states) == 0 {
		return "", nil
	}
	s := f.states[0]
	if len(f.states) > 1 {
		f.states = f.states[1:]
	}
	return s, nil
}

// fakeWatcher delivers whatever the test sends, like the IMDS watcher would.
type fakeWatcher struct {
	in     chan instance.Notice
	mu     sync.Mutex
	health status.WatchHealth
}

func (w *fakeWatcher) Run(ctx context.Context, out chan<- instance.Notice) error {
	for {
		select {
		case n := <-w.in:
			out <- n
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (w *fakeWatcher) Health() status.WatchHealth {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.health
}

type fakeMounter struct {
	j         *journal
	home      string
	mu        sync.Mutex
	mountErr  error
	verifyErr error
}

func (m *fakeMounter) Mount(context.Context) error {
	m.j.add("mount")
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mountErr
}

func (m *fakeMounter) Verify(context.Context) error {
	m.j.add("verify")
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mountErr != nil {
		return m.mountErr
	}
	return m.verifyErr
}
func (m *fakeMounter) Unmount(context.Context) error { m.j.add("unmount"); return nil }
func (m *fakeMounter) Abort(context.Context) error   { m.j.add("abort"); return nil }
func (m *fakeMounter) MountPoint() string            { return m.home }

// fakeLease blocks Acquire until released by the test when wait is set.
type fakeLease struct {
	j         *journal
	wait      chan struct{}
	mu        sync.Mutex
	held      bool
	epoch     uint64
	holder    string
	announced []bool
	successor *status.Successor
	lost      chan error // Hold ends with it
}

func newFakeLease(j *journal) *fakeLease { return &fakeLease{j: j, lost: make(chan error, 1)} }

func (l *fakeLease) Acquire(ctx context.Context, waiting func(status.LeaseState)) (status.LeaseState, error) {
	l.j.add("lease-acquire")
	if l.wait != nil {
		waiting(status.LeaseState{Holder: "i-other"})
		select {
		case <-l.wait:
		case <-ctx.Done():
			return status.LeaseState{}, ctx.Err()
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held {
		l.epoch++
	}
	l.held, l.holder = true, "i-self"
	return status.LeaseState{Held: true, Holder: l.holder, Epoch: l.epoch}, nil
}

func (l *fakeLease) Announce(ready bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.announced = append(l.announced, ready)
}

func (l *fakeLease) Hold(ctx context.Context, fence func(context.Context) error) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-l.lost:
		_ = fence(context.WithoutCancel(ctx))
		l.mu.Lock()
		l.held, l.holder = false, "i-other"
		l.mu.Unlock()
		return err
	}
}

func (l *fakeLease) Release(context.Context) error {
	l.j.add("lease-release")
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held = false
	return nil
}

func (l *fakeLease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

func (l *fakeLease) State() status.LeaseState {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := status.LeaseState{Holder: l.holder, Held: l.held, Epoch: l.epoch}
	if l.successor != nil {
		s := *l.successor
		st.Successor = &s
	}
	return st
}

func (l *fakeLease) Successor(context.Context) (status.Successor, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.successor == nil {
		return status.Successor{}, false, nil
	}
	return *l.successor, true, nil
}

// successorID is the instance that announces itself beside the lease in tests.
const successorID = "i-0bbbbbbbbbbbbbbb2"

// announce makes a successor appear beside the lease.
func (l *fakeLease) announce(ready bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.successor = &status.Successor{InstanceID: successorID, Since: time.Now(), Updated: time.Now(), Ready: ready}
}

// fakeRuntime is a container that runs until stopped, or until the test crashes it.
type fakeRuntime struct {
	j        *journal
	mu       sync.Mutex
	running  bool
	exited   chan int64
	gone     chan struct{} // closed while the daemon is away
	stopErr  error
	starts   int
	stayUp   bool // Stop "fails" and the container keeps running
	adopt    bool // Start adopts a running container
	startErr error
}

func newFakeRuntime(j *journal) *fakeRuntime {
	return &fakeRuntime{j: j, exited: make(chan int64, 1), gone: make(chan struct{})}
}

func (r *fakeRuntime) Prepare(context.Context) error { r.j.add("prepare"); return nil }

func (r *fakeRuntime) Start(context.Context) (bool, error) {
	r.j.add("container-start")
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.startErr != nil {
		return false, r.startErr
	}
	adopted := r.adopt && r.running
	if !r.running {
		r.running = true
		r.exited = make(chan int64, 1)
	}
	r.starts++
	return adopted, nil
}

func (r *fakeRuntime) Stop(ctx context.Context, grace time.Duration) error {
	r.j.add("container-stop")
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stayUp {
		return errors.New("daemon did not answer")
	}
	r.running = false
	return r.stopErr
}

func (r *fakeRuntime) Kill(context.Context) error {
	r.j.add("container-kill")
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stayUp {
		return errors.New("daemon did not answer")
	}
	r.running = false
	return nil
}

func (r *fakeRuntime) Running(context.Context) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stayUp && !r.running {
		return true, nil
	}
	return r.running, nil
}

func (r *fakeRuntime) Wait(ctx context.Context) (int64, error) {
	r.mu.Lock()
	ch, gone := r.exited, r.gone
	running := r.running
	r.mu.Unlock()
	if !running {
		return 0, nil // like the daemon's wait for "not running": at once
	}
	select {
	case c := <-ch:
		return c, nil
	case <-gone:
		return 0, errors.New("error during connect: EOF")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// crash makes the running container exit with code.
func (r *fakeRuntime) crash(code int64) {
	r.mu.Lock()
	r.running = false
	ch := r.exited
	r.mu.Unlock()
	ch <- code
}

// daemonRestart is dockerd killed and started again without live-restore: every wait
// ends with an error and the container is stopped, silently.
func (r *fakeRuntime) daemonRestart() {
	r.mu.Lock()
	r.running = false
	close(r.gone)
	r.gone = make(chan struct{})
	r.mu.Unlock()
}

func (r *fakeRuntime) isRunning() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running
}
