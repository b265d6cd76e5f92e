package main

import (
	"bytes"
	"context"
	"fmt"
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
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/containertest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins/jenkinstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// The world of the end-to-end test. AEMM serves this instance in us-east-1a, so the
// agent derives the EFS name below from the identity it reads.
const (
	e2eInstance     = "i-1234567890abcdef0"
	e2eFileSystem   = "fs-0123456789abcdef0"
	e2eEFSName      = "us-east-1a." + e2eFileSystem + ".efs.us-east-1.amazonaws.com"
	e2eTargetGroup  = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/jenkins/0123456789abcdef"
	e2eAutoScaling  = "jenkins-controller"
	e2eHook         = "jenkins-drain"
	e2eUser         = "admin"
	e2eSafetyMargin = 5 * time.Second
	e2eStopGrace    = 5 * time.Second

	// e2eNoticeAfter is when AEMM starts answering with the Spot notice, counted from
	// its start. The agent must be serving, and the builds started, 5 s before.
	e2eNoticeAfter = 25 * time.Second
	// e2eWarning is how far after the notice the termination time it names lies. The
	// drain ends at termination − safety margin − stop grace − the plan's 5 s tail
	// reserve, 35 s after the notice: after the 35 s nightly build, started at least
	// 5 s before the notice, has finished; and the deploy Pipeline, which runs until
	// Jenkins stops, keeps the drain busy until then.
	e2eWarning = 50 * time.Second
	// e2eNightly is the nightly job's length, as the Jenkins double runs it.
	e2eNightly = "35s"
)

// TestRunEndToEnd runs the static binary's `run` as systemd would start it, against
// real peers where one runs here: amazon-ec2-metadata-mock for IMDS, a tmpfs mounted
// by the mount program under the EFS name, the Docker Engine running Jenkins (the
// Jenkins double in a FROM scratch image), a unixgram NOTIFY_SOCKET; ELBv2 and Auto
// Scaling are the in-process double. It boots, serves, takes a Spot notice with
// builds running, runs the shutdown plan, and exits on SIGTERM.
func TestRunEndToEnd(t *testing.T) {
	testenv.SkipShort(t, "end to end: Docker, a tmpfs mount, the built binary")
	began := time.Now()
	testenv.Root(t, "the end-to-end run mounts a tmpfs and edits /etc/hosts")
	for _, tool := range []string{"mount", "umount", "go"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, "end-to-end run needs %s on PATH: %v", tool, err)
	}
	cli := containertest.RequireDocker(t)
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bin := containertest.AgentBinary(t, ".")
	aemmBin := buildAEMM(t, dir)
	suffix := testenv.RandomSuffix(t)
	token := testenv.RandomSuffix(t) + testenv.RandomSuffix(t)

	// Jenkins: the double, as PID 1 of a FROM scratch image of this very binary.
	jenkinsPort := testenv.FreePort(t)
	jenkinsURL := "http://127.0.0.1:" + strconv.Itoa(jenkinsPort)
	tag := "jenkins-spot-agent-e2e:" + suffix
	containerName := "jenkins-spot-agent-e2e-" + suffix
	{
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := containertest.BuildImage(ctx, cli, tag, bin, []string{
			"/" + filepath.Base(bin), "jenkins-double",
			"--listen", ":8080", "--home", "/var/jenkins_home", "--user", e2eUser, "--token", token,
			"--startup-delay", "1s", "--job", "nightly=" + e2eNightly, "--job", "deploy=pipeline:0s",
		})
		cancel()
		if err != nil {
			t.Fatalf("build the Jenkins image: %v", err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := cli.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
			t.Errorf("remove image %s: %v", tag, err)
		}
	})

	// ELBv2 and Auto Scaling: the instance is in a group with a termination hook, its
	// action pending, and registered in the target group.
	aws := awstest.NewServer()
	t.Cleanup(aws.Close)
	aws.AddTargetGroup(e2eTargetGroup, awstest.Target{ID: e2eInstance, Port: 8080})
	aws.AddAutoScalingGroup(e2eAutoScaling, []string{e2eInstance}, []string{e2eTargetGroup}, e2eHook)
	creds, err := aws.Credentials().Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	// IMDS: AEMM with the Spot notice at a fixed time, naming a fixed termination time.
	imdsPort := testenv.FreePort(t)
	imdsAddr := "127.0.0.1:" + strconv.Itoa(imdsPort)
	noticeAt := time.Now().Add(e2eNoticeAfter).UTC().Truncate(time.Second)
	termination := noticeAt.Add(e2eWarning)
	aemmCmd := exec.Command(aemmBin, "-n", "127.0.0.1", "-p", strconv.Itoa(imdsPort), "-I",
		"spot", "-a", "terminate", "--mock-trigger-time", noticeAt.Format(time.RFC3339), "-t", termination.Format(time.RFC3339))
	aemmCmd.Dir = dir
	aemmCmd.Env = agentEnv("HOME=" + dir)
	aemmLog := filepath.Join(dir, "aemm.log")
	aemm := startProcess(t, aemmCmd, aemmLog)
	waitPort(t, imdsAddr, 30*time.Second, aemm)

	// EFS: a tmpfs under the AZ-specific name, mounted in this (dockerd's) mount
	// namespace so the container sees it; the name resolves through /etc/hosts.
	home := filepath.Join(dir, "jenkins_home")
	mountScript := filepath.Join(dir, "mount-efs")
	writeFile(t, mountScript, `#!/bin/sh
# Stands in for mount(8) on a host without an NFS client: called as
# PROG -t TYPE -o OPTIONS SOURCE TARGET, it ignores TYPE and OPTIONS and mounts a tmpfs
# whose source string is SOURCE, as an NFS mount of SOURCE would show it.
set -eu
while getopts t:o: opt; do :; done
shift $((OPTIND - 1))
exec mount -t tmpfs -o size=64m "$1" "$2"
`, 0o755)
	addHostsLine(t, "127.0.0.1 "+e2eEFSName)
	unmountInCleanup(t, home)

	tokenFile := filepath.Join(dir, "jenkins-api-token")
	writeFile(t, tokenFile, token+"\n", 0o600)
	metricsAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	socket := filepath.Join(dir, "control.sock")
	cfgPath := filepath.Join(dir, "config.yaml")
	writeFile(t, cfgPath, fmt.Sprintf(`efs:
  file_system_id: %s
  mount_point: %q
  dns: az
  mount_timeout: 30s
  mount_program: %q
  expect_fstypes: [tmpfs]
jenkins:
  image: %q
  pull: never
  container_name: %s
  home_in_container: /var/jenkins_home
  ports: ["127.0.0.1:%d:8080"]
  url: %s
  user: %s
  api_token_file: %q
  ready_timeout: 60s
  stop_grace: %s
  uid: 0
  gid: 0
  local_cache_dir: %q
lease:
  ttl: 6s
target_groups:
  - arn: %s
    port: 8080
discover_target_groups: true
lifecycle_hook: %s
interruption:
  poll_interval: 1s
  safety_margin: %s
metrics:
  listen_address: %q
control_socket: %q
state_dir: %q
`, e2eFileSystem, home, mountScript, tag, containerName, jenkinsPort, jenkinsURL, e2eUser, tokenFile,
		e2eStopGrace, filepath.Join(dir, "cache"), e2eTargetGroup, e2eHook, e2eSafetyMargin, metricsAddr, socket, filepath.Join(dir, "state")), 0o600)

	// The container goes before the home is unmounted (cleanups run last-in first-out).
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := cli.ContainerRemove(ctx, containerName, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !strings.Contains(strings.ToLower(err.Error()), "no such container") {
			t.Errorf("remove container %s: %v", containerName, err)
		}
	})

	notify := listenNotify(t, filepath.Join(dir, "notify.sock"))
	agentLog := filepath.Join(dir, "agent.log")
	agentCmd := exec.Command(bin, "run", "--config", cfgPath, "--log-format", "json")
	agentCmd.Dir = dir
	agentCmd.Env = agentEnv(
		"NOTIFY_SOCKET="+notify.path,
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=http://"+imdsAddr,
		"AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2="+aws.URL(),
		"AWS_ENDPOINT_URL_AUTO_SCALING="+aws.URL(),
		"AWS_ENDPOINT_URL_EC2="+aws.URL(),
		// Static credentials come first in the SDK's chain, so it never asks IMDS for
		// a role's; no shared file may name a profile with other endpoints.
		"AWS_ACCESS_KEY_ID="+creds.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY="+creds.SecretAccessKey,
		"AWS_REGION=us-east-1",
		"AWS_CONFIG_FILE="+filepath.Join(dir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "no-aws-credentials"),
		"NO_PROXY=127.0.0.1,localhost",
	)
	agentStarted := time.Now()
	agent := startProcess(t, agentCmd, agentLog)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Logf("agent log (last lines):\n%s", tail(agentLog, 60))
		t.Logf("notify datagrams: %q", notify.all())
		t.Logf("AEMM log (last lines):\n%s", tail(aemmLog, 10))
		t.Logf("Jenkins container log:\n%s", containerLog(cli, containerName))
	})

	// 1. Boot: READY=1 once Jenkins answers, after STATUS= lines.
	ready, err := notify.waitFor("READY=1", 60*time.Second, agent)
	if err != nil {
		t.Fatal(err)
	}
	readyAt := time.Now()
	t.Logf("READY=1 %s after the agent started; notice due in %s", readyAt.Sub(agentStarted).Round(time.Millisecond), time.Until(noticeAt).Round(time.Millisecond))
	if !slices.ContainsFunc(notify.all()[:ready], func(m string) bool { return strings.Contains(m, "STATUS=") }) {
		t.Errorf("no STATUS= datagram came before READY=1: %q", notify.all())
	}

	// The agent sends READY=1 a moment before it records the serving phase, so status
	// and metrics are given a few seconds to catch up.
	st := waitPhase(t, bin, socket, status.PhaseServing, 10*time.Second, agent)
	if st.InstanceID != e2eInstance || !st.Lease.Held || st.Lease.Holder != e2eInstance {
		t.Errorf("status while serving: instance %q, lease %+v; want %s holding the lease", st.InstanceID, st.Lease, e2eInstance)
	}
	waitSamples(t, metricsAddr, 10*time.Second, `jenkins_spot_agent_phase{phase="serving"} 1`, `jenkins_spot_agent_lease_held 1`)

	m := mountAt(t, home)
	if m == nil {
		t.Fatalf("%s is not in /proc/self/mountinfo while serving", home)
	}
	if m.FSType != "tmpfs" || m.Source != e2eEFSName+":/" {
		t.Errorf("mount at %s: type %s from %q; want tmpfs from %q", home, m.FSType, m.Source, e2eEFSName+":/")
	}
	marker, err := os.ReadFile(filepath.Join(home, efs.MarkerFile))
	if err != nil {
		t.Fatalf("EFS marker: %v", err)
	}
	if id, err := efs.ParseMarker(marker); err != nil || id != e2eFileSystem {
		t.Errorf("EFS marker holds %q (%v); want %s", marker, err, e2eFileSystem)
	}
	heldRec := readLease(t, home)
	if heldRec.Holder != e2eInstance || heldRec.Released || !heldRec.Expires.After(time.Now()) {
		t.Errorf("lease record while serving: %+v; want held by %s, not released, not expired", heldRec, e2eInstance)
	}
	// The double in the container wrote its state into the tmpfs: dockerd saw the mount.
	if hs, err := jenkinstest.ReadHomeState(home); err != nil || hs.Started.IsZero() || !hs.Stopped.IsZero() {
		t.Errorf("Jenkins home state while serving: %+v, %v; want started and not stopped", hs, err)
	}
	info := inspect(t, cli, containerName)
	switch {
	case info.HostConfig == nil:
		t.Errorf("container inspect shows no host configuration")
	case info.HostConfig.RestartPolicy.Name != container.RestartPolicyDisabled:
		t.Errorf("container restart policy %+v; want %q so that dockerd never starts Jenkins before the mount is verified",
			info.HostConfig.RestartPolicy, container.RestartPolicyDisabled)
	}
	if info.State == nil || !info.State.Running {
		t.Errorf("container not running while serving: %+v", info.State)
	}
	logFootprint(t, agentCmd.Process.Pid, metricsAddr)

	// The home is unmounted at the end of the plan; a second view of the same tmpfs
	// keeps it readable for the checks afterwards.
	view := filepath.Join(dir, "home-view")
	if err := os.Mkdir(view, 0o755); err != nil {
		t.Fatal(err)
	}
	unmountInCleanup(t, view)
	bindCtx, cancelBind := context.WithTimeout(context.Background(), 30*time.Second)
	out, err := exec.CommandContext(bindCtx, "mount", "--bind", home, view).CombinedOutput()
	cancelBind()
	if err != nil {
		t.Fatalf("bind-mount the home for later inspection: %v: %s", err, out)
	}

	// 2. Builds: a regular one that ends before the stop, a Pipeline that runs until it.
	if late := time.Since(noticeAt.Add(-5 * time.Second)); late > 0 {
		t.Fatalf("boot too slow for the test's schedule: READY=1 came %s before the notice, builds would start %s after the last moment that lets the %s nightly build finish before the drain ends",
			noticeAt.Sub(readyAt).Round(time.Millisecond), late.Round(time.Millisecond), e2eNightly)
	}
	for _, job := range []string{"nightly", "deploy"} {
		if code := basicPost(t, jenkinsURL+"/job/"+job+"/build", e2eUser, token); code != 201 {
			t.Fatalf("POST /job/%s/build: %d, want 201", job, code)
		}
	}
	jc, err := jenkins.New(jenkins.Options{URL: jenkinsURL, User: e2eUser, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	running := waitRunning(t, jc, 2, 10*time.Second)
	t.Logf("builds running: %v", running)

	// 3. The notice comes; the plan runs to the end.
	st = waitPhase(t, bin, socket, status.PhaseStopped, 100*time.Second, agent)
	t.Logf("plan finished %s after the notice, margin %s", time.Since(noticeAt).Round(time.Millisecond), st.Margin)
	checkNotice(t, st, termination)
	checkPlanSteps(t, st.Steps)
	if st.Margin < e2eSafetyMargin {
		t.Errorf("plan finished %s before the termination time; want at least the safety margin %s", st.Margin, e2eSafetyMargin)
	}
	if st.Lease.Held {
		t.Errorf("status says the lease is still held after the plan: %+v", st.Lease)
	}
	if m := mountAt(t, home); m != nil {
		t.Errorf("%s still mounted after the plan: %s from %s", home, m.FSType, m.Source)
	}
	info = inspect(t, cli, containerName)
	if info.State == nil || info.State.Running || info.State.ExitCode != 0 {
		t.Errorf("container after the plan: %+v; want exited with 0 (a clean stop)", info.State)
	}
	if hs, err := jenkinstest.ReadHomeState(view); err != nil {
		t.Errorf("Jenkins home state after the plan: %v", err)
	} else {
		if hs.Stopped.IsZero() {
			t.Errorf("Jenkins home state after the plan: %+v; Jenkins did not record a clean stop", hs)
		}
		if len(hs.Aborted) != 0 {
			t.Errorf("the stop aborted %v; the nightly build should have finished during the drain", hs.Aborted)
		}
		if len(hs.Saved) != 1 || !strings.Contains(hs.Saved[0], "/job/deploy/") {
			t.Errorf("the stop saved Pipelines %v; want the deploy Pipeline, to resume on the next controller", hs.Saved)
		}
	}
	released := readLease(t, view)
	if !released.Released || released.Holder != e2eInstance || released.Epoch != heldRec.Epoch {
		t.Errorf("lease record after the plan: %+v; want released by %s in epoch %d", released, e2eInstance, heldRec.Epoch)
	}
	checkAWS(t, aws)
	waitSamples(t, metricsAddr, 10*time.Second,
		`jenkins_spot_agent_phase{phase="stopped"} 1`,
		`jenkins_spot_agent_lease_held 0`,
		`jenkins_spot_agent_interruption_notices_total{kind="spot_terminate"} 1`)

	// 4. SIGTERM after the plan: the agent exits 0.
	if err := agentCmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-agent.done:
		if agent.err != nil {
			t.Errorf("agent exited with %v after SIGTERM; want 0", agent.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent still running 30s after SIGTERM")
	}
	t.Logf("wall time: %s", time.Since(began).Round(time.Millisecond))
}

// checkNotice checks that the notice was AEMM's Spot termination and that the plan
// worked to the time it named.
func checkNotice(t *testing.T, st status.Snapshot, termination time.Time) {
	t.Helper()
	if !slices.ContainsFunc(st.Notices, func(n instance.Notice) bool {
		return n.Kind == instance.KindSpotTerminate && n.Time.Equal(termination)
	}) {
		t.Errorf("notices %+v; want spot_terminate naming %s", st.Notices, termination)
	}
	if !st.Deadline.Equal(termination) {
		t.Errorf("plan deadline %s; want the notice's termination time %s", st.Deadline, termination)
	}
}

// checkPlanSteps checks the shutdown plan's order and outcome, as status shows it:
// Steps lists ended steps in the order they ended.
func checkPlanSteps(t *testing.T, steps []status.Event) {
	t.Helper()
	for _, ev := range steps {
		t.Logf("step %-18s ended %s after %s err=%q", ev.Step, ev.At.Format("15:04:05.000"), ev.Duration.Round(time.Millisecond), ev.Err)
	}
	iDereg, dereg := endedStep(t, steps, status.StepDeregister)
	iQuiet, quiet := endedStep(t, steps, status.StepQuietDown)
	endedStep(t, steps, status.StepDrain)
	iStop, stop := endedStep(t, steps, status.StepContainerStop)
	iRelease, release := endedStep(t, steps, status.StepLeaseRelease)
	iUnmount, unmount := endedStep(t, steps, status.StepUnmount)
	iReplace, replace := endedStep(t, steps, status.StepRequestReplacement)
	stopStarted := stop.At.Add(-stop.Duration)

	if iDereg > iStop || dereg.At.After(stopStarted) {
		t.Errorf("deregister ended at %s, after the container stop began at %s", dereg.At, stopStarted)
	}
	if iQuiet > iStop || quiet.At.After(stopStarted) {
		t.Errorf("quiet_down ended at %s, after the container stop began at %s", quiet.At, stopStarted)
	}
	if iRelease < iStop || release.At.Add(-release.Duration).Before(stop.At) {
		t.Errorf("lease_release began before the container stop ended: a successor could start while Jenkins writes")
	}
	if iUnmount < iRelease || unmount.At.Add(-unmount.Duration).Before(release.At) {
		t.Errorf("unmount began before lease_release ended")
	}
	if iUnmount != len(steps)-1 {
		t.Errorf("unmount is not the last step")
	}
	// The replacement is asked for at the notice, long before the handover; the
	// instance then has no lifecycle action of its group left to complete.
	if iReplace > iDereg || replace.At.After(dereg.At) {
		t.Errorf("request_replacement ended at %s, after the deregistration at %s", replace.At, dereg.At)
	}
	for _, ev := range steps {
		if ev.Step == status.StepLifecycleComplete {
			t.Errorf("a lifecycle action completed for a detached instance")
		}
	}
	// Every step of the boot and of the plan succeeded. The drain too: the deploy
	// Pipeline still running at the stop time is saved and resumes on the next start,
	// and the nightly build has finished by then.
	for _, ev := range steps {
		if ev.Err != "" {
			t.Errorf("step %s failed: %s", ev.Step, ev.Err)
		}
	}
}

// checkAWS checks what the ELBv2 and Auto Scaling double saw: the replacement asked
// for at the notice (the instance detached, the group keeping its desired capacity),
// the instance registered again to serve until the handover, then deregistered from
// the target group; no call refused. A detached instance has no lifecycle action left.
func checkAWS(t *testing.T, aws *awstest.Server) {
	t.Helper()
	deregistered := false
	for _, c := range aws.CallsOf("DeregisterTargets") {
		if c.Code == "" && c.Params.Get("TargetGroupArn") == e2eTargetGroup && c.Params.Get("Targets.member.1.Id") == e2eInstance {
			deregistered = true
		}
	}
	if !deregistered {
		t.Errorf("no successful DeregisterTargets of %s from %s; calls: %+v", e2eInstance, e2eTargetGroup, aws.CallsOf("DeregisterTargets"))
	}
	if s := aws.TargetState(e2eTargetGroup, e2eInstance); s != awstest.StateDraining {
		t.Errorf("target %s is %q; want %q", e2eInstance, s, awstest.StateDraining)
	}
	detached := aws.CallsOf("DetachInstances")
	if len(detached) == 0 || detached[0].Code != "" || detached[0].Params.Get("ShouldDecrementDesiredCapacity") != "false" ||
		detached[0].Params.Get("InstanceIds.member.1") != e2eInstance {
		t.Errorf("no DetachInstances of %s keeping the desired capacity at the notice; calls: %+v", e2eInstance, detached)
	} else {
		again := false
		for _, c := range aws.CallsOf("RegisterTargets") {
			if c.Code == "" && c.At.After(detached[0].At) && c.Params.Get("Targets.member.1.Id") == e2eInstance {
				again = true
			}
		}
		if !again {
			t.Errorf("not registered again after the detach: Jenkins would not serve until the handover")
		}
	}
	for _, c := range aws.Calls() {
		if c.Code != "" || c.Region != "us-east-1" {
			t.Errorf("AWS call %s (%s) in region %q answered %q", c.Action, c.Service, c.Region, c.Code)
		}
	}
}

// waitRunning waits until Jenkins lists n running builds.
func waitRunning(t *testing.T, jc *jenkins.Client, n int, timeout time.Duration) []jenkins.Build {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		builds, err := jc.RunningBuilds(ctx)
		cancel()
		if err == nil && len(builds) == n {
			return builds
		}
		if time.Now().After(deadline) {
			t.Fatalf("Jenkins runs %v (%v); want %d builds", builds, err, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func readLease(t *testing.T, home string) lease.Record {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(home, lease.DirName, lease.RecordName))
	if err != nil {
		t.Fatalf("lease record: %v", err)
	}
	rec, err := lease.ParseRecord(b)
	if err != nil {
		t.Fatalf("lease record: %v", err)
	}
	return rec
}

func inspect(t *testing.T, cli *client.Client, name string) container.InspectResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := cli.ContainerInspect(ctx, name)
	if err != nil {
		t.Fatalf("inspect container %s: %v", name, err)
	}
	return info
}

// containerLog returns the end of the container's output, for failure messages.
func containerLog(cli *client.Client, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := cli.ContainerLogs(ctx, name, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "40"})
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil {
		fmt.Fprintf(&out, "(log cut: %v)", err)
	}
	return out.String()
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}
