package migrate

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// verifyWorkers is how many directories VerifyTree compares at once.
const verifyWorkers = 8

// VerifyTree compares the tree at to with the tree at from and returns every
// difference as a line naming the path, sorted: missing or extra entries, and
// differences of type, size, mode, owner, mtime, symlink target and hard-link grouping.
// It compares metadata, not contents: a changed file shows as a changed size or mtime.
// Entries named in exclude at the top of either tree, and special files of the source
// (which Copy leaves out), are not compared; nor are the times of the top directory,
// which the excluded entries change. Directories are compared in parallel. The error is
// for trees that cannot be read.
func VerifyTree(ctx context.Context, from, to string, exclude []string) ([]string, error) {
	return verifyTree(ctx, from, to, exclude, verifyWorkers)
}

func verifyTree(ctx context.Context, from, to string, exclude []string, workers int) ([]string, error) {
	v := &verifier{
		from: from, to: to, exclude: map[string]bool{},
		srcGroup: map[devIno]linkSeen{}, dstGroup: map[devIno]linkSeen{},
	}
	for _, n := range exclude {
		v.exclude[n] = true
	}
	src, err := os.Lstat(from)
	if err != nil {
		return nil, err
	}
	dst, err := os.Lstat(to)
	if err != nil {
		return nil, err
	}
	v.compare(".", src, dst, true)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(workers, 1))
	v.g = g
	g.Go(func() error { return v.dir(gctx, ".") })
	err = g.Wait()
	sort.Strings(v.diffs)
	return v.diffs, err
}

// linkSeen remembers, for one inode of a tree, the path where it was first met and
// the inode that path has in the other tree.
type linkSeen struct {
	rel   string
	other devIno
}

type verifier struct {
	from, to string
	exclude  map[string]bool
	g        *errgroup.Group

	mu                 sync.Mutex // guards the maps and diffs
	srcGroup, dstGroup map[devIno]linkSeen
	diffs              []string
}

func (v *verifier) addf(rel, format string, args ...any) {
	line := rel + ": " + fmt.Sprintf(format, args...)
	v.mu.Lock()
	v.diffs = append(v.diffs, line)
	v.mu.Unlock()
}

// dir compares the entries of one directory, in name order, and hands its
// subdirectories to other workers (or compares them itself when none is free).
func (v *verifier) dir(ctx context.Context, rel string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	srcNames, err := v.list(filepath.Join(v.from, rel), rel == ".", true)
	if err != nil {
		return err
	}
	dstNames, err := v.list(filepath.Join(v.to, rel), rel == ".", false)
	if err != nil {
		return err
	}
	for name := range dstNames {
		if _, ok := srcNames[name]; !ok {
			v.addf(filepath.Join(rel, name), "extra in target")
		}
	}
	names := make([]string, 0, len(srcNames))
	for name := range srcNames {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		erel := filepath.Join(rel, name)
		d, ok := dstNames[name]
		if !ok {
			v.addf(erel, "missing in target")
			continue
		}
		s := srcNames[name]
		if !v.compare(erel, s, d, false) || !s.IsDir() {
			continue
		}
		sub := func() error { return v.dir(ctx, erel) }
		if !v.g.TryGo(sub) {
			if err := sub(); err != nil {
				return err
			}
		}
	}
	return nil
}

// list reads a directory's entries with their lstat information.
func (v *verifier) list(dir string, top, source bool) (map[string]fs.FileInfo, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make(map[string]fs.FileInfo, len(entries))
	for _, e := range entries {
		if top && v.exclude[e.Name()] {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, err
		}
		if source && !fi.IsDir() && !fi.Mode().IsRegular() && fi.Mode()&fs.ModeSymlink == 0 {
			continue // special files are not copied
		}
		out[e.Name()] = fi
	}
	return out, nil
}

// compare records the differences between one source entry and its copy; it reports
// whether the types match (so a directory is worth descending into).
func (v *verifier) compare(rel string, src, dst fs.FileInfo, top bool) bool {
	s, d := src.Sys().(*syscall.Stat_t), dst.Sys().(*syscall.Stat_t)
	if s.Mode&unix.S_IFMT != d.Mode&unix.S_IFMT {
		v.addf(rel, "type %s in source, %s in target", src.Mode().Type(), dst.Mode().Type())
		return false
	}
	isLink := src.Mode()&fs.ModeSymlink != 0
	if !isLink && s.Mode&0o7777 != d.Mode&0o7777 {
		v.addf(rel, "mode %04o in source, %04o in target", s.Mode&0o7777, d.Mode&0o7777)
	}
	if s.Uid != d.Uid || s.Gid != d.Gid {
		v.addf(rel, "owner %d:%d in source, %d:%d in target", s.Uid, s.Gid, d.Uid, d.Gid)
	}
	if !top && !sameTime(s.Mtim, d.Mtim) {
		v.addf(rel, "mtime %s in source, %s in target", tsString(s.Mtim), tsString(d.Mtim))
	}
	switch {
	case src.Mode().IsRegular():
		if s.Size != d.Size {
			v.addf(rel, "size %d in source, %d in target", s.Size, d.Size)
		}
	case isLink:
		st, serr := os.Readlink(filepath.Join(v.from, rel))
		dt, derr := os.Readlink(filepath.Join(v.to, rel))
		if serr != nil || derr != nil || st != dt {
			v.addf(rel, "link target %q in source, %q in target", st, dt)
		}
	}
	if !src.IsDir() && (s.Nlink > 1 || d.Nlink > 1) {
		v.links(rel, devIno{s.Dev, s.Ino}, devIno{d.Dev, d.Ino})
	}
	return true
}

// links checks that names sharing an inode in one tree share one in the other.
func (v *verifier) links(rel string, sk, dk devIno) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if seen, ok := v.srcGroup[sk]; ok && seen.other != dk {
		v.diffs = append(v.diffs, fmt.Sprintf("%s: hard link to %s in source, separate file in target", rel, seen.rel))
	} else if !ok {
		v.srcGroup[sk] = linkSeen{rel, dk}
	}
	if seen, ok := v.dstGroup[dk]; ok && seen.other != sk {
		v.diffs = append(v.diffs, fmt.Sprintf("%s: hard link to %s in target, separate file in source", rel, seen.rel))
	} else if !ok {
		v.dstGroup[dk] = linkSeen{rel, sk}
	}
}

func tsString(ts syscall.Timespec) string {
	sec, nsec := ts.Unix()
	return fmt.Sprintf("%d.%09d", sec, nsec)
}

// sameTime compares a source time with a target time, allowing a target file system
// that keeps coarser timestamps (microseconds, milliseconds or seconds).
func sameTime(src, dst syscall.Timespec) bool {
	s, d := time.Unix(src.Unix()).UTC(), time.Unix(dst.Unix()).UTC()
	if s.Equal(d) {
		return true
	}
	for _, g := range []time.Duration{time.Microsecond, time.Millisecond, time.Second} {
		if s.Truncate(g).Equal(d) {
			return true
		}
	}
	return false
}
