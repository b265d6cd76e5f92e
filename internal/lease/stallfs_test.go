package lease

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// stallFS is one client's view of a shared file server, as a FUSE file system over a
// real directory. Several views of one directory behave like several NFSv4.1 clients of
// one EFS file system: byte-range locks taken through one view exclude the others (they
// are open-file-description locks on the server's files), and every read and write goes
// to the server (direct I/O, no attribute cache).
//
// Like an NFS client on a hard mount whose server stopped answering, a view can stall:
// every request through it waits until the stall ends. And like a client whose NFSv4.1
// lease expired on the server, it can lose its state: the server drops the locks that
// the client held, so other clients can take them, and every later request through a
// file the client had open fails with EIO (the Linux client does not recover lost
// locks); files opened afterwards work again.
type stallFS struct {
	dir string

	mu       sync.Mutex
	gate     chan struct{} // non-nil while stalled; closed when the stall ends
	waiting  int           // requests held by the stall
	files    map[*stallFile]struct{}
	onStall  chan struct{}              // signalled when a request starts waiting
	requests int                        // requests seen
	trigger  func(op, name string) bool // one shot: the first request it matches starts a stall
}

// mountStallFS mounts a view of backing at a new directory. It needs root and
// /dev/fuse; without them the test skips (fails under CI=true).
func mountStallFS(t testing.TB, backing string) *stallFS {
	t.Helper()
	if testing.Short() {
		t.Skip("mounts a FUSE file system; skipped in -short")
	}
	testenv.Require(t, os.Geteuid() == 0, "mounting a FUSE file system needs root")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Missing(t, "%s", "needs /dev/fuse")
	}
	s := &stallFS{dir: t.TempDir(), files: map[*stallFile]struct{}{}, onStall: make(chan struct{}, 64)}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		t.Fatal(err)
	}
	root := &fs.LoopbackRoot{Path: backing, Dev: uint64(st.Dev)}
	// The root is a stallNode; it wraps every node made under it (WrapChild).
	root.RootNode = &stallNode{LoopbackNode: &fs.LoopbackNode{RootData: root}, s: s}
	zero := time.Duration(0)
	srv, err := fs.Mount(s.dir, root.RootNode, &fs.Options{
		MountOptions: fuse.MountOptions{
			DirectMount: true, EnableLocks: true, FsName: "stallfs", Name: "stallfs",
			DisableXAttrs: true, MaxBackground: 64,
		},
		EntryTimeout: &zero, AttrTimeout: &zero, NegativeTimeout: &zero,
	})
	if err != nil {
		testenv.Missing(t, "mount a FUSE file system: %v", err)
	}
	t.Cleanup(func() {
		s.Resume()
		// Requests abandoned by the code under test finish once the stall ends; give
		// them a moment, then detach whatever is left.
		for range 100 {
			if err := srv.Unmount(); err == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = unix.Unmount(s.dir, unix.MNT_DETACH)
	})
	return s
}

// Stall makes every later request wait until Resume.
func (s *stallFS) Stall() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate == nil {
		s.gate = make(chan struct{})
	}
}

// StallAt arms a one-shot stall: the first request for which match(op, name) is true
// (op is "lookup", "open", "create", "read", "write", "fsync", "setlk", "rename"...;
// name is the path inside the view) starts the stall, and waits in it.
func (s *stallFS) StallAt(match func(op, name string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trigger = match
}

// Resume lets the stalled requests (and every later one) through.
func (s *stallFS) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate != nil {
		close(s.gate)
		s.gate = nil
	}
}

// WaitStalled waits until a request is held by the stall.
func (s *stallFS) WaitStalled(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case <-s.onStall:
	case <-time.After(d):
		t.Fatalf("no request reached the stalled view within %s", d)
	}
}

// LoseState is the server dropping this client's state: its locks are released on
// the server and the files it has open fail every later request with EIO.
func (s *stallFS) LoseState() {
	s.mu.Lock()
	files := make([]*stallFile, 0, len(s.files))
	for f := range s.files {
		files = append(files, f)
	}
	s.mu.Unlock()
	for _, f := range files {
		f.lose()
	}
}

// wait holds a request while the view is stalled.
func (s *stallFS) wait(op, name string) {
	s.mu.Lock()
	s.requests++
	if s.trigger != nil && s.trigger(op, name) {
		s.trigger = nil
		if s.gate == nil {
			s.gate = make(chan struct{})
		}
	}
	gate := s.gate
	if gate != nil {
		s.waiting++
	}
	s.mu.Unlock()
	if gate == nil {
		return
	}
	select {
	case s.onStall <- struct{}{}:
	default:
	}
	<-gate
	s.mu.Lock()
	s.waiting--
	s.mu.Unlock()
}

func (s *stallFS) path(elem ...string) string {
	return filepath.Join(append([]string{s.dir}, elem...)...)
}

type stallNode struct {
	*fs.LoopbackNode
	s *stallFS
}

var _ fs.NodeWrapChilder = (*stallNode)(nil)

// WrapChild makes every node the loopback creates under n (lookup, create, mkdir...)
// a node of the same view.
func (n *stallNode) WrapChild(_ context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &stallNode{LoopbackNode: ops.(*fs.LoopbackNode), s: n.s}
}

func (n *stallNode) name(child string) string {
	return filepath.Join(n.EmbeddedInode().Path(nil), child)
}

func (n *stallNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.s.wait("lookup", n.name(name))
	return n.LoopbackNode.Lookup(ctx, name, out)
}

func (n *stallNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.s.wait("getattr", n.name(""))
	if sf, ok := f.(*stallFile); ok {
		f = sf.inner
	}
	return n.LoopbackNode.Getattr(ctx, f, out)
}

func (n *stallNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	n.s.wait("setattr", n.name(""))
	if sf, ok := f.(*stallFile); ok {
		if sf.isLost() {
			return syscall.EIO
		}
		f = sf.inner
	}
	return n.LoopbackNode.Setattr(ctx, f, in, out)
}

func (n *stallNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.s.wait("mkdir", n.name(name))
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

func (n *stallNode) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.s.wait("mknod", n.name(name))
	return n.LoopbackNode.Mknod(ctx, name, mode, dev, out)
}

func (n *stallNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.s.wait("symlink", n.name(name))
	return n.LoopbackNode.Symlink(ctx, target, name, out)
}

func (n *stallNode) Unlink(ctx context.Context, name string) syscall.Errno {
	n.s.wait("unlink", n.name(name))
	return n.LoopbackNode.Unlink(ctx, name)
}

func (n *stallNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	n.s.wait("rename", n.name(name))
	if p, ok := newParent.(*stallNode); ok {
		newParent = p.LoopbackNode
	}
	return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
}

func (n *stallNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	n.s.wait("open", n.name(""))
	fh, _, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return n.s.track(fh, n.name("")), fuse.FOPEN_DIRECT_IO, 0
}

func (n *stallNode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	n.s.wait("create", n.name(name))
	in, fh, _, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return in, n.s.track(fh, n.name(name)), fuse.FOPEN_DIRECT_IO, 0
}

func (s *stallFS) track(fh fs.FileHandle, name string) *stallFile {
	f := &stallFile{inner: fh.(*fs.LoopbackFile), s: s, name: name}
	s.mu.Lock()
	s.files[f] = struct{}{}
	s.mu.Unlock()
	return f
}

// stallFile is an open file of a view.
type stallFile struct {
	inner *fs.LoopbackFile
	s     *stallFS
	name  string

	mu   sync.Mutex
	lost bool
}

func (f *stallFile) isLost() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lost
}

// lose drops the file's locks on the server and fails its later requests.
func (f *stallFile) lose() {
	f.mu.Lock()
	f.lost = true
	f.mu.Unlock()
	unlock := fuse.FileLock{Start: 0, End: (1 << 63) - 1, Typ: syscall.F_UNLCK}
	_ = f.inner.Setlk(context.Background(), 0, &unlock, 0)
}

func (f *stallFile) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.s.wait("read", f.name)
	if f.isLost() {
		return nil, syscall.EIO
	}
	return f.inner.Read(ctx, buf, off)
}

func (f *stallFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	f.s.wait("write", f.name)
	if f.isLost() {
		return 0, syscall.EIO
	}
	return f.inner.Write(ctx, data, off)
}

func (f *stallFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	f.s.wait("fsync", f.name)
	if f.isLost() {
		return syscall.EIO
	}
	return f.inner.Fsync(ctx, flags)
}

func (f *stallFile) Flush(ctx context.Context) syscall.Errno {
	f.s.wait("flush", f.name)
	return f.inner.Flush(ctx)
}

func (f *stallFile) Release(ctx context.Context) syscall.Errno {
	f.s.mu.Lock()
	delete(f.s.files, f)
	f.s.mu.Unlock()
	return f.inner.Release(ctx)
}

func (f *stallFile) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	f.s.wait("getattr", f.name)
	if f.isLost() {
		return syscall.EIO
	}
	return f.inner.Getattr(ctx, out)
}

func (f *stallFile) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	f.s.wait("getlk", f.name)
	if f.isLost() {
		return syscall.EIO
	}
	return f.inner.Getlk(ctx, owner, lk, flags, out)
}

func (f *stallFile) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	f.s.wait("setlk", f.name)
	if f.isLost() {
		if lk.Typ == syscall.F_UNLCK {
			return 0
		}
		return syscall.EIO
	}
	return f.inner.Setlk(ctx, owner, lk, flags)
}

func (f *stallFile) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.Setlk(ctx, owner, lk, flags)
}

// TestStallFS checks the double itself: locks exclude across views, a stall holds a
// read, and a lost state frees the lock for the other view and fails the old file.
func TestStallFS(t *testing.T) {
	backing := t.TempDir()
	a, b := mountStallFS(t, backing), mountStallFS(t, backing)
	fa, err := os.OpenFile(a.path("f"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.OpenFile(b.path("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(fa.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatalf("lock through A: %v", err)
	}
	if err := unix.FcntlFlock(fb.Fd(), unix.F_OFD_SETLK, &lk); !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
		t.Fatalf("lock through B while A holds it = %v, want EAGAIN", err)
	}
	if _, err := fa.WriteAt([]byte("from a"), 0); err != nil {
		t.Fatal(err)
	}
	a.Stall()
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 6)
		_, err := fa.ReadAt(buf, 0)
		done <- err
	}()
	a.WaitStalled(t, 10*time.Second)
	select {
	case err := <-done:
		t.Fatalf("read through a stalled view returned %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	a.LoseState()
	if err := unix.FcntlFlock(fb.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatalf("lock through B after A lost its state: %v", err)
	}
	a.Resume()
	if err := <-done; !errors.Is(err, syscall.EIO) {
		t.Fatalf("A's read after losing its state = %v, want EIO", err)
	}
	if _, err := fa.WriteAt([]byte("late"), 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("A's write after losing its state = %v, want EIO", err)
	}
	got, err := os.ReadFile(b.path("f"))
	if err != nil || string(got) != "from a" {
		t.Fatalf("content = %q, %v", got, err)
	}
}
