package latencyfs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestEveryRequestWaits: a request served through the mount takes at least the delay,
// and is counted.
func TestEveryRequestWaits(t *testing.T) {
	const delay = 50 * time.Millisecond
	h := New(t, delay)
	for _, op := range []struct {
		name string
		do   func(p string) error
	}{
		{"CREATE", func(p string) error { return os.WriteFile(p, []byte("x"), 0o644) }},
		{"MKDIR", func(p string) error { return os.Mkdir(p+".d", 0o755) }},
		{"SETATTR", func(p string) error { return os.Chmod(p, 0o600) }},
		{"SYMLINK", func(p string) error { return os.Symlink("x", p+".link") }},
		{"LINK", func(p string) error { return os.Link(p, p+".hard") }},
	} {
		h.ResetCounts()
		start := time.Now()
		if err := op.do(filepath.Join(h.Dir, "f")); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		if took := time.Since(start); took < delay {
			t.Errorf("%s took %s, less than the %s delay", op.name, took, delay)
		}
		if !strings.Contains(h.Counts(), op.name+" 1") || h.Requests() < 1 {
			t.Errorf("%s not counted: %s", op.name, h.Counts())
		}
	}
}

// TestRequestsRunConcurrently: requests of many threads are served at once, as EFS
// serves them, so a parallel copy can hide the latency.
func TestRequestsRunConcurrently(t *testing.T) {
	h := New(t, 200*time.Millisecond)
	const n = 16
	for i := range n {
		if err := os.WriteFile(filepath.Join(h.Backing, "f"+string(rune('a'+i))), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h.ResetCounts()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := os.Lstat(filepath.Join(h.Dir, "f"+string(rune('a'+i)))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if h.MaxInFlight() < 2 {
		t.Fatalf("at most %d request in flight for %d parallel lookups", h.MaxInFlight(), n)
	}
}

// TestLoopbackKeepsMetadata: owners, modes, times, symlinks and hard links made through
// the mount land in the backing directory as they are; extended attributes are not
// supported, as on EFS.
func TestLoopbackKeepsMetadata(t *testing.T) {
	h := New(t, time.Millisecond)
	p := filepath.Join(h.Dir, "config.xml")
	if err := os.WriteFile(p, []byte("<hudson/>"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 1000, 1001); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(p, 0o4750); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2022, 5, 6, 7, 8, 9, 123456789, time.UTC)
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("config.xml", filepath.Join(h.Dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(p, filepath.Join(h.Dir, "hard")); err != nil {
		t.Fatal(err)
	}
	var st, hard unix.Stat_t
	if err := unix.Lstat(filepath.Join(h.Backing, "config.xml"), &st); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(h.Backing, "hard"), &hard); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1000 || st.Gid != 1001 || st.Mode&0o7777 != 0o4750 || st.Mtim.Nano() != mtime.UnixNano() || st.Ino != hard.Ino {
		t.Fatalf("backing file: uid %d gid %d mode %o mtime %d ino %d/%d", st.Uid, st.Gid, st.Mode&0o7777, st.Mtim.Nano(), st.Ino, hard.Ino)
	}
	if target, err := os.Readlink(filepath.Join(h.Backing, "link")); err != nil || target != "config.xml" {
		t.Fatalf("symlink: %q %v", target, err)
	}
	if err := unix.Lsetxattr(p, "user.test", []byte("x"), 0); !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatalf("setxattr = %v, want EOPNOTSUPP", err)
	}
}

// TestSquashRoot: with SquashRoot, root may create files but not give them away.
func TestSquashRoot(t *testing.T) {
	h := NewWith(t, Options{SquashRoot: true})
	p := filepath.Join(h.Dir, "f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 1000, 1000); !errors.Is(err, unix.EPERM) {
		t.Fatalf("chown = %v, want EPERM", err)
	}
}

func TestMountRefusesANegativeDelay(t *testing.T) {
	if _, err := Mount(t.TempDir(), t.TempDir(), -time.Millisecond); err == nil {
		t.Fatal("Mount accepted a negative delay")
	}
}
