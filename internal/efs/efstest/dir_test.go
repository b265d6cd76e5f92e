package efstest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs"
)

const fsID = "fs-0123456789abcdef0"

// mounter is the method set the agent uses; Dir must keep matching *efs.Mounter.
type mounter interface {
	Mount(ctx context.Context) error
	Verify(ctx context.Context) error
	Unmount(ctx context.Context) error
	MountPoint() string
	Source() string
}

var (
	_ mounter = (*Dir)(nil)
	_ mounter = (*efs.Mounter)(nil)
)

func TestDirLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jenkins_home")
	d := NewDir(path, fsID)
	if d.MountPoint() != path {
		t.Errorf("MountPoint = %q", d.MountPoint())
	}
	if err := d.Verify(t.Context()); err == nil || !strings.Contains(err.Error(), "nothing is mounted") {
		t.Fatalf("Verify before Mount = %v, want nothing mounted", err)
	}
	if err := d.Mount(t.Context()); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(path, efs.MarkerFile)); err != nil || string(b) != fsID+"\n" {
		t.Fatalf("marker = %q, %v; want the same marker the real mount writes", b, err)
	}
	if err := d.Mount(t.Context()); err != nil {
		t.Fatalf("second Mount: %v", err)
	}
	if err := d.Verify(t.Context()); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !d.Mounted() {
		t.Error("Mounted = false after Mount")
	}
	if err := d.Unmount(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := d.Unmount(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d.Mounted() {
		t.Error("Mounted = true after Unmount")
	}
	if err := d.Verify(t.Context()); err == nil {
		t.Error("Verify after Unmount passed")
	}
	if got, want := d.Calls(), (Calls{Mount: 2, Verify: 3, Unmount: 2}); got != want {
		t.Errorf("Calls = %+v, want %+v", got, want)
	}
	// The data stays, as on EFS.
	if _, err := os.Stat(filepath.Join(path, efs.MarkerFile)); err != nil {
		t.Errorf("marker gone after Unmount: %v", err)
	}
}

func TestDirSharedByTwoInstances(t *testing.T) {
	path := t.TempDir()
	old, next := NewDir(path, fsID), NewDir(path, fsID)
	if err := old.Mount(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := next.Mount(t.Context()); err != nil {
		t.Fatalf("second instance on the same file system: %v", err)
	}
}

func TestDirRefusesAnotherFileSystem(t *testing.T) {
	path := t.TempDir()
	if err := NewDir(path, "fs-12345678").Mount(t.Context()); err != nil {
		t.Fatal(err)
	}
	d := NewDir(path, fsID)
	err := d.Mount(t.Context())
	if err == nil || !strings.Contains(err.Error(), "fs-12345678") || !strings.Contains(err.Error(), fsID) {
		t.Fatalf("Mount over another file system's marker = %v, want an error naming both ids", err)
	}
	if d.Mounted() {
		t.Error("Mounted = true after a refused Mount")
	}
}

func TestDirCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	d := NewDir(filepath.Join(t.TempDir(), "h"), fsID)
	if err := d.Mount(ctx); err == nil {
		t.Fatal("Mount with a cancelled context passed")
	}
	if _, err := os.Stat(d.MountPoint()); err == nil {
		t.Error("Mount with a cancelled context created the directory")
	}
}
