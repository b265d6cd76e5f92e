package agent

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
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

// announce makes a successor appear beside the lease.
func (l *fakeLease) announce(id string, ready bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.successor = &status.Successor{InstanceID: id, Since: time.Now(), Updated: time.Now(), Ready: ready}
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

type fakeJenkins struct {
	j            *journal
	mu           sync.Mutex
	builds       []status.Build
	until        time.Time // builds finish then
	loadingUntil time.Time // Ready answers 503 until then
	silent       bool      // Ready gets no answer
	listFails    int       // RunningBuilds fails this many more times
	quieting     bool
	params       map[string]map[string]string
	requeued     []string
}

func (f *fakeJenkins) Ready(context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.silent:
		return false, errors.New("dial tcp 127.0.0.1:8080: connect: connection refused")
	case time.Now().Before(f.loadingUntil):
		return false, nil
	}
	return true, nil
}

func (f *fakeJenkins) QuietDown(_ context.Context, reason string) error {
	f.j.add("quiet-down")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.quieting = true
	return nil
}

func (f *fakeJenkins) CancelQuietDown(context.Context) error {
	f.j.add("cancel-quiet-down")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.quieting = false
	return nil
}

func (f *fakeJenkins) QuietingDown(context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.quieting, nil
}

func (f *fakeJenkins) RunningBuilds(context.Context) ([]status.Build, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listFails > 0 {
		f.listFails--
		return nil, errors.New("GET /computer/api/json: 500 Internal Server Error")
	}
	if !f.until.IsZero() && time.Now().After(f.until) {
		f.builds = nil
	}
	return slices.Clone(f.builds), nil
}

func (f *fakeJenkins) BuildParameters(_ context.Context, url string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.params[url], nil
}

func (f *fakeJenkins) Requeue(_ context.Context, job string, params map[string]string, cause string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requeued = append(f.requeued, job+" "+cause)
	return nil
}

func (f *fakeJenkins) set(fn func(*fakeJenkins)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// build is a running build on the fake Jenkins.
func build(job string, n int, pipeline bool) status.Build {
	return status.Build{URL: "http://127.0.0.1:8080/job/" + job + "/" + strconv.Itoa(n) + "/", Job: job, Number: n, Pipeline: pipeline}
}

type fakeTargets struct {
	j          *journal
	mu         sync.Mutex
	deregErr   error
	deregWait  time.Duration
	inGroup    bool
	requested  int
	heartbeats int
	replErr    error
}

func (t *fakeTargets) Discover(context.Context, instance.Identity) error {
	t.j.add("discover")
	return nil
}
func (t *fakeTargets) Register(context.Context, string) error { t.j.add("register"); return nil }

func (t *fakeTargets) Deregister(ctx context.Context, id string) error {
	t.j.add("deregister")
	if t.deregWait > 0 {
		select {
		case <-time.After(t.deregWait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return t.deregErr
}

func (t *fakeTargets) RequestReplacement(context.Context, instance.Identity) (bool, error) {
	t.j.add("request-replacement")
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.replErr != nil {
		return false, t.replErr
	}
	if !t.inGroup {
		return false, nil
	}
	t.requested++
	return true, nil
}

func (t *fakeTargets) Heartbeat(context.Context, string) error {
	t.j.add("heartbeat")
	t.mu.Lock()
	defer t.mu.Unlock()
	t.heartbeats++
	return nil
}

func (t *fakeTargets) HeartbeatInterval() time.Duration { return 200 * time.Millisecond }

func (t *fakeTargets) CompleteLifecycle(context.Context, string) error {
	t.j.add("lifecycle-complete")
	return nil
}

type recNotifier struct {
	mu   sync.Mutex
	msgs []string
}

func (n *recNotifier) add(s string) { n.mu.Lock(); n.msgs = append(n.msgs, s); n.mu.Unlock() }
func (n *recNotifier) Ready(s string) error {
	n.add("READY " + s)
	return nil
}
func (n *recNotifier) Status(s string) error             { n.add("STATUS " + s); return nil }
func (n *recNotifier) ExtendTimeout(time.Duration) error { n.add("EXTEND"); return nil }
func (n *recNotifier) Stopping(s string) error           { n.add("STOPPING " + s); return nil }
func (n *recNotifier) joined() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.msgs, "\n")
}

var (
	_ Metadata = (*fakeMetadata)(nil)
	_ Watcher  = (*fakeWatcher)(nil)
	_ Mounter  = (*fakeMounter)(nil)
	_ Lease    = (*fakeLease)(nil)
	_ Runtime  = (*fakeRuntime)(nil)
	_ Jenkins  = (*fakeJenkins)(nil)
	_ Targets  = (*fakeTargets)(nil)
	_ Notifier = (*recNotifier)(nil)
)

// rig is an agent wired to fakes.
type rig struct {
	j       *journal
	md      *fakeMetadata
	watch   *fakeWatcher
	mounter *fakeMounter
	lease   *fakeLease
	rt      *fakeRuntime
	jenkins *fakeJenkins
	targets *fakeTargets
	notify  *recNotifier
	cfg     config.Config
	bootID  string
	mu      sync.Mutex
	seen    []status.Event
	cursor  int // waitPhase looks after this event
}

func newRig(home, stateDir string) *rig {
	j := &journal{}
	cfg := config.Default()
	cfg.EFS.FileSystemID = "fs-12345678"
	cfg.EFS.MountPoint = home
	cfg.StateDir = stateDir
	cfg.Jenkins.StopGrace = config.Duration(2 * time.Second)
	cfg.Interruption.SafetyMargin = config.Duration(2 * time.Second)
	cfg.Jenkins.UID, cfg.Jenkins.GID = -1, -1
	return &rig{
		j:       j,
		md:      &fakeMetadata{id: instance.Identity{InstanceID: "i-0123456789abcdef0", InstanceType: "m7g.large", AvailabilityZone: "us-east-1a", Region: "us-east-1"}},
		watch:   &fakeWatcher{in: make(chan instance.Notice, 4)},
		mounter: &fakeMounter{j: j, home: home},
		lease:   newFakeLease(j),
		rt:      newFakeRuntime(j),
		jenkins: &fakeJenkins{j: j},
		targets: &fakeTargets{j: j},
		notify:  &recNotifier{},
		cfg:     cfg,
		bootID:  "boot-1",
	}
}

// deps wires the rig's fakes; tests replace single adapters on the result.
func (r *rig) deps() Deps {
	return Deps{
		Metadata:   r.md,
		Watcher:    r.watch,
		NewMounter: func(instance.Identity) (Mounter, error) { return r.mounter, nil },
		NewLease:   func(instance.Identity, string) (Lease, error) { return r.lease, nil },
		NewTargets: func(context.Context, instance.Identity) (Targets, error) { return r.targets, nil },
		Runtime:    r.rt,
		Jenkins:    r.jenkins,
		Notifier:   r.notify,
	}
}

func (r *rig) agent(budget time.Duration) (*Agent, error) {
	return New(Options{
		Config:        r.cfg,
		Deps:          r.deps(),
		BootID:        r.bootID,
		DefaultBudget: budget,
		OnEvent: func(ev status.Event) {
			r.mu.Lock()
			r.seen = append(r.seen, ev)
			r.mu.Unlock()
		},
	})
}

// waitPhase waits for the agent to enter phase p after the phase last waited for.
func (r *rig) waitPhase(p status.Phase, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		for i := r.cursor; i < len(r.seen); i++ {
			if ev := r.seen[i]; ev.Kind == status.EventPhase && ev.Phase == p {
				r.cursor = i + 1
				r.mu.Unlock()
				return nil
			}
		}
		r.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	return errors.New("phase " + string(p) + " not reached in " + within.String() + "; phases: " + fmtPhases(r.phases()))
}

func fmtPhases(ps []status.Phase) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, " → ")
}

// eventsOf returns the events of one kind seen so far.
func (r *rig) eventsOf(k status.EventKind) []status.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []status.Event
	for _, ev := range r.seen {
		if ev.Kind == k {
			out = append(out, ev)
		}
	}
	return out
}

// phases returns the phases entered so far, in order.
func (r *rig) phases() []status.Phase {
	var out []status.Phase
	for _, ev := range r.eventsOf(status.EventPhase) {
		out = append(out, ev.Phase)
	}
	return out
}
