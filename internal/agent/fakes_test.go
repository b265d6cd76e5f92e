package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

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

type fakeMetadata struct{ id instance.Identity }

func (f fakeMetadata) Identity(context.Context) (instance.Identity, error) { return f.id, nil }

// fakeWatcher delivers whatever the test sends, like the IMDS watcher would.
type fakeWatcher struct {
	in     chan instance.Notice
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
func (w *fakeWatcher) Health() status.WatchHealth { return w.health }

type fakeMounter struct {
	j        *journal
	home     string
	mountErr error
}

func (m *fakeMounter) Mount(context.Context) error {
	m.j.add("mount")
	return m.mountErr
}
func (m *fakeMounter) Verify(context.Context) error {
	m.j.add("verify")
	return m.mountErr
}
func (m *fakeMounter) Unmount(context.Context) error { m.j.add("unmount"); return nil }
func (m *fakeMounter) MountPoint() string            { return m.home }

// fakeLease blocks Acquire until released by the test when wait is set.
type fakeLease struct {
	j    *journal
	wait chan struct{}
	mu   sync.Mutex
	held bool
}

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
	l.held = true
	l.mu.Unlock()
	return status.LeaseState{Held: true, Holder: "i-self"}, nil
}
func (l *fakeLease) Hold(ctx context.Context, _ func(context.Context) error) error {
	<-ctx.Done()
	return nil
}
func (l *fakeLease) Release(context.Context) error {
	l.j.add("lease-release")
	l.mu.Lock()
	l.held = false
	l.mu.Unlock()
	return nil
}
func (l *fakeLease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}
func (l *fakeLease) State() status.LeaseState {
	return status.LeaseState{Holder: "i-self", Held: l.Held()}
}

// fakeRuntime is a container that runs until stopped, or until the test crashes it.
type fakeRuntime struct {
	j        *journal
	mu       sync.Mutex
	running  bool
	exited   chan int64
	stopErr  error
	starts   int
	stayUp   bool // Stop "fails" and the container keeps running
	killable bool
}

func newFakeRuntime(j *journal) *fakeRuntime {
	return &fakeRuntime{j: j, exited: make(chan int64, 1), killable: true}
}

func (r *fakeRuntime) Prepare(context.Context) error { r.j.add("prepare"); return nil }
func (r *fakeRuntime) Start(context.Context) (bool, error) {
	r.j.add("container-start")
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running = true
	r.starts++
	r.exited = make(chan int64, 1)
	return false, nil
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
	return r.running, nil
}
func (r *fakeRuntime) Wait(ctx context.Context) (int64, error) {
	r.mu.Lock()
	ch := r.exited
	r.mu.Unlock()
	select {
	case c := <-ch:
		return c, nil
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

type fakeJenkins struct {
	j      *journal
	mu     sync.Mutex
	builds []string
	until  time.Time // builds finish then
}

func (f *fakeJenkins) Probe(context.Context) error { return nil }
func (f *fakeJenkins) QuietDown(_ context.Context, reason string) error {
	f.j.add("quiet-down")
	return nil
}
func (f *fakeJenkins) RunningBuilds(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.until.IsZero() && time.Now().After(f.until) {
		f.builds = nil
	}
	return slices.Clone(f.builds), nil
}

type fakeTargets struct {
	j         *journal
	deregErr  error
	deregWait time.Duration
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
	_ Metadata = fakeMetadata{}
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
	watch   *fakeWatcher
	mounter *fakeMounter
	lease   *fakeLease
	rt      *fakeRuntime
	jenkins *fakeJenkins
	targets *fakeTargets
	notify  *recNotifier
	cfg     config.Config
	bootID  string
	phases  chan status.Phase
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
		watch:   &fakeWatcher{in: make(chan instance.Notice, 4)},
		mounter: &fakeMounter{j: j, home: home},
		lease:   &fakeLease{j: j},
		rt:      newFakeRuntime(j),
		jenkins: &fakeJenkins{j: j},
		targets: &fakeTargets{j: j},
		notify:  &recNotifier{},
		cfg:     cfg,
		bootID:  "boot-1",
		phases:  make(chan status.Phase, 64),
	}
}

// deps wires the rig's fakes; tests replace single adapters on the result.
func (r *rig) deps() Deps {
	return Deps{
		Metadata:   fakeMetadata{id: instance.Identity{InstanceID: "i-0123456789abcdef0", AvailabilityZone: "us-east-1a", Region: "us-east-1"}},
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
			if ev.Phase != "" {
				select {
				case r.phases <- ev.Phase:
				default:
				}
			}
		},
	})
}

// waitPhase waits for the agent to report phase p.
func (r *rig) waitPhase(p status.Phase, within time.Duration) error {
	t := time.After(within)
	for {
		select {
		case got := <-r.phases:
			if got == p {
				return nil
			}
		case <-t:
			return fmt.Errorf("phase %s not reached within %s (calls: %v)", p, within, r.j.list())
		}
	}
}
