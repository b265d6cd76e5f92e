// Package fakenfs serves a local directory through FUSE so that it behaves like an
// EFS export in the two ways the agent must cope with, where no NFS server runs:
//
//   - root squashed: without elasticfilesystem:ClientRootAccess in the file system
//     policy EFS maps root to an anonymous user, and through an access point with a
//     POSIX user every caller becomes that user. Root's chown and its writes into
//     files and directories it no longer owns fail with EPERM/EACCES from the
//     server, not from the kernel's own permission checks.
//   - a hung server: on a hard NFS mount whose server is gone every operation blocks
//     and cannot be cancelled (Hang, Resume).
//
// It is for tests: mounting needs root and /dev/fuse.
package fakenfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// SuperMagic is what statfs(2) reports for a FUSE file system.
const SuperMagic = 0x65735546

// Identity is a uid and gid on the server.
type Identity struct {
	UID, GID uint32
}

// Nobody is the anonymous identity EFS squashes root to.
var Nobody = Identity{UID: 65534, GID: 65534}

// Options configure a mount.
type Options struct {
	// Squash, when set, is who root's requests run as on the server: Nobody for a file
	// system policy without ClientRootAccess, an access point's POSIX user otherwise.
	// Files root creates are owned by it; permission bits are checked against it.
	Squash *Identity
	// Source is the mount source mountinfo shows ("127.0.0.1:/", an EFS name).
	Source string
	// Name makes the mountinfo type fuse.<Name>; "fakenfs" when empty.
	Name string
}

// Server is one mounted directory.
type Server struct {
	srv    *fuse.Server
	squash *Identity
	dir    string

	mu      sync.Mutex
	hung    chan struct{} // closed by Resume; nil while the server answers
	blocked atomic.Int32
}

// Mount serves backing at mountPoint until Unmount.
func Mount(mountPoint, backing string, opts Options) (*Server, error) {
	s := &Server{squash: opts.Squash, dir: mountPoint}
	rootNode, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, fmt.Errorf("fakenfs: %w", err)
	}
	lb := rootNode.(*fs.LoopbackNode)
	root := &node{LoopbackNode: lb, s: s}
	lb.RootData.RootNode = root
	if opts.Name == "" {
		opts.Name = "fakenfs"
	}
	zero := time.Duration(0)
	srv, err := fs.Mount(mountPoint, root, &fs.Options{
		// Nothing cached: every access reaches the server, as it must to hang or refuse.
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			FsName:      opts.Source,
			Name:        opts.Name,
			AllowOther:  true,
			DirectMount: true,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("fakenfs: mount %s: %w", mountPoint, err)
	}
	s.srv = srv
	return s, nil
}

// Hang makes every later operation block until Resume, like a hard NFS mount whose
// server is gone.
func (s *Server) Hang() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hung == nil {
		s.hung = make(chan struct{})
	}
}

// Resume lets blocked and later operations through.
func (s *Server) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hung != nil {
		close(s.hung)
		s.hung = nil
	}
}

// Blocked is the number of operations waiting in Hang now.
func (s *Server) Blocked() int { return int(s.blocked.Load()) }

// Unmount resumes the server and unmounts it.
func (s *Server) Unmount() error {
	s.Resume()
	var err error
	for range 50 {
		if err = s.srv.Unmount(); err == nil {
			s.srv.Wait()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("fakenfs: unmount %s: %w", s.dir, err)
}

// gate blocks while the server hangs; a request the kernel interrupts (the caller got
// a fatal signal) ends with EINTR.
func (s *Server) gate(ctx context.Context) syscall.Errno {
	s.mu.Lock()
	ch := s.hung
	s.mu.Unlock()
	if ch == nil {
		return 0
	}
	s.blocked.Add(1)
	defer s.blocked.Add(-1)
	select {
	case <-ch:
		return 0
	case <-ctx.Done():
		return syscall.EINTR
	}
}

// identity is who a request runs as, and whether the server checks it at all: root
// unsquashed may do anything, as the server itself is root.
func (s *Server) identity(ctx context.Context) (Identity, bool) {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return Identity{}, false
	}
	if c.Uid == 0 {
		if s.squash == nil {
			return Identity{}, false
		}
		return *s.squash, true
	}
	return Identity{UID: c.Uid, GID: c.Gid}, true
}

// Permission bits as in an inode's mode.
const (
	permR = 4
	permW = 2
	permX = 1
)

func permits(st *syscall.Stat_t, id Identity, want uint32) bool {
	switch {
	case st.Uid == id.UID:
		return (st.Mode>>6)&want == want
	case st.Gid == id.GID:
		return (st.Mode>>3)&want == want
	default:
		return st.Mode&want == want
	}
}

// node is a loopback node that the server gates and squashes.
type node struct {
	*fs.LoopbackNode
	s *Server
}

var (
	_ fs.NodeWrapChilder = (*node)(nil)
	_ fs.NodeLookuper    = (*node)(nil)
	_ fs.NodeGetattrer   = (*node)(nil)
	_ fs.NodeSetattrer   = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeCreater     = (*node)(nil)
	_ fs.NodeMkdirer     = (*node)(nil)
	_ fs.NodeUnlinker    = (*node)(nil)
	_ fs.NodeRmdirer     = (*node)(nil)
	_ fs.NodeRenamer     = (*node)(nil)
	_ fs.NodeStatfser    = (*node)(nil)
	_ fs.NodeReaddirer   = (*node)(nil)
)

// WrapChild gives every node of the tree the same server.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), s: n.s}
}

func (n *node) path() string {
	return filepath.Join(n.RootData.Path, n.Path(nil))
}

func (n *node) stat() (*syscall.Stat_t, syscall.Errno) {
	var st syscall.Stat_t
	if err := syscall.Lstat(n.path(), &st); err != nil {
		return nil, fs.ToErrno(err)
	}
	return &st, 0
}

// may checks that the request's identity has want on this node.
func (n *node) may(ctx context.Context, want uint32) syscall.Errno {
	id, checked := n.s.identity(ctx)
	if !checked {
		return 0
	}
	st, errno := n.stat()
	if errno != 0 {
		return errno
	}
	if !permits(st, id, want) {
		return syscall.EACCES
	}
	return 0
}

// own gives a new file to the request's identity, as the server records it.
func (n *node) own(ctx context.Context, name string, out *fuse.EntryOut) syscall.Errno {
	id, checked := n.s.identity(ctx)
	if !checked {
		return 0
	}
	p := filepath.Join(n.path(), name)
	if err := os.Lchown(p, int(id.UID), int(id.GID)); err != nil {
		return fs.ToErrno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	return 0
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.s.gate(ctx); e != 0 {
		return nil, e
	}
	return n.LoopbackNode.Lookup(ctx, name, out)
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if e := n.s.gate(ctx); e != 0 {
		return e
	}
	return n.LoopbackNode.Getattr(ctx, f, out)
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if e := n.s.gate(ctx); e != 0 {
		return e
	}
	return n.LoopbackNode.Statfs(ctx, out)
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if e := n.s.gate(ctx); e != 0 {
		return nil, e
	}
	if e := n.may(ctx, permR); e != 0 {
		return nil, e
	}
	return n.LoopbackNode.Readdir(ctx)
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if e := n.s.gate(ctx); e != 0 {
		return nil, 0, e
	}
	want := uint32(permR)
	switch int(flags) & syscall.O_ACCMODE {
	case syscall.O_WRONLY:
		want = permW
	case syscall.O_RDWR:
		want = permR | permW
	}
	if e := n.may(ctx, want); e != 0 {
		return nil, 0, e
	}
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	if errno == 0 {
		fh = &file{FileHandle: fh, s: n.s}
	}
	return fh, fl, errno
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if e := n.s.gate(ctx); e != 0 {
		return nil, nil, 0, e
	}
	if e := n.may(ctx, permW|permX); e != 0 {
		return nil, nil, 0, e
	}
	in, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return in, fh, fl, errno
	}
	if e := n.own(ctx, name, out); e != 0 {
		return nil, nil, 0, e
	}
	return in, &file{FileHandle: fh, s: n.s}, fl, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := n.s.gate(ctx); e != 0 {
		return nil, e
	}
	if e := n.may(ctx, permW|permX); e != 0 {
		return nil, e
	}
	in, errno := n.LoopbackNode.Mkdir(ctx, name, mode, out)
	if errno != 0 {
		return in, errno
	}
	if e := n.own(ctx, name, out); e != 0 {
		return nil, e
	}
	return in, 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if e := n.s.gate(ctx); e != 0 {
		return e
	}
	if e := n.may(ctx, permW|permX); e != 0 {
		return e
	}
	return n.LoopbackNode.Unlink(ctx, name)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if e := n.s.gate(ctx); e != 0 {
		return e
	}
	if e := n.may(ctx, permW|permX); e != 0 {
		return e
	}
	return n.LoopbackNode.Rmdir(ctx, name)
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if e := n.s.gate(ctx); e != 0 {
		return e
	}
	if e := n.may(ctx, permW|permX); e != 0 {
		return e
	}
	if np, ok := newParent.(*node); ok {
		if e := np.may(ctx, permW|permX); e != 0 {
			return e
		}
		newParent = np.LoopbackNode
	}
	return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
}

// Setattr refuses what a squashed caller may not do: give a file away (chown to
// another user, or to a group not its own), change the mode of a file it does not
// own, truncate a file it may not write.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if e := n.s.gate(ctx); e != 0 {
		return e
	}
	if id, checked := n.s.identity(ctx); checked {
		st, errno := n.stat()
		if errno != 0 {
			return errno
		}
		uid, uok := in.GetUID()
		gid, gok := in.GetGID()
		_, mok := in.GetMode()
		_, sok := in.GetSize()
		switch {
		case (uok || gok || mok) && st.Uid != id.UID:
			return syscall.EPERM
		case uok && uid != st.Uid:
			return syscall.EPERM
		case gok && gid != st.Gid && gid != id.GID:
			return syscall.EPERM
		case sok && !permits(st, id, permW):
			return syscall.EACCES
		}
	}
	if lf, ok := f.(*file); ok {
		f = lf.FileHandle
	}
	return n.LoopbackNode.Setattr(ctx, f, in, out)
}

// file is an open file of a node; reads and writes hang with the server.
type file struct {
	fs.FileHandle
	s *Server
}

var (
	_ fs.FileReader = (*file)(nil)
	_ fs.FileWriter = (*file)(nil)
)

func (f *file) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if e := f.s.gate(ctx); e != 0 {
		return nil, e
	}
	r, ok := f.FileHandle.(fs.FileReader)
	if !ok {
		return nil, syscall.ENOTSUP
	}
	return r.Read(ctx, dest, off)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if e := f.s.gate(ctx); e != 0 {
		return 0, e
	}
	w, ok := f.FileHandle.(fs.FileWriter)
	if !ok {
		return 0, syscall.ENOTSUP
	}
	return w.Write(ctx, data, off)
}

// Forward the other file operations the loopback file implements.

func (f *file) Flush(ctx context.Context) syscall.Errno {
	if fl, ok := f.FileHandle.(fs.FileFlusher); ok {
		return fl.Flush(ctx)
	}
	return 0
}

func (f *file) Release(ctx context.Context) syscall.Errno {
	if r, ok := f.FileHandle.(fs.FileReleaser); ok {
		return r.Release(ctx)
	}
	return 0
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if e := f.s.gate(ctx); e != 0 {
		return e
	}
	if s, ok := f.FileHandle.(fs.FileFsyncer); ok {
		return s.Fsync(ctx, flags)
	}
	return 0
}

func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	if g, ok := f.FileHandle.(fs.FileGetattrer); ok {
		return g.Getattr(ctx, out)
	}
	return syscall.ENOTSUP
}

// Available reports whether FUSE mounts can work here: root and /dev/fuse.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("FUSE mounts need root")
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("/dev/fuse: %w", err)
	}
	return f.Close()
}
