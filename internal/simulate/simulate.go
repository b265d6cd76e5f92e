// Package simulate rehearses the whole architecture on one machine: the real agent code
// against an IMDS emulator, an ELBv2/Auto Scaling double and a Jenkins double, with a
// local directory as the EFS home, and Docker when it is reachable. A Spot notice
// arrives after a while; the shutdown plan runs against a compressed budget; with
// failover the Auto Scaling group launches the replacement, which takes JENKINS_HOME
// over, and a sampler measures how long Jenkins is unreachable through the load
// balancer. No AWS account, root or network.
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

	// instanceA is the first controller's instance id, in the group from the start.
	instanceA = "i-0aaaaaaaaaaaaaaa1"

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
	// Failover lets the Auto Scaling group launch a replacement, which boots, waits on
	// the lease and takes JENKINS_HOME over.
	Failover bool
	// Order is when the group launches the replacement in a failover: OrderAtNotice
	// (default) or OrderAfterTermination.
	Order Order
	// Compare runs the failover in both orders, one after the other, and returns the
	// summary of OrderAtNotice with the other in Compared. It implies Failover.
	Compare bool
	// LaunchDelay is the group's launch of a replacement to its agent starting (EC2
	// launch and OS boot, compressed); default 8s.
	LaunchDelay time.Duration
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

	// Failover only. B is the replacement the group launched.
	Order          Order
	LaunchDelay    time.Duration
	Handover       time.Duration // A called the lease release → B's container start call
	Downtime       time.Duration // A's container stop began → B's Jenkins answered
	ResumedOnB     []string      // Pipelines saved by A and resumed by B
	BothRanAtOnce  bool
	WaitingSeenOnB bool // B waited on A's lease

	// ReplacementAsked is the notice → DetachInstances arriving at the double (zero when
	// the agent did not ask); ReplacementUp the notice → the group's replacement
	// InService, its agent starting.
	ReplacementAsked, ReplacementUp time.Duration
	// Successor is B's announcement beside the lease as A saw it last before the
	// handover; SuccessorReady is the notice → A seeing it ready (zero: never).
	Successor      *status.Successor
	SuccessorReady time.Duration
	// HandoverBegan is the notice → A's handover beginning (its deregistration): when
	// the builds were done and the successor ready, or at A's stop time.
	HandoverBegan time.Duration
	// SuccessorStart is B's own start: its container start call → its Jenkins answered.
	SuccessorStart time.Duration
	// Unreachable is how long no target of the target group answered (as an ALB routes:
	// healthy targets, or all registered ones when none is healthy), from the notice
	// until Jenkins answered through B; LongestGap the longest stretch of it.
	Unreachable, LongestGap time.Duration
	// ReachRounds counts the load balancer sampler's rounds.
	ReachRounds int

	// Compared is the run in the other order (Options.Compare).
	Compared *Summary

	// The rounds of the load balancer sampler, and the timelines, for tests.
	reach        []reachSample
	eventsA      []status.Event
	eventsB      []status.Event
	instanceB    string
	detachParams []string
}

// GoalMet reports whether the failover met its goal: Jenkins unreachable no longer than
// the successor's own start plus 2 s.
func (s *Summary) GoalMet() bool {
	return s.SuccessorStart > 0 && s.Unreachable <= s.SuccessorStart+goalSlack
}

// SuccessorInWindow reports whether the successor waited ready on the lease before A's
// handover began: the case the goal is for.
func (s *Summary) SuccessorInWindow() bool {
	return s.SuccessorReady > 0 && s.SuccessorReady < s.HandoverBegan
}

// goalSlack is what the handover may add to the successor's own start.
const goalSlack = 2 * time.Second

// Run performs the simulation and returns its summary. With Compare it runs the
// failover twice, in OrderAtNotice and then in OrderAfterTermination, sharing the
// Jenkins image, and returns the first with the second in Compared.
func Run(ctx context.Context, opts Options) (*Summary, error) {
	if !opts.Compare {
		return runOnce(ctx, opts, nil)
	}
	opts.Failover = true
	first, second := opts, opts
	first.Order, second.Order = OrderAtNotice, OrderAfterTermination
	s, err := newSim(ctx, first)
	if err != nil {
		return nil, err
	}
	defer s.close() // last: it removes the image both runs use
	s.say("simulate: run 1 of 2: %s", OrderAtNotice)
	sum, err := s.rehearse(ctx)
	if err != nil {
		return nil, err
	}
	s.say("\nsimulate: run 2 of 2: %s", OrderAfterTermination)
	other, err := runOnce(ctx, second, &s.rt)
	if err != nil {
		return nil, err
	}
	sum.Compared = other
	return sum, nil
}

// runOnce runs one rehearsal, with the Jenkins image of an earlier one when shared is
// set.
func runOnce(ctx context.Context, opts Options, shared *runtimeChoice) (*Summary, error) {
	s, err := newSimWith(ctx, opts, shared)
	if err != nil {
		return nil, err
	}
	defer s.close()
	return s.rehearse(ctx)
}

// rehearse says what runs where and runs the rehearsal.
func (s *sim) rehearse(ctx context.Context) (*Summary, error) {
	s.say("simulate: IMDS emulator, ELBv2/Auto Scaling double, Jenkins double; EFS is the local directory %s", s.home)
	if s.sum.Docker {
		s.say("simulate: Jenkins runs in real Docker containers (image %s built FROM scratch)", s.rt.image)
	} else {
		s.say("simulate: Docker not used (%s): Jenkins is the in-process stand-in", s.sum.DockerReason)
	}
	return s.run(ctx)
}

// newSim fills in the defaults and sets up what every instance shares: the home, the
// AWS double with the Auto Scaling group and the Jenkins image. close undoes it.
func newSim(ctx context.Context, opts Options) (*sim, error) {
	return newSimWith(ctx, opts, nil)
}

// newSimWith is newSim with the Jenkins image of an earlier rehearsal when shared is
// set; that rehearsal keeps removing it.
func newSimWith(ctx context.Context, opts Options, shared *runtimeChoice) (*sim, error) {
	switch opts.Docker {
	case "", "auto", "always", "never":
	default:
		return nil, fmt.Errorf("docker mode %q: want auto, always or never", opts.Docker)
	}
	switch opts.Order {
	case "":
		opts.Order = OrderAtNotice
	case OrderAtNotice, OrderAfterTermination:
	default:
		return nil, fmt.Errorf("order %q: want %q or %q", opts.Order, OrderAtNotice, OrderAfterTermination)
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
	if opts.LaunchDelay <= 0 {
		opts.LaunchDelay = defaultLaunchDelay
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &sim{
		opts: opts, start: time.Now(), sum: &Summary{}, ports: map[string]int{},
		byID: map[string]*host{}, launchedAt: map[string]time.Time{}, arrivals: make(chan *host, 4),
		replace: opts.Order == OrderAtNotice, groupReaction: groupReaction,
		probe: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		runID: strconv.FormatUint(rand.Uint64()%(1<<40), 36),
	}
	s.life, s.endLife = context.WithCancel(context.Background())
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
	s.setUpGroup()
	if shared != nil {
		s.rt = *shared
		s.rt.built = false // the rehearsal that built it removes it
		s.sum.Docker, s.sum.DockerReason = s.rt.docker, s.rt.reason
	} else {
		s.pickRuntime(ctx)
	}
	if opts.Docker == "always" && !s.sum.Docker {
		s.close()
		return nil, fmt.Errorf("--docker always, but %s", s.sum.DockerReason)
	}
	return s, nil
}

// close removes the image built for this run and a work directory made for it.
func (s *sim) close() {
	s.endLife()
	if s.aws != nil {
		s.aws.Close()
	}
	if s.rt.built {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := removeImage(ctx, s.rt.image); err != nil {
			s.say("simulate: could not remove the image %s: %v (remove it with `docker rmi %s`)", s.rt.image, err, s.rt.image)
		}
	}
	if s.tempDir != "" {
		_ = os.RemoveAll(s.tempDir)
	}
}

type sim struct {
	opts    Options
	start   time.Time
	sum     *Summary
	home    string // the shared directory that stands in for EFS
	tempDir string // removed by close when Run made it
	aws     *awstest.Server
	rt      runtimeChoice
	probe   *http.Client // GET /login of the health checks and the load balancer sampler
	// replace is interruption.request_replacement of the instances' agents.
	replace bool
	// groupReaction is how long after the notice the group starts terminating A.
	groupReaction time.Duration
	// runID names this rehearsal's containers (and the image it builds): random, so
	// that rehearsals in parallel (tests) never share one.
	runID string

	// wrapRuntime, when set, wraps the runtime an instance's agent drives (fault
	// scenarios: a runtime that fails); the sampler still asks the real one.
	wrapRuntime func(name string, rt agent.Runtime) agent.Runtime

	// arrivals gets each instance the group launched once its agent runs.
	arrivals chan *host

	// life ends with close: what the doubles do on their own stops with it.
	life    context.Context
	endLife context.CancelFunc

	mu         sync.Mutex
	noticeAt   time.Time // when A's notice became visible
	runCtx     context.Context
	launches   int                  // instances the group launched and booted
	launchedAt map[string]time.Time // instance id → InService in the group
	hosts      []*host              // every instance booted, in launch order
	byID       map[string]*host     // the last instance booted with each id
	ended      bool                 // cleanupAll began: the group's launches boot nothing more
	launching  sync.WaitGroup       // boots on the group's launches under way
	out        sync.Mutex
	ports      map[string]int // Jenkins host port by instance name
}

// runtimeChoice is how Jenkins runs: in Docker from an image built for the rehearsal,
// or as the in-process stand-in.
type runtimeChoice struct {
	docker bool
	reason string // why not Docker
	image  string
	built  bool   // this rehearsal built the image and removes it
	exe    string // the static binary the image and the containers' guard run from
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

	cleanOnce sync.Once
	gone      atomic.Bool // its Jenkins was stopped and removed: the sampler no longer asks
}

func (in *host) isGone() bool { return in.gone.Load() }

func (s *sim) run(ctx context.Context) (*Summary, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer s.cleanupAll()
	s.mu.Lock()
	s.runCtx = ctx
	s.mu.Unlock()
	if !s.opts.Failover {
		// One controller and nobody to take over: no replacement to ask for.
		s.replace = false
		s.say("simulate: one instance; no replacement is asked for (interruption.request_replacement off; --failover rehearses it)")
	} else {
		s.say("simulate: failover, %s: the Auto Scaling group's replacement boots %s after its launch; target group health checks GET /login every %s",
			s.opts.Order, s.opts.LaunchDelay, healthInterval)
	}
	a, err := s.launch(ctx, "A", instanceA, s.home)
	if err != nil {
		return nil, err
	}
	if err := a.waitPhase(ctx, status.PhaseServing, 3*time.Minute); err != nil {
		return nil, fmt.Errorf("instance A did not reach serving: %w", err)
	}
	builds := s.startBuilds(ctx, a)

	var jenkinses *sampler
	var reach *reachSampler
	if s.opts.Failover {
		jenkinses = startSamplerOf(ctx, s.hostList)
		defer jenkinses.stop()
		// Bounded: the notice, the budget, the group's launch and a few minutes more.
		reach = s.startReach(ctx, s.opts.NoticeAfter+s.opts.Budget+s.opts.LaunchDelay+5*time.Minute)
		defer reach.stop()
	}

	if !clock.Sleep(ctx, s.opts.NoticeAfter) {
		return nil, ctx.Err()
	}
	s.sum.BuildsAtNotice = builds
	termination := s.notice(a)
	go s.reclaim(ctx, a, termination)

	if err := a.waitPhase(ctx, status.PhaseStopped, s.opts.Budget+time.Minute); err != nil {
		return nil, fmt.Errorf("instance A's plan did not finish: %w", err)
	}
	// What the plan left, before the instance is reclaimed.
	s.sum.TargetState = s.aws.TargetState(TargetGroupARN, a.id.InstanceID)
	if res, ok := s.aws.LifecycleResult(GroupName, a.id.InstanceID); ok {
		s.sum.Lifecycle = res
	}
	s.sum.Margin = a.agent.Status().Margin
	var b *host
	if s.opts.Failover {
		wait := time.Until(termination) + s.opts.LaunchDelay + 2*time.Minute
		select {
		case b = <-s.arrivals:
		case <-time.After(wait):
			return nil, fmt.Errorf("the Auto Scaling group launched no replacement within %s of A's plan end", wait.Round(time.Second))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if err := b.waitPhase(ctx, status.PhaseServing, 3*time.Minute); err != nil {
			return nil, fmt.Errorf("instance %s did not take over: %w", b.name, err)
		}
		if !reach.waitThrough(ctx, b.id.InstanceID, 10*time.Second) {
			s.say("simulate: the load balancer sampler never reached Jenkins through %s", b.name)
		}
		s.sum.BothRanAtOnce = jenkinses.stop().Both
		s.sum.reach = reach.stop()
	}
	s.summarize(a, b)
	return s.sum, nil
}

// notice makes A's Spot interruption notice visible in its IMDS, with the termination
// time Budget away, and returns that time. The Auto Scaling group reacts a moment later
// (groupReacts).
func (s *sim) notice(a *host) time.Time {
	termination := time.Now().Add(s.opts.Budget)
	s.mu.Lock()
	s.noticeAt = time.Now()
	ctx := s.runCtx
	s.mu.Unlock()
	if ctx == nil {
		ctx = s.life
	}
	s.say("simulate: Spot interruption notice for %s is now visible in IMDS (termination at +%s)", a.name, s.opts.Budget)
	a.imds.SetSpotAction("terminate", termination)
	go s.groupReacts(ctx, a)
	return termination
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
	if _, member := s.aws.GroupInstances(GroupName)[instanceID]; !member {
		// Launched by hand, not by the group (a successor already waiting, in the fault
		// scenarios): a running instance registered in the target group.
		s.aws.AddTargetGroup(TargetGroupARN, awstest.Target{ID: instanceID, Port: 8080})
	}

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
		GuardExecutable: s.rt.exe,
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
	s.mu.Lock()
	s.hosts = append(s.hosts, in)
	s.byID[instanceID] = in
	s.mu.Unlock()
	go func() { in.done <- a.Run(actx) }()
	s.say("simulate: instance %s (%s) boots", name, instanceID)
	return in, nil
}

// hostList is every instance booted so far, in launch order.
func (s *sim) hostList() []*host {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.hosts)
}

// hostByID is the instance last booted with the id, nil when none was.
func (s *sim) hostByID(id string) *host {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byID[id]
}

// config is the production configuration with the budget compressed for a rehearsal.
func (s *sim) config(name, dir, home string, port int) config.Config {
	cfg := config.Default()
	cfg.EFS.FileSystemID = FileSystemID
	cfg.EFS.MountPoint = home
	cfg.Jenkins.Image = s.rt.image
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
	cfg.Interruption.RequestReplacement = s.replace
	cfg.Interruption.SafetyMargin = config.Duration(3 * time.Second)
	cfg.Metrics.ListenAddress = ""
	cfg.ControlSocket = filepath.Join(dir, "control.sock")
	cfg.StateDir = filepath.Join(dir, "state")
	return cfg
}

// pickRuntime decides between Docker and the in-process stand-in, and builds the image.
func (s *sim) pickRuntime(ctx context.Context) {
	s.rt = chooseRuntime(ctx, s.opts, s.runID)
	s.sum.Docker, s.sum.DockerReason = s.rt.docker, s.rt.reason
}

// chooseRuntime decides between Docker and the in-process stand-in, and builds the
// image, tagged with runID.
func chooseRuntime(ctx context.Context, opts Options, runID string) runtimeChoice {
	rc := runtimeChoice{image: imageRepo + ":" + runID}
	if opts.Docker == "never" {
		rc.reason = "--docker never"
		return rc
	}
	exe := opts.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			rc.reason = "cannot find this executable"
			return rc
		}
	}
	if !isStatic(exe) {
		rc.reason = "this binary is not static; build it with `make build` (CGO_ENABLED=0) to run Jenkins in containers"
		return rc
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	rt, err := container.New(container.Options{Image: rc.image, Pull: "never", Name: "probe", HomeHost: "/", HomeContainer: "/x"})
	if err == nil {
		err = rt.Ping(cctx)
	}
	if err != nil {
		rc.reason = "no Docker Engine reachable"
		return rc
	}
	defer rt.Close()
	if err := rt.BuildImage(cctx, exe, []string{"/" + filepath.Base(exe), "jenkins-double"}); err != nil {
		rc.reason = "image build failed: " + err.Error()
		return rc
	}
	rc.built, rc.docker, rc.exe = true, true, exe
	return rc
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
// Calling it again does nothing.
func (s *sim) cleanup(in *host) {
	in.cleanOnce.Do(func() { s.end(in) })
}

func (s *sim) end(in *host) {
	in.cancel()
	select {
	case err := <-in.done:
		in.done <- err
		if err != nil && !errors.Is(err, context.Canceled) {
			s.opts.Logger.Warn("simulate: agent ended with an error", "instance", in.name, "err", err)
		}
	case <-time.After(30 * time.Second):
		s.opts.Logger.Warn("simulate: agent did not end within 30s of its cancellation", "instance", in.name)
	}
	if in.lease != nil {
		in.lease.crash(10 * time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = in.runtime.Stop(ctx, time.Second)
	rt, isContainer := in.runtime.(*container.Runtime)
	if isContainer {
		_ = rt.Remove(ctx)
	}
	// Only a Jenkins seen stopped leaves the two-Jenkins sampler's sight.
	if up, err := in.runtime.Running(ctx); err == nil && !up {
		in.gone.Store(true)
	}
	if isContainer {
		_ = rt.Close()
	}
	in.imds.Close()
}

// cleanupAll ends every instance booted, the latest first, once the boots on the
// group's launches under way are done; later launches boot nothing.
func (s *sim) cleanupAll() {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	s.launching.Wait()
	hosts := s.hostList()
	for i := len(hosts) - 1; i >= 0; i-- {
		s.cleanup(hosts[i])
	}
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
	// A detached instance has left its group and its termination hook: it has no
	// lifecycle action to complete.
	detached := slices.ContainsFunc(s.aws.CallsOf("DetachInstances"), func(c awstest.Call) bool {
		return c.Code == "" && c.Params.Get("InstanceIds.member.1") == a.id.InstanceID
	})
	for _, st := range []status.Step{
		status.StepDeregister, status.StepQuietDown, status.StepDrain, status.StepContainerStop,
		status.StepLeaseRelease, status.StepUnmount, status.StepLifecycleComplete,
	} {
		ev, ok := done(st)
		if !ok && st == status.StepLifecycleComplete && detached {
			continue
		}
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
		}
	}
	for _, ev := range evs {
		if ev.Kind == status.EventPlanDone && !ev.At.Before(planStart) {
			s.sum.PlanTotal = ev.At.Sub(planStart)
		}
	}
	if ev, ok := done(status.StepRequestReplacement); ok && ev.Err != "" {
		s.sum.FailedSteps = append(s.sum.FailedSteps, string(status.StepRequestReplacement)+": "+ev.Err)
	}
	for _, c := range s.aws.CallsOf("DeregisterTargets") {
		if !c.At.Before(planStart) {
			s.sum.DeregisterSent = c.At.Sub(planStart)
			break
		}
	}
	if b == nil {
		return
	}
	s.summarizeFailover(a, b, evs, done)
}

// summarizeFailover derives the replacement's figures: when it was asked for and came
// up, its announcement as A saw it, the handover, its own start, and how long Jenkins
// was unreachable through the load balancer.
func (s *sim) summarizeFailover(a, b *host, evs []status.Event, done func(status.Step) (status.Event, bool)) {
	sum := s.sum
	sum.Order, sum.LaunchDelay, sum.instanceB = s.opts.Order, s.opts.LaunchDelay, b.id.InstanceID
	sum.eventsA, sum.eventsB = evs, b.eventsCopy()
	notice := s.noticeAt
	for _, c := range s.aws.CallsOf("DetachInstances") {
		if !c.At.Before(notice) && c.Params.Get("InstanceIds.member.1") == a.id.InstanceID {
			sum.ReplacementAsked = c.At.Sub(notice)
			sum.detachParams = append(sum.detachParams, c.Params.Get("ShouldDecrementDesiredCapacity"))
			break
		}
	}
	s.mu.Lock()
	if at, ok := s.launchedAt[b.id.InstanceID]; ok {
		sum.ReplacementUp = at.Sub(notice)
	}
	s.mu.Unlock()
	if ev, ok := done(status.StepDeregister); ok {
		sum.HandoverBegan = ev.At.Add(-ev.Duration).Sub(notice)
	}

	released, _ := done(status.StepLeaseRelease)
	for _, ev := range evs {
		if ev.Kind == status.EventSuccessor && ev.Successor != nil && ev.Successor.InstanceID == b.id.InstanceID &&
			(released.At.IsZero() || !ev.At.After(released.At)) {
			s := *ev.Successor
			sum.Successor = &s
			if s.Ready && sum.SuccessorReady == 0 {
				sum.SuccessorReady = ev.At.Sub(notice)
			}
		}
	}
	sum.WaitingSeenOnB = b.lease != nil && b.lease.observed().WaitedOn.Holder == a.id.InstanceID

	stopBegan := time.Time{}
	if ev, ok := done(status.StepContainerStop); ok {
		stopBegan = ev.At.Add(-ev.Duration)
	}
	var startCall time.Time
	for _, ev := range sum.eventsB {
		if ev.Step == status.StepContainerStart && !ev.Done && startCall.IsZero() {
			startCall = ev.At
			// From the release call: the record is released during the step, and its
			// done event may be stamped after the successor already moved.
			sum.Handover = ev.At.Sub(released.At.Add(-released.Duration))
		}
		if ev.Step == status.StepJenkinsReady && ev.Done && ev.Err == "" && sum.Downtime == 0 {
			sum.Downtime = ev.At.Sub(stopBegan)
			if !startCall.IsZero() {
				sum.SuccessorStart = ev.At.Sub(startCall)
			}
		}
	}
	sum.ResumedOnB = resumedPipelines(b)

	o := measureOutage(sum.reach, notice, b.id.InstanceID)
	sum.Unreachable, sum.LongestGap, sum.ReachRounds = o.Total, o.Longest, len(sum.reach)
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
