// Package efstest provides a local directory that stands in for the EFS mount, for
// the simulate command and for tests that cannot mount (no root, no NFS client).
package efstest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs"
)

// Dir behaves like efs.Mounter on a plain directory: Mount creates the directory and
// checks or writes the same marker the real mount does, so a directory shared by two
// simulated instances is checked the way EFS is; Unmount only records the call.
//
// Whether the home is "mounted" belongs to the simulated host, as a mount belongs to
// the instance's mount table: a Dir built again on the same host (an agent restarted
// there) finds it mounted, while another host's Dir on the same directory does not.
type Dir struct {
	path         string
	fileSystemID string
	table        *mountTable

	mu    sync.Mutex
	calls Calls
}

// mountTable is one simulated host's record of whether the directory is mounted.
type mountTable struct {
	mu      sync.Mutex
	mounted bool
}

// tables holds the mount tables by host, directory and file system.
var tables sync.Map // "host\x00path\x00fs" → *mountTable

func tableFor(host, path, fileSystemID string) *mountTable {
	t, _ := tables.LoadOrStore(host+"\x00"+path+"\x00"+fileSystemID, &mountTable{})
	return t.(*mountTable)
}

func (d *Dir) setMounted(v bool) {
	d.table.mu.Lock()
	d.table.mounted = v
	d.table.mu.Unlock()
}

// Mounted reports whether Mount succeeded on this host and no Unmount or Abort followed.
func (d *Dir) Mounted() bool {
	d.table.mu.Lock()
	defer d.table.mu.Unlock()
	return d.table.mounted
}

// Calls counts the calls made on a Dir.
type Calls struct {
	Mount, Verify, Unmount, Abort int
}

// NewDir returns a Dir at path standing in for the file system fileSystemID, on a host
// of its own.
func NewDir(path, fileSystemID string) *Dir {
	return NewDirOn(path, fileSystemID, "")
}

// NewDirOn returns a Dir at path standing in for the file system fileSystemID as the
// simulated host sees it: a Dir built again with the same host shares its mount state.
func NewDirOn(path, fileSystemID, host string) *Dir {
	return &Dir{path: path, fileSystemID: fileSystemID, table: tableFor(host, path, fileSystemID)}
}

// Mount creates the directory and checks its marker; calling it again is harmless,
// like remounting an already verified file system.
func (d *Dir) Mount(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls.Mount++
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("efs mount: %w", err)
	}
	if err := os.MkdirAll(d.path, 0o755); err != nil {
		return fmt.Errorf("efs mount: create mount point: %w", err)
	}
	if _, err := efs.EnsureMarker(ctx, d.path, d.fileSystemID); err != nil {
		return fmt.Errorf("efs mount: %w", err)
	}
	d.setMounted(true)
	return nil
}

// Verify fails when Mount has not succeeded (or Unmount came after it), as the real
// Verify fails on a bare mount point, and otherwise checks the marker.
func (d *Dir) Verify(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls.Verify++
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("efs verify: %w", err)
	}
	if !d.Mounted() {
		return errors.New("efs verify: nothing is mounted at " + d.path + ": call Mount first")
	}
	if _, err := efs.EnsureMarker(ctx, d.path, d.fileSystemID); err != nil {
		return fmt.Errorf("efs verify: %w", err)
	}
	return nil
}

// Unmount records the call; the directory and its contents stay, as EFS data does.
func (d *Dir) Unmount(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls.Unmount++
	d.setMounted(false)
	return nil
}

// Abort stands in for cutting the home off after a fence: like the real one, the home
// is no longer reachable through this instance (Verify fails) until Mount runs again.
func (d *Dir) Abort(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls.Abort++
	d.setMounted(false)
	return nil
}

// MountPoint is the directory.
func (d *Dir) MountPoint() string { return d.path }

// Source names the stand-in, for logs and status.
func (d *Dir) Source() string { return "local directory " + d.path }

// Calls returns how often each method was called.
func (d *Dir) Calls() Calls {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls
}
