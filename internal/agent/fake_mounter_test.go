package agent

import (
	"context"
	"fmt"
	"sync"
)

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
