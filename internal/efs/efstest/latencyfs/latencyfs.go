// Package latencyfs mounts a directory through FUSE with a fixed delay on every request,
// so that a test or a benchmark sees a home that behaves like EFS on latency: every
// lookup, getattr, create, write, setattr, link or readdir is one network round trip
// of an NFS client, answered after a millisecond or a few, while many requests may be in
// flight at once (latency, not throughput, is the limit).
//
// It is a loopback over a local directory (go-fuse's), so data, owners, modes, times,
// symlinks and hard links behave as on the backing file system; only the time each
// request takes changes. Like EFS (NFS 4.0 and 4.1 carry no extended attributes) it
// answers the first extended-attribute request with ENOSYS, after which the kernel
// stops asking (it would otherwise ask for security.capability on every write and
// chown). Mounting needs root and /dev/fuse.
package latencyfs

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// CacheTimeout is how long the kernel trusts a name or attributes it was given before it
// asks again. NFS clients cache attributes for a few seconds too (acregmin=3s).
const CacheTimeout = time.Second

// MaxBackground is how many asynchronous requests (releases, read-ahead) the kernel
// keeps in flight; the FUSE default of 12 would throttle closes below what an NFS
// session's slot table allows.
const MaxBackground = 64

// Home is a mounted latency file system.
type Home struct {
	// Dir is the mount point: write here to pay the delay.
	Dir string
	// Backing is the local directory behind it: read or prepare files here at local
	// speed (the kernel may cache what it saw through Dir for CacheTimeout).
	Backing string

	server  *fuse.Server
	delayed *delayedFS
	once    sync.Once
	err     error
}

// Options shape a Home.
type Options struct {
	// Delay is added to every request the kernel waits for (one round trip).
	Delay time.Duration
	// SquashRoot refuses every change of owner (EPERM), as EFS does for root when the
	// file system policy lacks ClientRootAccess or an access point sets a POSIX user.
	SquashRoot bool
}

// Mount serves backing at mountpoint (both existing directories) with every request
// delayed by delay. Unmount undoes it.
func Mount(backing, mountpoint string, delay time.Duration) (*Home, error) {
	return MountWith(backing, mountpoint, Options{Delay: delay})
}

// MountWith is Mount with all the options.
func MountWith(backing, mountpoint string, opts Options) (*Home, error) {
	delay := opts.Delay
	if delay < 0 {
		return nil, fmt.Errorf("latencyfs: negative delay %s", delay)
	}
	root, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, fmt.Errorf("latencyfs: %w", err)
	}
	timeout := CacheTimeout
	raw := fs.NewNodeFS(root, &fs.Options{EntryTimeout: &timeout, AttrTimeout: &timeout})
	d := &delayedFS{RawFileSystem: raw, delay: delay, squash: opts.SquashRoot}
	server, err := fuse.NewServer(d, mountpoint, &fuse.MountOptions{
		AllowOther:    true, // the home is shared by root and the Jenkins user
		FsName:        "latencyfs:" + backing,
		Name:          "latencyfs",
		MaxBackground: MaxBackground,
		DirectMount:   true,
	})
	if err != nil {
		return nil, fmt.Errorf("latencyfs: mount %s: %w", mountpoint, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		_ = server.Unmount()
		return nil, fmt.Errorf("latencyfs: mount %s: %w", mountpoint, err)
	}
	return &Home{Dir: mountpoint, Backing: backing, server: server, delayed: d}, nil
}

// Unmount detaches the file system, retrying while it is busy (for up to 10 s), and
// waits for the server to stop. Calling it again returns the first result.
func (h *Home) Unmount() error {
	h.once.Do(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := h.server.Unmount()
			if err == nil {
				h.server.Wait()
				return
			}
			if time.Now().After(deadline) {
				h.err = fmt.Errorf("latencyfs: unmount %s: %w", h.Dir, err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	return h.err
}

// Requests is the number of delayed requests served so far (round trips an NFS client
// would have made).
func (h *Home) Requests() int64 { return h.delayed.total.Load() }

// MaxInFlight is the largest number of requests that were being served at once.
func (h *Home) MaxInFlight() int64 { return h.delayed.maxInFlight.Load() }

// Counts returns the requests served per operation, sorted by name ("CREATE 10, ...").
func (h *Home) Counts() string {
	h.delayed.mu.Lock()
	defer h.delayed.mu.Unlock()
	names := make([]string, 0, len(h.delayed.counts))
	for n := range h.delayed.counts {
		names = append(names, n)
	}
	sort.Strings(names)
	out := ""
	for i, n := range names {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%s %d", n, h.delayed.counts[n])
	}
	return out
}

// ResetCounts sets the request counters to zero, for measuring one step.
func (h *Home) ResetCounts() {
	h.delayed.mu.Lock()
	h.delayed.counts = nil
	h.delayed.mu.Unlock()
	h.delayed.total.Store(0)
	h.delayed.maxInFlight.Store(0)
}

// Available reports why latencyfs cannot mount here, or nil: it needs root and
// /dev/fuse.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("latencyfs needs root to mount")
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("latencyfs needs /dev/fuse (Debian package fuse3): %w", err)
	}
	return f.Close()
}

// New mounts a fresh, empty latency file system for a test and unmounts it at cleanup.
// It skips under -short, and where root or /dev/fuse is missing (fails under CI=true).
func New(t testing.TB, delay time.Duration) *Home {
	t.Helper()
	return NewWith(t, Options{Delay: delay})
}

// NewWith is New with all the options.
func NewWith(t testing.TB, opts Options) *Home {
	t.Helper()
	if testing.Short() {
		t.Skip("mounts a FUSE file system; skipped under -short")
	}
	err := Available()
	testenv.Require(t, err == nil, "%v", err)
	base := t.TempDir()
	backing, mnt := base+"/backing", base+"/mnt"
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h, err := MountWith(backing, mnt, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Registered after TempDir's cleanup, so it runs before it: unmount, then remove.
	t.Cleanup(func() {
		if err := h.Unmount(); err != nil {
			t.Error(err)
		}
	})
	return h
}

// delayedFS answers every request that the kernel waits for after the delay; requests
// run concurrently, each on its own goroutine, as go-fuse serves them.
type delayedFS struct {
	fuse.RawFileSystem
	delay  time.Duration
	squash bool

	total, inFlight, maxInFlight atomic.Int64

	mu     sync.Mutex
	counts map[string]int64
}

// wait is called at the start of each delayed request; the returned func ends it.
func (d *delayedFS) wait(op string) func() {
	d.total.Add(1)
	d.mu.Lock()
	if d.counts == nil {
		d.counts = map[string]int64{}
	}
	d.counts[op]++
	d.mu.Unlock()
	n := d.inFlight.Add(1)
	for {
		m := d.maxInFlight.Load()
		if n <= m || d.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	if d.delay > 0 {
		time.Sleep(d.delay)
	}
	return func() { d.inFlight.Add(-1) }
}

func (d *delayedFS) String() string { return "latencyfs(" + d.RawFileSystem.String() + ")" }

func (d *delayedFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	defer d.wait("LOOKUP")()
	return d.RawFileSystem.Lookup(c, h, name, out)
}

func (d *delayedFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer d.wait("GETATTR")()
	return d.RawFileSystem.GetAttr(c, in, out)
}

func (d *delayedFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer d.wait("SETATTR")()
	if d.squash && in.Valid&(fuse.FATTR_UID|fuse.FATTR_GID) != 0 {
		return fuse.EPERM
	}
	return d.RawFileSystem.SetAttr(c, in, out)
}

func (d *delayedFS) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	defer d.wait("MKNOD")()
	return d.RawFileSystem.Mknod(c, in, name, out)
}

func (d *delayedFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	defer d.wait("MKDIR")()
	return d.RawFileSystem.Mkdir(c, in, name, out)
}

func (d *delayedFS) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer d.wait("UNLINK")()
	return d.RawFileSystem.Unlink(c, h, name)
}

func (d *delayedFS) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer d.wait("RMDIR")()
	return d.RawFileSystem.Rmdir(c, h, name)
}

func (d *delayedFS) Rename(c <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	defer d.wait("RENAME")()
	return d.RawFileSystem.Rename(c, in, oldName, newName)
}

func (d *delayedFS) Link(c <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	defer d.wait("LINK")()
	return d.RawFileSystem.Link(c, in, name, out)
}

func (d *delayedFS) Symlink(c <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	defer d.wait("SYMLINK")()
	return d.RawFileSystem.Symlink(c, h, target, name, out)
}

func (d *delayedFS) Readlink(c <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	defer d.wait("READLINK")()
	return d.RawFileSystem.Readlink(c, h)
}

func (d *delayedFS) Access(c <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	defer d.wait("ACCESS")()
	return d.RawFileSystem.Access(c, in)
}

func (d *delayedFS) GetXAttr(c <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	defer d.wait("GETXATTR")()
	return 0, fuse.ENOSYS
}

func (d *delayedFS) ListXAttr(c <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	defer d.wait("LISTXATTR")()
	return 0, fuse.ENOSYS
}

func (d *delayedFS) SetXAttr(c <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	defer d.wait("SETXATTR")()
	return fuse.ENOSYS
}

func (d *delayedFS) RemoveXAttr(c <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	defer d.wait("REMOVEXATTR")()
	return fuse.ENOSYS
}

func (d *delayedFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	defer d.wait("CREATE")()
	return d.RawFileSystem.Create(c, in, name, out)
}

func (d *delayedFS) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer d.wait("OPEN")()
	return d.RawFileSystem.Open(c, in, out)
}

func (d *delayedFS) Read(c <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	defer d.wait("READ")()
	return d.RawFileSystem.Read(c, in, buf)
}

func (d *delayedFS) Lseek(c <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	defer d.wait("LSEEK")()
	return d.RawFileSystem.Lseek(c, in, out)
}

func (d *delayedFS) GetLk(c <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	defer d.wait("GETLK")()
	return d.RawFileSystem.GetLk(c, in, out)
}

func (d *delayedFS) SetLk(c <-chan struct{}, in *fuse.LkIn) fuse.Status {
	defer d.wait("SETLK")()
	return d.RawFileSystem.SetLk(c, in)
}

func (d *delayedFS) SetLkw(c <-chan struct{}, in *fuse.LkIn) fuse.Status {
	defer d.wait("SETLKW")()
	return d.RawFileSystem.SetLkw(c, in)
}

func (d *delayedFS) Release(c <-chan struct{}, in *fuse.ReleaseIn) {
	defer d.wait("RELEASE")()
	d.RawFileSystem.Release(c, in)
}

func (d *delayedFS) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	defer d.wait("WRITE")()
	return d.RawFileSystem.Write(c, in, data)
}

func (d *delayedFS) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	defer d.wait("WRITE")()
	return d.RawFileSystem.Writev(c, in, data)
}

func (d *delayedFS) CopyFileRange(c <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	defer d.wait("COPY_FILE_RANGE")()
	return d.RawFileSystem.CopyFileRange(c, in)
}

func (d *delayedFS) Flush(c <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	defer d.wait("FLUSH")()
	return d.RawFileSystem.Flush(c, in)
}

func (d *delayedFS) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	defer d.wait("FSYNC")()
	return d.RawFileSystem.Fsync(c, in)
}

func (d *delayedFS) Fallocate(c <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	defer d.wait("FALLOCATE")()
	return d.RawFileSystem.Fallocate(c, in)
}

func (d *delayedFS) OpenDir(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer d.wait("OPENDIR")()
	return d.RawFileSystem.OpenDir(c, in, out)
}

func (d *delayedFS) ReadDir(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer d.wait("READDIR")()
	return d.RawFileSystem.ReadDir(c, in, out)
}

func (d *delayedFS) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer d.wait("READDIRPLUS")()
	return d.RawFileSystem.ReadDirPlus(c, in, out)
}

func (d *delayedFS) ReleaseDir(in *fuse.ReleaseIn) {
	defer d.wait("RELEASEDIR")()
	d.RawFileSystem.ReleaseDir(in)
}

func (d *delayedFS) FsyncDir(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	defer d.wait("FSYNCDIR")()
	return d.RawFileSystem.FsyncDir(c, in)
}

func (d *delayedFS) StatFs(c <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	defer d.wait("STATFS")()
	return d.RawFileSystem.StatFs(c, h, out)
}

func (d *delayedFS) Statx(c <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	defer d.wait("STATX")()
	return d.RawFileSystem.Statx(c, in, out)
}
