package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// The agent's own files on the home live in one directory at its top, beside the lease.
// The Jenkins user owns the home's root and could swap that directory or a file in it
// for a symlink or a FIFO, so the agent (root) opens them relative to directory
// descriptors, never follows a link, and refuses anything but a regular file. Every
// operation on the home runs behind the caller's deadline: on a hung hard NFS mount a
// syscall never returns, and the agent must not hang with it.
const (
	ownDir       = ".jenkins-spot-agent"
	abortedNotes = "aborted-builds.json"
	homeCallCap  = 5 * time.Second
	maxNoteBytes = 1 << 20
)

// onHome runs f, which touches the home, and gives up waiting for it when ctx ends (f
// goes on in the background until the kernel lets it return).
func onHome(ctx context.Context, f func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("the home did not answer in time (a hung EFS mount?): %w", ctx.Err())
	}
}

// giveHome hands a fresh home to the container's user, so Jenkins does not run as root.
// Only a home that holds nothing but the agent's own files counts as fresh.
func (a *Agent) giveHome(ctx context.Context, h *host) error {
	home := h.mounter.MountPoint()
	uid, gid := a.cfg.Jenkins.UID, a.cfg.Jenkins.GID
	cctx, cancel := context.WithTimeout(ctx, homeCallCap)
	defer cancel()
	return onHome(cctx, func() error {
		fi, err := os.Lstat(home)
		if err != nil {
			return fmt.Errorf("jenkins home: %w", err)
		}
		if owner(fi) == uid {
			return nil
		}
		entries, err := os.ReadDir(home)
		if err != nil {
			return fmt.Errorf("jenkins home: %w", err)
		}
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ownDir) {
				a.log.Warn("JENKINS_HOME is not owned by the Jenkins user; leaving its ownership alone",
					"home", home, "want_uid", uid, "hint", fmt.Sprintf("chown -R %d:%d the home if Jenkins cannot write it", uid, gid))
				return nil
			}
		}
		if err := os.Lchown(home, uid, gid); err != nil {
			if errors.Is(err, os.ErrPermission) {
				a.log.Warn("cannot give the fresh home to the Jenkins user (not root, or the file system squashes root)", "home", home)
				return nil
			}
			return fmt.Errorf("jenkins home: give it to %d:%d: %w", uid, gid, err)
		}
		a.log.Info("fresh JENKINS_HOME given to the Jenkins user", "home", home, "uid", uid, "gid", gid)
		return nil
	})
}

func owner(fi os.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

// writeNote replaces one of the agent's files on the home atomically.
func writeNote(ctx context.Context, home, name string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return onHome(ctx, func() error {
		dir, err := openOwnDir(home)
		if err != nil {
			return err
		}
		defer unix.Close(dir)
		tmp := name + ".tmp"
		_ = unix.Unlinkat(dir, tmp, 0)
		fd, err := unix.Openat(dir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		f := os.NewFile(uintptr(fd), tmp)
		_, err = f.Write(data)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = unix.Renameat(dir, tmp, dir, name)
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		return unix.Fsync(dir)
	})
}

// readNote reads one of the agent's files on the home into v; ok is false when it does
// not exist. A link, a FIFO or anything but a regular file is refused, unread.
func readNote(ctx context.Context, home, name string, v any) (ok bool, err error) {
	err = onHome(ctx, func() error {
		dir, err := openOwnDir(home)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return err
		}
		defer unix.Close(dir)
		fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w; it must be a regular file owned by root: remove it", filepath.Join(home, ownDir, name), err)
		}
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if !fi.Mode().IsRegular() || fi.Size() > maxNoteBytes {
			return fmt.Errorf("%s is not a regular file of the agent's (mode %s, %d bytes): remove it",
				filepath.Join(home, ownDir, name), fi.Mode().Type(), fi.Size())
		}
		data := make([]byte, fi.Size())
		if _, err := f.ReadAt(data, 0); err != nil && fi.Size() > 0 {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if err := json.Unmarshal(data, v); err != nil {
			return fmt.Errorf("%s is unreadable (%v): remove it", filepath.Join(home, ownDir, name), err)
		}
		ok = true
		return nil
	})
	return ok, err
}

// removeNote removes one of the agent's files on the home; a missing one is success.
func removeNote(ctx context.Context, home, name string) error {
	return onHome(ctx, func() error {
		dir, err := openOwnDir(home)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return err
		}
		defer unix.Close(dir)
		if err := unix.Unlinkat(dir, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove %s: %w", name, err)
		}
		return nil
	})
}

// openOwnDir opens the agent's directory at the top of the home, refusing a link.
func openOwnDir(home string) (int, error) {
	root, err := unix.Open(home, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open home %s: %w", home, err)
	}
	defer unix.Close(root)
	dir, err := unix.Openat(root, ownDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return -1, err
	}
	if err != nil {
		return -1, fmt.Errorf("open %s: %w; it must be the agent's own directory, not a link: move it away", filepath.Join(home, ownDir), err)
	}
	return dir, nil
}

// abortedRecord is what the stopping controller leaves for its successor.
type abortedRecord struct {
	By     string                `json:"by"`
	At     time.Time             `json:"at"`
	Builds []status.AbortedBuild `json:"builds"`
}
