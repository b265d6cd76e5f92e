package efs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// AgentDir is the directory, at the top of the home, that holds the agent's own files:
// the lease record lives there (lease.DirName names the same directory), and the root
// access probe is made there.
const AgentDir = ".jenkins-spot-agent"

// homeOpTimeout bounds an operation on the home whose caller gave no deadline: on a
// hard NFS mount whose server is gone a file operation never returns.
const homeOpTimeout = 2 * time.Minute

// maxStuckOps bounds the operations on the home still blocked after their callers
// stopped waiting. Each holds an OS thread in the kernel; an agent that kept checking
// a dead server would otherwise pile them up until the runtime's thread limit.
const maxStuckOps = 16

// stuckOps counts the operations on the home whose callers gave up on them.
var stuckOps atomic.Int32

// ErrHomeNotAnswering is wrapped by errors of operations on the home that did not
// return before the caller's deadline.
var ErrHomeNotAnswering = errors.New("the file system does not answer")

// onHome runs op, a file operation on the home, off the caller's goroutine and waits
// for it until ctx ends. A system call on a hung NFS mount cannot be cancelled: op may
// go on blocking after onHome returned, and its result is then dropped.
func onHome[T any](ctx context.Context, what string, op func() (T, error)) (T, error) {
	var zero T
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, homeOpTimeout)
		defer cancel()
	}
	if n := stuckOps.Load(); n >= maxStuckOps {
		return zero, fmt.Errorf("%s: %w: %d earlier operations on it have not returned; check the NFS server (the mount target, its security group) and restart the agent once it answers", what, ErrHomeNotAnswering, n)
	}
	type result struct {
		v   T
		err error
	}
	const (
		running int32 = iota
		finished
		abandoned
	)
	done := make(chan result, 1)
	var state atomic.Int32
	go func() {
		v, err := op()
		done <- result{v, err}
		if !state.CompareAndSwap(running, finished) {
			stuckOps.Add(-1) // the caller gave up on it and counted it
		}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		stuckOps.Add(1)
		if state.CompareAndSwap(running, abandoned) {
			return zero, fmt.Errorf("%s: %w within the deadline (%w): a hard NFS mount whose server is gone blocks every access; check the mount target and its security group (TCP 2049)", what, ErrHomeNotAnswering, ctx.Err())
		}
		stuckOps.Add(-1)
		r := <-done // it finished meanwhile; its result was sent first
		return r.v, r.err
	}
}

// ErrRootSquashed is wrapped by CheckRootAccess when root may not give files away on
// the home: the file system squashes root.
var ErrRootSquashed = errors.New("root is squashed on the home")

// RootSquashFix is the operator's way out of a squashed root, given the Jenkins user.
func RootSquashFix(uid, gid int) string {
	return fmt.Sprintf("grant elasticfilesystem:ClientRootAccess to the instance role in the file system policy (and mount with iam); "+
		"an access point (efs.access_point) must not enforce a POSIX user (give it a root directory owned by %d:%d, jenkins.uid/gid, instead)", uid, gid)
}

// CheckRootAccess proves that root may write on the home and give a file to the
// Jenkins user: it creates a probe file in AgentDir (creating that too), chowns it to
// uid:gid and removes it. On an EFS whose policy does not grant ClientRootAccess, or
// through an access point with another POSIX user, root is squashed and the marker,
// the lease, the chown of a fresh home and migrate would fail with a bare EPERM; the
// error here wraps ErrRootSquashed and names the fix. Links are not followed: the
// Jenkins user owns the home and could point AgentDir elsewhere.
func CheckRootAccess(ctx context.Context, home string, uid, gid int) error {
	_, err := onHome(ctx, "efs root access: "+home, func() (struct{}, error) {
		return struct{}{}, probeRootAccess(home, uid, gid)
	})
	return err
}

func probeRootAccess(home string, uid, gid int) error {
	squashed := func(step string, err error) error {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return fmt.Errorf("efs root access: %s on %s: %w: %w; %s", step, home, err, ErrRootSquashed, RootSquashFix(uid, gid))
		}
		return fmt.Errorf("efs root access: %s on %s: %w", step, home, err)
	}
	dir, err := unix.Open(home, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("efs root access: open %s: %w", home, err)
	}
	defer unix.Close(dir)
	if err := unix.Mkdirat(dir, AgentDir, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return squashed("create "+AgentDir, err)
	}
	agent, err := unix.Openat(dir, AgentDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("efs root access: %s is not a directory (a symbolic link?): the agent keeps its lease there; move it away (mv %s %s.moved)",
				filepath.Join(home, AgentDir), filepath.Join(home, AgentDir), filepath.Join(home, AgentDir))
		}
		return squashed("open "+AgentDir, err)
	}
	defer unix.Close(agent)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("efs root access: %w", err)
	}
	name := "root-access-probe-" + hex.EncodeToString(b[:])
	fd, err := unix.Openat(agent, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return squashed("create a probe file in "+AgentDir, err)
	}
	// The file must be root's: an access point with a POSIX user maps root to that user,
	// and then the Jenkins user owns the agent's files, the lease among them.
	var st unix.Stat_t
	statErr := unix.Fstat(fd, &st)
	chownErr := unix.Fchown(fd, uid, gid)
	unix.Close(fd)
	rmErr := unix.Unlinkat(agent, name, 0)
	if statErr == nil && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("efs root access: a file root creates on %s belongs to uid %d: %w (an access point with a POSIX user?): "+
			"the lease on JENKINS_HOME must stay apart from the Jenkins user; %s", home, st.Uid, ErrRootSquashed, RootSquashFix(uid, gid))
	}
	if chownErr != nil {
		return squashed(fmt.Sprintf("chown a probe file to %d:%d", uid, gid), chownErr)
	}
	if rmErr != nil {
		return squashed("remove the probe file "+filepath.Join(AgentDir, name), rmErr)
	}
	return nil
}

// localEntries returns up to max names in the local directory at the mount point.
func localEntries(ctx context.Context, dir string, max int) ([]string, error) {
	return onHome(ctx, "efs mount: read mount point "+dir, func() ([]string, error) {
		f, err := os.Open(dir)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		names, err := f.Readdirnames(max)
		if errors.Is(err, io.EOF) {
			err = nil
		}
		return names, err
	})
}

// ErrLocalFiles is wrapped by Mount's refusal to mount over a bare mount point that
// holds files but no marker.
var ErrLocalFiles = errors.New("the bare mount point holds files")

// checkLocalMountPoint refuses to mount over a local directory that holds files but no
// marker: something wrote into the bare mount point, most likely a Jenkins container
// left by an old compose file (restart: always) that dockerd started at boot. Mounting
// over it would hide those files while that container keeps the Jenkins port, and the
// agent's Jenkins would restart-loop on the clash.
func (m *Mounter) checkLocalMountPoint(ctx context.Context) error {
	names, err := localEntries(ctx, m.opts.MountPoint, 8)
	if err != nil {
		return err
	}
	if len(names) == 0 || slices.Contains(names, MarkerFile) {
		return nil
	}
	// Readdirnames stops after the first names; the marker may be further on.
	if _, err := onHome(ctx, "efs mount: stat marker", func() (fs.FileInfo, error) {
		return os.Lstat(filepath.Join(m.opts.MountPoint, MarkerFile))
	}); err == nil {
		return nil
	}
	slices.Sort(names)
	mp := m.opts.MountPoint
	who := "a Jenkins container left by an old compose file (restart: always) may be writing there: find it with `docker ps -a --filter volume=" + mp + "`, remove it with `docker rm -f NAME`"
	if m.opts.Occupants != nil {
		occ, oerr := m.opts.Occupants(ctx)
		switch {
		case oerr != nil:
			m.log.Warn("cannot list the containers that use the mount point", "err", oerr)
		case len(occ) > 0:
			who = "containers that bind-mount it or publish a Jenkins port: " + strings.Join(occ, ", ") + "; remove them with `docker rm -f " + strings.Join(occ, " ") + "`"
		}
	}
	return fmt.Errorf("efs mount: nothing is mounted at %s, but it holds files of its own (%s) and no marker %s: %w, something wrote into the bare local directory; "+
		"%s (and the compose file that starts it), move the files away (mv %s %s.local && mkdir %s), then start the agent again; the agent does not mount over them",
		mp, strings.Join(names, ", "), MarkerFile, ErrLocalFiles, who, mp, mp, mp)
}
