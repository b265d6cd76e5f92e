// Package simulate rehearses the whole architecture on one machine: the real agent code
// against an IMDS emulator, an ELBv2/Auto Scaling double and a Jenkins double, with a
// local directory as the EFS home, and Docker when it is reachable. A Spot notice
// arrives after a while; the shutdown plan runs against a compressed budget; with
// failover a second instance takes JENKINS_HOME over. No AWS account, root or network.
package simulate

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/clock"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds/imdstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/metrics"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/wiring"
)

// The emulated estate.
const (
	FileSystemID   = "fs-0123456789abcdef0"
	TargetGroupARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/jenkins/0123456789abcdef"
	GroupName      = "jenkins-controller"
	HookName       = "jenkins-drain"
	jenkinsUser    = "admin"
	jenkinsToken   = "11aa22bb33cc44dd55ee66ff77889900aa"
	buildJob       = "nightly"
	pipelineJob    = "deploy"
	imageRepo      = "jenkins-spot-agent-sim"

	// leaseTTL is short so that a takeover after a crash is rehearsed in seconds; the
	// successor still waits out the expiry plus the lease's clock-skew allowance.
	leaseTTL = 6 * time.Second
)

// Options shape a simulation.
type Options struct {
	// NoticeAfter is how long instance A serves before its Spot notice appears.
	NoticeAfter time.Duration
	// Budget is the time from the notice to the termination time it names.
	Budget time.Duration
	// Failover runs a second instance that waits on the lease and takes over.
	Failover bool
	// Docker: "auto" (when reachable and the executable is static), "always" (Run
	// fails when Docker cannot be used), "never".
	Docker string
	// Executable is the static binary the Jenkins image is built from; default this one.
	Executable string
	// PollInterval of the watchers; default 1s, as in production.
	PollInterval time.Duration
	// Pipeline is how long the Pipeline started on A runs. The default, 0, runs it until
	// Jenkins stops: the drain then lasts to the stop time, and the Pipeline is saved and
	// resumed by the successor. A short one lets the drain end early.
	Pipeline time.Duration
	// WorkDir holds the shared home and each instance's state; default a temp dir.
	WorkDir string
	// Out gets the live timeline.
	Out io.Writer
	// Logger gets the agents' own logs; default discarded.
	Logger *slog.Logger
}

// Summary is what the closing table shows.
type Summary struct {
	Docker         bool
	DockerReason   string
	Detection      time.Duration // notice visible in IMDS → plan started
	DeregisterSent time.Duration // plan started → DeregisterTargets arrived at the ELB double
	Deregister     time.Duration // plan started → deregistration step done
	QuietDown      time.Duration // plan started → quiet-down step done
	Drain          time.Duration
	ContainerStop  time.Duration
	PlanTotal      time.Duration
	Margin         time.Duration
	BuildsAtNotice int
	FailedSteps    []string
	TargetState    string
	Lifecycle      string

	// Failover only.
	Handover       time.Duration // A released the lease → B's container start call
	Downtime       time.Duration // A's container stop began → B's Jenkins answered
	ResumedOnB     []string      // Pipelines saved by A and resumed by B
	BothRanAtOnce  bool
	WaitingSeenOnB bool
}

// Run performs the simulation and returns its summary.
func Run(ctx context.Context, opts Options) (*Summary, error) {
	s, err := newSim(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer s.close()
	s.say("simulate: IMDS emulator, ELBv2/Auto Scaling double, Jenkins double; EFS is the local directory %s", s.home)
	if s.sum.Docker {
		s.say("simulate: Jenkins runs in real Docker containers (image %s built FROM scratch)", s.image)
	} else {
		s.say("simulate: Docker not used (%s): Jenkins is the in-process stand-in", s.sum.DockerReason)
	}
	return s.run(ctx)
}

// newSim fills in the defaults and sets up what every instance shares: the home, the
// AWS double and the Jenkins image. close undoes it.
func newSim(ctx context.Context, opts Options) (*sim, error) {
	switch opts.Docker {
	case "", "auto", "always", "never":
	default:
		return nil, fmt.Errorf("docker mode %q: want auto, always or never", opts.Docker)
	}
	if opts.NoticeAfter <= 0 {
		opts.NoticeAfter = 5 * time.Second
	}
	if opts.Budget <= 0 {
		opts.Budget = 40 * time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &sim{opts: opts, start: time.Now(), sum: &Summary{}, ports: map[string]int{}}
	if opts.WorkDir == "" {
		dir, err := os.MkdirTemp("", "jenkins-spot-agent-sim-")
		if err != nil {
			return nil, fmt.Errorf("work directory: %w", err)
		}
		s.opts.WorkDir, s.tempDir = dir, dir
	}
	s.home = filepath.Join(s.opts.WorkDir, "efs")
	if err := os.MkdirAll(s.home, 0o755); err != nil {
		s.close()
		return nil, fmt.Errorf("shared home: %w", err)
	}
	s.aws = awstest.NewServer()
	s.aws.AddTargetGroup(TargetGroupARN)
	s.pickRuntime(ctx)
	if opts.Docker == "always" && !s.sum.Docker {
		s.close()
		return nil, fmt.Errorf("--docker always, but %s", s.sum.DockerReason)
	}
	return s, nil
}

// close removes the image built for this run and a work directory made for it.
func (s *sim) close() {
	if s.aws != nil {
		s.aws.Close()
	}
	if s.imageBuilt {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := removeImage(ctx, s.image); err != nil {
			s.say("simulate: could not remove the image %s: %v (remove it with `docker rmi %s`)", s.image, err, s.image)
		}
	}
	if s.tempDir != "" {
		_ = os.RemoveAll(s.tempDir)
	}
}

type sim struct {
	opts       Options
	start      time.Time
	sum        *Summary
	home       string // the shared directory that stands in for EFS
	tempDir    string // removed by close when Run made it
	aws        *awstest.Server
	image      string
	imageBuilt bool
	exe        string // the static binary the image and the containers' guard run from
	runID      string

	// wrapRuntime, when set, wraps the runtime an instance's agent drives (fault
	// scenarios: a runtime that fails); the sampler still asks the real one.
	wrapRuntime func(name string, rt agent.Runtime) agent.Runtime

	mu       sync.Mutex
	noticeAt time.Time // when A's notice became visible
	out      sync.Mutex
	ports    map[string]int // Jenkins host port by instance name
}

// host is one emulated EC2 instance with its own agent.
type host struct {
	name    string
	id      instance.Identity
	imds    *imdstest.Server
	agent   *agent.Agent
	runtime agent.Runtime
	url     string
	cancel  context.CancelFunc
	done    chan error
	metrics *metrics.Metrics
	lease   *observedLease
	homeDir string // this instance's view of the home: the shared directory, or a mount of it

	mu     sync.Mutex
	events []status.Event
	phases chan status.Phase
}

func (s *sim) run(ctx context.Context) (*Summary, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a, err := s.launch(ctx, "A", "i-0aaaaaaaaaaaaaaa1", s.home)
	if err != nil {
		return nil, err
	}
	defer s.cleanup(a)
	if err := a.waitPhase(ctx, status.PhaseServing, 3*time.Minute); err != nil {
		return nil, fmt.Errorf("instance A did not reach serving: %w", err)
	}
	builds := s.startBuilds(ctx, a)

	var b *host
	var sampler *sampler
	if s.opts.Failover {
		b, err = s.launch(ctx, "B", "i-0bbbbbbbbbbbbbbb2", s.home)
		if err != nil {
			return nil, err
		}
		defer s.cleanup(b)
		if err := b.waitPhase(ctx, status.PhaseWaitingForLease, time.Minute); err != nil {
			return nil, fmt.Errorf("instance B did not wait for the lease: %w", err)
		}
		s.sum.WaitingSeenOnB = true
		sampler = startSampler(ctx, a, b)
		defer sampler.stop()
	}

	if !clock.Sleep(ctx, s.opts.NoticeAfter) {
		return nil, ctx.Err()
	}
	s.sum.BuildsAtNotice = builds
	s.notice(a)

	if err := a.waitPhase(ctx, status.PhaseStopped, s.opts.Budget+time.Minute); err != nil {
		return nil, fmt.Errorf("instance A's plan did not finish: %w", err)
	}
	if b != nil {
		if err := b.waitPhase(ctx, status.PhaseServing, 3*time.Minute); err != nil {
			return nil, fmt.Errorf("instance B did not take over: %w", err)
		}
		s.sum.BothRanAtOnce = sampler.stop().Both
	}
	s.summarize(a, b)
	return s.sum, nil
}

// notice makes A's Spot interruption notice visible in its IMDS, with the termination
// time Budget away, and pends the Auto Scaling group's termination hook for it.
func (s *sim) notice(a *host) {
	termination := time.Now().Add(s.opts.Budget)
	s.mu.Lock()
	s.noticeAt = time.Now()
	s.mu.Unlock()
	s.say("simulate: Spot interruption notice for %s is now visible in IMDS (termination at +%s)", a.name, s.opts.Budget)
	a.imds.SetSpotAction("terminate", termination)
	// The Auto Scaling group's termination hook holds the instance too, as EC2 reclaims it.
	s.aws.PendLifecycleAction(GroupName, HookName, a.id.InstanceID)
}

// launch starts one instance's agent against its own IMDS emulator. home is where this
// instance sees JENKINS_HOME: the shared directory, or another path onto it (a fault
// scenario gives one instance a view that it alone loses).
func (s *sim) launch(ctx context.Context, name, instanceID, home string) (*host, error) {
	in := &host{
		name:    name,
		id:      instance.Identity{InstanceID: instanceID, AvailabilityZone: "us-east-1a", AZID: "use1-az6", Region: "us-east-1", Market: "spot", AutoScalingGroup: GroupName},
		phases:  make(chan status.Phase, 32),
		done:    make(chan error, 1),
		homeDir: home,
	}
	in.imds = imdstest.NewServer(in.id)
	s.aws.AddAutoScalingGroup(GroupName, []string{instanceID}, []string{TargetGroupARN}, HookName)
	s.aws.AddTargetGroup(TargetGroupARN, awstest.Target{ID: instanceID, Port: 8080})

	// An instance keeps its Jenkins port across a restart of its agent, so the container
	// configuration is the same and the running container is adopted.
	port := s.ports[name]
	if port == 0 {
		var err error
		if port, err = freePort(); err != nil {
			return nil, err
		}
		s.ports[name] = port
	}
	in.url = "http://127.0.0.1:" + strconv.Itoa(port)
	dir := filepath.Join(s.opts.WorkDir, name)
	cfg := s.config(name, dir, home, port)
	doubleArgs := []string{
		"--home", cfg.Jenkins.HomeInContainer, "--user", jenkinsUser, "--token", jenkinsToken,
		"--startup-delay", "1s", "--job", buildJob + "=" + (s.opts.NoticeAfter + 4*time.Second).String(),
		"--job", pipelineJob + "=pipeline:" + s.opts.Pipeline.String(),
	}
	// The same wiring as run; only the endpoints differ: the emulators on loopback, a
	// local directory as EFS, and the Jenkins double as the container's command (or,
	// without Docker, as a process).
	ep := wiring.Endpoints{
		IMDS:            in.imds.URL(),
		AWS:             s.aws.URL(),
		Credentials:     s.aws.Credentials(),
		Home:            home,
		HomeHost:        name,
		Command:         append([]string{"--listen", ":8080"}, doubleArgs...),
		GuardExecutable: s.exe,
		CallTimeout:     5 * time.Second,
		WrapLease: func(l agent.Lease) agent.Lease {
			in.lease = newObservedLease(l.(*lease.Lease))
			return in.lease
		},
		WrapRuntime: func(rt agent.Runtime) agent.Runtime {
			in.runtime = rt
			if s.wrapRuntime != nil {
				return s.wrapRuntime(name, rt)
			}
			return rt
		},
	}
	if !s.sum.Docker {
		// In-process: the double listens where the container's port would be published,
		// and JENKINS_HOME is this instance's view of the home itself.
		args := []string{"--listen", "127.0.0.1:" + strconv.Itoa(port)}
		for i, a := range doubleArgs {
			if i > 0 && doubleArgs[i-1] == "--home" {
				a = home
			}
			args = append(args, a)
		}
		ep.Runtime = newProcessRuntime(args)
	}
	in.metrics = metrics.New("simulate", "simulate")
	w, err := wiring.New(cfg, jenkinsToken, in.metrics, ep, s.opts.Logger.With("instance", name))
	if err != nil {
		return nil, err
	}
	deps := w.Deps
	a, err := agent.New(agent.Options{
		Config: cfg, Deps: deps, Logger: s.opts.Logger.With("instance", name),
		DefaultBudget: s.opts.Budget,
		BootID:        "simulate-" + instanceID,
		OnEvent:       func(ev status.Event) { s.event(in, ev) },
	})
	if err != nil {
		return nil, err
	}
	in.agent = a
	actx, cancel := context.WithCancel(ctx)
	in.cancel = cancel
	go func() { in.done <- a.Run(actx) }()
	s.say("simulate: instance %s (%s) boots", name, instanceID)
	return in, nil
}

// config is the production configuration with the budget compressed for a rehearsal.
func (s *sim) config(name, dir, home string, port int) config.Config {
	cfg := config.Default()
	cfg.EFS.FileSystemID = FileSystemID
	cfg.EFS.MountPoint = home
	cfg.Jenkins.Image = s.image
	cfg.Jenkins.Pull = "never"
	cfg.Jenkins.ContainerName = "jenkins-spot-agent-sim-" + strings.ToLower(name) + "-" + s.runID
	cfg.Jenkins.Ports = []string{"127.0.0.1:" + strconv.Itoa(port) + ":8080"}
	cfg.Jenkins.URL = "http://127.0.0.1:" + strconv.Itoa(port)
	cfg.Jenkins.User = jenkinsUser
	cfg.Jenkins.ReadyTimeout = config.Duration(time.Minute)
	cfg.Jenkins.StopGrace = config.Duration(5 * time.Second)
	cfg.Jenkins.UID, cfg.Jenkins.GID = os.Getuid(), os.Getgid()
	cfg.Jenkins.LocalCacheDir = filepath.Join(dir, "cache")
	cfg.Lease.TTL = config.Duration(leaseTTL)
	cfg.TargetGroups = []config.TargetGroup{{ARN: TargetGroupARN, Port: 8080}}
	cfg.LifecycleHook = HookName
	cfg.Interruption.PollInterval = config.Duration(s.opts.PollInterval)
	cfg.Interruption.SafetyMargin = config.Duration(3 * time.Second)
	cfg.Metrics.ListenAddress = ""
	cfg.ControlSocket = filepath.Join(dir, "control.sock")
	cfg.StateDir = filepath.Join(dir, "state")
	return cfg
}

// pickRuntime decides between Docker and the in-process stand-in, and builds the image.
func (s *sim) pickRuntime(ctx context.Context) {
	// Random, so that runs in parallel (tests) never share a container or image name.
	s.runID = strconv.FormatUint(rand.Uint64()%(1<<40), 36)
	s.image = imageRepo + ":" + s.runID
	if s.opts.Docker == "never" {
		s.sum.DockerReason = "--docker never"
		return
	}
	exe := s.opts.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			s.sum.DockerReason = "cannot find this executable"
			return
		}
	}
	if !isStatic(exe) {
		s.sum.DockerReason = "this binary is not static; build it with `make build` (CGO_ENABLED=0) to run Jenkins in containers"
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	rt, err := container.New(container.Options{Image: s.image, Pull: "never", Name: "probe", HomeHost: "/", HomeContainer: "/x"})
	if err == nil {
		err = rt.Ping(cctx)
	}
	if err != nil {
		s.sum.DockerReason = "no Docker Engine reachable"
		return
	}
	defer rt.Close()
	if err := rt.BuildImage(cctx, exe, []string{"/" + filepath.Base(exe), "jenkins-double"}); err != nil {
		s.sum.DockerReason = "image build failed: " + err.Error()
		return
	}
	s.imageBuilt = true
	s.sum.Docker = true
	s.exe = exe
}

// removeImage removes the image built for one run, so rehearsals leave nothing behind.
func removeImage(ctx context.Context, ref string) error {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer cli.Close()
	_, err = cli.ImageRemove(ctx, ref, image.RemoveOptions{Force: true, PruneChildren: true})
	return err
}

// startBuilds starts a freestyle build that outlives the notice by a few seconds and a
// Pipeline that runs until Jenkins stops (it is saved and resumed by the successor).
func (s *sim) startBuilds(ctx context.Context, in *host) int {
	n := 0
	for _, job := range []string{buildJob, pipelineJob} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, in.url+"/job/"+job+"/build", nil)
		req.SetBasicAuth(jenkinsUser, jenkinsToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			s.say("simulate: could not start build %s: %v", job, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusCreated {
			n++
		}
	}
	s.say("simulate: started %d build(s) on A: %s (finishes during the drain), %s (a Pipeline that runs until Jenkins stops)", n, buildJob, pipelineJob)
	return n
}

// cleanup ends an instance: its agent, its lease renewals (the agent leaves them running
// when its context ends, as the process exit would end them), its Jenkins, its IMDS.
func (s *sim) cleanup(in *host) {
	in.cancel()
	select {
	case err := <-in.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			s.opts.Logger.Warn("simulate: agent ended with an error", "instance", in.name, "err", err)
		}
	case <-time.After(30 * time.Second):
		s.opts.Logger.Warn("simulate: agent did not end within 30s of its cancellation", "instance", in.name)
	}
	in.lease.crash(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = in.runtime.Stop(ctx, time.Second)
	if rt, ok := in.runtime.(*container.Runtime); ok {
		_ = rt.Remove(ctx)
		_ = rt.Close()
	}
	in.imds.Close()
}

// event records and prints one timeline line.
func (s *sim) event(in *host, ev status.Event) {
	in.mu.Lock()
	in.events = append(in.events, ev)
	in.mu.Unlock()
	if ev.Phase != "" {
		select {
		case in.phases <- ev.Phase:
		default:
		}
	}
	s.mu.Lock()
	ref, label := s.start, "since start "
	if !s.noticeAt.IsZero() {
		ref, label = s.noticeAt, "after notice"
	}
	s.mu.Unlock()
	if ev.Step != "" && !ev.Done && ev.Message == "" {
		return // a step start: its end line says all
	}
	s.say("%s %+8.3fs  [%s] %s", label, ev.At.Sub(ref).Seconds(), in.name, ev.Line())
}

func (s *sim) say(format string, args ...any) {
	s.out.Lock()
	defer s.out.Unlock()
	fmt.Fprintf(s.opts.Out, format+"\n", args...)
}

// waitPhase waits until the instance reports phase p.
func (in *host) waitPhase(ctx context.Context, p status.Phase, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	if in.agent.Status().Phase == p {
		return nil
	}
	for {
		select {
		case got := <-in.phases:
			if got == p {
				return nil
			}
		case err := <-in.done:
			in.done <- err
			if err == nil {
				err = errors.New("agent exited")
			}
			return fmt.Errorf("agent %s ended in phase %s: %w", in.name, in.agent.Status().Phase, err)
		case <-t.C:
			return fmt.Errorf("still %s after %s", in.agent.Status().Phase, timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (in *host) eventsCopy() []status.Event {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]status.Event(nil), in.events...)
}

// summarize derives the closing figures from the timelines and the doubles' records.
func (s *sim) summarize(a, b *host) {
	evs := a.eventsCopy()
	var planStart time.Time
	for _, ev := range evs {
		if ev.Notice != nil && planStart.IsZero() && ev.Notice.Kind == instance.KindSpotTerminate {
			planStart = ev.At
		}
	}
	s.sum.Detection = planStart.Sub(s.noticeAt)
	done := func(st status.Step) (status.Event, bool) {
		for i := len(evs) - 1; i >= 0; i-- {
			if evs[i].Step == st && evs[i].Done && !evs[i].At.Before(planStart) {
				return evs[i], true
			}
		}
		return status.Event{}, false
	}
	for _, st := range []status.Step{
		status.StepDeregister, status.StepQuietDown, status.StepDrain, status.StepContainerStop,
		status.StepLeaseRelease, status.StepUnmount, status.StepLifecycleComplete,
	} {
		ev, ok := done(st)
		if !ok {
			s.sum.FailedSteps = append(s.sum.FailedSteps, string(st)+": did not run")
			continue
		}
		if ev.Err != "" {
			s.sum.FailedSteps = append(s.sum.FailedSteps, string(st)+": "+ev.Err)
		}
		switch st {
		case status.StepDeregister:
			s.sum.Deregister = ev.At.Sub(planStart)
		case status.StepQuietDown:
			s.sum.QuietDown = ev.At.Sub(planStart)
		case status.StepDrain:
			s.sum.Drain = ev.Duration
		case status.StepContainerStop:
			s.sum.ContainerStop = ev.Duration
		case status.StepLifecycleComplete:
			s.sum.PlanTotal = ev.At.Sub(planStart)
		}
	}
	for _, c := range s.aws.CallsOf("DeregisterTargets") {
		if !c.At.Before(planStart) {
			s.sum.DeregisterSent = c.At.Sub(planStart)
			break
		}
	}
	s.sum.Margin = a.agent.Status().Margin
	s.sum.TargetState = s.aws.TargetState(TargetGroupARN, a.id.InstanceID)
	if res, ok := s.aws.LifecycleResult(GroupName, a.id.InstanceID); ok {
		s.sum.Lifecycle = res
	}
	if b == nil {
		return
	}
	released, _ := done(status.StepLeaseRelease)
	stopBegan := time.Time{}
	if ev, ok := done(status.StepContainerStop); ok {
		stopBegan = ev.At.Add(-ev.Duration)
	}
	for _, ev := range b.eventsCopy() {
		if ev.Step == status.StepContainerStart && !ev.Done && s.sum.Handover == 0 {
			s.sum.Handover = ev.At.Sub(released.At)
		}
		if ev.Step == status.StepJenkinsReady && ev.Done && s.sum.Downtime == 0 {
			s.sum.Downtime = ev.At.Sub(stopBegan)
		}
	}
	s.sum.ResumedOnB = resumedPipelines(b)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// isStatic reports whether an ELF executable needs no dynamic loader, so it can run as
// the only file of a FROM scratch image.
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}
