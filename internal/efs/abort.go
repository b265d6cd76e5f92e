package efs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// nfsSysfs is where Linux (6.7 and later) exposes a switch per NFS client that fails
// every outstanding and later RPC of that mount.
var nfsSysfs = "/sys/fs/nfs"

// abortRetry is the pause between two forced unmounts: writeback can start again
// between them.
const abortRetry = 200 * time.Millisecond

// Abort cuts this instance off the home after a fence for a stall, so that the dirty
// pages of the Jenkins it killed can never be written back into a home a successor
// holds: a hard NFS mount keeps retrying those writes, and they would land once the
// server answers again. It shuts the mount's NFS client down where the kernel has the
// switch (/sys/fs/nfs/MAJOR:MINOR/shutdown: every RPC fails with EIO, the dirty pages
// are dropped), and otherwise forces the unmount (MNT_FORCE aborts the RPCs in flight)
// until the mount is gone, then detaches whatever remains. It blocks on the kernel,
// bounded by ctx. Idempotent: nothing mounted is success. An error means the mount may
// still write: the instance should end.
func (m *Mounter) Abort(ctx context.Context) error {
	infos, err := m.readMountTable()
	if err != nil {
		return fmt.Errorf("efs abort: %w", err)
	}
	exp, err := m.expectation(ctx)
	if err != nil {
		return fmt.Errorf("efs abort: %w", err)
	}
	top := topMount(infos, exp.mountPoint)
	if top == nil {
		return nil
	}
	if shut := filepath.Join(nfsSysfs, fmt.Sprintf("%d:%d", top.Major, top.Minor), "shutdown"); shutDown(shut) {
		m.log.Warn("NFS client of the home shut down: its pending writes fail instead of landing late", "switch", shut)
	}
	for {
		_, err := onHome(ctx, "forced unmount", func() (struct{}, error) {
			return struct{}{}, unix.Unmount(exp.mountPoint, unix.MNT_FORCE)
		})
		if err == nil || errors.Is(err, unix.EINVAL) {
			// Unmounted, or nothing mounted there any more.
			m.log.Warn("home unmounted by force after a fence", "mount_point", exp.mountPoint)
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(abortRetry):
		}
	}
	// Busy to the end: detach it, so nothing more reaches the home through this
	// instance. The RPCs MNT_FORCE aborted have failed; later writeback may not.
	if err := unix.Unmount(exp.mountPoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("efs abort %s: the home could not be cut off (%v); power the instance off: Jenkins' pending writes may still reach the file system", exp.mountPoint, err)
	}
	return fmt.Errorf("efs abort %s: still busy after forced unmounts; detached, but writes already queued may still land: power the instance off", exp.mountPoint)
}

// shutDown flips the NFS client's shutdown switch; false when the kernel has none.
func shutDown(path string) bool {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	_, err = f.WriteString("1")
	return err == nil
}
