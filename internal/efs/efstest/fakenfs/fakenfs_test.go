package fakenfs

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// mount serves a fresh backing directory (mode 0755, owned by root) at a fresh mount
// point until the test ends.
func mount(t *testing.T, opts Options) (mp, backing string, s *Server) {
	t.Helper()
	if testing.Short() {
		t.Skip("mounts a FUSE file system")
	}
	if err := Available(); err != nil {
		testenv.Missing(t, "%v", err)
	}
	backing, mp = t.TempDir(), t.TempDir()
	if err := os.Chmod(backing, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Mount(mp, backing, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Unmount(); err != nil {
			t.Error(err)
		}
	})
	return mp, backing, s
}

func TestRootSquashedToNobody(t *testing.T) {
	mp, backing, _ := mount(t, Options{Squash: &Nobody})

	// The root directory belongs to root: squashed root may not write in it.
	if err := os.Mkdir(filepath.Join(mp, "d"), 0o755); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("mkdir in root's directory = %v, want EACCES", err)
	}
	if err := os.WriteFile(filepath.Join(mp, "f"), nil, 0o644); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("create in root's directory = %v, want EACCES", err)
	}

	// Where nobody may write, root's new files are nobody's, and stay so.
	if err := os.Chmod(backing, 0o777); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(mp, "f")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatalf("create in a world-writable directory: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(backing, "f"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != Nobody.UID || st.Gid != Nobody.GID {
		t.Errorf("root's new file is owned by %d:%d on the server, want nobody", st.Uid, st.Gid)
	}
	if err := os.Chown(p, 1000, 1000); !errors.Is(err, syscall.EPERM) {
		t.Errorf("chown to 1000:1000 = %v, want EPERM", err)
	}
	if err := os.Chown(p, int(Nobody.UID), int(Nobody.GID)); err != nil {
		t.Errorf("chown to its own owner: %v", err)
	}

	// A file of someone else's may not be written or given away.
	other := filepath.Join(backing, "theirs")
	if err := os.WriteFile(other, []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(other, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mp, "theirs"), []byte("z"), 0o644); !errors.Is(err, syscall.EACCES) {
		t.Errorf("write into another user's file = %v, want EACCES", err)
	}
	if err := os.Chmod(filepath.Join(mp, "theirs"), 0o666); !errors.Is(err, syscall.EPERM) {
		t.Errorf("chmod of another user's file = %v, want EPERM", err)
	}
}

func TestAccessPointUser(t *testing.T) {
	ap := Identity{UID: 1000, GID: 1000}
	mp, backing, _ := mount(t, Options{Squash: &ap})
	if err := os.Chown(backing, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(mp, "f")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatalf("create in the access point user's directory: %v", err)
	}
	if err := os.Chown(p, 1000, 1000); err != nil {
		t.Errorf("chown to the access point user: %v", err)
	}
	if err := os.Chown(p, 1001, 1001); !errors.Is(err, syscall.EPERM) {
		t.Errorf("chown to another user = %v, want EPERM", err)
	}
}

func TestUnsquashedRootMayDoAnything(t *testing.T) {
	mp, _, _ := mount(t, Options{})
	p := filepath.Join(mp, "f")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 1000, 1000); err != nil {
		t.Fatalf("chown without squash: %v", err)
	}
}

func TestHangBlocksUntilResume(t *testing.T) {
	mp, _, s := mount(t, Options{Source: "127.0.0.1:/", Name: "efstest"})
	var st unix.Statfs_t
	if err := unix.Statfs(mp, &st); err != nil || st.Type != SuperMagic {
		t.Fatalf("statfs = %#x, %v; want FUSE", st.Type, err)
	}
	s.Hang()
	done := make(chan error, 1)
	go func() { done <- unix.Statfs(mp, &st) }()
	deadline := time.Now().Add(10 * time.Second)
	for s.Blocked() == 0 {
		select {
		case err := <-done:
			t.Fatalf("statfs returned (%v) while the server hangs", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("statfs never reached the hung server")
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Resume()
	if err := <-done; err != nil {
		t.Fatalf("statfs after Resume: %v", err)
	}
}
