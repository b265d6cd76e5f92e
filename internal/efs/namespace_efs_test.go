package efs

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs/efstest/fakenfs"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// These tests run inside TestRealMount's private mount namespace (see namespace_test.go).

// TestNSAddressSources: a mount from an IP address (a mount target's, or 127.0.0.1,
// amazon-efs-utils' tunnel) names no file system. Found in place, it is accepted only
// when statfs confirms the type and the marker names the file system.
func TestNSAddressSources(t *testing.T) {
	inNamespace(t)
	for _, source := range []string{"127.0.0.1:/", "10.0.1.23:/", "[fd00:ec2::23]:/"} {
		for _, typ := range []string{TypeNFS4, TypeEFS} {
			t.Run(typ+" "+source, func(t *testing.T) {
				calls := scriptCalls(t, 0, "")
				mp := nsMountPoint(t)
				mountAt(t, source, mp)
				m := nsMounter(t, mp, Options{Type: typ, Scope: ScopeNone})
				wantErr(t, m.Verify(t.Context()), source, "no marker", "umount "+mp, "echo "+testFS+" > ")
				wantErr(t, m.Mount(t.Context()), "refusing to mount over it", source)
				if n := calls(); n != 0 {
					t.Errorf("mount program called %d times over an unproven mount", n)
				}
				if _, err := os.Lstat(filepath.Join(mp, MarkerFile)); err == nil {
					t.Fatal("a refused verification wrote a marker")
				}

				writeFile(MarkerFile, testFS+"\n")(t, mp)
				if err := m.Verify(t.Context()); err != nil {
					t.Errorf("Verify with the marker: %v", err)
				}
				if err := m.Mount(t.Context()); err != nil {
					t.Errorf("Mount over the proven mount: %v", err)
				}
				writeFile(MarkerFile, "fs-12345678\n")(t, mp)
				wantErr(t, m.Verify(t.Context()), "fs-12345678", "another file system's data")
			})
		}
	}
}

// TestNSEFSUtils mounts through the amazon-efs-utils stand-in for real: it is given
// the file system id, mounts 127.0.0.1:/ as mount.efs does through its proxy, and the
// agent, having mounted it itself, writes the marker; an agent restarted later finds
// the mount proven by it. Nothing waits for DNS.
func TestNSEFSUtils(t *testing.T) {
	inNamespace(t)
	lines := helperLog(t)
	pids := tunnelPids(t)
	t.Setenv("EFSTEST_RESOLVES", "")
	t.Setenv("EFSTEST_FALLBACK_IP", "10.0.1.99")
	mp := nsMountPoint(t)
	r := &fakeResolver{fails: 1 << 30}
	program := installScript(t, "mount-efs-utils")
	m := nsMounter(t, mp, Options{Type: TypeEFS, Program: program, Resolver: r, Scope: ScopeNone, AccessPoint: "fsap-0123456789abcdef0"})
	if err := m.Mount(t.Context()); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	if got := mountsAt(t, mp); len(got) != 1 || got[0].Source != "127.0.0.1:/" {
		t.Fatalf("mountinfo at %s: %+v, want the tunnel's 127.0.0.1:/", mp, got)
	}
	if b, err := os.ReadFile(filepath.Join(mp, MarkerFile)); err != nil || string(b) != testFS+"\n" {
		t.Fatalf("marker = %q, %v; want it written on the agent's own mount", b, err)
	}
	got := lines()
	if len(got) != 1 || !strings.Contains(got[0], "fs_id="+testFS) || !strings.Contains(got[0], "accesspoint=fsap-0123456789abcdef0") ||
		!strings.Contains(got[0], "server=10.0.1.99") {
		t.Errorf("helper log %q", got)
	}
	if r.Calls() != 0 {
		t.Errorf("%d DNS lookups for type efs, want none", r.Calls())
	}
	if n := len(pids()); n != 1 {
		t.Errorf("%d tunnels started, want 1", n)
	}
	again := nsMounter(t, mp, Options{Type: TypeEFS, Program: program, Scope: ScopeNone})
	if err := again.Mount(t.Context()); err != nil {
		t.Fatalf("Mount by a restarted agent: %v", err)
	}
	if n := len(lines()); n != 1 {
		t.Errorf("the restarted agent called the helper again (%d calls)", n)
	}
}

// tunnelPids points the stand-in's tunnel list at a fresh file, kills the tunnels when
// the test ends, and returns a reader of the pids.
func tunnelPids(t *testing.T) func() []int {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tunnels")
	t.Setenv("EFSTEST_TUNNEL_PIDS", p)
	read := func() []int {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		var pids []int
		for f := range strings.FieldsSeq(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				pids = append(pids, n)
			}
		}
		return pids
	}
	t.Cleanup(func() {
		for _, pid := range read() {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				t.Errorf("kill tunnel %d: %v", pid, err)
			}
		}
	})
	return read
}

// cgroup2 returns the cgroup v2 hierarchy's mount point and this process's cgroup in
// it, or skips where there is none (only cgroup v1).
func cgroup2(t *testing.T) string {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup2"))
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) == 0 {
		testenv.Missing(t, "%s", "no cgroup v2 hierarchy is mounted (looked for type cgroup2 in /proc/self/mountinfo, e.g. /sys/fs/cgroup)")
	}
	return infos[0].Mountpoint
}

// makeCgroup creates a cgroup and, when the test ends, kills what is left in it and
// removes it (its children first).
func makeCgroup(t *testing.T, path string) string {
	t.Helper()
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(path, "cgroup.kill")); err != nil {
		os.Remove(path)
		testenv.Missing(t, "cgroup.kill is missing (Linux 5.14 or later): %v", err)
	}
	t.Cleanup(func() { removeCgroup(t, path) })
	return path
}

func removeCgroup(t *testing.T, path string) {
	entries, _ := os.ReadDir(path)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroup(t, filepath.Join(path, e.Name()))
		}
	}
	if err := os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kill cgroup %s: %v", path, err)
	}
	waitEmpty(t, path)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("remove cgroup %s: %v", path, err)
	}
}

// waitEmpty waits until no process is left in the cgroup or its children.
func waitEmpty(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(path, "cgroup.events"))
		if err != nil || strings.Contains(string(b), "populated 0") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cgroup %s still has processes: %s", path, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procCgroup returns the cgroup v2 path of a process, relative to the hierarchy.
func procCgroup(pid int) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return rest, nil
		}
	}
	return "", fmt.Errorf("process %d has no cgroup v2 entry", pid)
}

// alive reports whether pid runs (a zombie has died).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// TestNSTunnelOutlivesAgentRestart: amazon-efs-utils leaves its tunnel (efs-proxy or
// stunnel) running for as long as the mount exists. The agent is emulated as systemd
// runs it: a process in a cgroup of its own, stopped by killing that whole cgroup, as
// KillMode=mixed does. Mounted through (a stand-in of) systemd-run --scope, the
// tunnel lives in a scope cgroup of its own and survives, and the restarted agent
// finds the mount as it was; mounted directly, the tunnel dies with the agent.
func TestNSTunnelOutlivesAgentRestart(t *testing.T) {
	inNamespace(t)
	root := cgroup2(t)
	var b [4]byte
	rand.Read(b[:])
	base := makeCgroup(t, filepath.Join(root, "jenkins-spot-agent-test-"+hex.EncodeToString(b[:])))
	program := installScript(t, "mount-efs-utils")
	systemdRun := installScript(t, "systemd-run")

	for _, tc := range []struct {
		scope    string
		survives bool
	}{{ScopeSystemdRun, true}, {ScopeNone, false}} {
		t.Run("scope "+tc.scope, func(t *testing.T) {
			dir := makeCgroup(t, filepath.Join(base, tc.scope))
			agentCg := makeCgroup(t, filepath.Join(dir, "agent.service"))
			scopes := makeCgroup(t, filepath.Join(dir, "scopes"))
			pids := tunnelPids(t)
			mp := nsMountPoint(t)
			t.Setenv("EFSTEST_RESOLVES", testAZName)
			env := []string{
				"EFSTEST_AGENT=1", "EFSTEST_MOUNT_POINT=" + mp, "EFSTEST_PROGRAM=" + program,
				"EFSTEST_SYSTEMD_RUN=" + systemdRun, "EFSTEST_SCOPE=" + tc.scope, "EFSTEST_SCOPE_ROOT=" + scopes,
			}

			// The agent boots, mounts, and keeps running until its cgroup is killed.
			ready := filepath.Join(t.TempDir(), "ready")
			agent := startAgent(t, agentCg, append(env, "EFSTEST_AGENT_READY="+ready))
			waitFile(t, ready, agent)
			tunnels := pids()
			if len(tunnels) != 1 {
				t.Fatalf("%d tunnels, want 1", len(tunnels))
			}
			tunnel := tunnels[0]
			cg, err := procCgroup(tunnel)
			if err != nil {
				t.Fatal(err)
			}
			agentRel := strings.TrimPrefix(agentCg, root)
			inAgent := cg == agentRel
			if inAgent == tc.survives {
				t.Fatalf("tunnel in cgroup %s (agent's: %s)", cg, agentRel)
			}

			// systemctl restart: KillMode=mixed kills every process of the service's cgroup.
			if err := os.WriteFile(filepath.Join(agentCg, "cgroup.kill"), []byte("1"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := agent.Wait(); !killed(err) {
				t.Fatalf("agent after cgroup.kill: %v, want killed by SIGKILL", err)
			}
			waitEmpty(t, agentCg)

			if !tc.survives {
				deadline := time.Now().Add(10 * time.Second)
				for alive(tunnel) {
					if time.Now().After(deadline) {
						t.Fatalf("tunnel %d in the agent's cgroup survived the kill", tunnel)
					}
					time.Sleep(10 * time.Millisecond)
				}
				return
			}
			if !alive(tunnel) {
				t.Fatalf("tunnel %d died with the agent although it was in scope %s", tunnel, cg)
			}
			// The restarted agent finds the mount proven and mounts nothing. systemd removes
			// a stopped unit's cgroup and makes a new one when it starts the unit again.
			again := startAgent(t, makeCgroup(t, filepath.Join(dir, "agent-restarted.service")), env)
			if err := again.Wait(); err != nil {
				t.Fatalf("restarted agent: %v", err)
			}
			if n := len(pids()); n != 1 || !alive(tunnel) {
				t.Errorf("after the restart: %d tunnels, first alive %v; want the same one, alive", n, alive(tunnel))
			}
		})
	}
}

// startAgent runs TestAgentProcess in cgroup dir, with its output in the test log.
func startAgent(t *testing.T, cgroupDir string, env []string) *exec.Cmd {
	t.Helper()
	fd, err := unix.Open(cgroupDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	cmd := exec.Command(os.Args[0], "-test.run=^TestAgentProcess$", "-test.v", "-test.count=1", "-test.timeout=60s")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = testWriter{t}
	cmd.Stderr = testWriter{t}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState != nil {
			return // waited for by the test
		}
		if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("kill agent process: %v", err)
		}
		if err := cmd.Wait(); err != nil && !killed(err) {
			t.Errorf("agent process: %v", err)
		}
	})
	return cmd
}

// killed reports whether err is the exit of a process that SIGKILL ended.
func killed(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("agent: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// waitFile waits for path to exist, or fails when the agent exited first.
func waitFile(t *testing.T, path string, agent *exec.Cmd) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if p, _ := os.FindProcess(agent.Process.Pid); p == nil || p.Signal(syscall.Signal(0)) != nil || !alive(agent.Process.Pid) {
			t.Fatal("the agent exited before it was ready")
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAgentProcess is the agent of TestNSTunnelOutlivesAgentRestart: it mounts as
// the agent does and, when told, stays up until its cgroup is killed.
func TestAgentProcess(t *testing.T) {
	if os.Getenv("EFSTEST_AGENT") == "" {
		t.Skip("runs as the agent process of TestNSTunnelOutlivesAgentRestart")
	}
	m := fastMounter(t, Options{
		Type: TypeEFS, MountPoint: os.Getenv("EFSTEST_MOUNT_POINT"), Program: os.Getenv("EFSTEST_PROGRAM"),
		Scope: os.Getenv("EFSTEST_SCOPE"), SystemdRun: os.Getenv("EFSTEST_SYSTEMD_RUN"), ExpectFSTypes: []string{"tmpfs"},
	})
	m.statfsTypes["tmpfs"] = tmpfsMagic
	if err := m.Mount(t.Context()); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	ready := os.Getenv("EFSTEST_AGENT_READY")
	if ready == "" {
		return
	}
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Serving, until systemd stops the service (bounded, in case nobody does).
	time.Sleep(50 * time.Second)
	t.Fatal("nobody stopped the agent")
}

// fuseHome serves a fresh directory through FUSE at a fresh mount point, under an EFS
// name, squashing root as given.
func fuseHome(t *testing.T, squash *fakenfs.Identity) (mp, backing string, srv *fakenfs.Server) {
	t.Helper()
	if err := fakenfs.Available(); err != nil {
		testenv.Missing(t, "%v", err)
	}
	mp = nsMountPoint(t)
	backing = t.TempDir()
	if err := os.Chmod(backing, 0o755); err != nil {
		t.Fatal(err)
	}
	srv, err := fakenfs.Mount(mp, backing, fakenfs.Options{Squash: squash, Source: testAZName + ":/", Name: "efstest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Error(err)
		}
	})
	return mp, backing, srv
}

// fuseMounter is a Mounter of the FUSE home at mp, for the Jenkins user 1000:1000.
func fuseMounter(t *testing.T, mp string) *Mounter {
	t.Helper()
	m := fastMounter(t, Options{
		MountPoint:    mp,
		ExpectFSTypes: []string{"fuse.efstest"},
		Program:       filepath.Join(t.TempDir(), "never-called"),
		OwnerUID:      1000,
		OwnerGID:      1000,
	})
	m.statfsTypes["fuse.efstest"] = fakenfs.SuperMagic
	return m
}

// TestNSRootSquash: on a file system that squashes root (no ClientRootAccess, or an
// access point with another POSIX user), Mount stops with an error that names the
// fix, where the marker, the lease and the chown of the home would otherwise fail
// with a bare EPERM.
func TestNSRootSquash(t *testing.T) {
	inNamespace(t)
	fix := []string{"elasticfilesystem:ClientRootAccess", "efs.access_point", "POSIX user", "1000:1000"}

	t.Run("root's own root directory", func(t *testing.T) {
		mp, backing, _ := fuseHome(t, &fakenfs.Nobody)
		err := fuseMounter(t, mp).Mount(t.Context())
		if !errors.Is(err, ErrRootSquashed) {
			t.Fatalf("Mount = %v, want ErrRootSquashed", err)
		}
		wantErr(t, err, append(fix, "write marker", "permission denied")...)
		if _, err := os.Lstat(filepath.Join(backing, MarkerFile)); err == nil {
			t.Error("a marker was written")
		}
	})
	t.Run("root directory open to all", func(t *testing.T) {
		mp, backing, _ := fuseHome(t, &fakenfs.Nobody)
		if err := os.Chmod(backing, 0o777); err != nil {
			t.Fatal(err)
		}
		m := fuseMounter(t, mp)
		err := m.Mount(t.Context())
		if !errors.Is(err, ErrRootSquashed) {
			t.Fatalf("Mount = %v, want ErrRootSquashed", err)
		}
		wantErr(t, err, append(fix, "left mounted", "belongs to uid 65534")...)
		entries, _ := os.ReadDir(filepath.Join(backing, AgentDir))
		if len(entries) != 0 {
			t.Errorf("probe files left behind: %v", entries)
		}
		if err := m.CheckRootAccess(t.Context()); !errors.Is(err, ErrRootSquashed) {
			t.Errorf("CheckRootAccess = %v, want ErrRootSquashed", err)
		}
	})
	// Even an access point whose POSIX user is the Jenkins user squashes root: the
	// agent's files, the lease among them, would belong to the Jenkins user, who could
	// then rewrite the lease of the controller it runs on.
	t.Run("access point whose user is the Jenkins user", func(t *testing.T) {
		ap := fakenfs.Identity{UID: 1000, GID: 1000}
		mp, backing, _ := fuseHome(t, &ap)
		if err := os.Chown(backing, 1000, 1000); err != nil {
			t.Fatal(err)
		}
		err := fuseMounter(t, mp).Mount(t.Context())
		if !errors.Is(err, ErrRootSquashed) || !strings.Contains(err.Error(), "belongs to uid 1000") {
			t.Fatalf("Mount through an access point with a POSIX user = %v, want ErrRootSquashed naming the uid", err)
		}
		wantErr(t, err, "must not enforce a POSIX user")
	})
	t.Run("root not squashed", func(t *testing.T) {
		mp, _, _ := fuseHome(t, nil)
		m := fuseMounter(t, mp)
		if err := m.CheckRootAccess(t.Context()); !errors.Is(err, ErrNoMarker) {
			t.Errorf("CheckRootAccess before the first mount = %v, want ErrNoMarker", err)
		}
		if err := m.Mount(t.Context()); err != nil {
			t.Fatalf("Mount: %v", err)
		}
		if err := m.CheckRootAccess(t.Context()); err != nil {
			t.Fatalf("CheckRootAccess: %v", err)
		}
	})
}

// TestNSHungHome: on a hard NFS mount whose server is gone every file operation
// blocks, and a system call cannot be cancelled. Each operation of the Mounter on the
// home returns at the caller's deadline nonetheless, and the operations left blocked
// finish once the server answers again.
func TestNSHungHome(t *testing.T) {
	inNamespace(t)
	mp, _, srv := fuseHome(t, nil)
	m := fuseMounter(t, mp)
	if err := m.Mount(t.Context()); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	before := stuckOps.Load()
	srv.Hang()
	for _, op := range []struct {
		name string
		run  func(ctx context.Context) error
	}{
		{"Verify", m.Verify},
		{"Mount", m.Mount},
		{"Unmount", m.Unmount},
		{"CheckRootAccess", m.CheckRootAccess},
		{"EnsureMarker", func(ctx context.Context) error { _, err := EnsureMarker(ctx, mp, testFS); return err }},
		{"statfs", func(ctx context.Context) error { return m.checkStatfs(ctx, "fuse.efstest", fakenfs.SuperMagic) }},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		err := op.run(ctx)
		cancel()
		if !errors.Is(err, ErrHomeNotAnswering) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s on a hung home = %v, want ErrHomeNotAnswering at the deadline", op.name, err)
		}
	}
	if srv.Blocked() == 0 {
		t.Error("nothing reached the hung server")
	}
	if stuckOps.Load() <= before {
		t.Error("no operation was counted as left blocked")
	}
	srv.Resume()
	deadline := time.Now().Add(10 * time.Second)
	for stuckOps.Load() != before {
		if time.Now().After(deadline) {
			t.Fatalf("%d operations still blocked after the server answered again", stuckOps.Load()-before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := m.Verify(t.Context()); err != nil {
		t.Errorf("Verify once the server answers: %v", err)
	}
}
