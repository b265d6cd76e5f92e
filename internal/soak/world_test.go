package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/containertest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds/imdstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/webhook"
)

// The emulated estate.
const (
	fileSystemID = "fs-0123456789abcdef0"
	// efsSource is what mountinfo shows for the EFS stand-in: the regional EFS name, as
	// an NFS mount of it would show it, so the agent's verification accepts it.
	efsSource       = fileSystemID + ".efs.us-east-1.amazonaws.com:/"
	targetGroupARN  = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/jenkins/0123456789abcdef"
	groupName       = "jenkins-controller"
	hookName        = "jenkins-drain"
	jenkinsUser     = "admin"
	homeInContainer = "/var/jenkins_home"
	// The jobs of the Jenkins image: a freestyle build that the drain waits for, and a
	// Pipeline that the stop saves and the successor resumes.
	freestyleJob = "build"
	pipelineJob  = "deploy"
)

// world is what every cycle of a soak run shares: the static binary, the private
// dockerd and the Jenkins image on it, the mount program, the webhook receiver.
type world struct {
	t      *testing.T
	bin    string
	dir    string // short: unix socket paths live under it
	run    string // tells this run's containers and processes from any other's
	daemon *containertest.Daemon
	docker *client.Client
	image  string
	token  string
	tokenF string
	mount  string
	hooks  *hookSink

	pidsMu sync.Mutex
	pids   map[int]bool // agent processes, reaped by their own Wait
}

// newWorld sets up a soak run, or skips (fails under CI=true) without root, Docker,
// mount and ip.
func newWorld(t *testing.T) *world {
	t.Helper()
	testenv.Root(t, "the soak mounts the EFS stand-in and runs a dockerd of its own")
	for _, tool := range []string{"mount", "umount", "ip", "dockerd"} {
		testenv.Tool(t, tool, map[string]string{"mount": "mount", "umount": "mount", "ip": "iproute2", "dockerd": "docker.io"}[tool])
	}
	w := &world{t: t, run: testenv.RandomSuffix(t), pids: map[int]bool{}}
	dir, err := os.MkdirTemp("/tmp", "jsa-soak-")
	if err != nil {
		t.Fatal(err)
	}
	w.dir = dir
	t.Cleanup(func() {
		if os.Getenv("SOAK_KEEP") == "" {
			_ = os.RemoveAll(dir)
		}
	})
	w.bin = containertest.AgentBinary(t, "../../cmd/jenkins-spot-agent")
	w.daemon = containertest.StartDaemon(t)
	w.docker = w.daemon.Client()
	w.token = testenv.RandomSuffix(t) + testenv.RandomSuffix(t)
	w.tokenF = filepath.Join(dir, "jenkins-api-token")
	writeFile(t, w.tokenF, w.token+"\n", 0o600)
	w.image = "jenkins-spot-agent-soak:" + w.run
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = containertest.BuildImage(ctx, w.docker, w.image, w.bin, []string{
		"/" + filepath.Base(w.bin), "jenkins-double",
		"--listen", ":8080", "--home", homeInContainer, "--user", jenkinsUser, "--token", w.token,
		"--startup-delay", "1s", "--job", freestyleJob + "=4s", "--job", pipelineJob + "=pipeline:6s",
	})
	if err != nil {
		t.Fatalf("build the Jenkins image on the private dockerd: %v", err)
	}
	// Stands in for mount.efs: binds the cycle's EFS stand-in (a tmpfs whose source is
	// the file system's EFS name) at the mount point, so that every instance of a cycle
	// sees the same file system, as EFS mounts of one file system do.
	w.mount = filepath.Join(dir, "mount-efs")
	writeFile(t, w.mount, `#!/bin/sh
# Called as PROG -t TYPE -o OPTIONS SOURCE TARGET; binds $JSA_SOAK_EFS at TARGET.
set -eu
while getopts t:o: opt; do :; done
shift $((OPTIND - 1))
exec mount --bind "$JSA_SOAK_EFS" "$2"
`, 0o755)
	w.hooks = newHookSink()
	t.Cleanup(w.hooks.close)
	return w
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// removeContainers force-removes the containers whose names start with prefix.
func (w *world) removeContainers(prefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := w.docker.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("name", prefix))})
	if err != nil {
		return err
	}
	for _, c := range list {
		if err := w.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil {
			return err
		}
	}
	return nil
}

// reapOrphans reaps the exited processes that were reparented to this process (the
// private dockerd makes it a child subreaper): what a killed agent or dockerd left.
// Never the agents themselves, whose exit their own Wait collects, nor dockerd.
func (w *world) reapOrphans() {
	me := os.Getpid()
	names, _ := os.ReadDir("/proc")
	for _, e := range names {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		w.pidsMu.Lock()
		ours := w.pids[pid]
		w.pidsMu.Unlock()
		if ours {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || strings.Contains(s[:i], "(dockerd") {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] != "Z" || f[1] != strconv.Itoa(me) {
			continue
		}
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	}
}

// hookSink receives the agents' webhook notifications (format json), by path.
type hookSink struct {
	srv *httptest.Server
	mu  sync.Mutex
	got map[string][]webhook.Message
}

func newHookSink() *hookSink {
	h := &hookSink{got: map[string][]webhook.Message{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m webhook.Message
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.got[r.URL.Path] = append(h.got[r.URL.Path], m)
		h.mu.Unlock()
	}))
	return h
}

func (h *hookSink) close() { h.srv.Close() }

func (h *hookSink) url(path string) string { return h.srv.URL + path }

func (h *hookSink) messages(path string) []webhook.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]webhook.Message(nil), h.got[path]...)
}

// node is one emulated controller instance of a cycle: its IMDS (behind a fault
// proxy), the fault proxy in front of its Jenkins, its directories and configuration,
// and its agent process, which it restarts as systemd's Restart=on-failure would.
type node struct {
	c            *cycle
	name         string
	id           instance.Identity
	imds         *imdstest.Server
	imdsProxy    *imdstest.FaultProxy
	jenkinsProxy *imdstest.FaultProxy
	port         int // Jenkins' published port
	dir          string
	mountPoint   string
	socket       string
	config       string
	log          string
	hook         string // the webhook path of this node
	container    string

	mu       sync.Mutex
	cur      *agentRun // the current process; nil before the first start
	runs     []*agentRun
	gone     bool // killed for good: never started again
	stopping bool // the cycle ends: no more restarts
	stopped  bool // an operator stopped it (a stop signal): systemd does not restart it
	restarts int  // restarts made by the Restart=on-failure emulation
	notes    []string
}

// maxRestarts bounds the Restart=on-failure emulation within one cycle.
const maxRestarts = 20

// agentRun is one process of an agent.
type agentRun struct {
	n       int
	cmd     *exec.Cmd
	started time.Time
	logFrom int64 // where its lines begin in the node's log
	done    chan struct{}
	// Set once done is closed.
	exited time.Time
	state  *os.ProcessState
	// Set by the soak under node.mu.
	killed bool      // SIGKILLed by the soak
	termAt time.Time // when the soak sent SIGTERM
}

func (r *agentRun) alive() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// wroteNothing reports whether the process wrote no line of its own to its log: it
// ended before its own code ran (the Go runtime and package initialisation come first).
func (r *agentRun) wroteNothing(log string) bool {
	f, err := os.Open(log)
	if err != nil {
		return false
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, r.logFrom, 1<<20))
	if err != nil {
		return false
	}
	return !strings.Contains(string(b), "\n{")
}

// signaled reports whether the process was killed by sig.
func (r *agentRun) signaled(sig syscall.Signal) bool {
	ws, ok := r.state.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// how says how the process ended.
func (r *agentRun) how() string {
	if r.state == nil {
		return "not reaped"
	}
	if ws, ok := r.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("exit %d", r.state.ExitCode())
}

func (n *node) note(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.notes = append(n.notes, fmt.Sprintf("%s %s", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...)))
}

// start starts the agent unless it is gone, stopping or already running.
func (n *node) start() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gone || n.stopping || n.stopped || (n.cur != nil && n.cur.alive()) {
		return
	}
	w := n.c.w
	logf, err := os.OpenFile(n.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		n.notes = append(n.notes, "cannot open the agent log: "+err.Error())
		return
	}
	r := &agentRun{n: len(n.runs) + 1, done: make(chan struct{})}
	if fi, err := logf.Stat(); err == nil {
		r.logFrom = fi.Size()
	}
	fmt.Fprintf(logf, "=== soak: agent process %d of %s starts at %s\n", r.n, n.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(w.bin, "run", "--config", n.config, "--log-format", "json")
	cmd.Dir = n.dir
	cmd.Env = n.c.agentEnv(n)
	cmd.Stdout, cmd.Stderr = logf, logf
	// An agent never outlives the soak, even one that is itself killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		n.notes = append(n.notes, "cannot start the agent: "+err.Error())
		return
	}
	r.cmd, r.started = cmd, time.Now()
	w.pidsMu.Lock()
	w.pids[cmd.Process.Pid] = true
	w.pidsMu.Unlock()
	n.cur = r
	n.runs = append(n.runs, r)
	go func() {
		err := cmd.Wait()
		logf.Close()
		w.pidsMu.Lock()
		delete(w.pids, cmd.Process.Pid)
		w.pidsMu.Unlock()
		r.exited, r.state = time.Now(), cmd.ProcessState
		_ = err // the state says it all
		close(r.done)
		n.exited(r)
	}()
}

// exited is systemd's Restart=on-failure: an agent that failed by itself (not stopped,
// not killed by the soak) starts again after RestartSec, unless the configuration was
// refused (exit 78).
func (n *node) exited(r *agentRun) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r.killed || !r.termAt.IsZero() || n.gone || n.stopping || n.stopped {
		return
	}
	code := r.state.ExitCode()
	if code == 0 || code == 78 {
		n.notes = append(n.notes, fmt.Sprintf("%s agent process %d ended by itself with %s: not restarted", time.Now().Format("15:04:05.000"), r.n, r.how()))
		return
	}
	if n.restarts >= maxRestarts {
		n.notes = append(n.notes, fmt.Sprintf("agent process %d failed (%s): restart limit of the soak reached", r.n, r.how()))
		return
	}
	n.restarts++
	n.notes = append(n.notes, fmt.Sprintf("%s agent process %d failed (%s): restarted in %s (Restart=on-failure)", time.Now().Format("15:04:05.000"), r.n, r.how(), restartDelay))
	time.AfterFunc(restartDelay, n.start)
}

// kill SIGKILLs the agent and waits for it to be gone; gone means it is never started
// again. It reports whether there was a process to kill.
func (n *node) kill(gone bool) bool {
	n.mu.Lock()
	if gone {
		n.gone = true
	}
	r := n.cur
	if r == nil || !r.alive() {
		n.mu.Unlock()
		return false
	}
	r.killed = true
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	n.mu.Unlock()
	select {
	case <-r.done:
	case <-time.After(testenv.WaitLimit):
		n.note("agent process %d did not die within %s of SIGKILL", r.n, testenv.WaitLimit)
	}
	return true
}

// restart starts the agent again after a kill, unless it is gone or was stopped.
func (n *node) restart() bool {
	n.mu.Lock()
	blocked := n.gone || n.stopping || n.stopped || (n.cur != nil && n.cur.alive())
	n.mu.Unlock()
	if blocked {
		return false
	}
	n.start()
	return true
}

// term sends SIGTERM to the running agent, as `systemctl stop` does; it returns the
// process, nil when none runs.
func (n *node) term() *agentRun {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopped = true
	r := n.cur
	if r == nil || !r.alive() {
		return nil
	}
	r.termAt = time.Now()
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	return r
}

// current returns the running process, nil when none runs.
func (n *node) current() *agentRun {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cur == nil || !n.cur.alive() {
		return nil
	}
	return n.cur
}

func (n *node) allRuns() []*agentRun {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*agentRun(nil), n.runs...)
}

func (n *node) isGone() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.gone
}

// latch is the agent's plan latch (state_dir/plan-latch.json): a notice that ends the
// instance started the shutdown plan, and whether it finished. It survives restarts.
type latch struct {
	Kind     instance.Kind `json:"kind"`
	Deadline time.Time     `json:"deadline"`
	Started  time.Time     `json:"started"`
	Finished time.Time     `json:"finished"`
}

func (n *node) latch() (latch, bool) {
	var l latch
	b, err := os.ReadFile(filepath.Join(n.dir, "state", "plan-latch.json"))
	if err != nil {
		return l, false
	}
	return l, json.Unmarshal(b, &l) == nil
}

// writeConfig writes the node's configuration: production's, compressed as simulate
// compresses it, with the estate's doubles and this node's own paths and ports.
func (n *node) writeConfig() error {
	w := n.c.w
	cfg := fmt.Sprintf(`efs:
  file_system_id: %s
  mount_point: %q
  dns: regional
  mount_type: efs
  mount_scope: none
  mount_timeout: 30s
  mount_program: %q
  expect_fstypes: [tmpfs]
jenkins:
  image: %q
  pull: never
  container_name: %s
  home_in_container: %s
  ports: ["127.0.0.1:%d:8080"]
  url: %s
  user: %s
  api_token_file: %q
  ready_timeout: 30s
  stop_grace: %s
  uid: 0
  gid: 0
  local_cache_dir: %q
  env:
    %s: %q
    %s: %q
    %s: %q
lease:
  ttl: %s
target_groups:
  - arn: %s
    port: 8080
discover_target_groups: true
lifecycle_hook: %s
interruption:
  poll_interval: 1s
  safety_margin: %s
metrics:
  listen_address: ""
control_socket: %q
state_dir: %q
webhook:
  url_file: %q
  format: json
`, fileSystemID, n.mountPoint, w.mount, w.image, n.container, homeInContainer, n.port, n.jenkinsProxy.URL(),
		jenkinsUser, w.tokenF, stopGrace, filepath.Join(n.dir, "cache"),
		envRun, w.run, envCycle, strconv.Itoa(n.c.n), envNode, n.name,
		leaseTTL, targetGroupARN, hookName, safetyMargin, n.socket, filepath.Join(n.dir, "state"),
		filepath.Join(n.dir, "webhook-url"))
	if err := os.WriteFile(filepath.Join(n.dir, "webhook-url"), []byte(w.hooks.url(n.hook)+"\n"), 0o600); err != nil {
		return err
	}
	return os.WriteFile(n.config, []byte(cfg), 0o600)
}
