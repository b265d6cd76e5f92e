package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
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

// fakeMetadata is IMDS for one instance.
type fakeMetadata struct {
	mu       sync.Mutex
	id       instance.Identity
	err      error    // IMDS refuses for good (disabled, no IMDSv2): Identity fails with it at once
	silent   bool     // IMDS never answers: every read waits until its context ends
	failures int      // reads that fail before IMDS answers (throttled, 5xx): Identity retries them
	states   []string // target lifecycle states returned in turn; the last one stays
	calls    int
}

func (f *fakeMetadata) Identity(ctx context.Context) (instance.Identity, error) {
	f.mu.Lock()
	f.calls++
	id, err, silent := f.id, f.err, f.silent
	f.mu.Unlock()
	for f.failed() {
		t := time.NewTimer(10 * time.Millisecond) // the retry's backoff
		select {
		case <-ctx.Done():
			t.Stop()
			return instance.Identity{}, fmt.Errorf("imds: instance-id: still failing (500 Internal Server Error): %w", ctx.Err())
		case <-t.C:
		}
	}
	switch {
	case ctx.Err() != nil:
		return instance.Identity{}, fmt.Errorf("imds: instance-id: %w", ctx.Err())
	case err != nil:
		return instance.Identity{}, err
	case silent:
		<-ctx.Done()
		return instance.Identity{}, fmt.Errorf("imds: instance-id: no answer before the deadline: %w", ctx.Err())
	}
	return id, nil
}

// failed reports whether the next read fails, and counts it.
func (f *fakeMetadata) failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failures > 0 {
		f.failures--
		return true
	}
	return false
}

func (f *fakeMetadata) TargetLifecycleState(ctx context.Context) (string, error) {
	f.mu.Lock()
	silent := f.silent
	f.mu.Unlock()
	if silent {
		<-ctx.Done()
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("imds: autoscaling/target-lifecycle-state: %w", err)
	}
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

// fakeHost is one host's mount point: the file system mounted on it, and the marker
// each file system holds. An agent restarted on the same instance shares it.
type fakeHost struct {
	mu          sync.Mutex
	mounted     string            // id of the file system mounted at the mount point; "" when bare
	markers     map[string]string // the marker at the root of each file system, by its id
	localFiles  bool              // files on the bare mount point's local disk
	unreachable bool              // mount attempts time out (worth retrying)
	busy        bool              // a process holds a file open on the mounted home
	hung        chan struct{}     // non-nil while the mounted file system does not answer
}

// lock takes the host once its file system answers, or fails when ctx ends first.
func (h *fakeHost) lock(ctx context.Context, what string) error {
	for {
		h.mu.Lock()
		hung := h.hung
		if hung == nil {
			return nil
		}
		h.mu.Unlock()
		select {
		case <-hung:
		case <-ctx.Done():
			return fmt.Errorf("%s: the file system does not answer within the deadline: %w", what, ctx.Err())
		}
	}
}

// mount mounts the file system id at the mount point, its marker written, as an agent
// before a restart left it.
func (h *fakeHost) mount(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mounted, h.markers[id] = id, id
}

func (h *fakeHost) hang() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hung == nil {
		h.hung = make(chan struct{})
	}
}

func (h *fakeHost) resume() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hung != nil {
		close(h.hung)
		h.hung = nil
	}
}

// fakeMounter mounts the file system fsID at home on its host.
type fakeMounter struct {
	j        *journal
	home     string
	fsID     string
	host     *fakeHost
	mountErr error // the mount program fails for good with it (access denied)
}

func newFakeMounter(j *journal, home, fsID string) *fakeMounter {
	return &fakeMounter{j: j, home: home, fsID: fsID, host: &fakeHost{markers: map[string]string{}}}
}

// reopen is the mounter of an agent restarted on the same instance.
func (m *fakeMounter) reopen(j *journal) *fakeMounter {
	return &fakeMounter{j: j, home: m.home, fsID: m.fsID, host: m.host}
}

func (m *fakeMounter) Mount(ctx context.Context) error {
	m.j.add("mount")
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("efs mount: %w", err)
	}
	h := m.host
	if err := h.lock(ctx, "efs mount"); err != nil {
		return err
	}
	if h.mounted != "" {
		err := m.verifyLocked()
		h.mu.Unlock()
		if err != nil {
			return fmt.Errorf("efs mount: %s already holds a mount that is not the expected file system, refusing to mount over it: %w", m.home, err)
		}
		return nil
	}
	switch {
	case m.mountErr != nil:
		h.mu.Unlock()
		return m.mountErr
	case h.localFiles:
		h.mu.Unlock()
		return fmt.Errorf("efs mount: nothing is mounted at %s, but it holds files and no marker: a Jenkins ran without the mount; move them away", m.home)
	case h.unreachable:
		h.mu.Unlock()
		<-ctx.Done()
		return fmt.Errorf("efs mount: mount.nfs: Connection timed out until the deadline; check the mount target's security group (TCP 2049)")
	}
	h.mounted = m.fsID
	err := m.verifyLocked()
	h.mu.Unlock()
	return err
}

// verifyLocked proves the mount, writing the marker on a fresh file system; host.mu is held.
func (m *fakeMounter) verifyLocked() error {
	h := m.host
	switch {
	case h.mounted == "":
		return fmt.Errorf("efs verify: nothing is mounted at %s", m.home)
	case h.mounted != m.fsID:
		return fmt.Errorf("efs verify: %s holds %s, expected %s", m.home, h.mounted, m.fsID)
	}
	switch marker := h.markers[h.mounted]; marker {
	case "":
		h.markers[h.mounted] = m.fsID
	case m.fsID:
	default:
		return fmt.Errorf("efs verify: the marker names file system %s, but the configuration names %s: do not start Jenkins", marker, m.fsID)
	}
	return nil
}

func (m *fakeMounter) Verify(ctx context.Context) error {
	m.j.add("verify")
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("efs verify: %w", err)
	}
	if err := m.host.lock(ctx, "efs verify"); err != nil {
		return err
	}
	defer m.host.mu.Unlock()
	return m.verifyLocked()
}

func (m *fakeMounter) Unmount(ctx context.Context) error {
	m.j.add("unmount")
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("efs unmount: %w", err)
	}
	if err := m.host.lock(ctx, "efs unmount"); err != nil {
		return err
	}
	defer m.host.mu.Unlock()
	if m.host.mounted != "" && m.host.busy {
		return fmt.Errorf("efs unmount %s: target is busy: a process still uses the home (Jenkins still running?); stop it first", m.home)
	}
	m.host.mounted = ""
	return nil
}

func (m *fakeMounter) Abort(ctx context.Context) error {
	m.j.add("abort")
	if err := m.host.lock(ctx, "efs abort"); err != nil {
		return err
	}
	defer m.host.mu.Unlock()
	h := m.host
	if h.mounted == "" {
		return nil
	}
	h.mounted = "" // forced off, or detached: nothing reaches the home through this instance
	if h.busy {
		return fmt.Errorf("efs abort %s: still busy after forced unmounts; detached, but writes already queued may still land: power the instance off", m.home)
	}
	return nil
}

func (m *fakeMounter) MountPoint() string { return m.home }

// fakeLeaseHome is the lease record, and the successor's announcement beside it, on one
// home that every instance's fakeLease reads and writes.
type fakeLeaseHome struct {
	mu         sync.Mutex
	holder     string
	epoch      uint64
	released   bool
	version    uint64 // grows with every write: a waiting instance times the record by it
	unreadable bool   // the record holds bytes no holder wrote
	succ       *status.Successor
}

// take makes instance id take the lease at once, whoever holds it, with a new epoch.
func (h *fakeLeaseHome) take(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holder, h.released = id, false
	h.epoch++
	h.version++
}

var (
	errFakeUnreadable = errors.New("lease record unreadable")
	errFakeFenced     = errors.New("lease fenced")
)

// fakeLease is one instance's handle on a fakeLeaseHome. A record of another holder is
// waited for until it is released, or unchanged for ttl plus skew; the holder renews
// every ttl/3 and stops holding ttl - skew - ttl/6 after its last renewal.
type fakeLease struct {
	j                  *journal
	home               *fakeLeaseHome
	id                 string
	ttl, skew, poll    time.Duration
	announceEvery      time.Duration // a waiting instance's refresh; stale after three
	mu                 sync.Mutex
	ten                *fakeTenure
	seenHolder         string // the record as last read or written
	seenEpoch          uint64
	ready              bool
	announced          []bool
	successor          *status.Successor
	lastAnnounced      time.Time
	lastAnnouncedReady bool
}

type fakeTenure struct {
	epoch    uint64
	lastGood time.Time
	ended    bool
	done     chan struct{}
}

// newFakeLease is the lease of instance id on a home of its own, with the timing of
// production: nothing lapses during a test.
func newFakeLease(j *journal, id string) *fakeLease {
	return &fakeLease{
		j: j, home: &fakeLeaseHome{}, id: id,
		ttl: 30 * time.Second, skew: 2 * time.Second, poll: 10 * time.Millisecond, announceEvery: time.Hour,
	}
}

// successorID is the instance that announces itself beside the lease in tests.
const successorID = "i-0bbbbbbbbbbbbbbb2"

// announce makes a successor appear beside the lease, as its waiting Acquire would.
func (l *fakeLease) announce(ready bool) {
	h := l.home
	h.mu.Lock()
	defer h.mu.Unlock()
	since := time.Now()
	if h.succ != nil && h.succ.InstanceID == successorID {
		since = h.succ.Since
	}
	h.succ = &status.Successor{InstanceID: successorID, Since: since, Updated: time.Now(), Ready: ready}
}

func (l *fakeLease) fencePoint() time.Duration { return l.ttl - l.skew - l.ttl/6 }

func (l *fakeLease) Acquire(ctx context.Context, waiting func(status.LeaseState)) (status.LeaseState, error) {
	l.j.add("lease-acquire")
	h := l.home
	var (
		reported   *status.LeaseState
		observed   uint64
		observedAt time.Time
		since      time.Time
	)
	for {
		if err := ctx.Err(); err != nil {
			if reported == nil {
				return status.LeaseState{}, fmt.Errorf("acquire lease: %w", err)
			}
			return status.LeaseState{}, fmt.Errorf("acquire lease: still held by %s (epoch %d): %w", reported.Holder, reported.Epoch, err)
		}
		l.mu.Lock()
		ready := l.ready
		l.mu.Unlock()
		now := time.Now()
		h.mu.Lock()
		if h.unreadable {
			h.mu.Unlock()
			return status.LeaseState{}, fmt.Errorf("acquire lease: %w: make sure no other controller runs on this home, then remove the record", errFakeUnreadable)
		}
		changed := reported == nil || observed != h.version
		if changed {
			observed, observedAt = h.version, now
		}
		take := h.holder == "" || h.released || (!changed && now.Sub(observedAt) >= l.ttl+l.skew)
		if take || h.holder == l.id {
			if take {
				h.holder, h.released = l.id, false
				h.epoch++
			}
			h.version++
			if h.succ != nil && h.succ.InstanceID == l.id {
				h.succ = nil // withdrawn: this instance holds the lease now
			}
			epoch := h.epoch
			h.mu.Unlock()
			return l.begin(epoch), nil
		}
		// Waiting: announced as the successor, refreshed every announceEvery.
		if since.IsZero() {
			since = now
		}
		l.mu.Lock()
		if l.lastAnnounced.IsZero() || now.Sub(l.lastAnnounced) >= l.announceEvery || ready != l.lastAnnouncedReady {
			h.succ = &status.Successor{InstanceID: l.id, Since: since, Updated: now, Ready: ready}
			l.lastAnnounced, l.lastAnnouncedReady = now, ready
		}
		st := status.LeaseState{Held: true, Holder: h.holder, Epoch: h.epoch}
		l.seenHolder, l.seenEpoch = st.Holder, st.Epoch
		l.mu.Unlock()
		h.mu.Unlock()
		if changed {
			reported = &st
			if waiting != nil {
				waiting(st)
			}
		}
		t := time.NewTimer(l.poll)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// begin starts (or, for an adopted record, carries on) the tenure of epoch.
func (l *fakeLease) begin(epoch uint64) status.LeaseState {
	l.mu.Lock()
	if l.ten != nil && !l.ten.ended && l.ten.epoch != epoch {
		l.endLocked()
	}
	if l.ten == nil || l.ten.ended {
		l.ten = &fakeTenure{epoch: epoch, done: make(chan struct{})}
	}
	l.ten.lastGood = time.Now()
	l.seenHolder, l.seenEpoch = l.id, epoch
	l.lastAnnounced = time.Time{}
	l.mu.Unlock()
	return l.State()
}

// endLocked ends the tenure and wakes Hold; l.mu is held.
func (l *fakeLease) endLocked() {
	if l.ten != nil && !l.ten.ended {
		l.ten.ended = true
		close(l.ten.done)
	}
}

func (l *fakeLease) Announce(ready bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ready = ready
	l.announced = append(l.announced, ready)
}

func (l *fakeLease) Hold(ctx context.Context, fence func(context.Context) error) error {
	l.mu.Lock()
	ten := l.ten
	l.mu.Unlock()
	if ten == nil || ten.ended {
		return errors.New("hold lease: not acquired; call Acquire first")
	}
	h := l.home
	tick := time.NewTicker(l.poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ten.done:
			return nil
		case <-tick.C:
		}
		now := time.Now()
		var lost error
		l.mu.Lock()
		h.mu.Lock()
		switch {
		case ten.ended:
		case h.unreadable: // the renewal fails; the holder stops before its lease can lapse
			if since := now.Sub(ten.lastGood); since >= l.fencePoint() {
				lost = fmt.Errorf("%w: no renewal succeeded in %s", errFakeFenced, since.Round(time.Millisecond))
			}
		case h.holder != l.id || h.epoch != ten.epoch:
			lost = fmt.Errorf("lease lost: taken by %s (epoch %d, ours was %d)", h.holder, h.epoch, ten.epoch)
			l.seenHolder, l.seenEpoch = h.holder, h.epoch
		case h.released:
			lost = errors.New("lease lost: the record was marked released by someone else")
		case now.Sub(ten.lastGood) >= l.ttl/3:
			h.version++
			ten.lastGood = now
		}
		h.mu.Unlock()
		if lost != nil {
			l.endLocked()
		}
		l.mu.Unlock()
		if lost != nil {
			if fence != nil {
				fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.ttl)
				_ = fence(fctx)
				cancel()
			}
			return fmt.Errorf("hold lease: %w", lost)
		}
	}
}

func (l *fakeLease) Release(ctx context.Context) error {
	l.j.add("lease-release")
	l.mu.Lock()
	defer l.mu.Unlock()
	ten := l.ten
	if ten == nil || ten.ended {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	h := l.home
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.holder != l.id || h.epoch != ten.epoch {
		l.endLocked()
		return fmt.Errorf("release lease: lease lost: taken by %s (epoch %d, ours was %d)", h.holder, h.epoch, ten.epoch)
	}
	if !h.released {
		h.released = true
		h.version++
	}
	l.endLocked()
	return nil
}

func (l *fakeLease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heldLocked()
}

func (l *fakeLease) heldLocked() bool {
	return l.ten != nil && !l.ten.ended && time.Since(l.ten.lastGood) < l.fencePoint()
}

func (l *fakeLease) State() status.LeaseState {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := status.LeaseState{Held: l.heldLocked(), Holder: l.seenHolder, Epoch: l.seenEpoch}
	if l.successor != nil {
		s := *l.successor
		st.Successor = &s
	}
	return st
}

func (l *fakeLease) Successor(ctx context.Context) (status.Successor, bool, error) {
	if err := ctx.Err(); err != nil {
		return status.Successor{}, false, fmt.Errorf("read successor: %w", err)
	}
	l.home.mu.Lock()
	var s *status.Successor
	if a := l.home.succ; a != nil && a.InstanceID != l.id && time.Since(a.Updated) <= 3*l.announceEvery {
		c := *a
		s = &c
	}
	l.home.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.successor = s
	if s == nil {
		return status.Successor{}, false, nil
	}
	return *s, true, nil
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
