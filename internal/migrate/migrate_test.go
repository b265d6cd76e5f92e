package migrate

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func write(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, data, 0o644))
	must(t, unix.Chmod(path, uint32(mode)))
}

// setTimes gives path distinct past atime and mtime with nanoseconds, without
// following a symlink.
func setTimes(t testing.TB, path string, seed int64) {
	t.Helper()
	mtime := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC).Add(time.Duration(seed)*time.Hour + 123456789)
	atime := mtime.Add(90*time.Minute + 987)
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW))
}

// makeHome builds a small home with every kind of entry Copy must keep. It returns
// the number of regular files and symlinks (excluding extra hard-link names).
func makeHome(t testing.TB, root string) {
	t.Helper()
	p := func(rel string) string { return filepath.Join(root, rel) }
	write(t, p("config.xml"), []byte("<hudson/>\n"), 0o644)
	write(t, p("empty.txt"), nil, 0o644)
	big := make([]byte, copyChunk+3<<20) // more than one copy round
	_, _ = rand.Read(big)
	write(t, p("plugins/big.jpi"), big, 0o644)
	for j := range 3 {
		for b := 1; b <= 5; b++ {
			dir := filepath.Join("jobs", "job-"+string(rune('a'+j)), "builds", string(rune('0'+b)))
			write(t, p(filepath.Join(dir, "build.xml")), []byte("<build/>"), 0o644)
			write(t, p(filepath.Join(dir, "log")), bytes.Repeat([]byte("line\n"), 100*b), 0o640)
		}
		must(t, os.Symlink("5", p(filepath.Join("jobs", "job-"+string(rune('a'+j)), "builds", "lastSuccessfulBuild"))))
	}
	must(t, os.Symlink("/etc/hostname", p("abs-link")))
	must(t, os.Symlink("does/not/exist", p("dangling")))
	// Hard links: a pair in one directory and a triple across directories.
	write(t, p("secrets/master.key"), []byte("not-a-real-key"), 0o600)
	must(t, os.Link(p("secrets/master.key"), p("secrets/master.key.bak")))
	write(t, p("fingerprints/ab/cd.xml"), []byte("<fp/>"), 0o644)
	must(t, os.Link(p("fingerprints/ab/cd.xml"), p("fingerprints/cd-copy.xml")))
	must(t, os.Link(p("fingerprints/ab/cd.xml"), p("jobs/job-a/fp.xml")))
	// Odd modes.
	write(t, p("bin/setuid-tool"), []byte("#!/bin/sh\n"), 0o4755)
	write(t, p("bin/setgid-tool"), []byte("#!/bin/sh\n"), 0o2711)
	must(t, os.MkdirAll(p("tmp-sticky"), 0o755))
	must(t, unix.Chmod(p("tmp-sticky"), 0o1777))
	must(t, os.MkdirAll(p("shared-group"), 0o755))
	must(t, unix.Chmod(p("shared-group"), 0o2750))
	write(t, p("readonly/inner.txt"), []byte("inside a read-only dir"), 0o444)
	must(t, unix.Chmod(p("readonly"), 0o555))
	must(t, os.MkdirAll(p("empty-dir/nested-empty"), 0o755))
	// A fifo: left out with a warning.
	must(t, unix.Mkfifo(p("jobs/job-b/control.fifo"), 0o600))
	// Owners (root only).
	if os.Geteuid() == 0 {
		must(t, os.Lchown(p("config.xml"), 1000, 1000))
		must(t, os.Lchown(p("jobs"), 1000, 1000))
		must(t, os.Lchown(p("secrets/master.key"), 1234, 5678))
		must(t, os.Lchown(p("dangling"), 4321, 8765))
		must(t, os.Lchown(p("bin/setuid-tool"), 1000, 1000))
		must(t, unix.Chmod(p("bin/setuid-tool"), 0o4755)) // chown cleared it
	}
	// Times last, children before parents.
	var paths []string
	must(t, filepath.Walk(root, func(path string, _ os.FileInfo, err error) error {
		paths = append(paths, path)
		return err
	}))
	for i := len(paths) - 1; i >= 0; i-- {
		setTimes(t, paths[i], int64(i))
	}
}

func stat(t testing.TB, path string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(path)
	must(t, err)
	return fi.Sys().(*syscall.Stat_t)
}

func TestCopyKeepsEverything(t *testing.T) {
	testenv.Root(t, "to chown files and keep their owners")
	from, to := t.TempDir(), t.TempDir()
	makeHome(t, from)
	var progress bytes.Buffer
	rep, err := Copy(context.Background(), Options{From: from, To: to, Verify: true, Progress: &progress})
	if err != nil {
		t.Fatalf("Copy() = %v\ndifferences: %v", err, rep.Differences)
	}
	// 3 top files + 30 build files + 1 key + 1 fp + 2 tools + 1 inner = 38 regular files.
	if rep.Files != 38 || rep.Symlinks != 5 || rep.Hardlinks != 3 || rep.Specials != 1 || rep.Skipped != 0 {
		t.Fatalf("report = %+v", rep)
	}
	if want := int64(copyChunk + 3<<20); rep.Bytes < want {
		t.Fatalf("report counts %d bytes, want at least %d", rep.Bytes, want)
	}
	if !strings.Contains(progress.String(), "files") {
		t.Fatalf("progress output lacks the file count: %q", progress.String())
	}

	// Independent spot checks, so that the test does not rest on VerifyTree alone.
	if a, b := stat(t, filepath.Join(to, "fingerprints/ab/cd.xml")), stat(t, filepath.Join(to, "jobs/job-a/fp.xml")); a.Ino != b.Ino || a.Nlink != 3 {
		t.Fatalf("hard links not kept: inodes %d/%d, nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	if got, _ := os.Readlink(filepath.Join(to, "abs-link")); got != "/etc/hostname" {
		t.Fatalf("absolute symlink target = %q", got)
	}
	if _, err := os.Lstat(filepath.Join(to, "jobs/job-b/control.fifo")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("fifo was copied: %v", err)
	}
	for rel, mode := range map[string]uint32{"bin/setuid-tool": 0o4755, "bin/setgid-tool": 0o2711, "tmp-sticky": 0o1777, "shared-group": 0o2750, "readonly": 0o555} {
		if got := stat(t, filepath.Join(to, rel)).Mode & 0o7777; got != mode {
			t.Errorf("%s: mode %04o, want %04o", rel, got, mode)
		}
	}
	for _, rel := range []string{"secrets/master.key", "dangling", "jobs", "bin/setuid-tool"} {
		s, d := stat(t, filepath.Join(from, rel)), stat(t, filepath.Join(to, rel))
		if s.Uid != d.Uid || s.Gid != d.Gid || s.Uid == 0 {
			t.Errorf("%s: owner %d:%d, want %d:%d", rel, d.Uid, d.Gid, s.Uid, s.Gid)
		}
	}
	for _, rel := range []string{"jobs/job-a/builds", "dangling", "config.xml", "empty-dir", "plugins/big.jpi"} {
		s, d := stat(t, filepath.Join(from, rel)), stat(t, filepath.Join(to, rel))
		if s.Mtim != d.Mtim {
			t.Errorf("%s: mtime %v, want %v", rel, d.Mtim, s.Mtim)
		}
		// Reading a directory or a symlink (verification does) moves its atime; files
		// are read with O_NOATIME, so theirs must be the source's, on both sides.
		if fi, _ := os.Lstat(filepath.Join(from, rel)); fi.Mode().IsRegular() && (s.Atim != d.Atim || s.Atim.Sec > 1700000000) {
			t.Errorf("%s: atime %v, want the source's original %v", rel, d.Atim, s.Atim)
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(to, "*", partialPrefix+"*")); len(leftovers) > 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
}

func TestCopyRefusesNonEmptyTarget(t *testing.T) {
	from, to := t.TempDir(), t.TempDir()
	write(t, filepath.Join(from, "config.xml"), []byte("x"), 0o644)
	exclude := []string{".efs-marker", ".jenkins-spot-agent"}
	write(t, filepath.Join(to, ".efs-marker"), []byte("fs-1"), 0o644)
	must(t, os.Mkdir(filepath.Join(to, ".jenkins-spot-agent"), 0o755))
	if _, err := Copy(context.Background(), Options{From: from, To: to, Exclude: exclude, Verify: true}); err != nil {
		t.Fatalf("Copy() into a target holding only excluded names = %v", err)
	}
	_, err := Copy(context.Background(), Options{From: from, To: to, Exclude: exclude})
	if err == nil || !strings.Contains(err.Error(), "not empty") || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("Copy() into a non-empty target = %v, want a refusal naming --resume", err)
	}
	if _, err := Copy(context.Background(), Options{From: from, To: filepath.Join(from, "sub")}); err == nil {
		t.Fatal("Copy() into a directory inside the source was accepted")
	}
}

func TestResumeAfterCancel(t *testing.T) {
	testenv.Root(t, "to chown files and keep their owners")
	from, to := t.TempDir(), t.TempDir()
	makeHome(t, from)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var done atomic.Int32
	rep, err := Copy(ctx, Options{From: from, To: to, Verify: true, Workers: 2, onFileDone: func() {
		if done.Add(1) == 10 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Copy() = %v, want context.Canceled", err)
	}
	if rep.Files+rep.Symlinks < 10 || rep.Files+rep.Symlinks >= 43 {
		t.Fatalf("interrupted copy did %d files and %d symlinks", rep.Files, rep.Symlinks)
	}
	// A leftover from a copy killed mid-file.
	write(t, filepath.Join(to, "jobs", partialName("config.xml")), []byte("half"), 0o600)

	if _, err := Copy(context.Background(), Options{From: from, To: to}); err == nil {
		t.Fatal("a second Copy() without Resume was accepted")
	}
	rep2, err := Copy(context.Background(), Options{From: from, To: to, Resume: true, Verify: true})
	if err != nil {
		t.Fatalf("resumed Copy() = %v\ndifferences: %v", err, rep2.Differences)
	}
	if rep2.Skipped < 10 {
		t.Fatalf("resume skipped %d entries, want the >= 10 already copied", rep2.Skipped)
	}
	if got := rep2.Files + rep2.Symlinks + rep2.Hardlinks + rep2.Skipped; got != 38+5+3 {
		t.Fatalf("resume handled %d entries (%+v), want 46", got, rep2)
	}
	// A third run finds everything in place.
	rep3, err := Copy(context.Background(), Options{From: from, To: to, Resume: true, Verify: true})
	if err != nil || rep3.Files+rep3.Symlinks+rep3.Hardlinks != 0 || rep3.Skipped != 46 {
		t.Fatalf("second resume: %+v, %v; want everything skipped", rep3, err)
	}
}

func TestVerifyDetectsDifferences(t *testing.T) {
	testenv.Root(t, "to chown files and keep their owners")
	from, to := t.TempDir(), t.TempDir()
	makeHome(t, from)
	if _, err := Copy(context.Background(), Options{From: from, To: to, Verify: true}); err != nil {
		t.Fatal(err)
	}
	if diffs, err := VerifyTree(context.Background(), from, to, nil); err != nil || len(diffs) != 0 {
		t.Fatalf("VerifyTree() on a fresh copy = %v, %v", diffs, err)
	}
	p := func(rel string) string { return filepath.Join(to, rel) }
	// Same size, new content: only the mtime betrays it.
	must(t, os.WriteFile(p("config.xml"), []byte("<hudsoN/>\n"), 0o644))
	f, err := os.OpenFile(p("jobs/job-a/builds/1/log"), os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, _ = f.WriteString("tampered\n")
	must(t, f.Close())
	must(t, unix.Chmod(p("bin/setuid-tool"), 0o755))
	must(t, os.Lchown(p("secrets/master.key"), 0, 0))
	must(t, os.Remove(p("abs-link")))
	must(t, os.Symlink("/etc/passwd", p("abs-link")))
	// Break the hard link while keeping every other attribute.
	st := stat(t, p("secrets/master.key.bak"))
	must(t, os.Remove(p("secrets/master.key.bak")))
	write(t, p("secrets/master.key.bak"), []byte("not-a-real-key"), 0o600)
	must(t, os.Lchown(p("secrets/master.key.bak"), int(st.Uid), int(st.Gid)))
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p("secrets/master.key.bak"), []unix.Timespec{unix.NsecToTimespec(st.Atim.Nano()), unix.NsecToTimespec(st.Mtim.Nano())}, 0))
	must(t, os.Remove(p("empty.txt")))
	write(t, p("jobs/stray.xml"), nil, 0o644)
	must(t, os.Remove(p("empty-dir/nested-empty")))
	must(t, os.WriteFile(p("empty-dir/nested-empty"), nil, 0o755))

	diffs, err := VerifyTree(context.Background(), from, to, nil)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(diffs, "\n")
	for _, want := range []string{
		"config.xml: mtime",
		"jobs/job-a/builds/1/log: size",
		"bin/setuid-tool: mode 4755 in source, 0755 in target",
		"secrets/master.key: owner",
		`abs-link: link target "/etc/hostname" in source, "/etc/passwd" in target`,
		"secrets/master.key.bak: hard link to secrets/master.key in source",
		"empty.txt: missing in target",
		"jobs/stray.xml: extra in target",
		"empty-dir/nested-empty: type d",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("differences lack %q; got:\n%s", want, all)
		}
	}
	// Copy reports them as an error too.
	_, err = Copy(context.Background(), Options{From: from, To: to, Resume: true, Verify: true})
	if err == nil || !strings.Contains(err.Error(), "jobs/stray.xml: extra") {
		t.Fatalf("resumed Copy() over an extra file = %v, want it named", err)
	}
	// Resume repaired everything but the extra file, which it never deletes.
	diffs, _ = VerifyTree(context.Background(), from, to, nil)
	if len(diffs) != 1 || !strings.HasPrefix(diffs[0], "jobs/stray.xml") {
		t.Fatalf("after resume: %v", diffs)
	}
}

func TestSameTime(t *testing.T) {
	ns := syscall.Timespec{Sec: 100, Nsec: 123456789}
	for _, tt := range []struct {
		dst  syscall.Timespec
		want bool
	}{
		{syscall.Timespec{Sec: 100, Nsec: 123456789}, true},
		{syscall.Timespec{Sec: 100, Nsec: 123456000}, true}, // microsecond target
		{syscall.Timespec{Sec: 100, Nsec: 123000000}, true}, // millisecond target
		{syscall.Timespec{Sec: 100}, true},                  // second target
		{syscall.Timespec{Sec: 100, Nsec: 123456790}, false},
		{syscall.Timespec{Sec: 101, Nsec: 123456789}, false},
		{syscall.Timespec{Sec: 100, Nsec: 120000000}, false},
	} {
		if got := sameTime(ns, tt.dst); got != tt.want {
			t.Errorf("sameTime(%v, %v) = %v, want %v", ns, tt.dst, got, tt.want)
		}
	}
}
