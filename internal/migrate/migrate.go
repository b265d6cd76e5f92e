// Package migrate copies an existing JENKINS_HOME (the old controller's) onto the
// mounted EFS home, keeping everything Jenkins and its operators rely on: owners,
// modes, times, symlinks and hard links. A copy can be resumed after an interruption
// and is verified at the end.
//
// Root copies files into a home the Jenkins user owns, from a tree that user could
// change while it is read. So every entry is opened relative to its directory's file
// descriptor and without following symlinks, on both sides, and a file is copied from
// the descriptor it was opened as, only if it is still the regular file that was
// listed: a file swapped for a link to a root-only file is never read.
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
	"golang.org/x/sys/unix"
)

// partialPrefix starts the names of temporary files in the target (the start-up probe;
// earlier versions also wrote files under it before renaming them). Resume removes
// leftovers with this prefix.
const partialPrefix = ".migrate-partial-"

// copyChunk is the size of one read and write of file data: a whole small file in one
// request, and cancellation noticed inside big files.
const copyChunk = 1 << 20

// ErrChanged means an entry of the source changed between the moment it was listed and
// the moment it was copied (a file replaced by a symlink, another file, or a
// directory). Nothing of it was copied.
var ErrChanged = errors.New("source changed during the copy")

// ErrRootSquashed means the target does not let root keep owners: the file system
// squashes root (an EFS file system policy without ClientRootAccess, or an access
// point with a POSIX user).
var ErrRootSquashed = errors.New("the target squashes root")

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
	// Workers is how many entries are copied at once. Zero chooses from the target's
	// latency as measured at the start (see WorkersFor): 1 on a local disk, many on EFS.
	Workers int
	// Progress receives a progress bar (files, bytes, rate, ETA); nil shows none.
	Progress io.Writer
	// Logger receives warnings (skipped special files) and a summary; nil discards.
	Logger *slog.Logger
	// Guard, when set, is asked before each entry is copied and before the copy is
	// declared done; an error from it stops the copy and is returned (wrapped). The
	// migrate command checks that it still holds the lease on the home.
	Guard func() error

	// onFileDone is called after each file or symlink is in place; tests use it to
	// interrupt a copy at a known point.
	onFileDone func()
	// beforeOpen is called with the path (relative to From) of a regular file or a
	// directory after it was listed and before it is opened; tests use it to change the
	// source under the copy.
	beforeOpen func(rel string)
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
	// Workers is how many entries were copied at once; Latency is the target's measured
	// time for one metadata operation (one round trip on EFS).
	Workers int
	Latency time.Duration
	// Differences lists what verification found; empty when it found none or did not run.
	Differences []string
}

// Copy copies opts.From onto opts.To. Cancelling ctx stops it between files and
// leaves a state that Copy with Resume completes; the error then wraps
// context.Cause(ctx).
func Copy(ctx context.Context, opts Options) (Report, error) {
	start := time.Now()
	c, err := newCopier(opts)
	if err != nil {
		return Report{}, err
	}
	defer c.closeRoots()
	rep, err := c.run(ctx)
	rep.Elapsed = time.Since(start)
	if err != nil {
		return rep, err
	}
	c.log.Info("copied home", "from", c.from, "to", c.to, "files", rep.Files, "dirs", rep.Dirs,
		"symlinks", rep.Symlinks, "hardlinks", rep.Hardlinks, "bytes", rep.Bytes, "skipped", rep.Skipped,
		"specials", rep.Specials, "workers", rep.Workers, "latency", rep.Latency, "elapsed", rep.Elapsed.Round(time.Millisecond))
	if opts.Verify {
		diffs, err := verifyTree(ctx, c.from, c.to, opts.Exclude, c.workers)
		rep.Differences = diffs
		rep.Elapsed = time.Since(start)
		if err != nil {
			return rep, fmt.Errorf("migrate: verify: %w", causeOf(ctx, err))
		}
		if len(diffs) > 0 {
			shown := diffs[:min(len(diffs), 5)]
			return rep, fmt.Errorf("migrate: verify found %d differences, first: %s; run again with --resume to fix them",
				len(diffs), strings.Join(shown, "; "))
		}
		c.log.Info("verified copy", "to", c.to, "elapsed", rep.Elapsed.Round(time.Millisecond))
	}
	if err := c.guard(); err != nil {
		return rep, fmt.Errorf("migrate: %w", err)
	}
	return rep, nil
}

// causeOf returns the cause of ctx's end when err comes from it.
func causeOf(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
			return fmt.Errorf("%w (%w)", cause, err)
		}
	}
	return err
}

type devIno struct{ dev, ino uint64 }

func keyOf(st *unix.Stat_t) devIno { return devIno{st.Dev, st.Ino} }

type copier struct {
	opts     Options
	log      *slog.Logger
	from, to string
	exclude  map[string]bool
	bar      *progressbar.ProgressBar
	workers  int
	latency  time.Duration

	srcRoot, dstRoot int // directory descriptors of From and To

	files, symlinks, hardlinks, skipped, specials, dirs atomic.Int64
	bytes                                               atomic.Int64
	done                                                atomic.Int64 // non-directory entries handled, for the bar's text
	total                                               int64

	mu       sync.Mutex // guards firsts and openDirs
	firsts   map[devIno]*linkGroup
	openDirs map[*dirNode]struct{}

	sched scheduler
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
	if opts.Workers < 0 {
		return nil, fmt.Errorf("migrate: %d workers; give at least 1, or 0 to choose from the target's latency", opts.Workers)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ex := map[string]bool{}
	for _, n := range opts.Exclude {
		ex[n] = true
	}
	c := &copier{opts: opts, log: log, from: from, to: to, exclude: ex, firsts: map[devIno]*linkGroup{}, srcRoot: -1, dstRoot: -1}
	if c.srcRoot, err = unix.Open(from, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("migrate: open %s: %w", from, err)
	}
	if c.dstRoot, err = unix.Open(to, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
		c.closeRoots()
		return nil, fmt.Errorf("migrate: open %s: %w", to, err)
	}
	return c, nil
}

func (c *copier) closeRoots() {
	for _, fd := range []*int{&c.srcRoot, &c.dstRoot} {
		if *fd >= 0 {
			_ = unix.Close(*fd)
			*fd = -1
		}
	}
}

// within reports whether p is inside (or equal to) dir.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func (c *copier) guard() error {
	if c.opts.Guard == nil {
		return nil
	}
	return c.opts.Guard()
}

func (c *copier) run(ctx context.Context) (Report, error) {
	if err := c.checkTarget(); err != nil {
		return c.report(), err
	}
	latency, err := probeTarget(c.dstRoot, c.to)
	if err != nil {
		return c.report(), fmt.Errorf("migrate: %w", err)
	}
	c.latency = latency
	c.workers = c.opts.Workers
	if c.workers == 0 {
		c.workers = WorkersFor(latency)
	}
	c.log.Info("copying home", "from", c.from, "to", c.to, "workers", c.workers, "target_latency", latency,
		"workers_chosen", c.opts.Workers == 0)
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

	root := &dirNode{rel: ".", srcFd: c.srcRoot, dstFd: c.dstRoot, root: true}
	var st unix.Stat_t
	if err := unix.Fstat(c.srcRoot, &st); err != nil {
		return c.report(), fmt.Errorf("migrate: %w", err)
	}
	root.st = st
	if err := unix.Fstat(c.dstRoot, &root.created); err != nil {
		return c.report(), fmt.Errorf("migrate: %w", err)
	}
	err = c.sched.run(ctx, c.workers, openDirsLimit(c.workers), c.guard, task{kind: taskList, dir: root}, c.do)
	c.closeDirs()
	if err != nil {
		return c.report(), fmt.Errorf("migrate: %w", causeOf(ctx, err))
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

// openDirsLimit is how many directories may be open at once: maxOpenDirs, or fewer
// when the limit on open files is low (two per directory, two per worker, and a margin).
func openDirsLimit(workers int) int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 64
	}
	return int(max(16, min(maxOpenDirs, (int64(rl.Cur)-256-2*int64(workers))/2)))
}

func (c *copier) report() Report {
	return Report{
		Files: int(c.files.Load()), Dirs: int(c.dirs.Load()), Symlinks: int(c.symlinks.Load()),
		Hardlinks: int(c.hardlinks.Load()), Bytes: c.bytes.Load(), Skipped: int(c.skipped.Load()),
		Specials: int(c.specials.Load()), Workers: c.workers, Latency: c.latency,
	}
}

// checkTarget refuses a non-empty target unless resuming.
func (c *copier) checkTarget() error {
	if c.opts.Resume {
		return nil
	}
	names, err := readNames(c.dstRoot)
	if err != nil {
		return fmt.Errorf("migrate: read %s: %w", c.to, err)
	}
	for _, n := range names {
		if !c.exclude[n] {
			return fmt.Errorf("migrate: target %s is not empty (it holds %s); continue an interrupted copy with --resume, or empty it first",
				c.to, n)
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
		return 0, 0, fmt.Errorf("migrate: scan %s: %w", c.from, causeOf(ctx, err))
	}
	return files, bytes, nil
}

// progress counts one more entry done (and bytes that were skipped, not copied).
func (c *copier) progress(skippedBytes int64) {
	done := c.done.Add(1)
	if c.bar == nil {
		return
	}
	if skippedBytes > 0 {
		_ = c.bar.Add64(skippedBytes)
	}
	c.bar.Describe(fmt.Sprintf("files %d/%d", done, c.total))
}

// partialName is the temporary name for base: short whatever the length of base.
func partialName(base string) string {
	h := fnv.New64a()
	h.Write([]byte(base))
	return fmt.Sprintf("%s%016x", partialPrefix, h.Sum64())
}

// readNames lists the directory open as fd (an O_PATH descriptor will do) without
// moving fd's offset.
func readNames(fd int) ([]string, error) {
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dfd), ".")
	defer f.Close()
	return f.Readdirnames(-1)
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
