// Package efs mounts the EFS file system that holds JENKINS_HOME, proves that the mount
// is that file system before anything writes to it, and unmounts it at the end.
package efs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
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

// DefaultMountOptions are the NFS options AWS recommends for EFS (noresvport lets the
// client reconnect on a new port after a network event instead of hanging), and
// nosuid,nodev: the Jenkins user owns the home, and a setuid binary or a device node
// planted there must not give it root on the host.
const DefaultMountOptions = "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport,nosuid,nodev"

// DefaultEFSMountOptions are the options for mount type efs when none are given:
// amazon-efs-utils adds the recommended NFS options itself.
const DefaultEFSMountOptions = "nosuid,nodev"

// DefaultTimeout bounds DNS propagation and mount retries when Options.Timeout is zero.
const DefaultTimeout = 5 * time.Minute

// Scopes: how the mount program is run. amazon-efs-utils starts a process the mount
// needs for as long as it exists (efs-proxy, or stunnel for TLS); run from the agent's
// systemd service it lands in the agent's cgroup, and every stop or restart of the
// agent (KillMode=mixed) kills it and hangs the mount under a running Jenkins.
const (
	// ScopeAuto runs the mount program through systemd-run --scope when systemd runs
	// the machine and the mount type is efs; directly otherwise (the kernel NFS client
	// leaves no process behind).
	ScopeAuto = "auto"
	// ScopeSystemdRun always runs it in a transient scope unit of its own:
	// systemd-run --scope --collect --quiet --unit=jenkins-spot-agent-mount-... PROGRAM ...
	ScopeSystemdRun = "systemd-run"
	// ScopeNone runs it as a child of the agent, in the agent's cgroup.
	ScopeNone = "none"
)

// nfsSuperMagic is what statfs(2) reports for NFS; mountinfo alone could be fooled by a
// FUSE or bind mount that copies the source string.
const nfsSuperMagic = 0x6969

// dnsHint is the operator's next step when the name does not resolve.
const dnsHint = "a mount target must exist in this AZ and the VPC must have DNS hostnames enabled; new mount targets take up to 90 s"

var accessPointPattern = regexp.MustCompile(`^fsap-[0-9a-f]{17}$`)

// managedOptions are the helper options the agent sets from the configuration
// (efs.dns, efs.access_point); mount_options may not set them.
var managedOptions = []string{"az", "accesspoint", "mounttargetip"}

// Resolver looks host names up; *net.Resolver satisfies it.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Options configure a Mounter. FileSystemID, MountPoint and DNSName are required.
type Options struct {
	FileSystemID string
	// MountPoint is the absolute host path of JENKINS_HOME.
	MountPoint string
	// DNSName is the file system's name, usually from DNSName(). Type nfs4 mounts by it
	// (after waiting for it to resolve) unless MountTargets is set. Type efs mounts by the
	// file system id when DNSName is an EFS name of it, with az=<zone> for a zone's name,
	// and leaves resolution (and its fallback to the mount target IP) to
	// amazon-efs-utils; by DNSName itself when it is the operator's own name.
	DNSName string
	// AvailabilityZone is the instance's zone; required with MountTargets.
	AvailabilityZone string
	// MountTargets, when set, looks this zone's mount target IP up at mount time
	// (efs.dns: mount-target-ip): type nfs4 mounts IP:/, type efs passes mounttargetip=IP.
	MountTargets MountTargetLookup
	// AccessPoint is an EFS access point id (fsap- and 17 hex digits), type efs only:
	// passed as accesspoint=, with tls and iam, which amazon-efs-utils needs for it.
	AccessPoint string
	// Type is TypeNFS4 (default) or TypeEFS.
	Type string
	// MountOptions are passed with -o; DefaultMountOptions for nfs4 and
	// DefaultEFSMountOptions for efs when empty.
	MountOptions string
	// Timeout bounds Mount: waiting for DNS or the mount target, mount retries and the
	// checks; DefaultTimeout when zero.
	Timeout time.Duration
	// Program is called as PROGRAM -t TYPE -o OPTIONS SOURCE TARGET; "mount" when empty.
	Program string
	// Scope is ScopeAuto (default), ScopeSystemdRun or ScopeNone.
	Scope string
	// SystemdRun is the systemd-run program; "systemd-run" when empty.
	SystemdRun string
	// SystemdDir exists when systemd runs the machine (sd_booted); ScopeAuto looks
	// for it. "/run/systemd/system" when empty.
	SystemdDir string
	// UnmountProgram is called as UNMOUNTPROGRAM TARGET; "umount" when empty.
	UnmountProgram string
	// ExpectFSTypes are the mountinfo types verification accepts; [nfs4] when empty
	// (amazon-efs-utils mounts nfs4 as well).
	ExpectFSTypes []string
	// MountInfoPath is read to find the mount; /proc/self/mountinfo when empty.
	MountInfoPath string
	// OwnerUID and OwnerGID are the Jenkins user (jenkins.uid/gid): Mount proves that
	// root may give a file on the home to them (CheckRootAccess).
	OwnerUID, OwnerGID int
	// Occupants, when set, names the containers that may write into the bare mount
	// point (bind-mounting it or publishing a Jenkins port), for the error that refuses
	// to mount over a local directory holding files.
	Occupants func(ctx context.Context) ([]string, error)
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
	scoped bool

	mu     sync.Mutex
	source string // the source given to the mount program last, or the planned one

	// statfsTypes maps the mountinfo types whose statfs(2) type is checked to the
	// type statfs must report: NFS in production; tests add tmpfs.
	statfsTypes map[string]int64

	// Retry pacing; fixed in production, shortened by tests.
	retryInitial time.Duration
	retryMax     time.Duration
	logEvery     time.Duration
}

// New checks opts and fills the defaults. With ScopeAuto it looks for systemd and
// systemd-run; it contacts nothing.
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
	if opts.MountOptions == "" {
		opts.MountOptions = DefaultMountOptions
		if opts.Type == TypeEFS {
			opts.MountOptions = DefaultEFSMountOptions
		}
	}
	if err := CheckMountOptions(opts.Type, opts.MountOptions); err != nil {
		return nil, fmt.Errorf("efs: %w", err)
	}
	if opts.AccessPoint != "" {
		if err := CheckAccessPoint(opts.AccessPoint); err != nil {
			return nil, fmt.Errorf("efs: %w", err)
		}
		if opts.Type != TypeEFS {
			return nil, fmt.Errorf("efs: access point %s needs mount type %s (amazon-efs-utils)", opts.AccessPoint, TypeEFS)
		}
	}
	if opts.MountTargets != nil && opts.AvailabilityZone == "" {
		return nil, errors.New("efs: looking the mount target up needs the availability zone")
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
	if opts.SystemdRun == "" {
		opts.SystemdRun = "systemd-run"
	}
	if opts.SystemdDir == "" {
		opts.SystemdDir = "/run/systemd/system"
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
	m := &Mounter{
		opts: opts,
		exp: expectation{
			mountPoint:   opts.MountPoint,
			fsTypes:      opts.ExpectFSTypes,
			fileSystemID: opts.FileSystemID,
			dnsName:      opts.DNSName,
		},
		log:          opts.Logger.With("file_system_id", opts.FileSystemID, "mount_point", opts.MountPoint),
		statfsTypes:  map[string]int64{"nfs": nfsSuperMagic, "nfs4": nfsSuperMagic},
		retryInitial: time.Second,
		retryMax:     15 * time.Second,
		logEvery:     15 * time.Second,
	}
	m.source, _ = m.helperArgs("")
	switch opts.Scope {
	case ScopeSystemdRun:
		m.scoped = true
	case ScopeNone:
	case "", ScopeAuto:
		m.scoped = m.autoScope()
	default:
		return nil, fmt.Errorf("efs: mount scope %q: want %s, %s or %s", opts.Scope, ScopeAuto, ScopeSystemdRun, ScopeNone)
	}
	return m, nil
}

// autoScope decides ScopeAuto: a scope when amazon-efs-utils may leave a process
// behind and systemd is there to hold it.
func (m *Mounter) autoScope() bool {
	if m.opts.Type != TypeEFS {
		return false
	}
	if fi, err := os.Stat(m.opts.SystemdDir); err != nil || !fi.IsDir() {
		return false
	}
	if _, err := exec.LookPath(m.opts.SystemdRun); err != nil {
		m.log.Warn("systemd runs this machine but systemd-run is missing: amazon-efs-utils' tunnel will live in the agent's cgroup, and a restart of the agent kills it",
			"systemd_run", m.opts.SystemdRun, "err", err)
		return false
	}
	return true
}

// CheckAccessPoint reports whether id has the shape of an EFS access point id:
// "fsap-" and 17 lowercase hex digits.
func CheckAccessPoint(id string) error {
	if !accessPointPattern.MatchString(id) {
		return fmt.Errorf("access point %q is not fsap- followed by 17 lowercase hex digits (e.g. fsap-0123456789abcdef0)", id)
	}
	return nil
}

// CheckMountOptions reports whether options (comma-separated, as given to -o) suit the
// mount type: the agent sets az=, accesspoint= and mounttargetip= itself, and tls and
// iam are amazon-efs-utils options that mount.nfs refuses.
func CheckMountOptions(mountType, options string) error {
	if strings.ContainsAny(options, " \t\n") {
		return errors.New("mount options must be one comma-separated word without spaces")
	}
	for _, o := range strings.Split(options, ",") {
		k, _, _ := strings.Cut(o, "=")
		switch {
		case o == "":
			return fmt.Errorf("mount options %q hold an empty option", options)
		case slices.Contains(managedOptions, k):
			return fmt.Errorf("mount option %s is set by the agent (from efs.dns and efs.access_point); remove it from the mount options", k)
		case mountType != TypeEFS && (k == "tls" || k == "iam" || k == "notls"):
			return fmt.Errorf("mount option %s needs mount type %s (amazon-efs-utils); the kernel NFS client refuses it", k, TypeEFS)
		}
	}
	return nil
}

// Source is the source given to the mount program: the DNS name (nfs4), the file
// system id (efs with an EFS name), or, once a mount looked it up, the mount target's
// IP (nfs4 with efs.dns mount-target-ip).
func (m *Mounter) Source() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.source
}

// MountPoint is the cleaned mount point.
func (m *Mounter) MountPoint() string { return m.opts.MountPoint }

// Mount mounts the file system and verifies it, then proves that root may give files
// on it to the Jenkins user (CheckRootAccess). A mount point that already holds the
// verified file system is left as it is, so that an agent restarted on the same
// instance carries on; anything else mounted there is an error, never mounted over,
// and so is a bare mount point holding files but no marker. All of it, file
// operations on the home included, ends by Options.Timeout or ctx's deadline.
func (m *Mounter) Mount(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	entry, err := m.verify(ctx, trustExisting)
	switch {
	case err == nil:
		m.log.Info("EFS already mounted", "source", entry.Source)
	case entry != nil && !errors.Is(err, ErrRootSquashed) && !errors.Is(err, ErrHomeNotAnswering):
		return fmt.Errorf("efs mount: %s already holds a mount from %q that is not the expected file system, refusing to mount over it: %w", m.opts.MountPoint, entry.Source, err)
	case !errors.Is(err, ErrNotMounted):
		return fmt.Errorf("efs mount: %w", err)
	default:
		if err := m.mount(ctx); err != nil {
			return err
		}
	}
	if err := CheckRootAccess(ctx, m.opts.MountPoint, m.opts.OwnerUID, m.opts.OwnerGID); err != nil {
		return fmt.Errorf("efs mount: %s is mounted and verified (and left mounted), but Jenkins cannot be given its home: %w", m.opts.MountPoint, err)
	}
	return nil
}

// mount mounts the file system on the bare mount point and verifies it.
func (m *Mounter) mount(ctx context.Context) error {
	if err := m.makeMountPoint(ctx); err != nil {
		return err
	}
	if err := m.checkLocalMountPoint(ctx); err != nil {
		return err
	}
	var ip string
	switch {
	case m.opts.MountTargets != nil:
		var err error
		if ip, err = m.waitForMountTarget(ctx); err != nil {
			return err
		}
	case m.opts.Type == TypeNFS4:
		// amazon-efs-utils resolves the name itself, and falls back to the mount target
		// IP only when it is not waited for here.
		if err := m.waitForDNS(ctx); err != nil {
			return err
		}
	}
	source, options := m.helperArgs(ip)
	m.mu.Lock()
	m.source = source
	m.mu.Unlock()
	if err := m.runMount(ctx, source, options); err != nil {
		return err
	}
	if _, err := m.verify(ctx, trustOwnMount); err != nil {
		return fmt.Errorf("efs mount: mounted %s at %s, but verification failed; it is left mounted for inspection (umount %s): %w",
			source, m.opts.MountPoint, m.opts.MountPoint, err)
	}
	m.log.Info("EFS mounted and verified", "source", source, "mount_type", m.opts.Type, "scope", m.scoped)
	return nil
}

// helperArgs returns the source and the -o options the mount program is given; ip is
// the mount target's address when it was looked up.
func (m *Mounter) helperArgs(ip string) (source, options string) {
	opts := strings.Split(m.opts.MountOptions, ",")
	if m.opts.Type == TypeNFS4 {
		if ip != "" {
			return hostOf(ip) + ":/", m.opts.MountOptions
		}
		return m.opts.DNSName + ":/", m.opts.MountOptions
	}
	source = m.opts.DNSName + ":/"
	if zone, ok := FileSystemName(m.opts.DNSName, m.opts.FileSystemID); ok {
		// Given the id, amazon-efs-utils builds the name itself and, when it does not
		// resolve, falls back to the mount target's IP; given a name it does not.
		source = m.opts.FileSystemID + ":/"
		if zone != "" {
			opts = withOption(opts, "az", zone)
		}
	}
	if ip != "" {
		opts = withOption(opts, "mounttargetip", ip)
	}
	if m.opts.AccessPoint != "" {
		opts = withOption(opts, "accesspoint", m.opts.AccessPoint)
		opts = withOption(opts, "tls", "")
		opts = withOption(opts, "iam", "")
	}
	return source, strings.Join(opts, ",")
}

// withOption adds key (=value when not empty) unless the options set key already.
func withOption(opts []string, key, value string) []string {
	for _, o := range opts {
		if k, _, _ := strings.Cut(o, "="); k == key {
			return opts
		}
	}
	if value != "" {
		key += "=" + value
	}
	return append(opts, key)
}

// hostOf writes an IP address as the host of an NFS source: IPv6 in brackets.
func hostOf(ip string) string {
	if strings.Contains(ip, ":") {
		return "[" + ip + "]"
	}
	return ip
}

// command returns the program and arguments of one mount attempt: the mount program,
// or systemd-run holding it (and what it leaves running) in a transient scope unit
// of its own, outside the agent's cgroup.
func (m *Mounter) command(source, options string) (string, []string) {
	args := []string{"-t", m.opts.Type}
	if options != "" {
		args = append(args, "-o", options)
	}
	args = append(args, source, m.opts.MountPoint)
	if !m.scoped {
		return m.opts.Program, args
	}
	// A unit name of its own per attempt: the scope of an earlier mount lives on as long
	// as its tunnel does.
	unit := "jenkins-spot-agent-mount-" + m.opts.FileSystemID + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	return m.opts.SystemdRun, append([]string{"--scope", "--collect", "--quiet", "--unit=" + unit, "--", m.opts.Program}, args...)
}

func (m *Mounter) makeMountPoint(ctx context.Context) error {
	_, err := onHome(ctx, "efs mount: mount point "+m.opts.MountPoint, func() (struct{}, error) {
		fi, err := os.Stat(m.opts.MountPoint)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.MkdirAll(m.opts.MountPoint, 0o755); err != nil {
				return struct{}{}, fmt.Errorf("efs mount: create mount point: %w", err)
			}
			return struct{}{}, nil
		case err != nil:
			return struct{}{}, fmt.Errorf("efs mount: mount point: %w", err)
		case !fi.IsDir():
			return struct{}{}, fmt.Errorf("efs mount: mount point %s is not a directory; move it away or fix efs.mount_point", m.opts.MountPoint)
		}
		return struct{}{}, nil
	})
	return err
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

// waitForMountTarget looks the zone's mount target up until it is available: a mount
// target being created, or not created yet by a stack that is still running, is
// waited for like a DNS name that does not resolve yet. A file system that does not
// exist and a denied call are not.
func (m *Mounter) waitForMountTarget(ctx context.Context) (string, error) {
	start := time.Now()
	var lastLog time.Time
	az := m.opts.AvailabilityZone
	for attempt := 0; ; attempt++ {
		t, err := m.opts.MountTargets.MountTarget(ctx, m.opts.FileSystemID, az)
		if err == nil {
			m.log.Info("EFS mount target found", "mount_target", t.ID, "ip", t.IP, "az", az, "waited", since(start))
			return t.IP, nil
		}
		if errors.Is(err, ErrFileSystemNotFound) || errors.Is(err, ErrAccessDenied) {
			return "", fmt.Errorf("efs mount: look up the mount target of %s in %s: %w; check efs.file_system_id and the instance role", m.opts.FileSystemID, az, err)
		}
		if lastLog.IsZero() || time.Since(lastLog) >= m.logEvery {
			lastLog = time.Now()
			m.log.Warn("waiting for the EFS mount target", "az", az, "waited", since(start), "timeout", m.opts.Timeout, "err", err)
		}
		if werr := m.sleep(ctx, attempt); werr != nil {
			return "", fmt.Errorf("efs mount: no available mount target of %s in %s within %s (last error: %v); create one in a subnet of %s",
				m.opts.FileSystemID, az, since(start), err, az)
		}
	}
}

// runMount runs the mount program, retrying while the failure looks like something
// that time fixes (DNS, security group propagation, a mount target still creating).
func (m *Mounter) runMount(ctx context.Context, source, options string) error {
	program, args := m.command(source, options)
	cmdline := program + " " + strings.Join(args, " ")
	start := time.Now()
	var lastFailure string
	for attempt := 0; ; attempt++ {
		out, err := runProgram(ctx, program, args...)
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
		if perr := m.classifyMountFailure(program, out, err); perr != nil {
			return fmt.Errorf("efs mount: %s: %w", cmdline, perr)
		}
		lastFailure = fmt.Sprintf("%s (%v)", out, err)
		m.log.Warn("EFS mount failed, retrying", "attempt", attempt+1, "output", out, "err", err, "waited", since(start))
		if werr := m.sleep(ctx, attempt); werr != nil {
			return fmt.Errorf("efs mount: %s: still failing after %s: %s; check that the mount target's security group allows TCP 2049 from this instance",
				cmdline, since(start), lastFailure)
		}
		program, args = m.command(source, options)
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
func (m *Mounter) classifyMountFailure(program, output string, err error) error {
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		// Not started at all: missing or not executable.
		if m.scoped && program == m.opts.SystemdRun {
			return fmt.Errorf("%w; install systemd-run or set efs.mount_scope: none", err)
		}
		return fmt.Errorf("%w; install the mount program or fix efs.mount_program", err)
	}
	lower := strings.ToLower(output)
	switch {
	case strings.Contains(lower, "access denied by server"):
		return fmt.Errorf("%s: check the file system policy, the instance profile's IAM permissions (elasticfilesystem:ClientMount, ClientWrite) and the mount target's security group", output)
	case strings.Contains(lower, "unknown filesystem type 'efs'"):
		return fmt.Errorf("%s: mount type efs needs amazon-efs-utils installed, or use mount_type nfs4", output)
	case m.scoped && (strings.Contains(lower, "failed to start transient scope") || strings.Contains(lower, "failed to connect to bus")):
		return fmt.Errorf("%s: systemd-run could not create the mount's scope unit; check systemd (systemctl status), or set efs.mount_scope: none", output)
	}
	for _, transient := range []string{
		"connection timed out", "timed out", "name or service not known", "failed to resolve",
		"no route to host", "temporary failure in name resolution", "network is unreachable",
		"cannot connect to file system mount target",
	} {
		if strings.Contains(lower, transient) {
			return nil
		}
	}
	return fmt.Errorf("%s: %w", output, err)
}

// maxProgramOutput bounds what is kept of a program's output.
const maxProgramOutput = 2000

// runProgram runs a mount or umount program and returns its trimmed output. The
// program runs in its own process group so a cancelled context stops its helpers
// (mount.nfs, the efs-utils proxy launcher) too. Its output goes to an anonymous
// memory file, not a pipe: a process it leaves running (amazon-efs-utils' tunnel)
// might keep a pipe open, and waiting for the pipe would wait for that process.
func runProgram(ctx context.Context, program string, args ...string) (string, error) {
	fd, err := unix.MemfdCreate("jenkins-spot-agent-mount-output", unix.MFD_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("output file for %s: %w", program, err)
	}
	out := os.NewFile(uintptr(fd), "mount-output")
	defer out.Close()
	cmd := exec.CommandContext(ctx, program, args...)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	b := make([]byte, maxProgramOutput+1)
	n, _ := out.ReadAt(b, 0)
	s := strings.TrimSpace(string(b[:n]))
	if n > maxProgramOutput {
		s = strings.TrimSpace(string(b[:maxProgramOutput])) + "..."
	}
	return s, runErr
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
// marker at the root names the file system id (written on first use; a mount from an
// IP address must have it already). File operations on the home end at ctx's
// deadline (ErrHomeNotAnswering).
func (m *Mounter) Verify(ctx context.Context) error {
	_, err := m.verify(ctx, trustExisting)
	return err
}

// trust says how much verification may take for granted about who made the mount.
type trust int

const (
	// trustExisting: a mount found in place. A fresh file system mounted by an EFS name
	// gets its marker; one mounted from an IP address must have its marker already.
	trustExisting trust = iota
	// trustOwnMount: the agent has just mounted it by the file system's id, name or
	// mount target IP, so a fresh file system gets its marker whatever the source shows.
	trustOwnMount
	// trustReadOnly: never write; the marker must be there.
	trustReadOnly
)

// verify returns the entry it judged, nil when nothing is mounted or mountinfo could
// not be read, so that Mount tells "mount it" from "something else is there".
func (m *Mounter) verify(ctx context.Context, mode trust) (*mountinfo.Info, error) {
	infos, err := m.readMountTable()
	if err != nil {
		return nil, fmt.Errorf("efs verify: %w", err)
	}
	exp, err := m.expectation(ctx)
	if err != nil {
		return nil, fmt.Errorf("efs verify: %w", err)
	}
	entry, err := checkMountTable(infos, exp)
	if err != nil {
		return entry, fmt.Errorf("efs verify: %w", err)
	}
	kind := classifySource(entry.Source, exp)
	magic, checked := m.statfsTypes[entry.FSType]
	if checked {
		if err := m.checkStatfs(ctx, entry.FSType, magic); err != nil {
			return entry, err
		}
	}
	mp := m.opts.MountPoint
	if kind == sourceAddress && !checked {
		return entry, fmt.Errorf("efs verify: %s is mounted from the address %q, which does not name a file system, and statfs cannot confirm that its type %s is NFS; unmount it (umount %s)",
			mp, entry.Source, entry.FSType, mp)
	}
	if mode == trustReadOnly || (kind == sourceAddress && mode == trustExisting) {
		err := checkMarker(ctx, mp, m.opts.FileSystemID)
		switch {
		case errors.Is(err, errNoMarker) && kind == sourceAddress:
			return entry, fmt.Errorf("efs verify: %s is mounted from the address %q, and no marker %s proves which file system that is; "+
				"unmount it (umount %s) and let the agent mount it, or, if you know it is %s, write the marker: echo %s > %s",
				mp, entry.Source, MarkerFile, mp, m.opts.FileSystemID, m.opts.FileSystemID, filepath.Join(mp, MarkerFile))
		case errors.Is(err, errNoMarker):
			return entry, fmt.Errorf("efs verify: %s has %w %s; the agent writes it when it mounts a fresh file system", mp, ErrNoMarker, MarkerFile)
		case err != nil:
			return entry, fmt.Errorf("efs verify: %w", m.squashHint(err))
		}
		return entry, nil
	}
	created, err := EnsureMarker(ctx, mp, m.opts.FileSystemID)
	if err != nil {
		return entry, fmt.Errorf("efs verify: %w", m.squashHint(err))
	}
	if created {
		m.log.Info("fresh EFS file system: wrote its marker", "marker", filepath.Join(mp, MarkerFile), "source", entry.Source)
	}
	return entry, nil
}

// squashHint adds the root squash fix to a permission error of root on the home.
func (m *Mounter) squashHint(err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%w: %w; %s", err, ErrRootSquashed, RootSquashFix(m.opts.OwnerUID, m.opts.OwnerGID))
	}
	return err
}

// CheckRootAccess proves, on a mount point that holds the verified file system (its
// marker written already; nothing is written but the probe), that root may give a
// file to the Jenkins user (see the package function CheckRootAccess). Nothing
// mounted is an error wrapping ErrNotMounted; a mount that fails verification, or a
// fresh one without its marker yet, is an error too.
func (m *Mounter) CheckRootAccess(ctx context.Context) error {
	if _, err := m.verify(ctx, trustReadOnly); err != nil {
		return err
	}
	return CheckRootAccess(ctx, m.opts.MountPoint, m.opts.OwnerUID, m.opts.OwnerGID)
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

// checkStatfs runs statfs behind ctx's deadline: on a hard NFS mount with an
// unreachable server it can block for minutes.
func (m *Mounter) checkStatfs(ctx context.Context, fsType string, want int64) error {
	kind, err := onHome(ctx, "efs verify: statfs "+m.opts.MountPoint, func() (int64, error) {
		var st unix.Statfs_t
		err := unix.Statfs(m.opts.MountPoint, &st)
		return int64(st.Type), err
	})
	if err != nil {
		if errors.Is(err, ErrHomeNotAnswering) {
			return err
		}
		return fmt.Errorf("efs verify: statfs %s: %w", m.opts.MountPoint, err)
	}
	if kind != want {
		name := fsType
		if want == nfsSuperMagic {
			name = "NFS"
		}
		return fmt.Errorf("efs verify: statfs %s reports file system type %#x, expected %s (%#x): mountinfo and the kernel disagree; unmount it and mount again",
			m.opts.MountPoint, kind, name, want)
	}
	return nil
}

// Unmount unmounts the file system with a plain umount: never lazily, because a
// lazy unmount would let a still-running writer go on writing to the home while a
// successor starts on it. Nothing mounted is success.
func (m *Mounter) Unmount(ctx context.Context) error {
	mounted, err := m.mounted(ctx)
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

func (m *Mounter) mounted(ctx context.Context) (bool, error) {
	infos, err := m.readMountTable()
	if err != nil {
		return false, err
	}
	exp, err := m.expectation(ctx)
	if err != nil {
		return false, err
	}
	return topMount(infos, exp.mountPoint) != nil, nil
}

// expectation returns what verification accepts, with the mount point as mountinfo
// shows it: the kernel lists mount points with symbolic links resolved. Resolving
// touches the mounted file system's root, so it runs behind ctx's deadline.
func (m *Mounter) expectation(ctx context.Context) (expectation, error) {
	exp := m.exp
	p, err := onHome(ctx, "resolve mount point "+exp.mountPoint, func() (string, error) {
		return filepath.EvalSymlinks(exp.mountPoint)
	})
	switch {
	case err == nil:
		exp.mountPoint = p
	case errors.Is(err, ErrHomeNotAnswering):
		return exp, err
	}
	return exp, nil
}
