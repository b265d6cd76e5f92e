package lease

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Files of the lease on the home. The home's root belongs to the Jenkins user, who
// could put a symbolic link or a FIFO where the agent expects its directory or files:
// every name is opened relative to a directory descriptor, without following links,
// without blocking on a FIFO, and anything but a directory or a regular file is
// refused. Nothing here quotes a file's content in an error.

// lockPollInterval is how often a contended lock is retried. The lock is only held for
// one read and one small write, so contention is short.
const lockPollInterval = 5 * time.Millisecond

// run runs fn in its own goroutine so that the caller gets control back when ctx ends
// even if the file system hangs (EFS is mounted "hard"). Its result is returned only
// if fn finished first; an abandoned fn runs to its end with its result dropped, so it
// must have no effect on anything but the files, and fn checks ctx before it writes.
func run[T any](ctx context.Context, fn func() (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// leaseDir opens the lease directory inside the home, creating it if create is set.
// The caller closes it. A missing home is reported as such.
func (l *Lease) leaseDir(create bool) (*os.File, error) {
	home, err := unix.Open(l.opts.Dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("home %s: %w; is the file system mounted?", l.opts.Dir, err)
	}
	defer unix.Close(home)
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(home, DirName, flags, 0)
	if errors.Is(err, unix.ENOENT) && create {
		if err := unix.Mkdirat(home, DirName, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create %s: %w", l.dir, err)
		}
		fd, err = unix.Openat(home, DirName, flags, 0)
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, err
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
		return nil, fmt.Errorf("%s is not a directory (a symbolic link or another file in its place; the lease never follows links): "+
			"make sure no controller runs on this home, then remove it (rm %s) and let the agent create it again", l.dir, l.dir)
	case err != nil:
		return nil, fmt.Errorf("open %s: %w", l.dir, err)
	}
	d := os.NewFile(uintptr(fd), l.dir)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		d.Close()
		return nil, fmt.Errorf("stat %s: %w", l.dir, err)
	}
	if euid := os.Geteuid(); int(st.Uid) != euid || st.Mode&0o022 != 0 {
		d.Close()
		return nil, fmt.Errorf("%s belongs to uid %d with mode %o; it must belong to the agent (uid %d) and be writable by it alone, "+
			"or the Jenkins user can replace the lease's files: check it, then chown %d %s && chmod 755 %s "+
			"(on EFS, a file system policy without ClientRootAccess or an access point with a POSIX user makes every file the same user's: "+
			"the agent needs root access to keep the lease apart from Jenkins)",
			l.dir, st.Uid, st.Mode&0o7777, euid, euid, l.dir, l.dir)
	}
	return d, nil
}

// openIn opens name in dir without following a link and without blocking on a FIFO,
// and refuses anything but a regular file. A missing file gives an error wrapping
// os.ErrNotExist unless flags create it.
func openIn(dir *os.File, name string, flags int, perm uint32) (*os.File, error) {
	path := filepath.Join(dir.Name(), name)
	fd, err := unix.Openat(int(dir.Fd()), name, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, perm)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("%s: %w", path, os.ErrNotExist)
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("%s is a symbolic link; the lease never follows links: make sure no controller runs on this home, then remove it (rm %s)", path, path)
	case errors.Is(err, unix.EISDIR):
		return nil, fmt.Errorf("%s is not a regular file (a directory); make sure no controller runs on this home, then remove it (rm -r %s)", path, path)
	case err != nil:
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file (%s); make sure no controller runs on this home, then remove it (rm %s)", path, fileType(st.Mode), path)
	}
	return f, nil
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	case unix.S_IFLNK:
		return "a symbolic link"
	}
	return "not a regular file"
}

// readAll reads up to limit+1 bytes from the start of f, so that the caller can tell
// a file longer than limit.
func readAll(f *os.File, limit int) ([]byte, error) {
	buf := make([]byte, limit+1)
	n := 0
	for n < len(buf) {
		m, err := f.ReadAt(buf[n:], int64(n))
		n += m
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return buf[:n], nil
}

// lockFile takes an exclusive lock on f, polling until ctx ends. It is an
// open-file-description lock (F_OFD_SETLK): POSIX locks belong to the process, so two
// holders in one process would not exclude each other and closing any descriptor of
// the file would silently drop the lock. NFSv4.1 (and so EFS) carries OFD locks to the
// server, and a client whose lock the server dropped gets EIO for its later I/O
// through that descriptor: that is what makes a write through it conditional on still
// holding the lock.
func lockFile(ctx context.Context, f *os.File) error {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	for {
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		t := time.NewTimer(lockPollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("lock %s: %w", f.Name(), ctx.Err())
		case <-t.C:
		}
	}
}

func unlockFile(f *os.File) {
	lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: io.SeekStart}
	_ = unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
}

// readRecordFile parses the record file's content; the error says how to recover.
func (l *Lease) parseRecordFile(data []byte) (rec Record, slot int, exists bool, err error) {
	rec, slot, exists, err = parseFile(data)
	if err != nil {
		return Record{}, 0, false, fmt.Errorf("%w: %s: %v; make sure no other controller runs on this home, then remove %s",
			ErrUnreadable, l.recordPath, err, l.recordPath)
	}
	return rec, slot, exists, nil
}

// readRecord reads the record without the lock (Peek, and the check before a renewal
// locks): a torn slot is skipped, so a concurrent write is seen as before or after.
func (l *Lease) readRecord() (Record, bool, error) {
	d, err := l.leaseDir(false)
	if errors.Is(err, unix.ENOENT) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, err
	}
	defer d.Close()
	f, err := openIn(d, RecordName, unix.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, err
	}
	defer f.Close()
	data, err := readAll(f, fileSize)
	if err != nil {
		return Record{}, false, fmt.Errorf("read %s: %w", l.recordPath, err)
	}
	rec, _, exists, err := l.parseRecordFile(data)
	return rec, exists, err
}

// change is one locked read-modify-write of the record.
type change struct {
	cur    *Record // the record read under the lock; nil when none
	start  instant // the clocks before the first I/O
	readAt instant // the clocks after the read
	wrote  *Record // what was written; nil when decide wrote nothing
	extra  any     // whatever decide returned beside the record
}

// change runs one read-modify-write of the record under its lock, behind ctx. decide
// sees the record read (nil when none) and the clocks taken before the first I/O of
// the attempt (start, or now if start is zero), and
// returns the record to write (nil: write nothing). The write goes through the locked
// descriptor into the slot not holding the current record; an attempt whose ctx ended
// writes nothing.
func (l *Lease) change(ctx context.Context, start instant, decide func(cur *Record, start instant) (*Record, any, error)) (change, error) {
	if start.wall.IsZero() {
		start = readClock(l.opts.Clock)
	}
	return run(ctx, func() (change, error) {
		c := change{start: start}
		d, err := l.leaseDir(true)
		if err != nil {
			return c, err
		}
		defer d.Close()
		f, err := openIn(d, RecordName, unix.O_RDWR|unix.O_CREAT, 0o644)
		if err != nil {
			return c, err
		}
		defer f.Close()
		if err := lockFile(ctx, f); err != nil {
			return c, err
		}
		defer unlockFile(f)
		data, err := readAll(f, fileSize)
		if err != nil {
			return c, fmt.Errorf("read %s: %w", l.recordPath, err)
		}
		c.readAt = readClock(l.opts.Clock)
		cur, slot, exists, err := l.parseRecordFile(data)
		if err != nil {
			return c, err
		}
		if exists {
			c.cur = &cur
		}
		next, extra, err := decide(c.cur, c.start)
		c.extra = extra
		if err != nil || next == nil {
			return c, err
		}
		if next.Seq, err = nextSeq(cur, exists); err != nil {
			return c, fmt.Errorf("%w: %s: %v; make sure no controller runs on this home, then remove %s", ErrUnreadable, l.recordPath, err, l.recordPath)
		}
		buf, err := encodeSlot(*next)
		if err != nil {
			return c, err
		}
		if exists {
			slot = 1 - slot
		}
		if err := ctx.Err(); err != nil {
			return c, err // abandoned: never change the record
		}
		if _, err := f.WriteAt(buf, int64(slot*slotSize)); err != nil {
			return c, fmt.Errorf("write %s: %w", l.recordPath, err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return c, fmt.Errorf("write %s: sync: %w", l.recordPath, err)
		}
		c.wrote = next
		return c, nil
	})
}
