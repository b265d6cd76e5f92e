package enginetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// Daemon is a dockerd of a test's own, beside the machine's shared one, so that a test
// can kill and restart it without disturbing anyone else's containers. It keeps its
// socket, data, state and pid file in one temporary directory, puts its containers on
// a bridge of its own and touches no iptables rules (publish no ports).
//
// Not --bridge none: a dockerd started with it deletes the host's docker0, the shared
// daemon's bridge, and every container the shared daemon starts afterwards fails.
type Daemon struct {
	t      testing.TB
	dir    string
	bridge string
	cmd    *exec.Cmd
	done   chan struct{}
	log    *os.File

	docker0 []string // docker0's addresses before the daemon started, to check it survives
}

// StartDaemon starts a private dockerd and waits until it answers; it is stopped and its
// directory removed when the test ends. It needs root and dockerd on PATH, and skips
// (fails under CI=true) without them. Tests that use it must skip under -short.
func StartDaemon(t testing.TB) *Daemon {
	t.Helper()
	testenv.SkipShort(t, "runs a dockerd of its own")
	testenv.Root(t, "runs a dockerd of its own")
	testenv.Tool(t, "dockerd", "docker.io")
	// A short path: containerd's sockets live under the exec root, and a unix socket
	// path must fit in 108 bytes.
	dir, err := os.MkdirTemp("/tmp", "jsa-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{t: t, dir: dir, bridge: "jsa-br-" + filepath.Base(dir)[len("jsa-dockerd-"):]}
	if len(d.bridge) > 15 { // IFNAMSIZ - 1
		d.bridge = d.bridge[:15]
	}
	d.docker0 = docker0Addrs()
	// dockerd's containerd dies with it on SIGKILL. Adopting such orphans lets the test
	// reap them at once, as systemd would; a zombie left to an init that does not reap
	// keeps its pid alive, and the returning dockerd would wait for it as its running
	// containerd.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Logf("enginetest: cannot become a child subreaper: %v", err)
	}
	t.Cleanup(d.cleanup)
	d.makeBridge()
	d.Start()
	return d
}

// makeBridge creates the daemon's own bridge on a /24 that no route uses yet.
func (d *Daemon) makeBridge() {
	d.t.Helper()
	routes, err := exec.Command("ip", "-4", "route", "show").Output()
	if err != nil {
		d.t.Fatalf("ip route: %v", err)
	}
	subnet := ""
	for n := 200; n < 255; n++ {
		if prefix := fmt.Sprintf("10.213.%d.", n); !strings.Contains(string(routes), prefix) {
			subnet = prefix + "1/24"
			break
		}
	}
	if subnet == "" {
		d.t.Fatal("enginetest: no free 10.213.x.0/24 for the private daemon's bridge")
	}
	for _, args := range [][]string{
		{"link", "add", d.bridge, "type", "bridge"},
		{"addr", "add", subnet, "dev", d.bridge},
		{"link", "set", d.bridge, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			d.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
}

// docker0Addrs lists docker0's IPv4 addresses; nil when there is no docker0.
func docker0Addrs() []string {
	out, err := exec.Command("ip", "-o", "-4", "addr", "show", "dev", "docker0").Output()
	if err != nil {
		return nil
	}
	addrs := []string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" {
				addrs = append(addrs, f[i+1])
			}
		}
	}
	return addrs
}

// checkDocker0 fails the test, and puts docker0 back, if the shared daemon's bridge
// vanished while this daemon ran.
func (d *Daemon) checkDocker0() {
	if d.docker0 == nil || docker0Addrs() != nil {
		return
	}
	_ = exec.Command("ip", "link", "add", "docker0", "type", "bridge").Run()
	for _, a := range d.docker0 {
		_ = exec.Command("ip", "addr", "add", a, "dev", "docker0").Run()
	}
	_ = exec.Command("ip", "link", "set", "docker0", "up").Run()
	d.t.Errorf("enginetest: the private dockerd removed the shared daemon's docker0; it was recreated with %v", d.docker0)
}

// Host is the daemon's address for client.WithHost or Options.Host.
func (d *Daemon) Host() string { return "unix://" + filepath.Join(d.dir, "docker.sock") }

// Client returns a client of this daemon, closed when the test ends.
func (d *Daemon) Client() *client.Client {
	d.t.Helper()
	cli, err := client.NewClientWithOpts(client.WithHost(d.Host()), client.WithAPIVersionNegotiation())
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { cli.Close() })
	return cli
}

// Start (re)starts the daemon on the same directories and waits until it answers.
func (d *Daemon) Start() {
	d.t.Helper()
	if d.cmd != nil {
		d.t.Fatal("enginetest: daemon already running")
	}
	log, err := os.OpenFile(filepath.Join(d.dir, "dockerd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	d.log = log
	d.cmd = exec.Command("dockerd",
		"--host", d.Host(),
		"--data-root", filepath.Join(d.dir, "data"),
		"--exec-root", filepath.Join(d.dir, "exec"),
		"--pidfile", filepath.Join(d.dir, "dockerd.pid"),
		// The shared daemon owns docker0 and the iptables chains.
		"--bridge", d.bridge, "--iptables=false", "--ip-masq=false", "--ip-forward=false",
		// Containers of both daemons live under one cgroup tree otherwise.
		"--cgroup-parent", "/"+filepath.Base(d.dir),
		"--log-level", "warn")
	d.cmd.Stdout, d.cmd.Stderr = log, log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(d.cmd, d.done)

	ctx, cancel := context.WithTimeout(context.Background(), testenv.WaitLimit)
	defer cancel()
	cli, err := client.NewClientWithOpts(client.WithHost(d.Host()), client.WithAPIVersionNegotiation())
	if err != nil {
		d.t.Fatal(err)
	}
	defer cli.Close()
	for {
		if _, err := cli.Ping(ctx); err == nil {
			d.checkDocker0()
			return
		}
		select {
		case <-d.done:
			d.t.Fatalf("dockerd exited at start:\n%s", d.Log())
		case <-ctx.Done():
			d.t.Fatalf("dockerd did not answer:\n%s", d.Log())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Kill sends SIGKILL to dockerd, as the kernel's OOM killer would, and waits for it to
// be gone. Its containerd goes with it; the containers' shims and processes stay until
// the daemon comes back (without live-restore it then stops them).
func (d *Daemon) Kill() {
	d.t.Helper()
	pidFile := filepath.Join(d.dir, "exec", "containerd", "containerd.pid")
	b, _ := os.ReadFile(pidFile)
	d.stop(syscall.SIGKILL)
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
		if !reapDead(pid, testenv.WaitLimit) {
			// Not ours to reap: what systemd would have done, done by hand.
			_ = os.Remove(pidFile)
		}
	}
	reapZombieChildren()
}

// reapDead waits until pid is dead and reaps it if it is a child of this process; it
// reports whether pid is gone for good (not even a zombie).
func reapDead(pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		state, ppid, ok := procState(pid)
		switch {
		case !ok:
			return true
		case state == "Z" && ppid == os.Getpid():
			var ws unix.WaitStatus
			_, _ = unix.Wait4(pid, &ws, 0, nil)
			return true
		case state == "Z":
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// reapZombieChildren reaps the containerd processes (shims included) orphaned to this
// process that have exited. Only those: other children belong to exec.Cmd values.
func reapZombieChildren() {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if !strings.HasPrefix(string(comm), "containerd") {
			continue
		}
		if state, ppid, ok := procState(pid); ok && state == "Z" && ppid == os.Getpid() {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
	}
}

// procState reads a process's state letter and parent from /proc/PID/stat.
func procState(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	rest := string(b)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 2 {
		return "", 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0], ppid, true
}

func (d *Daemon) stop(sig syscall.Signal) {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(testenv.WaitLimit):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
	d.cmd = nil
	_ = d.log.Close()
	d.checkDocker0()
}

// Log is what the daemon wrote so far.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "dockerd.log"))
	return string(b)
}

// cleanup removes every container, stops the daemon, unmounts what it left mounted
// under its directory and removes the directory.
func (d *Daemon) cleanup() {
	if d.cmd == nil {
		// Killed and not restarted: start it once more, so that it stops the
		// containers it still knows of.
		func() {
			defer func() { _ = recover() }()
			d.Start()
		}()
	}
	if d.cmd != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if cli, err := client.NewClientWithOpts(client.WithHost(d.Host()), client.WithAPIVersionNegotiation()); err == nil {
			if list, err := cli.ContainerList(ctx, container.ListOptions{All: true}); err == nil {
				for _, c := range list {
					_ = cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
				}
			}
			cli.Close()
		}
		cancel()
		d.stop(syscall.SIGTERM)
	}
	if d.t.Failed() {
		d.t.Logf("private dockerd log:\n%s", d.Log())
	}
	reapZombieChildren()
	unmountUnder(d.dir)
	_ = exec.Command("ip", "link", "del", d.bridge).Run()
	d.checkDocker0()
	_ = os.RemoveAll(d.dir)
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		if err := unix.Unmount(points[i], unix.MNT_DETACH); err != nil {
			fmt.Fprintf(os.Stderr, "enginetest: unmount %s: %v\n", points[i], err)
		}
	}
}
