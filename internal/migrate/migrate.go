// Package migrate copies an existing JENKINS_HOME (the old controller's) onto the
// mounted EFS home, keeping everything Jenkins and its operators rely on: owners,
// modes, times, symlinks and hard links. A copy can be resumed after an interruption
// and is verified at the end.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// DefaultWorkers is the number of files copied at once when Options.Workers is zero.
// EFS answers each create, write and close over the network, so for a home made of
// small files the latency of one operation, not bandwidth, sets the pace.
const DefaultWorkers = 8

// partialPrefix starts the temporary name a file is written under before it is renamed
// into place. Resume removes leftovers with this prefix.
const partialPrefix = ".migrate-partial-"

// copyChunk bounds one copy_file_range round, so that cancellation is noticed inside
// big files too.
const copyChunk = 8 << 20

// Options describe one copy.
type Options struct {
	// From is the old home; To is the target (the mounted EFS home). Both must exist.
	From, To string
	// Resume continues an interrupted copy: a non-empty target is accepted and files
	// already identical (size, mtime, mode, owner) are skipped.
	Resume bool
	// Verify compares both trees at the end; any difference fails the copy.
	Verify bool
	// Exclude names entries at the top of both trees that are not part of the home
	// (the file system marker, the lease directory): they are not copied, do not make
	// the target count as non-empty, and are not compared.
	Exclude []string
	// Workers is how many files are copied at once (default DefaultWorkers).
	Workers int
	// Progress receives a progress bar (files, bytes, rate, ETA); nil shows none.
	Progress io.Writer
	// Logger receives warnings (skipped special files) and a summary; nil discards.
	Logger *slog.Logger

	// onFileDone is called after each file or symlink is in place; tests use it to
	// interrupt a copy at a known point.
	onFileDone func()
}

// Report says what a copy did.
type Report struct {
	Files     int // regular files written
	Dirs      int // directories created or brought up to date
	Symlinks  int // symbolic links created
	Hardlinks int // extra names linked to an inode already copied
	Bytes     int64
	Skipped   int // entries already identical in the target (Resume)
	Specials  int // sockets, fifos and devices left out
	Elapsed   time.Duration
	// Differences lists what verification found; empty when it found none or did not run.
	Differences []string
}

// Copy copies opts.From onto opts.To. Cancelling ctx stops it between files and
// leaves a state that Copy with Resume completes.
func Copy(ctx context.Context, opts Options) (Report, error) {
	start := time.Now()
	c, err := newCopier(opts)
	if err != nil {
		return Report{}, err
	}
	rep, err := c.run(ctx)
	rep.Elapsed = time.Since(start)
	if err != nil {
		return rep, err
	}
	c.log.Info("copied home", "from", c.from, "to", c.to, "files", rep.Files, "dirs", rep.Dirs,
		"symlinks", rep.Symlinks, "hardlinks", rep.Hardlinks, "bytes", rep.Bytes, "skipped", rep.Skipped,
		"specials", rep.Specials, "elapsed", rep.Elapsed.Round(time.Millisecond))
	if !opts.Verify {
		return rep, nil
	}
	diffs, err := VerifyTree(ctx, c.from, c.to, opts.Exclude)
	rep.Differences = diffs
	rep.Elapsed = time.Since(start)
	if err != nil {
		return rep, fmt.Errorf("migrate: verify: %w", err)
	}
	if len(diffs) > 0 {
		shown := diffs[:min(len(diffs), 5)]
		return rep, fmt.Errorf("migrate: verify found %d differences, first: %s; run again with --resume to fix them",
			len(diffs), strings.Join(shown, "; "))
	}
	c.log.Info("verified copy", "to", c.to)
	return rep, nil
}

type devIno struct{ dev, ino uint64 }

type dirMeta struct {
	dst string
	st  *syscall.Stat_t
}

type pendingLink struct{ first, dst string }

type copier struct {
	opts     Options
	log      *slog.Logger
	from, to string
	exclude  map[string]bool
	bar      *progressbar.ProgressBar

	files, symlinks, hardlinks, skipped, specials, dirs atomic.Int64
	bytes                                               atomic.Int64
	done, total                                         int64 // non-directory entries, for the bar's text

	mu       sync.Mutex // guards done and the bar's description
	firsts   map[devIno]string
	links    []pendingLink
	dirsMeta []dirMeta
}

func newCopier(opts Options) (*copier, error) {
	if opts.From == "" || opts.To == "" {
		return nil, errors.New("migrate: both the source and the target directory are needed")
	}
	from, err := filepath.Abs(opts.From)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	to, err := filepath.Abs(opts.To)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	for _, d := range []string{from, to} {
		fi, err := os.Lstat(d)
		if err != nil {
			return nil, fmt.Errorf("migrate: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("migrate: %s is not a directory (give the real path, not a symlink)", d)
		}
	}
	if within(from, to) || within(to, from) {
		return nil, fmt.Errorf("migrate: %s and %s overlap; copy between separate trees", from, to)
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ex := map[string]bool{}
	for _, n := range opts.Exclude {
		ex[n] = true
	}
	return &copier{opts: opts, log: log, from: from, to: to, exclude: ex, firsts: map[devIno]string{}}, nil
}

// within reports whether p is inside (or equal to) dir.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func (c *copier) run(ctx context.Context) (Report, error) {
	if err := c.checkTarget(); err != nil {
		return c.report(), err
	}
	files, bytes, err := c.count(ctx)
	if err != nil {
		return c.report(), err
	}
	c.total = files
	if c.opts.Progress != nil {
		c.bar = progressbar.NewOptions64(max(bytes, 1),
			progressbar.OptionSetWriter(c.opts.Progress),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionSetDescription(fmt.Sprintf("files 0/%d", files)),
		)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Workers)
	werr := c.walk(gctx, g, ".")
	if err := g.Wait(); err != nil {
		return c.report(), fmt.Errorf("migrate: %w", err)
	}
	if werr != nil {
		return c.report(), fmt.Errorf("migrate: %w", werr)
	}
	for _, l := range c.links {
		if err := ctx.Err(); err != nil {
			return c.report(), fmt.Errorf("migrate: %w", err)
		}
		if err := c.link(l); err != nil {
			return c.report(), fmt.Errorf("migrate: %w", err)
		}
	}
	// Parents after children: creating an entry changes its directory's mtime.
	for i := len(c.dirsMeta) - 1; i >= 0; i-- {
		if err := applyMeta(c.dirsMeta[i].dst, c.dirsMeta[i].st, true); err != nil {
			return c.report(), fmt.Errorf("migrate: %w", err)
		}
	}
	if c.bar != nil {
		_ = c.bar.Finish()
		fmt.Fprintln(c.opts.Progress)
	}
	// Files are not fsynced one by one (far too slow on EFS, and NFS flushes on close);
	// one syncfs makes the whole copy durable before it is declared done.
	if err := syncFS(c.to); err != nil {
		return c.report(), fmt.Errorf("migrate: %w", err)
	}
	return c.report(), nil
}

func (c *copier) report() Report {
	return Report{
		Files: int(c.files.Load()), Dirs: int(c.dirs.Load()), Symlinks: int(c.symlinks.Load()),
		Hardlinks: int(c.hardlinks.Load()), Bytes: c.bytes.Load(), Skipped: int(c.skipped.Load()),
		Specials: int(c.specials.Load()),
	}
}

// checkTarget refuses a non-empty target unless resuming.
func (c *copier) checkTarget() error {
	if c.opts.Resume {
		return nil
	}
	entries, err := os.ReadDir(c.to)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, e := range entries {
		if !c.exclude[e.Name()] {
			return fmt.Errorf("migrate: target %s is not empty (it holds %s); continue an interrupted copy with --resume, or empty it first",
				c.to, e.Name())
		}
	}
	return nil
}

// count walks the source once, fast, for the progress bar's totals. Hard-linked bytes
// are counted once, as they are copied once.
func (c *copier) count(ctx context.Context) (files, bytes int64, err error) {
	seen := map[devIno]bool{}
	err = filepath.WalkDir(c.from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if filepath.Dir(p) == c.from && c.exclude[d.Name()] {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() || (!d.Type().IsRegular() && d.Type()&fs.ModeSymlink == 0) {
			return nil
		}
		files++
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Nlink > 1 {
			k := devIno{st.Dev, st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		bytes += fi.Size()
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("migrate: scan %s: %w", c.from, err)
	}
	return files, bytes, nil
}

// walk creates the directories of rel in order and hands files to the workers.
func (c *copier) walk(ctx context.Context, g *errgroup.Group, rel string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	srcDir := filepath.Join(c.from, rel)
	dstDir := filepath.Join(c.to, rel)
	fi, err := os.Lstat(srcDir)
	if err != nil {
		return err
	}
	if err := c.ensureDir(dstDir, rel == "."); err != nil {
		return err
	}
	c.dirs.Add(1)
	c.dirsMeta = append(c.dirsMeta, dirMeta{dstDir, fi.Sys().(*syscall.Stat_t)})

	entries, err := os.ReadDir(srcDir)
	if err != nil {
		return err
	}
	if c.opts.Resume {
		if err := removePartials(dstDir, entries); err != nil {
			return err
		}
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if rel == "." && c.exclude[e.Name()] {
			continue
		}
		erel := filepath.Join(rel, e.Name())
		info, err := e.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		switch mode := info.Mode(); {
		case mode.IsDir():
			if err := c.walk(ctx, g, erel); err != nil {
				return err
			}
		case mode.IsRegular() || mode&fs.ModeSymlink != 0:
			if st.Nlink > 1 {
				k := devIno{st.Dev, st.Ino}
				if first, ok := c.firsts[k]; ok {
					c.links = append(c.links, pendingLink{first: first, dst: filepath.Join(c.to, erel)})
					continue
				}
				c.firsts[k] = filepath.Join(c.to, erel)
			}
			g.Go(func() error { return c.copyEntry(ctx, erel, info, st) })
		default:
			c.specials.Add(1)
			c.log.Warn("skipping special file (socket, fifo or device); Jenkins does not need it", "path", filepath.Join(c.from, erel), "type", mode.Type().String())
		}
	}
	return nil
}

// ensureDir makes dst a directory. Its final mode is applied after its children, so it
// starts private.
func (c *copier) ensureDir(dst string, root bool) error {
	if root {
		return nil
	}
	err := os.Mkdir(dst, 0o700)
	if err == nil || !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dst)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return nil
	}
	// Only a resumed copy finds things in its way (the target was empty otherwise).
	if err := os.Remove(dst); err != nil {
		return err
	}
	return os.Mkdir(dst, 0o700)
}

// removePartials deletes temporary files an interrupted copy left in dir, unless the
// source itself has an entry of that name.
func removePartials(dir string, src []os.DirEntry) error {
	dst, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	names := make(map[string]bool, len(src))
	for _, e := range src {
		names[e.Name()] = true
	}
	for _, e := range dst {
		if strings.HasPrefix(e.Name(), partialPrefix) && !names[e.Name()] {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// partialName is the temporary name for base: short whatever the length of base.
func partialName(base string) string {
	h := fnv.New64a()
	h.Write([]byte(base))
	return fmt.Sprintf("%s%016x", partialPrefix, h.Sum64())
}

func (c *copier) copyEntry(ctx context.Context, rel string, info fs.FileInfo, st *syscall.Stat_t) error {
	src := filepath.Join(c.from, rel)
	dst := filepath.Join(c.to, rel)
	isLink := info.Mode()&fs.ModeSymlink != 0
	var target string
	if isLink {
		var err error
		if target, err = os.Readlink(src); err != nil {
			return err
		}
	}
	if c.opts.Resume && identical(dst, st, isLink, target) {
		c.skipped.Add(1)
		c.progress(info.Size() * boolInt(!isLink))
		return nil
	}
	tmp := filepath.Join(filepath.Dir(dst), partialName(filepath.Base(dst)))
	// A leftover of the same name may be a symlink: never open through it.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if isLink {
		if err := os.Symlink(target, tmp); err != nil {
			return err
		}
	} else if err := c.copyFile(ctx, src, tmp); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := applyMeta(tmp, st, !isLink); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if isLink {
		c.symlinks.Add(1)
		c.progress(0)
	} else {
		c.files.Add(1)
	}
	if c.opts.onFileDone != nil {
		c.opts.onFileDone()
	}
	return nil
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// copyFile writes src's bytes to a new file tmp, in chunks so that ctx is honoured.
// os.File.ReadFrom uses copy_file_range between two files, so on local disks the
// bytes do not pass through user space.
func (c *copier) copyFile(ctx context.Context, src, tmp string) error {
	// O_NOATIME keeps the source's access times as they were (root may use it on any file).
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOATIME, 0)
	if errors.Is(err, fs.ErrPermission) {
		in, err = os.Open(src)
	}
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	for {
		n, err := io.CopyN(out, in, copyChunk)
		c.bytes.Add(n)
		if c.bar != nil {
			_ = c.bar.Add64(n)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	c.progress(0)
	return out.Close()
}

// progress counts one more entry done (and bytes that were skipped, not copied).
func (c *copier) progress(skippedBytes int64) {
	if c.bar == nil {
		return
	}
	if skippedBytes > 0 {
		_ = c.bar.Add64(skippedBytes)
	}
	c.mu.Lock()
	c.done++
	desc := fmt.Sprintf("files %d/%d", c.done, c.total)
	c.mu.Unlock()
	c.bar.Describe(desc)
}

// link gives l.dst the inode of l.first, as the source's hard links share one.
func (c *copier) link(l pendingLink) error {
	first, err := os.Lstat(l.first)
	if err != nil {
		return err
	}
	if cur, err := os.Lstat(l.dst); err == nil {
		if os.SameFile(first, cur) {
			c.skipped.Add(1)
			c.progress(0)
			return nil
		}
		if cur.IsDir() {
			return fmt.Errorf("%s is a directory in the target but a hard link in the source; remove it and resume", l.dst)
		}
		if err := os.Remove(l.dst); err != nil {
			return err
		}
	}
	if err := os.Link(l.first, l.dst); err != nil {
		return err
	}
	c.hardlinks.Add(1)
	c.progress(0)
	return nil
}

// applyMeta gives path the source's owner, mode and times, without following a
// symlink. The owner comes first: chown clears setuid and setgid bits.
func applyMeta(path string, st *syscall.Stat_t, chmod bool) error {
	if err := os.Lchown(path, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if chmod {
		if err := unix.Fchmodat(unix.AT_FDCWD, path, st.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("chmod %s: %w", path, err)
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(st.Atim.Nano()), unix.NsecToTimespec(st.Mtim.Nano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", path, err)
	}
	return nil
}

// identical reports whether dst already matches the source entry, for Resume.
func identical(dst string, st *syscall.Stat_t, isLink bool, target string) bool {
	fi, err := os.Lstat(dst)
	if err != nil {
		return false
	}
	d := fi.Sys().(*syscall.Stat_t)
	if d.Mode&unix.S_IFMT != st.Mode&unix.S_IFMT || d.Uid != st.Uid || d.Gid != st.Gid || !sameTime(st.Mtim, d.Mtim) {
		return false
	}
	if isLink {
		t, err := os.Readlink(dst)
		return err == nil && t == target
	}
	return d.Size == st.Size && d.Mode&0o7777 == st.Mode&0o7777
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

func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
