package efs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// fakeResolver fails the first fails lookups, then resolves.
type fakeResolver struct {
	mu    sync.Mutex
	fails int
	calls int
	hosts []string
}

func (r *fakeResolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.hosts = append(r.hosts, host)
	if r.calls <= r.fails {
		return nil, errors.New("lookup " + host + ": no such host")
	}
	return []string{"10.0.1.25"}, nil
}

func (r *fakeResolver) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

var _ Resolver = (*fakeResolver)(nil)

// fastMounter returns a Mounter with test pacing: millisecond backoff, so retry tests
// take milliseconds.
func fastMounter(t testing.TB, opts Options) *Mounter {
	t.Helper()
	if opts.FileSystemID == "" {
		opts.FileSystemID = testFS
	}
	if opts.DNSName == "" {
		opts.DNSName = testAZName
	}
	if opts.Resolver == nil {
		opts.Resolver = &fakeResolver{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Timeout == 0 {
		opts.Timeout = time.Minute
	}
	m, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	m.retryInitial = time.Millisecond
	m.retryMax = 5 * time.Millisecond
	return m
}

// mountScript installs testdata/mount-tmpfs executable in a temporary directory, so
// the test does not depend on the checkout keeping the executable bit.
func mountScript(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("testdata/mount-tmpfs")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "mount-tmpfs")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// scriptCalls points the mount script's call log at a fresh file and fails its first
// failTimes calls with message; it returns a function counting the calls.
func scriptCalls(t *testing.T, failTimes int, message string) func() int {
	t.Helper()
	log := filepath.Join(t.TempDir(), "calls")
	t.Setenv("EFSTEST_CALLS", log)
	t.Setenv("EFSTEST_FAIL_TIMES", strconv.Itoa(failTimes))
	t.Setenv("EFSTEST_FAIL_MESSAGE", message)
	return func() int {
		b, err := os.ReadFile(log)
		if errors.Is(err, os.ErrNotExist) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "\n")
	}
}

func TestNewValidates(t *testing.T) {
	good := Options{FileSystemID: testFS, MountPoint: "/jenkins_home", DNSName: testAZName}
	tests := []struct {
		name   string
		modify func(*Options)
		want   string
	}{
		{"bad id", func(o *Options) { o.FileSystemID = "fs-1" }, "file system id"},
		{"relative mount point", func(o *Options) { o.MountPoint = "jenkins_home" }, "absolute path"},
		{"root mount point", func(o *Options) { o.MountPoint = "/" }, "other than /"},
		{"bad dns name", func(o *Options) { o.DNSName = "x y" }, "not a DNS hostname"},
		{"bad type", func(o *Options) { o.Type = "nfs" }, `mount type "nfs"`},
		{"negative timeout", func(o *Options) { o.Timeout = -time.Second }, "negative timeout"},
	}
	for _, tt := range tests {
		o := good
		tt.modify(&o)
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: New = %v, want error with %q", tt.name, err, tt.want)
		}
	}

	m, err := New(Options{FileSystemID: testFS, MountPoint: "/jenkins_home/", DNSName: testAZName})
	if err != nil {
		t.Fatal(err)
	}
	if m.Source() != testAZName+":/" || m.MountPoint() != "/jenkins_home" {
		t.Errorf("Source, MountPoint = %q, %q", m.Source(), m.MountPoint())
	}
	if m.opts.Type != TypeNFS4 || m.opts.MountOptions != DefaultMountOptions || m.opts.Program != "mount" ||
		m.opts.UnmountProgram != "umount" || m.opts.Timeout != DefaultTimeout || m.opts.MountInfoPath != "/proc/self/mountinfo" ||
		len(m.opts.ExpectFSTypes) != 1 || m.opts.ExpectFSTypes[0] != "nfs4" || m.opts.Scope != "" || m.scoped ||
		m.opts.SystemdRun != "systemd-run" || m.opts.SystemdDir != "/run/systemd/system" {
		t.Errorf("defaults not filled: %+v", m.opts)
	}
	if !strings.Contains(DefaultMountOptions, ",nosuid,nodev") {
		t.Errorf("DefaultMountOptions %q lacks nosuid,nodev", DefaultMountOptions)
	}
	e, err := New(Options{FileSystemID: testFS, MountPoint: "/jenkins_home", DNSName: testAZName, Type: TypeEFS})
	if err != nil {
		t.Fatal(err)
	}
	if e.opts.MountOptions != DefaultEFSMountOptions || e.Source() != testFS+":/" {
		t.Errorf("type efs: options %q, source %q; want %q and the file system id", e.opts.MountOptions, e.Source(), DefaultEFSMountOptions)
	}
}

// verifyCase builds a mount point and a synthetic mountinfo that claims it is mounted,
// so the checks run without root; the real mount is covered in namespace_test.go.
func verifyCase(t *testing.T, line func(mountPoint string) string, opts Options) (*Mounter, string) {
	t.Helper()
	mp := filepath.Join(t.TempDir(), "home")
	mustMkdir(t, mp)
	table := hostTable
	if line != nil {
		table += line(mp)
	}
	opts.MountPoint = mp
	opts.MountInfoPath = filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(opts.MountInfoPath, []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
	return fastMounter(t, opts), mp
}

func tmpfsLine(source string) func(string) string {
	return func(mp string) string { return "100 27 0:50 / " + mp + " rw - tmpfs " + source + " rw,size=8192k\n" }
}

func TestVerify(t *testing.T) {
	tmpfs := []string{"tmpfs"}
	tests := []struct {
		name    string
		line    func(string) string
		opts    Options
		marker  string // written before Verify when set
		wantErr []string
	}{
		{name: "fresh file system", line: tmpfsLine(testAZName + ":/"), opts: Options{ExpectFSTypes: tmpfs}},
		{name: "own marker", line: tmpfsLine(testAZName + ":/"), opts: Options{ExpectFSTypes: tmpfs}, marker: testFS + "\n"},
		{
			// An address names no file system: only NFS, which statfs confirms, and a
			// marker can make up for it (namespace_test.go has the accepted cases).
			name: "tunnel address on a type statfs cannot confirm", line: tmpfsLine("127.0.0.1:/"), opts: Options{ExpectFSTypes: tmpfs, Type: TypeEFS},
			marker: testFS + "\n", wantErr: []string{`"127.0.0.1:/"`, "statfs cannot confirm", "umount"},
		},
		{
			name: "foreign marker", line: tmpfsLine(testAZName + ":/"), opts: Options{ExpectFSTypes: tmpfs}, marker: "fs-12345678\n",
			wantErr: []string{"fs-12345678", testFS, "another file system's data"},
		},
		{name: "not mounted", opts: Options{ExpectFSTypes: tmpfs}, wantErr: []string{"nothing is mounted", "plain directory"}},
		{name: "wrong type", line: tmpfsLine(testAZName + ":/"), wantErr: []string{"tmpfs", "expected type nfs4"}},
		{name: "wrong source", line: tmpfsLine("fs-12345678.efs.us-east-1.amazonaws.com:/"), opts: Options{ExpectFSTypes: tmpfs}, wantErr: []string{"fs-12345678", "expected " + testAZName}},
		{name: "mount target address on a type statfs cannot confirm", line: tmpfsLine("10.0.1.23:/"), opts: Options{ExpectFSTypes: tmpfs}, wantErr: []string{"10.0.1.23", "statfs cannot confirm"}},
		{
			// mountinfo says nfs4 but the directory is on the local disk: statfs catches it.
			name:    "statfs disagrees",
			line:    func(mp string) string { return nfsLine(100, 27, mp, testAZName+":/") },
			wantErr: []string{"statfs", "expected NFS (0x6969)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, mp := verifyCase(t, tt.line, tt.opts)
			if tt.marker != "" {
				writeFile(MarkerFile, tt.marker)(t, mp)
			}
			err := m.Verify(t.Context())
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if b, _ := os.ReadFile(filepath.Join(mp, MarkerFile)); string(b) != testFS+"\n" {
					t.Errorf("marker = %q", b)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify passed, want error with %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tt.marker == "" {
				if _, serr := os.Stat(filepath.Join(mp, MarkerFile)); serr == nil {
					t.Errorf("a failed verification wrote a marker")
				}
			}
		})
	}
}

func TestVerifyFollowsSymlinkedMountPoint(t *testing.T) {
	m, mp := verifyCase(t, tmpfsLine(testAZName+":/"), Options{ExpectFSTypes: []string{"tmpfs"}})
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(mp, link); err != nil {
		t.Fatal(err)
	}
	m2 := fastMounter(t, Options{MountPoint: link, MountInfoPath: m.opts.MountInfoPath, ExpectFSTypes: []string{"tmpfs"}})
	if err := m2.Verify(t.Context()); err != nil {
		t.Fatalf("Verify through a symlink: %v", err)
	}
}

func TestMountAlreadyMountedSkipsProgram(t *testing.T) {
	calls := scriptCalls(t, 0, "")
	m, _ := verifyCase(t, tmpfsLine(testAZName+":/"), Options{ExpectFSTypes: []string{"tmpfs"}, Program: mountScript(t)})
	if err := m.Mount(t.Context()); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	if n := calls(); n != 0 {
		t.Errorf("mount program called %d times on an already verified mount", n)
	}
}

func TestMountRefusesSomethingElseMounted(t *testing.T) {
	calls := scriptCalls(t, 0, "")
	m, _ := verifyCase(t, tmpfsLine("nas.example.com:/"), Options{ExpectFSTypes: []string{"tmpfs"}, Program: mountScript(t)})
	err := m.Mount(t.Context())
	if err == nil || !strings.Contains(err.Error(), "refusing to mount over it") || !strings.Contains(err.Error(), "nas.example.com") {
		t.Fatalf("Mount = %v, want refusal naming what is mounted", err)
	}
	if n := calls(); n != 0 {
		t.Errorf("mount program called %d times over a foreign mount", n)
	}
}

func TestMountPermanentFailureStopsAtOnce(t *testing.T) {
	calls := scriptCalls(t, 100, "mount.nfs: access denied by server while mounting "+testAZName+":/")
	m, _ := verifyCase(t, nil, Options{Program: mountScript(t)})
	err := m.Mount(t.Context())
	if err == nil {
		t.Fatal("Mount passed")
	}
	for _, w := range []string{"access denied by server", "file system policy", "IAM", "security group"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	if n := calls(); n != 1 {
		t.Errorf("mount program called %d times, want 1 (no retry of a permanent error)", n)
	}
}

func TestMountRetriesTransientFailures(t *testing.T) {
	// Two timeouts, then the script's refusal to mount outside a namespace, which is a
	// permanent error: three calls prove the retries without mounting anything
	// (namespace_test.go has the retry that ends in a mount).
	calls := scriptCalls(t, 2, "mount.nfs: Connection timed out")
	var logs testenv.Buffer
	m, _ := verifyCase(t, nil, Options{Program: mountScript(t), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	err := m.Mount(t.Context())
	if err == nil || !strings.Contains(err.Error(), "refusing to mount") {
		t.Fatalf("Mount = %v, want the script's refusal after the retries", err)
	}
	if n := calls(); n != 3 {
		t.Errorf("mount program called %d times, want 3", n)
	}
	if n := strings.Count(logs.String(), "EFS mount failed, retrying"); n != 2 {
		t.Errorf("logged %d retries, want 2:\n%s", n, logs.String())
	}
}

func TestMountTransientFailuresUntilTimeout(t *testing.T) {
	calls := scriptCalls(t, 1<<20, "mount.nfs: Connection timed out")
	m, _ := verifyCase(t, nil, Options{Program: mountScript(t), Timeout: 300 * time.Millisecond})
	err := m.Mount(t.Context())
	if err == nil || !strings.Contains(err.Error(), "Connection timed out") {
		t.Fatalf("Mount = %v, want the last transient error", err)
	}
	if !strings.Contains(err.Error(), "TCP 2049") && !strings.Contains(err.Error(), "gave up") {
		t.Errorf("error %q gives no next step", err)
	}
	if n := calls(); n < 2 {
		t.Errorf("mount program called %d times, want retries", n)
	}
}

func TestMountMissingProgram(t *testing.T) {
	m, _ := verifyCase(t, nil, Options{Program: filepath.Join(t.TempDir(), "no-such-mount")})
	err := m.Mount(t.Context())
	if err == nil || !strings.Contains(err.Error(), "efs.mount_program") {
		t.Fatalf("Mount = %v, want a hint about the mount program", err)
	}
}

func TestMountCreatesMountPoint(t *testing.T) {
	mp := filepath.Join(t.TempDir(), "a", "b")
	info := filepath.Join(t.TempDir(), "mountinfo")
	writeFile(filepath.Base(info), hostTable)(t, filepath.Dir(info))
	scriptCalls(t, 100, "mount.nfs: access denied by server")
	m := fastMounter(t, Options{MountPoint: mp, MountInfoPath: info, Program: mountScript(t)})
	_ = m.Mount(t.Context())
	if fi, err := os.Stat(mp); err != nil || !fi.IsDir() {
		t.Fatalf("mount point not created: %v", err)
	}
}

func TestMountPointIsAFile(t *testing.T) {
	dir := t.TempDir()
	writeFile("home", "x")(t, dir)
	info := filepath.Join(t.TempDir(), "mountinfo")
	writeFile(filepath.Base(info), hostTable)(t, filepath.Dir(info))
	m := fastMounter(t, Options{MountPoint: filepath.Join(dir, "home"), MountInfoPath: info, Program: "/bin/false"})
	if err := m.Mount(t.Context()); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Mount = %v, want not a directory", err)
	}
}

func TestWaitForDNS(t *testing.T) {
	var logs testenv.Buffer
	r := &fakeResolver{fails: 4}
	m := fastMounter(t, Options{MountPoint: "/jenkins_home", Resolver: r, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	m.logEvery = time.Hour // only the first failure is logged
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := m.waitForDNS(ctx); err != nil {
		t.Fatalf("waitForDNS: %v", err)
	}
	if r.Calls() != 5 {
		t.Errorf("%d lookups, want 5", r.Calls())
	}
	for _, h := range r.hosts {
		if h != testAZName {
			t.Errorf("looked up %q, want %q", h, testAZName)
		}
	}
	out := logs.String()
	if n := strings.Count(out, "waiting for EFS DNS name to resolve"); n != 1 {
		t.Errorf("logged the wait %d times, want once (then every logEvery):\n%s", n, out)
	}
	for _, w := range []string{"name=" + testAZName, "waited=", "mount target must exist in this AZ", "DNS hostnames", "EFS DNS name resolves"} {
		if !strings.Contains(out, w) {
			t.Errorf("log lacks %q:\n%s", w, out)
		}
	}
}

func TestWaitForDNSLogsPeriodically(t *testing.T) {
	var logs testenv.Buffer
	r := &fakeResolver{fails: 3}
	m := fastMounter(t, Options{MountPoint: "/jenkins_home", Resolver: r, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	m.logEvery = 0
	if err := m.waitForDNS(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "waiting for EFS DNS name to resolve"); n != 3 {
		t.Errorf("logged the wait %d times, want 3", n)
	}
}

func TestWaitForDNSGivesUp(t *testing.T) {
	r := &fakeResolver{fails: 1 << 30}
	m := fastMounter(t, Options{MountPoint: "/jenkins_home", Resolver: r})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err := m.waitForDNS(ctx)
	if err == nil {
		t.Fatal("waitForDNS passed")
	}
	for _, w := range []string{testAZName, "did not resolve", "no such host", "mount target must exist"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	if r.Calls() < 2 {
		t.Errorf("%d lookups, want retries", r.Calls())
	}
}

func TestClassifyMountFailure(t *testing.T) {
	exit := exitError(t)
	tests := []struct {
		output    string
		err       error
		transient bool
		want      string
	}{
		{"mount.nfs: Connection timed out", exit, true, ""},
		{"mount.nfs: Failed to resolve server x: Name or service not known", exit, true, ""},
		{"mount.nfs: No route to host", exit, true, ""},
		{"mount.nfs: access denied by server while mounting x:/", exit, false, "file system policy"},
		{"mount: unknown filesystem type 'efs'", exit, false, "amazon-efs-utils"},
		{"mount: /jenkins_home: permission denied.", exit, false, "permission denied"},
		{"", errors.New(`exec: "mount": executable file not found in $PATH`), false, "efs.mount_program"},
	}
	for _, tt := range tests {
		err := (&Mounter{}).classifyMountFailure("mount", tt.output, tt.err)
		if tt.transient != (err == nil) {
			t.Errorf("classify(%q) = %v, transient want %v", tt.output, err, tt.transient)
		}
		if err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("classify(%q) = %q, want %q", tt.output, err, tt.want)
		}
	}
}

func exitError(t *testing.T) error {
	t.Helper()
	_, err := runProgram(t.Context(), "/bin/sh", "-c", "exit 32")
	if err == nil {
		t.Fatal("sh exit 32 succeeded")
	}
	return err
}

func TestUnmountNotMounted(t *testing.T) {
	// The unmount program does not exist: success proves it was never called.
	m, _ := verifyCase(t, nil, Options{UnmountProgram: filepath.Join(t.TempDir(), "no-such-umount")})
	if err := m.Unmount(t.Context()); err != nil {
		t.Fatalf("Unmount of a bare directory: %v", err)
	}
}

func TestUnmountBusy(t *testing.T) {
	busy := filepath.Join(t.TempDir(), "umount")
	if err := os.WriteFile(busy, []byte("#!/bin/sh\necho \"umount: $1: target is busy.\" >&2\nexit 32\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	m, _ := verifyCase(t, tmpfsLine(testAZName+":/"), Options{UnmountProgram: busy})
	err := m.Unmount(t.Context())
	if err == nil || !strings.Contains(err.Error(), "Jenkins still running") {
		t.Fatalf("Unmount = %v, want busy guidance", err)
	}
}

func BenchmarkVerify(b *testing.B) {
	mp := filepath.Join(b.TempDir(), "home")
	if err := os.MkdirAll(mp, 0o755); err != nil {
		b.Fatal(err)
	}
	info := filepath.Join(b.TempDir(), "mountinfo")
	if err := os.WriteFile(info, []byte(hostTable+tmpfsLine(testAZName+":/")(mp)), 0o644); err != nil {
		b.Fatal(err)
	}
	m := fastMounter(b, Options{MountPoint: mp, MountInfoPath: info, ExpectFSTypes: []string{"tmpfs"}})
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Verify(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
