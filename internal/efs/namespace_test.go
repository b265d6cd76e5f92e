package efs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// The tests named TestNS* mount tmpfs file systems for real. They run only inside a
// private mount namespace, which TestRealMount creates by running this test binary
// again under unshare, so that nothing they mount is ever visible on the host.
const nsEnv = "EFSTEST_NAMESPACE"

var nsTests = []string{
	"TestNSMountVerifyUnmount",
	"TestNSTransientFailuresThenMount",
	"TestNSWaitsForDNS",
	"TestNSAccessDenied",
	"TestNSVerifyRejects",
	"TestNSUnmountBusy",
	"TestNSAddressSources",
	"TestNSEFSUtils",
	"TestNSTunnelOutlivesAgentRestart",
	"TestNSRootSquash",
	"TestNSHungHome",
	"TestNSContract",
	"TestNSAbortCutsTheHomeOff",
}

// tmpfsMagic is what statfs(2) reports for tmpfs. The namespace tests mount tmpfs where
// EFS would be NFS, and let statfs check it the way it checks NFS.
const tmpfsMagic = 0x01021994

func TestRealMount(t *testing.T) {
	if os.Getenv(nsEnv) != "" {
		t.Skip("inner run")
	}
	testenv.SkipShort(t, "mounts tmpfs in a private mount namespace")
	if os.Geteuid() != 0 {
		testenv.Missing(t, "%s", "mounting needs root")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		testenv.Missing(t, "%s", "unshare (util-linux) is not installed")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, unshare, "-m", "--propagation", "private", "true").CombinedOutput(); err != nil {
		testenv.Missing(t, "%s", "unshare -m does not work here: "+strings.TrimSpace(string(out))+": "+err.Error())
	}
	cmd := exec.CommandContext(ctx, unshare, "-m", "--propagation", "private",
		os.Args[0], "-test.run", "^TestNS", "-test.v", "-test.count=1", "-test.timeout=90s")
	cmd.Env = append(os.Environ(), nsEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("inner run in a private mount namespace:\n%s", out)
	if err != nil {
		t.Fatalf("inner run: %v", err)
	}
	for _, name := range nsTests {
		if !strings.Contains(string(out), "--- PASS: "+name+" ") {
			t.Errorf("%s did not pass in the inner run", name)
		}
	}
}

// inNamespace skips outside the inner run and refuses to go on unless this process
// really is in a mount namespace of its own.
func inNamespace(t *testing.T) {
	t.Helper()
	if os.Getenv(nsEnv) == "" {
		t.Skip("runs inside TestRealMount's private mount namespace")
	}
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	if init, _ := os.Readlink("/proc/1/ns/mnt"); init == self {
		t.Fatalf("%s is set but this process shares PID 1's mount namespace %s", nsEnv, self)
	}
}

// nsMountPoint returns a fresh directory and unmounts whatever the test leaves there.
func nsMountPoint(t *testing.T) string {
	t.Helper()
	mp := filepath.Join(t.TempDir(), "jenkins_home")
	mustMkdir(t, mp)
	t.Cleanup(func() {
		for range 10 {
			if unix.Unmount(mp, 0) != nil {
				return
			}
		}
	})
	return mp
}

func nsMounter(t *testing.T, mp string, opts Options) *Mounter {
	t.Helper()
	opts.MountPoint = mp
	if opts.Program == "" {
		opts.Program = mountScript(t)
	}
	if opts.ExpectFSTypes == nil {
		opts.ExpectFSTypes = []string{"tmpfs"}
	}
	m := fastMounter(t, opts)
	m.statfsTypes["tmpfs"] = tmpfsMagic
	return m
}

// mountAt mounts a tmpfs with the given source string directly, standing in for a
// mount the agent did not make.
func mountAt(t *testing.T, source, mp string) {
	t.Helper()
	if err := unix.Mount(source, mp, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs %s at %s: %v", source, mp, err)
	}
}

func mountsAt(t *testing.T, mp string) []*mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp))
	if err != nil {
		t.Fatal(err)
	}
	return infos
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("passed, want error with %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q lacks %q", err, p)
		}
	}
}

func TestNSMountVerifyUnmount(t *testing.T) {
	inNamespace(t)
	calls := scriptCalls(t, 0, "")
	mp := nsMountPoint(t)
	m := nsMounter(t, mp, Options{})
	if err := m.Mount(t.Context()); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	if n := calls(); n != 1 {
		t.Errorf("mount program called %d times, want 1", n)
	}
	got := mountsAt(t, mp)
	if len(got) != 1 || got[0].FSType != "tmpfs" || got[0].Source != m.Source() {
		t.Fatalf("mountinfo at %s: %+v, want one tmpfs from %s", mp, got, m.Source())
	}
	if b, err := os.ReadFile(filepath.Join(mp, MarkerFile)); err != nil || string(b) != testFS+"\n" {
		t.Fatalf("marker = %q, %v", b, err)
	}
	writeFile("config.xml", "<hudson/>")(t, mp)

	// An agent restarted on the same instance finds the home mounted and keeps it.
	again := nsMounter(t, mp, Options{Program: m.opts.Program})
	if err := again.Mount(t.Context()); err != nil {
		t.Fatalf("second Mount: %v", err)
	}
	if n := calls(); n != 1 {
		t.Errorf("second Mount called the mount program (%d calls)", n)
	}
	if len(mountsAt(t, mp)) != 1 {
		t.Errorf("second Mount stacked a mount")
	}
	if _, err := os.Stat(filepath.Join(mp, "config.xml")); err != nil {
		t.Errorf("home content lost: %v", err)
	}
	if err := m.Verify(t.Context()); err != nil {
		t.Fatalf("Verify: %v", err)
	}

	if err := m.Unmount(t.Context()); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if len(mountsAt(t, mp)) != 0 {
		t.Fatalf("still mounted after Unmount")
	}
	if _, err := os.Stat(filepath.Join(mp, MarkerFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("marker visible on the bare mount point: %v", err)
	}
	// Idempotent: the unmount program does not exist, so success means it was not run.
	gone := nsMounter(t, mp, Options{UnmountProgram: filepath.Join(t.TempDir(), "no-such-umount")})
	if err := gone.Unmount(t.Context()); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
	var nm errNotMounted
	if err := m.Verify(t.Context()); !errors.As(err, &nm) {
		t.Fatalf("Verify after Unmount = %v, want nothing mounted", err)
	}
}

func TestNSTransientFailuresThenMount(t *testing.T) {
	inNamespace(t)
	calls := scriptCalls(t, 2, "mount.nfs: Connection timed out")
	mp := nsMountPoint(t)
	if err := nsMounter(t, mp, Options{}).Mount(t.Context()); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	if n := calls(); n != 3 {
		t.Errorf("mount program called %d times, want 3", n)
	}
}

func TestNSWaitsForDNS(t *testing.T) {
	inNamespace(t)
	calls := scriptCalls(t, 0, "")
	mp := nsMountPoint(t)
	r := &fakeResolver{fails: 3}
	if err := nsMounter(t, mp, Options{Resolver: r}).Mount(t.Context()); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	if r.Calls() != 4 || calls() != 1 {
		t.Errorf("%d lookups and %d mounts, want 4 and 1", r.Calls(), calls())
	}
}

func TestNSAccessDenied(t *testing.T) {
	inNamespace(t)
	calls := scriptCalls(t, 100, "mount.nfs: access denied by server while mounting "+testAZName+":/")
	mp := nsMountPoint(t)
	err := nsMounter(t, mp, Options{}).Mount(t.Context())
	wantErr(t, err, "access denied by server", "file system policy", "security group")
	if n := calls(); n != 1 {
		t.Errorf("mount program called %d times, want 1", n)
	}
	if len(mountsAt(t, mp)) != 0 {
		t.Errorf("something got mounted")
	}
}

func TestNSVerifyRejects(t *testing.T) {
	inNamespace(t)
	const other = "fs-12345678.efs.us-east-1.amazonaws.com:/"

	t.Run("wrong source", func(t *testing.T) {
		calls := scriptCalls(t, 0, "")
		mp := nsMountPoint(t)
		mountAt(t, other, mp)
		m := nsMounter(t, mp, Options{})
		wantErr(t, m.Verify(t.Context()), other, "expected "+testAZName+":/")
		wantErr(t, m.Mount(t.Context()), "refusing to mount over it", other)
		if n := calls(); n != 0 {
			t.Errorf("mount program called %d times over a foreign mount", n)
		}
	})
	t.Run("wrong type", func(t *testing.T) {
		scriptCalls(t, 0, "")
		mp := nsMountPoint(t)
		if err := nsMounter(t, mp, Options{}).Mount(t.Context()); err != nil {
			t.Fatal(err)
		}
		nfs := nsMounter(t, mp, Options{ExpectFSTypes: []string{"nfs4"}})
		wantErr(t, nfs.Verify(t.Context()), "tmpfs", "expected type nfs4")
	})
	t.Run("plain directory", func(t *testing.T) {
		mp := nsMountPoint(t)
		wantErr(t, nsMounter(t, mp, Options{}).Verify(t.Context()), "nothing is mounted at "+mp)
		if _, err := os.Stat(filepath.Join(mp, MarkerFile)); err == nil {
			t.Errorf("marker written on the local disk")
		}
	})
	t.Run("foreign marker", func(t *testing.T) {
		calls := scriptCalls(t, 0, "")
		mp := nsMountPoint(t)
		m := nsMounter(t, mp, Options{})
		if err := m.Mount(t.Context()); err != nil {
			t.Fatal(err)
		}
		writeFile(MarkerFile, "fs-12345678\n")(t, mp)
		wantErr(t, m.Verify(t.Context()), "fs-12345678", testFS, "another file system's data", "do not start Jenkins")
		wantErr(t, nsMounter(t, mp, Options{}).Mount(t.Context()), "refusing to mount over it", "fs-12345678")
		if n := calls(); n != 1 {
			t.Errorf("mount program called %d times, want 1", n)
		}
	})
	t.Run("stacked mounts: the top one counts", func(t *testing.T) {
		mp := nsMountPoint(t)
		mountAt(t, other, mp)
		mountAt(t, testAZName+":/", mp)
		if err := nsMounter(t, mp, Options{}).Verify(t.Context()); err != nil {
			t.Errorf("right file system on top: %v", err)
		}
		mp2 := nsMountPoint(t)
		mountAt(t, testAZName+":/", mp2)
		mountAt(t, other, mp2)
		wantErr(t, nsMounter(t, mp2, Options{}).Verify(t.Context()), other)
	})
}

func TestNSUnmountBusy(t *testing.T) {
	inNamespace(t)
	scriptCalls(t, 0, "")
	mp := nsMountPoint(t)
	m := nsMounter(t, mp, Options{})
	if err := m.Mount(t.Context()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(mp, "build.log"))
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, m.Unmount(t.Context()), "a process still uses the home", "Jenkins still running")
	if len(mountsAt(t, mp)) != 1 {
		t.Fatalf("a busy unmount must leave the mount in place, not detach it lazily")
	}
	f.Close()
	if err := m.Unmount(t.Context()); err != nil {
		t.Fatalf("Unmount once idle: %v", err)
	}
	if len(mountsAt(t, mp)) != 0 {
		t.Errorf("still mounted")
	}
}

// After a fence for a stall the home is cut off: an idle mount is unmounted by force,
// and one that a writer still holds is detached, with an error that says the instance
// must end (its queued writes could still land).
func TestNSAbortCutsTheHomeOff(t *testing.T) {
	inNamespace(t)
	scriptCalls(t, 0, "")
	mp := nsMountPoint(t)
	m := nsMounter(t, mp, Options{})
	if err := m.Mount(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := m.Abort(t.Context()); err != nil {
		t.Fatalf("Abort of an idle mount: %v", err)
	}
	if n := len(mountsAt(t, mp)); n != 0 {
		t.Fatalf("%d mounts left after Abort", n)
	}
	if err := m.Abort(t.Context()); err != nil {
		t.Fatalf("Abort with nothing mounted: %v", err)
	}

	if err := m.Mount(t.Context()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(mp, "build.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	wantErr(t, m.Abort(ctx), "power the instance off")
	if n := len(mountsAt(t, mp)); n != 0 {
		t.Fatalf("a busy home is still reachable through %s after Abort (%d mounts)", mp, n)
	}
}
