package lease

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/clock"
)

// lockPollInterval is how often a contended lock is retried. The lock is only held for
// one read and one small write, so contention is short.
const lockPollInterval = 5 * time.Millisecond

// lockExclusive takes an exclusive lock on path, polling until ctx ends. It uses an
// open-file-description lock (F_OFD_SETLK) rather than a classic POSIX F_SETLK: POSIX
// locks belong to the process, so two holders in one process would not exclude each
// other and closing any descriptor of the file would silently drop the lock. OFD locks
// are byte-range locks all the same, which NFSv4.1 (and so EFS) carries to the server.
// The returned func releases the lock.
func lockExclusive(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	for {
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		if err == nil {
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !clock.Sleep(ctx, lockPollInterval) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		}
	}
}

// readRecord reads the record at path; exists is false when there is none yet. A
// record that does not parse is never overwritten: the error says how to recover.
func readRecord(path string) (rec Record, exists bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("read lease record: %w", err)
	}
	rec, err = ParseRecord(data)
	if err != nil {
		return Record{}, false, fmt.Errorf("%w: %s: %v; make sure no other controller runs on this home, then remove %s",
			ErrUnreadable, path, err, path)
	}
	return rec, true, nil
}

// writeRecord replaces the record atomically: a crash at any point leaves either the
// old record or the new one, never a torn file.
func writeRecord(path string, rec Record) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write lease record: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write lease record: %w", err)
	}
	if _, err := tmp.Write(rec.Marshal()); err != nil {
		return fmt.Errorf("write lease record: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write lease record: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write lease record: close: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write lease record: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write lease record: open dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write lease record: sync dir: %w", err)
	}
	return nil
}
