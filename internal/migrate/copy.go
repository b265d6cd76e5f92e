package migrate

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The copy is a set of tasks run by a pool of workers: listing a directory creates it in
// the target and hands out a task per entry, so directories are walked and files copied
// at once, in parallel, with many operations in flight on a latency-bound target. A
// directory's owner, mode and times are set when its last entry is done (creating an
// entry changes its directory's mtime); an extra name of a hard-linked inode is linked
// once the first name's copy is done.

type taskKind int

const (
	taskList    taskKind = iota // create dir in the target and hand out its entries
	taskFile                    // copy the regular file dir/name
	taskSymlink                 // copy the symlink dir/name
	taskLink                    // link dir/name to the first name of group
)

type task struct {
	kind  taskKind
	dir   *dirNode
	name  string
	st    unix.Stat_t // the entry as listed
	group *linkGroup
}

// dirNode is a directory being copied. Its descriptors stay open until its metadata is
// applied, after its last entry.
type dirNode struct {
	parent *dirNode
	name   string
	rel    string
	root   bool
	st     unix.Stat_t // the source directory, from its descriptor
	srcFd  int         // the source directory, open for reading
	dstFd  int         // the target directory, an O_PATH descriptor
	// pending counts entries not yet done, plus one while the directory is listed.
	pending atomic.Int64
	// created is the target directory as it was made (or found, on resume).
	created unix.Stat_t
	q       queue
}

func (d *dirNode) join(name string) string {
	if d.rel == "." {
		return name
	}
	return d.rel + "/" + name
}

// linkGroup is one inode of the source with several names.
type linkGroup struct {
	dir     *dirNode // where the first name is
	name    string
	done    bool // the first name is in place
	dstKey  devIno
	waiters []task // later names seen before the first was done
}

// perDirInFlight bounds the entries of one directory being created at once: the kernel
// creates entries of one directory one at a time (it locks the directory for the
// lookup and the create), so more workers there would only wait on each other, while
// entries of other directories could go ahead.
const perDirInFlight = 4

// maxOpenDirs bounds the directories listed and not yet done (each holds two
// descriptors); past it, directories are listed only when nothing else can run.
const maxOpenDirs = 4096

// scheduler hands tasks to workers, round-robin over the directories that have entries
// to copy, at most perDirInFlight per directory, entries before subdirectories: many
// directories are worked on at once, and few are open.
type scheduler struct {
	mu       sync.Mutex
	cond     sync.Cond
	leafRing []*dirNode // directories with files, symlinks or links queued
	listRing []*dirNode // directories with subdirectories queued
	queued   int
	running  int
	open     int // directories listed and not done
	maxOpen  int
	err      error
}

// queue is what a dirNode keeps for the scheduler (guarded by scheduler.mu).
type queue struct {
	leaves, lists     []task
	inflight          int
	inLeaves, inLists bool
}

func (s *scheduler) run(ctx context.Context, workers, maxOpen int, guard func() error, first task, do func(context.Context, task) error) error {
	s.cond.L = &s.mu
	s.maxOpen = maxOpen
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.failLocked(context.Cause(ctx))
	})
	defer stop()
	s.running = 1 // the first task, run here
	err := context.Cause(ctx)
	if err == nil {
		err = guard()
	}
	if err == nil {
		err = do(ctx, first)
	}
	s.mu.Lock()
	s.running--
	if err != nil {
		s.failLocked(err)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { s.work(ctx, guard, do) })
	}
	wg.Wait()
	return s.err
}

func (s *scheduler) failLocked(err error) {
	if s.err == nil {
		s.err = err
	}
	s.cond.Broadcast()
}

// parentOf is the directory a task creates its entry in.
func parentOf(t task) *dirNode {
	if t.kind == taskList {
		return t.dir.parent
	}
	return t.dir
}

// pickLocked takes the next task: a file, symlink or link of the next directory in
// turn; else a subdirectory to list, while few directories are open; else any.
func (s *scheduler) pickLocked() (task, bool) {
	if t, ok := s.takeLocked(&s.leafRing, false); ok {
		return t, true
	}
	if s.open < s.maxOpen {
		if t, ok := s.takeLocked(&s.listRing, true); ok {
			return t, true
		}
	}
	// Nothing else can run: list past the bound rather than wait forever.
	return s.takeLocked(&s.listRing, true)
}

func (s *scheduler) takeLocked(ring *[]*dirNode, lists bool) (task, bool) {
	for len(*ring) > 0 {
		d := (*ring)[0]
		*ring = (*ring)[1:]
		q := &d.q
		if lists {
			q.inLists = false
		} else {
			q.inLeaves = false
		}
		if q.inflight >= perDirInFlight {
			continue // back in turn when one of its tasks ends
		}
		var t task
		if lists {
			t, q.lists = q.lists[0], q.lists[1:]
			if len(q.lists) > 0 {
				*ring = append(*ring, d)
				q.inLists = true
			}
			s.open++
		} else {
			t, q.leaves = q.leaves[0], q.leaves[1:]
			if len(q.leaves) > 0 {
				*ring = append(*ring, d)
				q.inLeaves = true
			}
		}
		q.inflight++
		s.queued--
		return t, true
	}
	return task{}, false
}

// requeueLocked puts d back in turn for what it has queued.
func (s *scheduler) requeueLocked(d *dirNode) {
	q := &d.q
	if len(q.leaves) > 0 && !q.inLeaves {
		s.leafRing = append(s.leafRing, d)
		q.inLeaves = true
	}
	if len(q.lists) > 0 && !q.inLists {
		s.listRing = append(s.listRing, d)
		q.inLists = true
	}
}

func (s *scheduler) work(ctx context.Context, guard func() error, do func(context.Context, task) error) {
	for {
		s.mu.Lock()
		var t task
		for {
			if s.err != nil || (s.queued == 0 && s.running == 0) {
				s.cond.Broadcast()
				s.mu.Unlock()
				return
			}
			var ok bool
			if t, ok = s.pickLocked(); ok {
				break
			}
			s.cond.Wait()
		}
		s.running++
		s.mu.Unlock()

		err := context.Cause(ctx)
		if err == nil {
			err = guard()
		}
		if err == nil {
			err = do(ctx, t)
		}
		s.mu.Lock()
		s.running--
		p := parentOf(t)
		p.q.inflight--
		s.requeueLocked(p)
		if err != nil {
			s.failLocked(err)
		} else {
			s.cond.Broadcast()
		}
		s.mu.Unlock()
	}
}

// push queues t in its directory's turn.
func (s *scheduler) push(t task) {
	s.mu.Lock()
	p := parentOf(t)
	if t.kind == taskList {
		p.q.lists = append(p.q.lists, t)
	} else {
		p.q.leaves = append(p.q.leaves, t)
	}
	s.queued++
	if p.q.inflight < perDirInFlight {
		s.requeueLocked(p)
	}
	s.cond.Signal()
	s.mu.Unlock()
}

// closed counts a listed directory as done.
func (s *scheduler) closed() {
	s.mu.Lock()
	s.open--
	s.cond.Broadcast()
	s.mu.Unlock()
}

// do runs one task; errors name the entry.
func (c *copier) do(ctx context.Context, t task) error {
	var err error
	switch t.kind {
	case taskList:
		err = c.list(t.dir)
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(c.from, t.dir.rel), err)
		}
		return nil
	case taskFile:
		err = c.copyFile(ctx, t)
	case taskSymlink:
		err = c.copySymlink(t)
	case taskLink:
		err = c.link(t)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(c.from, t.dir.join(t.name)), err)
	}
	return c.entryDone(t.dir)
}

// entryDone counts one entry of d as done; the last one applies d's metadata, which in
// turn counts d as done in its parent.
func (c *copier) entryDone(d *dirNode) error {
	for d != nil && d.pending.Add(-1) == 0 {
		if err := c.finishDir(d); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(c.to, d.rel), err)
		}
		d = d.parent
	}
	return nil
}

func (c *copier) finishDir(d *dirNode) error {
	if err := unix.Fchownat(d.dstFd, "", int(d.st.Uid), int(d.st.Gid), unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	// An O_PATH descriptor takes neither fchmod nor futimens; its /proc name does.
	self := "/proc/self/fd/" + strconv.Itoa(d.dstFd)
	if d.created.Mode&0o7777 != d.st.Mode&0o7777 {
		if err := unix.Fchmodat(unix.AT_FDCWD, self, d.st.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, self, times(&d.st), 0); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	c.dirs.Add(1)
	if !d.root {
		_ = unix.Close(d.srcFd)
		_ = unix.Close(d.dstFd)
		c.forget(d)
		c.sched.closed()
	}
	return nil
}

func times(st *unix.Stat_t) []unix.Timespec {
	return []unix.Timespec{st.Atim, st.Mtim}
}

// remember and forget track the directories whose descriptors are open, so that a
// failed copy closes them.
func (c *copier) remember(d *dirNode) {
	c.mu.Lock()
	if c.openDirs == nil {
		c.openDirs = map[*dirNode]struct{}{}
	}
	c.openDirs[d] = struct{}{}
	c.mu.Unlock()
}

func (c *copier) forget(d *dirNode) {
	c.mu.Lock()
	delete(c.openDirs, d)
	c.mu.Unlock()
}

func (c *copier) closeDirs() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for d := range c.openDirs {
		_ = unix.Close(d.srcFd)
		_ = unix.Close(d.dstFd)
	}
	c.openDirs = nil
}

// changed builds the error for an entry that is no longer what was listed.
func changed(now string) error {
	return fmt.Errorf("%w: it is now %s; nothing of it was copied. Stop the old Jenkins (and anything else writing to its home), then run again with --resume", ErrChanged, now)
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symlink"
	default:
		return "a special file"
	}
}

// list opens directory d on both sides (creating it in the target) and hands out its
// entries.
func (c *copier) list(d *dirNode) error {
	if !d.root {
		if c.opts.beforeOpen != nil {
			c.opts.beforeOpen(d.rel)
		}
		fd, err := unix.Openat(d.parent.srcFd, d.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return changed("not a directory")
		}
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			_ = unix.Close(fd)
			return err
		}
		if keyOf(&st) != keyOf(&d.st) {
			_ = unix.Close(fd)
			return changed("another directory")
		}
		d.st, d.srcFd = st, fd
		if err := c.ensureDir(d.parent.dstFd, d.name, d.st.Mode&0o777); err != nil {
			_ = unix.Close(fd)
			return fmt.Errorf("create in the target: %w", err)
		}
		dfd, err := unix.Openat(d.parent.dstFd, d.name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			_ = unix.Close(fd)
			return fmt.Errorf("open in the target: %w", err)
		}
		d.dstFd = dfd
		c.remember(d)
		if err := unix.Fstat(dfd, &d.created); err != nil {
			return err
		}
	}
	names, err := readNames(d.srcFd)
	if err != nil {
		return err
	}
	if c.opts.Resume {
		if err := removePartials(d.dstFd, names); err != nil {
			return err
		}
	}
	d.pending.Store(1)
	for _, name := range names {
		if d.root && c.exclude[name] {
			continue
		}
		var st unix.Stat_t
		err := unix.Fstatat(d.srcFd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) {
			c.log.Warn("entry vanished while listing; not copied", "path", filepath.Join(c.from, d.join(name)))
			continue
		}
		if err != nil {
			return err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			d.pending.Add(1)
			c.sched.push(task{kind: taskList, dir: &dirNode{parent: d, name: name, rel: d.join(name), st: st, srcFd: -1, dstFd: -1}})
		case unix.S_IFREG:
			t := task{kind: taskFile, dir: d, name: name, st: st}
			d.pending.Add(1)
			if st.Nlink > 1 && c.laterName(t) {
				continue
			}
			c.sched.push(t)
		case unix.S_IFLNK:
			d.pending.Add(1)
			c.sched.push(task{kind: taskSymlink, dir: d, name: name, st: st})
		default:
			c.specials.Add(1)
			c.log.Warn("skipping special file (socket, fifo or device); Jenkins does not need it",
				"path", filepath.Join(c.from, d.join(name)), "type", typeName(st.Mode))
		}
	}
	return c.entryDone(d)
}

// laterName registers t, a name of a hard-linked inode. The first name met is copied
// (it returns false, and t.group is set); later names become link tasks, run once the
// first is in place (it returns true).
func (c *copier) laterName(t task) bool {
	k := keyOf(&t.st)
	c.mu.Lock()
	defer c.mu.Unlock()
	g, ok := c.firsts[k]
	if !ok {
		c.firsts[k] = &linkGroup{dir: t.dir, name: t.name}
		return false
	}
	lt := task{kind: taskLink, dir: t.dir, name: t.name, st: t.st, group: g}
	if g.done {
		c.sched.push(lt)
	} else {
		g.waiters = append(g.waiters, lt)
	}
	return true
}

// firstDone releases the link tasks waiting for the first name of a hard-linked inode.
func (c *copier) firstDone(st *unix.Stat_t, dst devIno) {
	if st.Nlink <= 1 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.firsts[keyOf(st)]
	if g == nil || g.done {
		return
	}
	g.done, g.dstKey = true, dst
	for _, t := range g.waiters {
		c.sched.push(t)
	}
	g.waiters = nil
}

// ensureDir makes name in dir a directory with permission bits perm (less the umask;
// the rest of its mode, owner and times are set after its entries). Only a resumed copy
// finds something in its way.
func (c *copier) ensureDir(dir int, name string, perm uint32) error {
	err := unix.Mkdirat(dir, name, perm)
	if err == nil || !errors.Is(err, unix.EEXIST) {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil
	}
	if err := unix.Unlinkat(dir, name, 0); err != nil {
		return err
	}
	return unix.Mkdirat(dir, name, perm)
}

// removeExisting deletes a non-directory in the way of a resumed copy, never following
// a symlink.
func removeExisting(dir int, name string) error {
	err := unix.Unlinkat(dir, name, 0)
	switch {
	case err == nil || errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.EISDIR):
		return errors.New("a directory in the target is in the way of a file; remove it and resume")
	}
	return err
}

// removePartials deletes temporary files an interrupted copy left in dir, unless the
// source itself has an entry of that name.
func removePartials(dir int, src []string) error {
	dst, err := readNames(dir)
	if err != nil {
		return err
	}
	names := make(map[string]bool, len(src))
	for _, n := range src {
		names[n] = true
	}
	for _, n := range dst {
		if len(n) >= len(partialPrefix) && n[:len(partialPrefix)] == partialPrefix && !names[n] {
			if err := unix.Unlinkat(dir, n, 0); err != nil && !errors.Is(err, unix.ENOENT) {
				return err
			}
		}
	}
	return nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyChunk); return &b }}

// copyFile copies one regular file from the descriptor it opens, if it is still the
// file that was listed.
func (c *copier) copyFile(ctx context.Context, t task) (err error) {
	if c.opts.beforeOpen != nil {
		c.opts.beforeOpen(t.dir.join(t.name))
	}
	// O_NOATIME keeps the source's access times as they were (root may use it on any
	// file); O_NONBLOCK, so that a fifo swapped in does not hang the open.
	flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	in, err := unix.Openat(t.dir.srcFd, t.name, flags|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		in, err = unix.Openat(t.dir.srcFd, t.name, flags, 0)
	}
	switch {
	case errors.Is(err, unix.ELOOP):
		return changed("a symlink")
	case errors.Is(err, unix.ENOENT):
		return changed("gone")
	case err != nil:
		return err
	}
	defer unix.Close(in)
	var st unix.Stat_t
	if err := unix.Fstat(in, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return changed(typeName(st.Mode))
	}
	if keyOf(&st) != keyOf(&t.st) {
		return changed("another file")
	}
	st.Nlink = t.st.Nlink // the link bookkeeping follows the listing

	if c.opts.Resume {
		var cur unix.Stat_t
		if identical(t.dir.dstFd, t.name, &st, "", &cur) {
			c.skipped.Add(1)
			c.progress(st.Size)
			c.firstDone(&st, keyOf(&cur))
			return nil
		}
		if err := removeExisting(t.dir.dstFd, t.name); err != nil {
			return err
		}
	}
	// Created with its final permission bits (less the umask) so that most files need
	// no chmod; owner, special bits and times follow, times last: a file interrupted
	// before them differs from the source, and resume copies it again.
	out, err := unix.Openat(t.dir.dstFd, t.name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, st.Mode&0o777)
	if err != nil {
		return fmt.Errorf("create in the target: %w", err)
	}
	defer func() {
		if out >= 0 {
			_ = unix.Close(out)
		}
		if err != nil {
			_ = unix.Unlinkat(t.dir.dstFd, t.name, 0)
		}
	}()
	var created unix.Stat_t
	if err := unix.Fstat(out, &created); err != nil {
		return err
	}
	if err := c.copyData(ctx, in, out, st.Size); err != nil {
		return err
	}
	chowned := false
	if created.Uid != st.Uid || created.Gid != st.Gid {
		if err := unix.Fchown(out, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("chown in the target: %w", err)
		}
		chowned = true
	}
	// chown clears the setuid and setgid bits.
	if created.Mode&0o7777 != st.Mode&0o7777 || (chowned && st.Mode&0o6000 != 0) {
		if err := unix.Fchmod(out, st.Mode&0o7777); err != nil {
			return fmt.Errorf("chmod in the target: %w", err)
		}
	}
	if err := futimens(out, times(&st)); err != nil {
		return fmt.Errorf("set times in the target: %w", err)
	}
	// NFS reports write errors at close.
	cerr := unix.Close(out)
	out = -1
	if cerr != nil {
		return fmt.Errorf("close in the target: %w", cerr)
	}
	c.files.Add(1)
	c.progress(0)
	if c.opts.onFileDone != nil {
		c.opts.onFileDone()
	}
	c.firstDone(&st, keyOf(&created))
	return nil
}

// copyData writes size bytes from in to out, a chunk at a time so that ctx is honoured
// inside big files.
func (c *copier) copyData(ctx context.Context, in, out int, size int64) error {
	if size == 0 {
		return nil
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for left := size; left > 0; {
		n, err := unix.Read(in, buf[:min(int64(len(buf)), left)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if n == 0 {
			return nil // shrunk since it was listed: verification tells
		}
		for w := 0; w < n; {
			m, err := unix.Write(out, buf[w:n])
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return fmt.Errorf("write in the target: %w", err)
			}
			w += m
		}
		left -= int64(n)
		c.bytes.Add(int64(n))
		if c.bar != nil {
			_ = c.bar.Add64(int64(n))
		}
		if err := context.Cause(ctx); err != nil {
			return err
		}
	}
	return nil
}

// futimens sets the times of the file open as fd (utimensat with a NULL path; the
// Go packages only offer it for paths).
func futimens(fd int, ts []unix.Timespec) error {
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// copySymlink copies one symlink: its target, owner and times.
func (c *copier) copySymlink(t task) error {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(t.dir.srcFd, t.name, buf)
	switch {
	case errors.Is(err, unix.EINVAL):
		return changed("not a symlink")
	case errors.Is(err, unix.ENOENT):
		return changed("gone")
	case err != nil:
		return err
	}
	target := string(buf[:n])
	if c.opts.Resume {
		if identical(t.dir.dstFd, t.name, &t.st, target, nil) {
			c.skipped.Add(1)
			c.progress(0)
			return nil
		}
		if err := removeExisting(t.dir.dstFd, t.name); err != nil {
			return err
		}
	}
	if err := unix.Symlinkat(target, t.dir.dstFd, t.name); err != nil {
		return fmt.Errorf("create in the target: %w", err)
	}
	if err := unix.Fchownat(t.dir.dstFd, t.name, int(t.st.Uid), int(t.st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown in the target: %w", err)
	}
	if err := unix.UtimesNanoAt(t.dir.dstFd, t.name, times(&t.st), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times in the target: %w", err)
	}
	c.symlinks.Add(1)
	c.progress(0)
	if c.opts.onFileDone != nil {
		c.opts.onFileDone()
	}
	return nil
}

// link gives t's name the inode already copied for its group's first name, as the
// source's hard links share one.
func (c *copier) link(t task) error {
	g := t.group
	if c.opts.Resume {
		var cur unix.Stat_t
		err := unix.Fstatat(t.dir.dstFd, t.name, &cur, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && keyOf(&cur) == g.dstKey {
			c.skipped.Add(1)
			c.progress(0)
			return nil
		}
		if err == nil {
			if err := removeExisting(t.dir.dstFd, t.name); err != nil {
				return err
			}
		}
	}
	from, err := c.openTargetDir(g.dir.rel)
	if err != nil {
		return fmt.Errorf("open %s in the target: %w", g.dir.rel, err)
	}
	defer func() {
		if from != c.dstRoot {
			_ = unix.Close(from)
		}
	}()
	if err := unix.Linkat(from, g.name, t.dir.dstFd, t.name, 0); err != nil {
		return fmt.Errorf("link to %s in the target: %w", g.dir.join(g.name), err)
	}
	c.hardlinks.Add(1)
	c.progress(0)
	return nil
}

// openTargetDir opens directory rel of the target without following any symlink.
func (c *copier) openTargetDir(rel string) (int, error) {
	if rel == "." {
		return c.dstRoot, nil
	}
	fd, err := unix.Openat2(c.dstRoot, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS,
	})
	if errors.Is(err, unix.ENOSYS) { // before Linux 5.6: the directories were made by this copy
		return unix.Openat(c.dstRoot, rel, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	return fd, err
}

// identical reports whether name in dir already matches the source entry st, for
// Resume; target is the symlink's target ("" for a regular file). cur, if not nil,
// receives what the target holds.
func identical(dir int, name string, st *unix.Stat_t, target string, cur *unix.Stat_t) bool {
	var d unix.Stat_t
	if err := unix.Fstatat(dir, name, &d, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false
	}
	if cur != nil {
		*cur = d
	}
	if d.Mode&unix.S_IFMT != st.Mode&unix.S_IFMT || d.Uid != st.Uid || d.Gid != st.Gid ||
		!sameTime(syscall.Timespec(st.Mtim), syscall.Timespec(d.Mtim)) {
		return false
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(dir, name, buf)
		return err == nil && string(buf[:n]) == target
	}
	return d.Size == st.Size && d.Mode&0o7777 == st.Mode&0o7777
}
