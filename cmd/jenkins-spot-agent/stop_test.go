package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/containertest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds/imdstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins/jenkinstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// The service as a process, at its end: a stop signal, a metadata service in bad
// weather, a SIGKILL with and without a restart. Each test runs the static binary's
// `run` as systemd would start it, against amazon-ec2-metadata-mock (no notice for an
// hour), a tmpfs home, the Docker Engine running the Jenkins double, the ELB double and
// a unixgram NOTIFY_SOCKET.

// svcStopLimit is the unit's TimeoutStopSec: systemd SIGKILLs an agent still running
// this long after SIGTERM.
const svcStopLimit = 150 * time.Second

// svcSource is what mountinfo shows for the home: the regional EFS name. The agent
// mounts by the file system id (mount type efs, as amazon-efs-utils does) and resolves
// no name, so the test needs no /etc/hosts entry.
const svcSource = e2eFileSystem + ".efs.us-east-1.amazonaws.com:/"

// svcOptions shape one service run.
type svcOptions struct {
	ttl time.Duration
	// weather, when set, puts the fault proxy with these chances (seeded with seed)
	// between the agent and AEMM.
	weather []imdstest.Chance
	seed    uint64
}

// svc is one `run` of the agent and the world it runs in.
type svc struct {
	t         *testing.T
	bin, dir  string
	cli       *client.Client
	container string
	home      string
	socket    string
	cfgPath   string
	env       []string
	notify    *notifySocket
	aws       *awstest.Server
	proxy     *imdstest.FaultProxy
	agent     *process
	logPath   string
	starts    int
}

// newSvc sets the world up; start runs the agent in it.
func newSvc(t *testing.T, opts svcOptions) *svc {
	t.Helper()
	testenv.SkipShort(t, "runs the service against Docker, a tmpfs mount and AEMM")
	testenv.Root(t, "the service mounts a tmpfs home")
	for _, tool := range []string{"mount", "umount", "go"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, "the service run needs %s on PATH: %v", tool, err)
	}
	s := &svc{t: t, cli: containertest.RequireDocker(t)}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s.dir, s.bin = dir, containertest.AgentBinary(t, ".")
	aemmBin := buildAEMM(t, dir)
	suffix := testenv.RandomSuffix(t)
	token := testenv.RandomSuffix(t) + testenv.RandomSuffix(t)

	jenkinsPort := testenv.FreePort(t)
	tag := "jenkins-spot-agent-svc:" + suffix
	s.container = "jenkins-spot-agent-svc-" + suffix
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	err = containertest.BuildImage(ctx, s.cli, tag, s.bin, []string{
		"/" + filepath.Base(s.bin), "jenkins-double",
		"--listen", ":8080", "--home", "/var/jenkins_home", "--user", e2eUser, "--token", token, "--startup-delay", "1s",
	})
	cancel()
	if err != nil {
		t.Fatalf("build the Jenkins image: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := s.cli.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
			t.Errorf("remove image %s: %v", tag, err)
		}
	})

	s.aws = awstest.NewServer()
	t.Cleanup(s.aws.Close)
	s.aws.AddTargetGroup(e2eTargetGroup, awstest.Target{ID: e2eInstance, Port: 8080})
	creds, err := s.aws.Credentials().Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	// AEMM serves this instance with no Spot notice for an hour.
	imdsPort := testenv.FreePort(t)
	imdsAddr := "127.0.0.1:" + strconv.Itoa(imdsPort)
	aemmCmd := exec.Command(aemmBin, "-n", "127.0.0.1", "-p", strconv.Itoa(imdsPort), "-I", "spot", "-d", "3600", "--rebalance-delay-sec", "3600")
	aemmCmd.Dir = dir
	aemmCmd.Env = agentEnv("HOME=" + dir)
	aemm := startProcess(t, aemmCmd, filepath.Join(dir, "aemm.log"))
	waitPort(t, imdsAddr, 30*time.Second, aemm)
	imdsURL := "http://" + imdsAddr
	if opts.weather != nil {
		s.proxy = imdstest.NewFaultProxy(imdsURL)
		t.Cleanup(s.proxy.Close)
		s.proxy.SetChances("/", opts.seed, opts.weather...)
		imdsURL = s.proxy.URL()
	}

	s.home = filepath.Join(dir, "jenkins_home")
	mountScript := filepath.Join(dir, "mount-efs")
	writeFile(t, mountScript, `#!/bin/sh
# Stands in for mount.efs on a host without NFS: called as PROG -t TYPE -o OPTIONS
# SOURCE TARGET, it mounts a tmpfs whose source is the file system's regional EFS name,
# as an NFS mount of that name would show it.
set -eu
while getopts t:o: opt; do :; done
shift $((OPTIND - 1))
exec mount -t tmpfs -o size=64m "`+svcSource+`" "$2"
`, 0o755)
	unmountInCleanup(t, s.home)
	tokenFile := filepath.Join(dir, "jenkins-api-token")
	writeFile(t, tokenFile, token+"\n", 0o600)
	s.socket = filepath.Join(dir, "control.sock")
	s.cfgPath = filepath.Join(dir, "config.yaml")
	writeFile(t, s.cfgPath, fmt.Sprintf(`efs:
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
  ports: ["127.0.0.1:%d:8080"]
  url: http://127.0.0.1:%d
  user: %s
  api_token_file: %q
  ready_timeout: 60s
  stop_grace: 5s
  uid: 0
  gid: 0
  local_cache_dir: %q
lease:
  ttl: %s
target_groups:
  - arn: %s
    port: 8080
interruption:
  poll_interval: 1s
  safety_margin: 5s
metrics:
  listen_address: ""
control_socket: %q
state_dir: %q
`, e2eFileSystem, s.home, mountScript, tag, s.container, jenkinsPort, jenkinsPort, e2eUser, tokenFile,
		filepath.Join(dir, "cache"), opts.ttl, e2eTargetGroup, s.socket, filepath.Join(dir, "state")), 0o600)
	// The container goes before the home is unmounted (cleanups run last-in first-out).
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := s.cli.ContainerRemove(ctx, s.container, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !strings.Contains(strings.ToLower(err.Error()), "no such container") {
			t.Errorf("remove container %s: %v", s.container, err)
		}
	})
	s.notify = listenNotify(t, filepath.Join(dir, "notify.sock"))
	s.env = agentEnv(
		"NOTIFY_SOCKET="+s.notify.path,
		"AWS_EC2_METADATA_SERVICE_ENDPOINT="+imdsURL,
		"AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2="+s.aws.URL(),
		"AWS_ENDPOINT_URL_AUTO_SCALING="+s.aws.URL(),
		"AWS_ENDPOINT_URL_EC2="+s.aws.URL(),
		"AWS_ACCESS_KEY_ID="+creds.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY="+creds.SecretAccessKey,
		"AWS_REGION=us-east-1",
		"AWS_CONFIG_FILE="+filepath.Join(dir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "no-aws-credentials"),
		"NO_PROXY=127.0.0.1,localhost",
	)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log (last lines):\n%s", tail(s.logPath, 60))
			t.Logf("notify datagrams: %q", s.notify.all())
			t.Logf("Jenkins container log:\n%s", containerLog(s.cli, s.container))
		}
	})
	return s
}

// start runs the agent (again: the same configuration, state and home, as systemd
// restarts it).
func (s *svc) start() *process {
	s.t.Helper()
	s.starts++
	cmd := exec.Command(s.bin, "run", "--config", s.cfgPath, "--log-format", "json")
	cmd.Dir = s.dir
	cmd.Env = s.env
	s.logPath = filepath.Join(s.dir, fmt.Sprintf("agent.%d.log", s.starts))
	s.agent = startProcess(s.t, cmd, s.logPath)
	return s.agent
}

// serving waits for READY=1 number n (one per start) and the serving phase.
func (s *svc) serving(limit time.Duration) status.Snapshot {
	s.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		n := 0
		for _, m := range s.notify.all() {
			for _, l := range strings.Split(m, "\n") {
				if l == "READY=1" {
					n++
				}
			}
		}
		if n >= s.starts {
			break
		}
		if ok, err := s.agent.exited(); ok {
			s.t.Fatalf("the agent exited before READY=1: %v", err)
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no READY=1 within %s of the agent's start", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return waitPhase(s.t, s.bin, s.socket, status.PhaseServing, 10*time.Second, s.agent)
}

// exit waits for the agent to exit after a signal, up to systemd's stop timeout, and
// returns its exit code and when it exited.
func (s *svc) exit() (int, time.Time) {
	s.t.Helper()
	select {
	case <-s.agent.done:
	case <-time.After(svcStopLimit):
		s.t.Fatalf("the agent still runs %s after the signal: systemd would SIGKILL it", svcStopLimit)
	}
	at := time.Now()
	var ee *exec.ExitError
	switch {
	case s.agent.err == nil:
		return 0, at
	case errors.As(s.agent.err, &ee):
		return ee.ExitCode(), at
	}
	s.t.Fatalf("wait for the agent: %v", s.agent.err)
	return -1, at
}

// viewHome bind-mounts the home at a second path, so that it stays readable after the
// plan unmounts it.
func (s *svc) viewHome() string {
	s.t.Helper()
	view := filepath.Join(s.dir, "home-view")
	if err := os.Mkdir(view, 0o755); err != nil {
		s.t.Fatal(err)
	}
	unmountInCleanup(s.t, view)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "mount", "--bind", s.home, view).CombinedOutput(); err != nil {
		s.t.Fatalf("bind-mount the home for later inspection: %v: %s", err, out)
	}
	return view
}

// containerTimes reads the container's id, start and end times as dockerd recorded them.
func (s *svc) containerTimes() (id string, started, finished time.Time, running bool) {
	s.t.Helper()
	info := inspect(s.t, s.cli, s.container)
	if info.State == nil {
		s.t.Fatalf("container %s has no state", s.container)
	}
	started, _ = time.Parse(time.RFC3339Nano, info.State.StartedAt)
	finished, _ = time.Parse(time.RFC3339Nano, info.State.FinishedAt)
	return info.ID, started, finished, info.State.Running
}

// TestRunStopSignalEndsTheProcessAfterThePlan: a serving `run` gets SIGTERM (systemctl
// stop, a shutdown): the plan runs (Jenkins stopped cleanly, lease released, home
// unmounted) and the process then exits 0, within the plan's budget. The stop must not
// keep the process alive once the plan is done: systemd waits for the exit, and a
// shutdown with it.
func TestRunStopSignalEndsTheProcessAfterThePlan(t *testing.T) {
	s := newSvc(t, svcOptions{ttl: 6 * time.Second})
	s.start()
	s.serving(60 * time.Second)
	view := s.viewHome()
	held := readLease(t, view)

	sent := time.Now()
	if err := s.agent.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, exited := s.exit()
	t.Logf("SIGTERM → exit %d after %s", code, exited.Sub(sent).Round(time.Millisecond))
	if code != 0 {
		t.Errorf("the agent exited with %d after SIGTERM; want 0", code)
	}
	if budget := agent.DefaultBudget; exited.After(sent.Add(budget)) {
		t.Errorf("the agent exited %s after SIGTERM, beyond the plan's budget %s", exited.Sub(sent).Round(time.Millisecond), budget)
	}

	// The plan ran to its end before the exit.
	released := readLease(t, view)
	if !released.Released || released.Holder != e2eInstance || released.Epoch != held.Epoch {
		t.Errorf("lease record after the stop: %+v; want released by %s in epoch %d", released, e2eInstance, held.Epoch)
	}
	if m := mountAt(t, s.home); m != nil {
		t.Errorf("%s still mounted after the stop: %s from %s", s.home, m.FSType, m.Source)
	}
	info := inspect(t, s.cli, s.container)
	if info.State == nil || info.State.Running || info.State.ExitCode != 0 {
		t.Errorf("container after the stop: %+v; want exited with 0 (a clean stop)", info.State)
	}
	if hs, err := jenkinstest.ReadHomeState(view); err != nil || hs.Stopped.IsZero() {
		t.Errorf("Jenkins home state after the stop: %+v, %v; want a clean stop recorded", hs, err)
	}
	if !slices.ContainsFunc(s.notify.all(), func(m string) bool { return strings.Contains(m, "STATUS=stopped: plan done") }) {
		t.Errorf("no STATUS= datagram said the plan was done: %q", s.notify.all())
	}
	// Nothing is left to do once the plan is done: no build to wait for, the process
	// ends with it. The log tells when the plan ended.
	if end, ok := planEnd(t, s.logPath); ok {
		t.Logf("plan done %s after SIGTERM; the process exited %s later", end.Sub(sent).Round(time.Millisecond), exited.Sub(end).Round(time.Millisecond))
		if after := exited.Sub(end); after > 15*time.Second {
			t.Errorf("the process exited %s after its plan was done; it must end with the plan", after.Round(time.Millisecond))
		}
	} else {
		t.Errorf("the agent log has no end of the plan")
	}
}

// planEnd is when the agent's JSON log says the shutdown plan ended.
func planEnd(t *testing.T, logPath string) (time.Time, bool) {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, `"msg":"shutdown plan finished`) {
			continue
		}
		const key = `"time":"`
		i := strings.Index(line, key)
		if i < 0 {
			continue
		}
		rest := line[i+len(key):]
		if j := strings.IndexByte(rest, '"'); j > 0 {
			if at, err := time.Parse(time.RFC3339Nano, rest[:j]); err == nil {
				return at, true
			}
		}
	}
	return time.Time{}, false
}

// badWeather is IMDS as the brief describes a bad day: a fifth of the requests answer
// 500, a tenth 429, one in twenty loses its connection, one in twenty stalls for 3 s.
func badWeather() []imdstest.Chance {
	return []imdstest.Chance{
		{Rate: 0.20, Fault: imdstest.Fault{Status: http.StatusInternalServerError}},
		{Rate: 0.10, Fault: imdstest.Fault{Status: http.StatusTooManyRequests}},
		{Rate: 0.05, Fault: imdstest.Fault{Drop: true}},
		{Rate: 0.05, Fault: imdstest.Fault{Delay: 3 * time.Second}},
	}
}

// TestRunThroughBadIMDSWeather: `run` against AEMM behind the fault proxy (500s, 429s,
// dropped connections and 3 s stalls, seeded) reads its identity, serves (READY=1) and
// ends with exit 0 on SIGTERM; the weather did hit it.
func TestRunThroughBadIMDSWeather(t *testing.T) {
	const seed = 20261130
	s := newSvc(t, svcOptions{ttl: 6 * time.Second, weather: badWeather(), seed: seed})
	s.start()
	s.serving(3 * time.Minute)
	// Keep serving through a few polls of bad weather.
	time.Sleep(5 * time.Second)
	if ok, err := s.agent.exited(); ok {
		t.Fatalf("the agent exited while serving in bad IMDS weather: %v", err)
	}
	faults, requests := s.proxy.Injected(), s.proxy.Requests("/")
	t.Logf("IMDS: %d requests, %d met a fault (seed %d)", requests, faults, seed)
	if faults < 3 {
		t.Errorf("only %d of %d IMDS requests met a fault: the weather was too fair to prove anything", faults, requests)
	}
	if err := s.agent.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, _ := s.exit(); code != 0 {
		t.Errorf("the agent exited with %d after SIGTERM; want 0", code)
	}
}

// TestRunKilledGuardStopsJenkinsBeforeExpiry: the agent is SIGKILLed while serving and
// nothing restarts it. The lease guard in the container, which outlives the agent, must
// stop Jenkins before the lease record the agent last wrote expires, since a successor
// may take the home from then on.
func TestRunKilledGuardStopsJenkinsBeforeExpiry(t *testing.T) {
	s := newSvc(t, svcOptions{ttl: 6 * time.Second})
	s.start()
	s.serving(60 * time.Second)
	if err := s.agent.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-s.agent.done
	// Dead and reaped: the agent writes nothing more; this is the record it left.
	last := readLease(t, s.home)
	if last.Holder != e2eInstance || last.Released {
		t.Fatalf("lease record after the kill: %+v; want held by %s", last, e2eInstance)
	}
	deadline := time.Now().Add(6*time.Second + 30*time.Second)
	var finished time.Time
	for {
		_, _, f, running := s.containerTimes()
		if !running {
			finished = f
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Jenkins still runs %s after the record's expiry %s: the guard did not fence it",
				time.Since(last.Expires).Round(time.Millisecond), last.Expires.Format(time.StampMilli))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("record expires %s; the guard stopped Jenkins at %s, %s before",
		last.Expires.Format(time.StampMilli), finished.Format(time.StampMilli), last.Expires.Sub(finished).Round(time.Millisecond))
	if !finished.Before(last.Expires) {
		t.Errorf("Jenkins ended at %s, not before the lease record's expiry %s", finished.Format(time.StampMilli), last.Expires.Format(time.StampMilli))
	}
	// The double records a clean stop on SIGTERM: the guard stopped it, it did not die
	// of something else.
	if hs, err := jenkinstest.ReadHomeState(s.home); err != nil || hs.Stopped.IsZero() {
		t.Errorf("Jenkins home state: %+v, %v; want the stop the guard asked for recorded", hs, err)
	}
}

// TestRunRestartedWithinTheLeaseAdoptsJenkins: the agent is SIGKILLed while serving and
// started again (systemd's Restart=on-failure) within the lease: it adopts its lease
// and the running container, which is neither stopped nor started again (same
// container id, same start time).
func TestRunRestartedWithinTheLeaseAdoptsJenkins(t *testing.T) {
	// A 30 s lease: the guard's fence point is 23 s after the last renewal, far after
	// the restart.
	s := newSvc(t, svcOptions{ttl: 30 * time.Second})
	s.start()
	s.serving(60 * time.Second)
	id, started, _, running := s.containerTimes()
	if !running {
		t.Fatal("Jenkins not running while serving")
	}
	before := readLease(t, s.home)
	if err := s.agent.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-s.agent.done
	s.start()
	st := s.serving(60 * time.Second)
	id2, started2, _, running2 := s.containerTimes()
	if id2 != id || !started2.Equal(started) || !running2 {
		t.Errorf("Jenkins was restarted: container %s started %s before, %s started %s (running %v) after",
			id[:12], started.Format(time.StampMilli), id2[:12], started2.Format(time.StampMilli), running2)
	}
	after := readLease(t, s.home)
	if after.Holder != e2eInstance || after.Epoch != before.Epoch || after.Released {
		t.Errorf("lease not adopted: before %+v, after %+v", before, after)
	}
	if !st.Lease.Held || st.Lease.Epoch != before.Epoch {
		t.Errorf("status after the restart: lease %+v; want held in epoch %d", st.Lease, before.Epoch)
	}
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "adopted the running Jenkins container") {
		t.Errorf("the restarted agent did not say it adopted the container")
	}
	if err := s.agent.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, _ := s.exit(); code != 0 {
		t.Errorf("the restarted agent exited with %d after SIGTERM; want 0", code)
	}
}

// TestRunStopSignalWhileStartingRunsThePlan: SIGTERM comes while the process is still
// reading its configuration (systemctl stop, or a shutdown, right after systemd started
// or restarted the agent). The signal must not kill the process with its default
// action: the agent starts, acts on the stop without starting Jenkins and exits 0. On
// a boot where no agent ran before, nothing was started, so it ends before the boot;
// TestStopSignalAtTheStartOfARestartedAgentRunsThePlan (internal/agent) has the plan
// of a restarted one. The configuration is a FIFO, so the test knows the process is
// blocked in reading it when the signal comes.
func TestRunStopSignalWhileStartingRunsThePlan(t *testing.T) {
	s := newSvc(t, svcOptions{ttl: 6 * time.Second})
	cfg, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(s.cfgPath); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(s.cfgPath, 0o600); err != nil {
		t.Fatal(err)
	}
	p := s.start()
	waitBlockedInFIFO(t, p)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The agent goes on reading its configuration (the signal is kept for it).
	f, err := os.OpenFile(s.cfgPath, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		code, _ := s.exit()
		t.Fatalf("the agent stopped reading its configuration at SIGTERM (%v); it ended with %d: a stop signal while starting killed it", err, code)
	}
	_, werr := f.Write(cfg)
	f.Close()
	if werr != nil {
		t.Fatalf("write the configuration: %v", werr)
	}
	code, _ := s.exit()
	if code != 0 {
		t.Errorf("the agent exited with %d after a SIGTERM while starting; want 0", code)
	}
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"msg":"stop signal before the instance identity was read: nothing started, nothing to hand over"`) {
		t.Errorf("the agent did not act on the stop signal before its boot")
	}
	if strings.Contains(string(b), `"msg":"started container"`) {
		t.Errorf("Jenkins was started after a stop signal")
	}
}

// waitBlockedInFIFO waits until a thread of the process sleeps in opening a FIFO that
// has no writer yet.
func waitBlockedInFIFO(t *testing.T, p *process) {
	t.Helper()
	deadline := time.Now().Add(testenv.WaitLimit)
	dir := fmt.Sprintf("/proc/%d/task", p.cmd.Process.Pid)
	for {
		tasks, _ := os.ReadDir(dir)
		for _, task := range tasks {
			if w, err := os.ReadFile(filepath.Join(dir, task.Name(), "wchan")); err == nil && string(w) == "wait_for_partner" {
				return
			}
		}
		if ok, err := p.exited(); ok {
			t.Fatalf("the agent exited before it read its configuration: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not open its configuration within %s", testenv.WaitLimit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRunStopSignalWhileIMDSIsAwayEndsAtOnce: IMDS does not answer at boot (the
// identity is retried for minutes). SIGTERM then ends the process at once with exit 0:
// nothing has started, and systemd must not wait TimeoutStopSec and SIGKILL it, nor
// restart it for an exit 1.
func TestRunStopSignalWhileIMDSIsAwayEndsAtOnce(t *testing.T) {
	t.Parallel()
	bin := containertest.AgentBinary(t, ".")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, "0123456789abcdef\n", 0o600)
	cfgPath := filepath.Join(dir, "config.yaml")
	writeFile(t, cfgPath, fmt.Sprintf(`efs:
  file_system_id: fs-0123456789abcdef0
  mount_point: %q
jenkins:
  image: jenkins/jenkins:lts
  user: admin
  api_token_file: %q
metrics:
  listen_address: ""
control_socket: %q
state_dir: %q
`, filepath.Join(dir, "home"), tokenFile, filepath.Join(dir, "control.sock"), filepath.Join(dir, "state")), 0o600)
	// Nothing listens on port 1 of loopback: every IMDS read is refused and retried.
	cmd := exec.Command(bin, "run", "--config", cfgPath, "--log-format", "json")
	cmd.Env = agentEnv("AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:1", "AWS_REGION=us-east-1", "NO_PROXY=127.0.0.1")
	logPath := filepath.Join(dir, "agent.log")
	p := startProcess(t, cmd, logPath)
	for !strings.Contains(readFileString(logPath), "jenkins-spot-agent starting") {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // the identity read retries a refused IMDS now
	if done, err := p.exited(); done {
		t.Fatalf("the agent ended before the stop signal: %v\n%s", err, tail(logPath, 30))
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the agent still runs 30 s after SIGTERM while IMDS is away\n%s", tail(logPath, 30))
	}
	if p.err != nil {
		t.Errorf("exit after SIGTERM while IMDS is away: %v; want exit 0\n%s", p.err, tail(logPath, 30))
	}
	if log := readFileString(logPath); !strings.Contains(log, "nothing started") {
		t.Errorf("the log does not say that nothing started:\n%s", tail(logPath, 30))
	}
}

func readFileString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// TestSimulateIntoAClosedPipeCleansUp: `simulate | head -1` closes the pipe after the
// first line. The rehearsal ends then, and removes what it made (its directory under
// TMPDIR) instead of dying of SIGPIPE at its next write.
func TestSimulateIntoAClosedPipeCleansUp(t *testing.T) {
	t.Parallel()
	bin := containertest.AgentBinary(t, ".")
	tmp := t.TempDir()
	cmd := exec.Command(bin, "simulate", "--docker", "never")
	cmd.Env = append(agentEnv(), "TMPDIR="+tmp)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatalf("first line: %v", err)
	}
	_ = out.Close() // as head does after its line
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("simulate still runs 2 min after its reader went away\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
		t.Errorf("simulate died of %v when its reader went away; want it to clean up and exit", ee.ProcessState.Sys().(syscall.WaitStatus).Signal())
	}
	left, _ := filepath.Glob(filepath.Join(tmp, "jenkins-spot-agent-sim-*"))
	if len(left) > 0 {
		t.Errorf("simulate left %v behind after its reader went away", left)
	}
}
