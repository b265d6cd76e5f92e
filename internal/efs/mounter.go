// Package efs mounts the EFS file system that holds JENKINS_HOME, proves that the mount
// is that file system before anything writes to it, and unmounts it at the end.
package efs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Mount types: the kernel NFS client, or the amazon-efs-utils helper (TLS, IAM).
const (
	TypeNFS4 = "nfs4"
	TypeEFS  = "efs"
)

// DefaultMountOptions are the NFS options AWS recommends for EFS; noresvport lets the
// client reconnect on a new port after a network event instead of hanging.
const DefaultMountOptions = "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport"

// DefaultTimeout bounds DNS propagation and mount retries when Options.Timeout is zero.
const DefaultTimeout = 5 * time.Minute

// nfsSuperMagic is what statfs(2) reports for NFS; mountinfo alone could be fooled by a
// FUSE or bind mount that copies the source string.
const nfsSuperMagic = 0x6969

// dnsHint is the operator's next step when the name does not resolve.
const dnsHint = "a mount target must exist in this AZ and the VPC must have DNS hostnames enabled; new mount targets take up to 90 s"

// Resolver looks host names up; *net.Resolver satisfies it.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Options configure a Mounter. FileSystemID, MountPoint and DNSName are required.
type Options struct {
	FileSystemID string
	// MountPoint is the absolute host path of JENKINS_HOME.
	MountPoint string
	// DNSName is the server name, usually from DNSName().
	DNSName string
	// Type is TypeNFS4 (default) or TypeEFS.
	Type string
	// MountOptions are passed with -o; DefaultMountOptions for nfs4 when empty.
	MountOptions string
	// Timeout bounds waiting for DNS plus mount retries; DefaultTimeout when zero.
	Timeout time.Duration
	// Program is called as PROGRAM -t TYPE -o OPTIONS SOURCE TARGET; "mount" when empty.
	Program string
	// UnmountProgram is called as UNMOUNTPROGRAM TARGET; "umount" when empty.
	UnmountProgram string
	// ExpectFSTypes are the mountinfo types verification accepts; [nfs4] when empty
	// (amazon-efs-utils mounts nfs4 as well).
	ExpectFSTypes []string
	// MountInfoPath is read to find the mount; /proc/self/mountinfo when empty.
	MountInfoPath string
	// Resolver resolves DNSName before mounting; net.DefaultResolver when nil.
	Resolver Resolver
	// Logger receives progress; slog.Default() when nil.
	Logger *slog.Logger
}

// Mounter mounts, verifies and unmounts one EFS file system at one mount point.
type Mounter struct {
	opts   Options
	exp    expectation
	log    *slog.Logger
	source string

	// Retry pacing; fixed in production, shortened by tests.
	retryInitial time.Duration
	retryMax     time.Duration
	logEvery     time.Duration
}

// New checks opts and fills the defaults.
func New(opts Options) (*Mounter, error) {
	if err := ValidateFileSystemID(opts.FileSystemID); err != nil {
		return nil, fmt.Errorf("efs: %w", err)
	}
	if !filepath.IsAbs(opts.MountPoint) || filepath.Clean(opts.MountPoint) == "/" {
		return nil, fmt.Errorf("efs: mount point %q must be an absolute path other than /", opts.MountPoint)
	}
	opts.MountPoint = filepath.Clean(opts.MountPoint)
	if err := ValidateHostname(opts.DNSName); err != nil {
		return nil, fmt.Errorf("efs: %w", err)
	}
	switch opts.Type {
	case "":
		opts.Type = TypeNFS4
	case TypeNFS4, TypeEFS:
	default:
		return nil, fmt.Errorf("efs: mount type %q: want %s or %s", opts.Type, TypeNFS4, TypeEFS)
	}
	if opts.MountOptions == "" && opts.Type == TypeNFS4 {
		opts.MountOptions = DefaultMountOptions
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("efs: negative timeout %s", opts.Timeout)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Program == "" {
		opts.Program = "mount"
	}
	if opts.UnmountProgram == "" {
		opts.UnmountProgram = "umount"
	}
	if len(opts.ExpectFSTypes) == 0 {
		opts.ExpectFSTypes = []string{"nfs4"}
	}
	opts.ExpectFSTypes = append([]string(nil), opts.ExpectFSTypes...)
	if opts.MountInfoPath == "" {
		opts.MountInfoPath = "/proc/self/mountinfo"
	}
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Mounter{
		opts: opts,
		exp: expectation{
			mountPoint:   opts.MountPoint,
			fsTypes:      opts.ExpectFSTypes,
			fileSystemID: opts.FileSystemID,
			dnsName:      opts.DNSName,
			localProxy:   opts.Type == TypeEFS,
		},
		log:          opts.Logger.With("file_system_id", opts.FileSystemID, "mount_point", opts.MountPoint),
		source:       opts.DNSName + ":/",
		retryInitial: time.Second,
		retryMax:     15 * time.Second,
		logEvery:     15 * time.Second,
	}, nil
}

// Source is the source the mount is made from, as mountinfo shows it for nfs4.
func (m *Mounter) Source() string { return m.source }

// MountPoint is the cleaned mount point.
func (m *Mounter) MountPoint() string { return m.opts.MountPoint }

// Mount mounts the file system and verifies it. A mount point that already holds the
// verified file system is left as it is, so that an agent restarted on the same
// instance carries on; anything else mounted there is an error, never mounted over.
func (m *Mounter) Mount(ctx context.Context) error {
	entry, err := m.verify(ctx)
	switch {
	case err == nil:
		m.log.Info("EFS already mounted", "source", entry.Source)
		return nil
	case entry != nil:
		return fmt.Errorf("efs mount: %s already holds a mount from %q that is not the expected file system, refusing to mount over it: %w", m.opts.MountPoint, entry.Source, err)
	case !errors.As(err, new(errNotMounted)):
		return fmt.Errorf("efs mount: %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	if err := m.makeMountPoint(); err != nil {
		return err
	}
	if err := m.waitForDNS(ctx); err != nil {
		return err
	}
	if err := m.runMount(ctx); err != nil {
		return err
	}
	if err := m.Verify(ctx); err != nil {
		return fmt.Errorf("efs mount: mounted %s at %s, but verification failed; it is left mounted for inspection (umount %s): %w",
			m.source, m.opts.MountPoint, m.opts.MountPoint, err)
	}
	m.log.Info("EFS mounted and verified", "source", m.source, "mount_type", m.opts.Type, "mount_point", m.opts.MountPoint)
	return nil
}

func (m *Mounter) makeMountPoint() error {
	fi, err := os.Stat(m.opts.MountPoint)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(m.opts.MountPoint, 0o755); err != nil {
			return fmt.Errorf("efs mount: create mount point: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("efs mount: mount point: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("efs mount: mount point %s is not a directory; move it away or fix efs.mount_point", m.opts.MountPoint)
	}
	return nil
}

// waitForDNS waits until the name resolves: right after a mount target is created,
// or while the instance's resolver comes up, the name may not exist for a while.
func (m *Mounter) waitForDNS(ctx context.Context) error {
	start := time.Now()
	var lastLog time.Time
	for attempt := 0; ; attempt++ {
		lookupCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		addrs, err := m.opts.Resolver.LookupHost(lookupCtx, m.opts.DNSName)
		cancel()
		if err == nil && len(addrs) > 0 {
			if attempt > 0 {
				m.log.Info("EFS DNS name resolves", "name", m.opts.DNSName, "addresses", addrs, "waited", since(start))
			}
			return nil
		}
		if err == nil {
			err = errors.New("no addresses")
		}
		if lastLog.IsZero() || time.Since(lastLog) >= m.logEvery {
			lastLog = time.Now()
			m.log.Warn("waiting for EFS DNS name to resolve", "name", m.opts.DNSName,
				"waited", since(start), "timeout", m.opts.Timeout, "err", err, "hint", dnsHint)
		}
		if werr := m.sleep(ctx, attempt); werr != nil {
			return fmt.Errorf("efs mount: DNS name %s did not resolve within %s (last error: %v): %s", m.opts.DNSName, since(start), err, dnsHint)
		}
	}
}

// runMount runs the mount program, retrying while the failure looks like something
// that time fixes (DNS, security group propagation, a mount target still creating).
func (m *Mounter) runMount(ctx context.Context) error {
	args := []string{"-t", m.opts.Type}
	if m.opts.MountOptions != "" {
		args = append(args, "-o", m.opts.MountOptions)
	}
	args = append(args, m.source, m.opts.MountPoint)
	cmdline := m.opts.Program + " " + strings.Join(args, " ")
	start := time.Now()
	var lastFailure string
	for attempt := 0; ; attempt++ {
		out, err := runProgram(ctx, m.opts.Program, args...)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			// The run was cut short by the deadline; the last complete failure says more.
			if lastFailure == "" {
				lastFailure = fmt.Sprintf("%v %s", err, out)
			}
			return fmt.Errorf("efs mount: %s: gave up after %s (%v); last failure: %s; check that the mount target's security group allows TCP 2049 from this instance",
				cmdline, since(start), ctx.Err(), lastFailure)
		}
		if perr := classifyMountFailure(out, err); perr != nil {
			return fmt.Errorf("efs mount: %s: %w", cmdline, perr)
		}
		lastFailure = fmt.Sprintf("%s (%v)", out, err)
		m.log.Warn("EFS mount failed, retrying", "attempt", attempt+1, "output", out, "err", err, "waited", since(start))
		if werr := m.sleep(ctx, attempt); werr != nil {
			return fmt.Errorf("efs mount: %s: still failing after %s: %s; check that the mount target's security group allows TCP 2049 from this instance",
				cmdline, since(start), lastFailure)
		}
	}
}

// since rounds elapsed time for messages: milliseconds under a second, else seconds.
func since(start time.Time) time.Duration {
	d := time.Since(start)
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

// classifyMountFailure returns nil when the failure is worth retrying, or the error
// to stop with, saying what the operator should do.
func classifyMountFailure(output string, err error) error {
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		// Not started at all: missing or not executable.
		return fmt.Errorf("%w; install the mount program or fix efs.mount_program", err)
	}
	lower := strings.ToLower(output)
	switch {
	case strings.Contains(lower, "access denied by server"):
		return fmt.Errorf("%s: check the file system policy, the instance profile's IAM permissions (elasticfilesystem:ClientMount, ClientWrite) and the mount target's security group", output)
	case strings.Contains(lower, "unknown filesystem type 'efs'"):
		return fmt.Errorf("%s: mount type efs needs amazon-efs-utils installed, or use mount_type nfs4", output)
	}
	for _, transient := range []string{
		"connection timed out", "timed out", "name or service not known", "failed to resolve",
		"no route to host", "temporary failure in name resolution", "network is unreachable",
	} {
		if strings.Contains(lower, transient) {
			return nil
		}
	}
	return fmt.Errorf("%s: %w", output, err)
}

// runProgram runs a mount or umount program and returns its trimmed output. The
// program runs in its own process group so a cancelled context stops its helpers
// (mount.nfs, the efs-utils proxy launcher) too.
func runProgram(ctx context.Context, program string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, program, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	s := strings.TrimSpace(out.String())
	if len(s) > 2000 {
		s = s[:2000] + "..."
	}
	return s, err
}

// sleep waits the backoff of the attempt, or returns ctx's error when the deadline
// comes first; it never sleeps past the deadline only to fail afterwards.
func (m *Mounter) sleep(ctx context.Context, attempt int) error {
	d := backoff(attempt, m.retryInitial, m.retryMax, randFloat())
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		d = time.Until(dl)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			return context.DeadlineExceeded
		}
		return nil
	}
}

// Verify proves that the mount point holds the configured file system: the visible
// mountinfo entry has an expected type and source, statfs agrees for NFS, and the
// marker at the root names the file system id (written on first use).
func (m *Mounter) Verify(ctx context.Context) error {
	_, err := m.verify(ctx)
	return err
}

// verify returns the entry it judged, nil when nothing is mounted or mountinfo could
// not be read, so that Mount tells "mount it" from "something else is there".
func (m *Mounter) verify(ctx context.Context) (*mountinfo.Info, error) {
	infos, err := m.readMountTable()
	if err != nil {
		return nil, fmt.Errorf("efs verify: %w", err)
	}
	entry, err := checkMountTable(infos, m.expectation())
	if err != nil {
		return entry, fmt.Errorf("efs verify: %w", err)
	}
	if entry.FSType == "nfs" || entry.FSType == "nfs4" {
		if err := m.checkStatfs(ctx); err != nil {
			return entry, err
		}
	}
	created, err := EnsureMarker(m.opts.MountPoint, m.opts.FileSystemID)
	if err != nil {
		return entry, fmt.Errorf("efs verify: %w", err)
	}
	if created {
		m.log.Info("fresh EFS file system: wrote its marker", "marker", filepath.Join(m.opts.MountPoint, MarkerFile))
	}
	return entry, nil
}

func (m *Mounter) readMountTable() ([]*mountinfo.Info, error) {
	f, err := os.Open(m.opts.MountInfoPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	infos, err := mountinfo.GetMountsFromReader(f, nil)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", m.opts.MountInfoPath, err)
	}
	return infos, nil
}

// checkStatfs runs statfs off the caller's goroutine: on a hard NFS mount with an
// unreachable server it can block for minutes, and the caller's deadline must hold.
func (m *Mounter) checkStatfs(ctx context.Context) error {
	type result struct {
		kind int64
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		var st unix.Statfs_t
		err := unix.Statfs(m.opts.MountPoint, &st)
		ch <- result{int64(st.Type), err}
	}()
	select {
	case <-ctx.Done():
		return fmt.Errorf("efs verify: statfs %s: %w; the NFS server does not answer", m.opts.MountPoint, ctx.Err())
	case r := <-ch:
		if r.err != nil {
			return fmt.Errorf("efs verify: statfs %s: %w", m.opts.MountPoint, r.err)
		}
		if r.kind != nfsSuperMagic {
			return fmt.Errorf("efs verify: statfs %s reports file system type %#x, expected NFS (%#x): mountinfo and the kernel disagree; unmount it and mount again", m.opts.MountPoint, r.kind, nfsSuperMagic)
		}
		return nil
	}
}

// Unmount unmounts the file system with a plain umount: never lazily, because a
// lazy unmount would let a still-running writer go on writing to the home while a
// successor starts on it. Nothing mounted is success.
func (m *Mounter) Unmount(ctx context.Context) error {
	mounted, err := m.mounted()
	if err != nil {
		return fmt.Errorf("efs unmount: %w", err)
	}
	if !mounted {
		m.log.Info("EFS not mounted, nothing to unmount")
		return nil
	}
	out, err := runProgram(ctx, m.opts.UnmountProgram, m.opts.MountPoint)
	if err == nil {
		m.log.Info("EFS unmounted")
		return nil
	}
	lower := strings.ToLower(out)
	switch {
	case strings.Contains(lower, "not mounted"):
		return nil
	case strings.Contains(lower, "target is busy") || strings.Contains(lower, "device is busy"):
		return fmt.Errorf("efs unmount %s: %s: a process still uses the home (Jenkins still running?); stop it first (fuser -vm %s shows who)", m.opts.MountPoint, out, m.opts.MountPoint)
	}
	return fmt.Errorf("efs unmount %s: %s: %w", m.opts.MountPoint, out, err)
}

func (m *Mounter) mounted() (bool, error) {
	infos, err := m.readMountTable()
	if err != nil {
		return false, err
	}
	return topMount(infos, m.expectation().mountPoint) != nil, nil
}

// expectation returns what verification accepts, with the mount point as mountinfo
// shows it: the kernel lists mount points with symbolic links resolved.
func (m *Mounter) expectation() expectation {
	exp := m.exp
	if p, err := filepath.EvalSymlinks(exp.mountPoint); err == nil {
		exp.mountPoint = p
	}
	return exp
}
