package efs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// installScript copies testdata/NAME, executable, into a temporary directory.
func installScript(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// helperLog points the efs-utils stand-in's log at a fresh file and returns a reader
// of its lines.
func helperLog(t *testing.T) func() []string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "helper.log")
	t.Setenv("EFSTEST_HELPER_LOG", p)
	return func() []string {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
}

func TestHelperArgs(t *testing.T) {
	const explicit = "jenkins-home.corp.example"
	tests := []struct {
		name        string
		opts        Options
		ip          string
		wantSource  string
		wantOptions string
	}{
		{name: "nfs4 by the zone's name", opts: Options{}, wantSource: testAZName + ":/", wantOptions: DefaultMountOptions},
		{name: "nfs4 by the mount target IP", opts: Options{}, ip: "10.0.1.23", wantSource: "10.0.1.23:/", wantOptions: DefaultMountOptions},
		{name: "nfs4 by an IPv6 mount target", opts: Options{}, ip: "fd00:ec2::23", wantSource: "[fd00:ec2::23]:/", wantOptions: DefaultMountOptions},
		{name: "efs by id in the zone", opts: Options{Type: TypeEFS}, wantSource: testFS + ":/", wantOptions: "nosuid,nodev,az=us-east-1a"},
		{name: "efs by id, regional", opts: Options{Type: TypeEFS, DNSName: testRegionalName}, wantSource: testFS + ":/", wantOptions: "nosuid,nodev"},
		{name: "efs by the operator's own name", opts: Options{Type: TypeEFS, DNSName: explicit}, wantSource: explicit + ":/", wantOptions: "nosuid,nodev"},
		{name: "efs with tls and iam", opts: Options{Type: TypeEFS, MountOptions: "tls,iam,nosuid,nodev"}, wantSource: testFS + ":/", wantOptions: "tls,iam,nosuid,nodev,az=us-east-1a"},
		{name: "efs by the mount target IP", opts: Options{Type: TypeEFS}, ip: "10.0.1.23", wantSource: testFS + ":/", wantOptions: "nosuid,nodev,az=us-east-1a,mounttargetip=10.0.1.23"},
		{
			name: "efs through an access point", opts: Options{Type: TypeEFS, AccessPoint: "fsap-0123456789abcdef0"},
			wantSource: testFS + ":/", wantOptions: "nosuid,nodev,az=us-east-1a,accesspoint=fsap-0123456789abcdef0,tls,iam",
		},
		{
			name: "access point with tls given", opts: Options{Type: TypeEFS, AccessPoint: "fsap-0123456789abcdef0", MountOptions: "tls,noresvport"},
			wantSource: testFS + ":/", wantOptions: "tls,noresvport,az=us-east-1a,accesspoint=fsap-0123456789abcdef0,iam",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.MountPoint = "/jenkins_home"
			m := fastMounter(t, tt.opts)
			source, options := m.helperArgs(tt.ip)
			if source != tt.wantSource || options != tt.wantOptions {
				t.Errorf("helperArgs = %q, %q; want %q, %q", source, options, tt.wantSource, tt.wantOptions)
			}
		})
	}
}

// TestHelperCallingConvention runs the efs-utils stand-in, which parses its
// arguments as mount.efs does, on what the Mounter gives its mount program, and
// checks what mount.efs makes of it: the file system id, the zone, the access point,
// and that an AZ name that does not resolve falls back to the mount target IP.
func TestHelperCallingConvention(t *testing.T) {
	script := installScript(t, "mount-efs-utils")
	t.Setenv("EFSTEST_DRY_RUN", "1")
	t.Setenv("EFSTEST_RESOLVES", "")
	t.Setenv("EFSTEST_FALLBACK_IP", "10.0.1.99")
	tests := []struct {
		name string
		opts Options
		ip   string
		want []string // substrings of the helper's log line
	}{
		{
			name: "zone name that does not resolve: the helper falls back to the mount target IP",
			opts: Options{Type: TypeEFS},
			want: []string{"fs_id=" + testFS, "path=/", "server=10.0.1.99", "options=az=us-east-1a nodev nosuid"},
		},
		{
			name: "access point with tls and iam",
			opts: Options{Type: TypeEFS, AccessPoint: "fsap-0123456789abcdef0"},
			want: []string{"fs_id=" + testFS, "options=accesspoint=fsap-0123456789abcdef0 az=us-east-1a iam nodev nosuid tls"},
		},
		{
			name: "mount target IP looked up by the agent",
			opts: Options{Type: TypeEFS, DNSName: testRegionalName},
			ip:   "10.0.2.7",
			want: []string{"server=10.0.2.7", "options=mounttargetip=10.0.2.7 nodev nosuid"},
		},
		{
			name: "the NFS options pass through",
			opts: Options{Type: TypeEFS, MountOptions: DefaultMountOptions + ",tls"},
			want: []string{"nfsvers=4.1", "hard", "timeo=600", "tls", "az=us-east-1a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := helperLog(t)
			mp := t.TempDir()
			tt.opts.MountPoint = mp
			tt.opts.Program = script
			m := fastMounter(t, tt.opts)
			prog, args := m.command(m.helperArgs(tt.ip))
			out, err := exec.CommandContext(t.Context(), prog, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s %q: %v\n%s", prog, args, err, out)
			}
			got := lines()
			if len(got) != 1 {
				t.Fatalf("helper log %q, want one line", got)
			}
			for _, w := range append(tt.want, "target="+mp) {
				if !strings.Contains(got[0], w) {
					t.Errorf("helper saw %q, want %q in it", got[0], w)
				}
			}
		})
	}
}

// TestHelperStandInIsStrict proves the stand-in fails what mount.efs fails, so that
// TestHelperCallingConvention could fail: among them the old convention of passing
// the zone's DNS name, which gets no fallback to the mount target IP.
func TestHelperStandInIsStrict(t *testing.T) {
	script := installScript(t, "mount-efs-utils")
	t.Setenv("EFSTEST_DRY_RUN", "1")
	t.Setenv("EFSTEST_RESOLVES", "")
	t.Setenv("EFSTEST_FALLBACK_IP", "10.0.1.99")
	mp := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-t", "efs", "-o", "nosuid", testAZName + ":/", mp}, `Failed to resolve "` + testAZName + `"`},
		{[]string{"-t", "efs", "-o", "accesspoint=fsap-0123456789abcdef0", testFS + ":/", mp}, `"tls" option is required when mounting via "accesspoint"`},
		{[]string{"-t", "efs", "-o", "tls,accesspoint=fsap-123", testFS + ":/", mp}, "Access Point ID fsap-123 is malformed"},
		{[]string{"-t", "efs", "-o", "iam", testFS + ":/", mp}, `"tls" option is required when mounting via "iam"`},
		{[]string{"-t", "efs", "-o", "tls,port=2049", testFS + ":/", mp}, `"port" and "tls" options are mutually exclusive`},
		{[]string{"-t", "efs", "-o", "capath=/x", testFS + ":/", mp}, `Unsupported mount options detected: "capath"`},
		{[]string{"-t", "efs", "-o", "az=a=b", testFS + ":/", mp}, "ValueError"},
		{[]string{"-t", "nfs4", "-o", "nosuid", testFS + ":/", mp}, "is not efs"},
		{[]string{"-t", "efs", "-o", "nosuid", testFS + ":/", filepath.Join(mp, "absent")}, "does not exist"},
	} {
		out, err := exec.CommandContext(t.Context(), script, tc.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("stand-in %q = %v %q, want a failure with %q", tc.args, err, out, tc.want)
		}
	}
}

func TestCheckMountOptions(t *testing.T) {
	for _, tc := range []struct {
		typ, options, want string
	}{
		{TypeNFS4, DefaultMountOptions, ""},
		{TypeEFS, "tls,iam,nosuid,nodev", ""},
		{TypeEFS, "tls,az=us-east-1a", "az is set by the agent"},
		{TypeEFS, "tls,accesspoint=fsap-0123456789abcdef0", "accesspoint is set by the agent"},
		{TypeNFS4, "mounttargetip=10.0.0.1", "mounttargetip is set by the agent"},
		{TypeNFS4, "nfsvers=4.1,tls", "tls needs mount type efs"},
		{TypeNFS4, "iam", "iam needs mount type efs"},
		{TypeNFS4, "hard,,soft", "empty option"},
		{TypeNFS4, "hard, soft", "without spaces"},
	} {
		err := CheckMountOptions(tc.typ, tc.options)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("CheckMountOptions(%s, %q) = %v, want %q", tc.typ, tc.options, err, tc.want)
		}
	}
}

func TestNewValidatesEFSOptions(t *testing.T) {
	good := Options{FileSystemID: testFS, MountPoint: "/jenkins_home", DNSName: testAZName, Type: TypeEFS}
	for _, tc := range []struct {
		name   string
		modify func(*Options)
		want   string
	}{
		{"access point with nfs4", func(o *Options) { o.Type = TypeNFS4; o.AccessPoint = "fsap-0123456789abcdef0" }, "needs mount type efs"},
		{"malformed access point", func(o *Options) { o.AccessPoint = "fsap-12" }, "not fsap- followed by 17"},
		{"lookup without a zone", func(o *Options) { o.MountTargets = lookupFunc(nil) }, "availability zone"},
		{"unknown scope", func(o *Options) { o.Scope = "cgroup" }, `mount scope "cgroup"`},
		{"managed option", func(o *Options) { o.MountOptions = "tls,az=us-east-1b" }, "az is set by the agent"},
	} {
		o := good
		tc.modify(&o)
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestScope checks how the mount program is run: through systemd-run in a scope of
// its own when asked, or when auto finds systemd and the type is efs.
func TestScope(t *testing.T) {
	systemd := t.TempDir()
	systemdRun := installScript(t, "systemd-run")
	absent := filepath.Join(t.TempDir(), "absent")
	for _, tc := range []struct {
		name   string
		opts   Options
		scoped bool
	}{
		{"systemd-run asked for", Options{Scope: ScopeSystemdRun, SystemdDir: absent, SystemdRun: systemdRun}, true},
		{"none asked for", Options{Scope: ScopeNone, Type: TypeEFS, SystemdDir: systemd, SystemdRun: systemdRun}, false},
		{"auto: efs under systemd", Options{Type: TypeEFS, SystemdDir: systemd, SystemdRun: systemdRun}, true},
		{"auto: nfs4 leaves no process behind", Options{SystemdDir: systemd, SystemdRun: systemdRun}, false},
		{"auto: no systemd", Options{Type: TypeEFS, SystemdDir: absent, SystemdRun: systemdRun}, false},
		{"auto: systemd-run missing", Options{Type: TypeEFS, SystemdDir: systemd, SystemdRun: absent}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.MountPoint = "/jenkins_home"
			tc.opts.Program = "/sbin/mount"
			m := fastMounter(t, tc.opts)
			prog, args := m.command("src:/", "nosuid")
			mountArgs := []string{"-t", m.opts.Type, "-o", "nosuid", "src:/", "/jenkins_home"}
			if !tc.scoped {
				if prog != "/sbin/mount" || !slices.Equal(args, mountArgs) {
					t.Errorf("command = %s %q, want the mount program itself", prog, args)
				}
				return
			}
			if prog != tc.opts.SystemdRun || len(args) < 6 || !slices.Equal(args[:3], []string{"--scope", "--collect", "--quiet"}) ||
				!strings.HasPrefix(args[3], "--unit=jenkins-spot-agent-mount-"+testFS+"-") || args[4] != "--" || args[5] != "/sbin/mount" ||
				!slices.Equal(args[6:], mountArgs) {
				t.Errorf("command = %s %q, want systemd-run --scope ... -- /sbin/mount %q", prog, args, mountArgs)
			}
			if _, again := m.command("src:/", "nosuid"); again[3] == args[3] {
				t.Errorf("two attempts share the unit name %s: the first scope may still exist", args[3])
			}
		})
	}
}

// lookupFunc is a MountTargetLookup made of a function.
type lookupFunc func(ctx context.Context, fileSystemID, az string) (MountTarget, error)

func (f lookupFunc) MountTarget(ctx context.Context, fileSystemID, az string) (MountTarget, error) {
	return f(ctx, fileSystemID, az)
}

// scriptedLookup answers with errs in turn, then with the mount target.
func scriptedLookup(t MountTarget, errs ...error) (MountTargetLookup, func() int) {
	var mu sync.Mutex
	calls := 0
	return lookupFunc(func(ctx context.Context, fileSystemID, az string) (MountTarget, error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if calls <= len(errs) {
				return MountTarget{}, errs[calls-1]
			}
			return t, nil
		}), func() int {
			mu.Lock()
			defer mu.Unlock()
			return calls
		}
}

// TestMountByMountTargetIP mounts by the IP the lookup gives, after waiting out a
// mount target that is not ready, and never waits for DNS.
func TestMountByMountTargetIP(t *testing.T) {
	calls := scriptCalls(t, 0, "")
	lookup, lookups := scriptedLookup(MountTarget{ID: "fsmt-1", IP: "10.0.1.23", AvailabilityZone: "us-east-1a", State: "available"},
		ErrMountTargetNotReady, errors.New("efs DescribeMountTargets: connection reset"))
	r := &fakeResolver{fails: 1 << 30}
	m, mp := verifyCase(t, nil, Options{Program: mountScript(t), MountTargets: lookup, AvailabilityZone: "us-east-1a", Resolver: r})
	err := m.Mount(t.Context())
	// Outside a namespace the script refuses to mount, after recording the call.
	if err == nil || !strings.Contains(err.Error(), "refusing to mount") {
		t.Fatalf("Mount = %v, want the script's refusal", err)
	}
	if lookups() != 3 || calls() != 1 || r.Calls() != 0 {
		t.Errorf("%d lookups, %d mounts, %d DNS lookups; want 3, 1, 0", lookups(), calls(), r.Calls())
	}
	b, _ := os.ReadFile(os.Getenv("EFSTEST_CALLS"))
	if got := strings.TrimSpace(string(b)); got != "10.0.1.23:/ "+mp {
		t.Errorf("mount program called with %q, want the mount target IP", got)
	}
	if m.Source() != "10.0.1.23:/" {
		t.Errorf("Source = %q", m.Source())
	}
}

func TestMountByMountTargetIPPermanentErrors(t *testing.T) {
	for _, sentinel := range []error{ErrAccessDenied, ErrFileSystemNotFound} {
		calls := scriptCalls(t, 0, "")
		lookup, lookups := scriptedLookup(MountTarget{}, sentinel, sentinel, sentinel)
		m, _ := verifyCase(t, nil, Options{Program: mountScript(t), MountTargets: lookup, AvailabilityZone: "us-east-1a"})
		err := m.Mount(t.Context())
		if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), "instance role") {
			t.Errorf("Mount = %v, want %v with a hint", err, sentinel)
		}
		if lookups() != 1 || calls() != 0 {
			t.Errorf("%v: %d lookups and %d mounts, want 1 and 0", sentinel, lookups(), calls())
		}
	}
}

// TestMountEFSLeavesResolutionToTheHelper: with type efs nothing waits for DNS, so
// that amazon-efs-utils' own fallback to the mount target IP gets its chance.
func TestMountEFSLeavesResolutionToTheHelper(t *testing.T) {
	lines := helperLog(t)
	t.Setenv("EFSTEST_DRY_RUN", "1")
	t.Setenv("EFSTEST_RESOLVES", "")
	t.Setenv("EFSTEST_FALLBACK_IP", "10.0.1.99")
	r := &fakeResolver{fails: 1 << 30}
	m, _ := verifyCase(t, nil, Options{Type: TypeEFS, Program: installScript(t, "mount-efs-utils"), Resolver: r, Scope: ScopeNone})
	err := m.Mount(t.Context())
	// The dry run mounts nothing, so verification fails; the call is what counts.
	if err == nil || !strings.Contains(err.Error(), "verification failed") {
		t.Fatalf("Mount = %v, want a verification failure after the dry run", err)
	}
	if r.Calls() != 0 {
		t.Errorf("%d DNS lookups before the efs helper, want none", r.Calls())
	}
	if got := lines(); len(got) != 1 || !strings.Contains(got[0], "fs_id="+testFS) || !strings.Contains(got[0], "server=10.0.1.99") {
		t.Errorf("helper log %q, want one mount of the id through the fallback", got)
	}
}

// TestMountRefusesFilesOnTheBareMountPoint: something wrote into the local mount point
// (a Jenkins container left by an old compose file); the agent does not mount over it.
func TestMountRefusesFilesOnTheBareMountPoint(t *testing.T) {
	calls := scriptCalls(t, 0, "")
	occupants := func(context.Context) ([]string, error) { return []string{"old-jenkins"}, nil }
	m, mp := verifyCase(t, nil, Options{Program: mountScript(t), Occupants: occupants})
	writeFile("config.xml", "<hudson/>")(t, mp)
	mustMkdir(t, filepath.Join(mp, "jobs"))
	err := m.Mount(t.Context())
	wantErr(t, err, "nothing is mounted at "+mp, "config.xml, jobs", "no marker", "old-jenkins", "docker rm -f old-jenkins", "mv "+mp+" "+mp+".local")
	if !errors.Is(err, ErrLocalFiles) {
		t.Errorf("Mount = %v, want ErrLocalFiles", err)
	}
	if n := calls(); n != 0 {
		t.Errorf("mount program called %d times over local files", n)
	}

	// Without the container list, the message says how to find it.
	m2, _ := verifyCase(t, nil, Options{Program: mountScript(t)})
	writeFile("config.xml", "<hudson/>")(t, m2.MountPoint())
	wantErr(t, m2.Mount(t.Context()), "docker ps -a --filter volume="+m2.MountPoint(), "docker rm -f")

	// A local directory holding a marker is a home of the agent's own: mounting over
	// it goes ahead (the script then refuses outside a namespace).
	m3, mp3 := verifyCase(t, nil, Options{Program: mountScript(t)})
	writeFile("config.xml", "<hudson/>")(t, mp3)
	writeFile(MarkerFile, testFS+"\n")(t, mp3)
	wantErr(t, m3.Mount(t.Context()), "refusing to mount outside a private mount namespace")
	if n := calls(); n != 1 {
		t.Errorf("mount program called %d times, want once (for the home with a marker)", n)
	}
}

func TestCheckRootAccessAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to another user needs root; namespace_test.go has the squashed cases")
	}
	home := t.TempDir()
	if err := CheckRootAccess(t.Context(), home, 1000, 1000); err != nil {
		t.Fatalf("CheckRootAccess on a local directory as root: %v", err)
	}
	entries, err := os.ReadDir(filepath.Join(home, AgentDir))
	if err != nil || len(entries) != 0 {
		t.Errorf("agent directory after the probe: %v, %v; want it empty", entries, err)
	}

	// AgentDir planted as a link to a directory elsewhere: nothing is created there.
	home2, elsewhere := t.TempDir(), t.TempDir()
	mustSymlink(t, elsewhere, filepath.Join(home2, AgentDir))
	wantErr(t, CheckRootAccess(t.Context(), home2, 1000, 1000), "is not a directory (a symbolic link?)", "mv ")
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Errorf("the probe followed the link: %v", entries)
	}
}
