package migrate

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs/efstest/latencyfs"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

const secret = "ROOT-ONLY-SECRET-5f1c"

// rootOnly makes, outside any home, a file and a directory only root may read, both
// holding the secret.
func rootOnly(t *testing.T) (file, dir string) {
	t.Helper()
	base := t.TempDir()
	file = filepath.Join(base, "shadow")
	write(t, file, []byte(secret), 0o600)
	dir = filepath.Join(base, "private")
	write(t, filepath.Join(dir, "build.xml"), []byte(secret), 0o600)
	must(t, unix.Chmod(dir, 0o700))
	return file, dir
}

// assertNoSecret fails if any regular file of the tree at root holds the secret.
func assertNoSecret(t *testing.T, root string) {
	t.Helper()
	must(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds the root-only secret", p)
		}
		return nil
	}))
}

// TestCopyNeverFollowsASwappedEntry: an entry of the source replaced, after it was
// listed and before it is copied, by a symlink or a hard link to something only root
// may read fails the copy, and nothing of it lands in the target (where the Jenkins
// user would own it).
func TestCopyNeverFollowsASwappedEntry(t *testing.T) {
	testenv.Root(t, "needs root")
	for _, tt := range []struct {
		name, rel string
		swap      func(path, file, dir string) error
		now       string
	}{
		{"file to symlink", "jobs/job-a/builds/1/log", func(p, file, _ string) error { return os.Symlink(file, p) }, "a symlink"},
		{"file to hard link", "jobs/job-a/builds/1/log", func(p, file, _ string) error { return os.Link(file, p) }, "another file"},
		{"directory to symlink", "jobs/job-b/builds/2", func(p, _, dir string) error { return os.Symlink(dir, p) }, "not a directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			from, to := t.TempDir(), t.TempDir()
			makeHome(t, from)
			file, dir := rootOnly(t)
			var swapped atomic.Bool
			_, err := Copy(context.Background(), Options{From: from, To: to, Workers: 4, beforeOpen: func(rel string) {
				if rel != tt.rel || swapped.Swap(true) {
					return
				}
				p := filepath.Join(from, rel)
				must(t, os.RemoveAll(p))
				must(t, tt.swap(p, file, dir))
			}})
			if !swapped.Load() {
				t.Fatal("the entry was never about to be opened")
			}
			if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), tt.rel) || !strings.Contains(err.Error(), tt.now) {
				t.Fatalf("Copy() = %v; want ErrChanged naming %s as %s", err, tt.rel, tt.now)
			}
			assertNoSecret(t, to)
		})
	}
}

// TestResumeNeverFollowsSymlinksInTheTarget: symlinks found in the target where the
// source has a file or a directory are replaced, never written through.
func TestResumeNeverFollowsSymlinksInTheTarget(t *testing.T) {
	testenv.Root(t, "needs root")
	from, to := t.TempDir(), t.TempDir()
	makeHome(t, from)
	_, err := Copy(context.Background(), Options{From: from, To: to})
	must(t, err)
	victimFile, victimDir := rootOnly(t)
	before := stat(t, victimFile)
	for rel, target := range map[string]string{
		"config.xml":          victimFile,
		"jobs/job-a/fp.xml":   victimFile, // a hard-link name
		"jobs/job-c/builds/3": victimDir,
	} {
		must(t, os.RemoveAll(filepath.Join(to, rel)))
		must(t, os.Symlink(target, filepath.Join(to, rel)))
	}
	// A planted symlink named like a leftover temporary file.
	must(t, os.Symlink(victimFile, filepath.Join(to, "jobs", partialName("config.xml"))))

	rep, err := Copy(context.Background(), Options{From: from, To: to, Resume: true, Verify: true, Workers: 4})
	if err != nil {
		t.Fatalf("resumed Copy() = %v\ndifferences: %v", err, rep.Differences)
	}
	if b, err := os.ReadFile(victimFile); err != nil || string(b) != secret {
		t.Fatalf("victim file now %q, %v", b, err)
	}
	if after := stat(t, victimFile); after.Uid != before.Uid || after.Mode != before.Mode || after.Nlink != 1 {
		t.Fatalf("victim file changed: uid %d mode %o nlink %d", after.Uid, after.Mode, after.Nlink)
	}
	entries, err := os.ReadDir(victimDir)
	must(t, err)
	if len(entries) != 1 {
		t.Fatalf("victim directory holds %d entries, want its 1", len(entries))
	}
	if _, err := os.Lstat(filepath.Join(to, "jobs", partialName("config.xml"))); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("planted leftover still there: %v", err)
	}
}

// TestGuardStopsTheCopy: once the guard fails, no further entry is started, and the
// copy fails with the guard's error.
func TestGuardStopsTheCopy(t *testing.T) {
	testenv.Root(t, "needs root")
	from, to := t.TempDir(), t.TempDir()
	makeHome(t, from)
	errGone := errors.New("lease gone")
	var done, afterStop atomic.Int32
	var stopped atomic.Bool
	rep, err := Copy(context.Background(), Options{
		From: from, To: to, Workers: 1,
		onFileDone: func() {
			if stopped.Load() {
				afterStop.Add(1)
			}
			done.Add(1)
		},
		Guard: func() error {
			if done.Load() >= 5 {
				stopped.Store(true)
				return errGone
			}
			return nil
		},
	})
	if !errors.Is(err, errGone) {
		t.Fatalf("Copy() = %v, want the guard's error", err)
	}
	if afterStop.Load() != 0 || rep.Files+rep.Symlinks != 5 {
		t.Fatalf("%d entries done after the guard failed; report %+v", afterStop.Load(), rep)
	}
}

// TestCopyRefusesASquashedRoot: a target where root cannot give files away is refused
// before anything is copied.
func TestCopyRefusesASquashedRoot(t *testing.T) {
	home := latencyfs.NewWith(t, latencyfs.Options{SquashRoot: true})
	testenv.Root(t, "needs root")
	from := t.TempDir()
	makeHome(t, from)
	_, err := Copy(context.Background(), Options{From: from, To: home.Dir})
	if !errors.Is(err, ErrRootSquashed) || !strings.Contains(err.Error(), "ClientRootAccess") {
		t.Fatalf("Copy() onto a squashed root = %v, want ErrRootSquashed with the fix", err)
	}
	if entries, _ := os.ReadDir(home.Backing); len(entries) != 0 {
		t.Fatalf("copied into a squashed target: %v", entries)
	}
}

func TestWorkersFor(t *testing.T) {
	for _, tt := range []struct {
		latency time.Duration
		want    int
	}{
		{0, 1},
		{20 * time.Microsecond, 1}, // local disk
		{99 * time.Microsecond, 1},
		{100 * time.Microsecond, 12},
		{time.Millisecond, 125}, // EFS, same AZ
		{3 * time.Millisecond, MaxAutoWorkers},
		{time.Second, MaxAutoWorkers},
	} {
		if got := WorkersFor(tt.latency); got != tt.want {
			t.Errorf("WorkersFor(%s) = %d, want %d", tt.latency, got, tt.want)
		}
	}
}
