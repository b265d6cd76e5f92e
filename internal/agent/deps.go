package agent

import (
	"context"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// The agent declares the small interfaces it needs; adapters in their own packages
// implement them and the composition root (internal/wiring) plugs them in. Nothing here
// knows AWS or Docker. Each method says what it blocks on, whether it may be repeated,
// and what its errors mean; internal/agent/contract holds one test suite per interface
// that the real adapter, its test double and the agent's fakes all pass.

// Metadata tells who this instance is (IMDSv2).
type Metadata interface {
	// Identity reads the instance id, type, AZ, region, market and Auto Scaling group.
	// It blocks on IMDS, retrying each read with backoff until ctx ends, so the caller
	// chooses how long an absent IMDS is tolerated. Idempotent. An error means IMDS
	// stayed away, refused the token, or kept answering garbage until ctx ended.
	Identity(ctx context.Context) (instance.Identity, error)
	// TargetLifecycleState is the Auto Scaling target lifecycle state (InService,
	// Warmed:Running, Terminated...), "" while the instance has none yet. It blocks on
	// one IMDS read. An error means the state could not be read (not "none").
	TargetLifecycleState(ctx context.Context) (string, error)
}

// Watcher polls for the end of the instance and sends each notice once.
type Watcher interface {
	// Run polls until ctx ends, sending every new notice on notices; it returns ctx's
	// error, or another error only if it cannot poll at all. Blindness (IMDS errors) is
	// counted in Health, never sent as a notice.
	Run(ctx context.Context, notices chan<- instance.Notice) error
	// Health is the watcher's view of its own sight; it never blocks.
	Health() status.WatchHealth
}

// Mounter mounts, verifies and unmounts the file system that holds JENKINS_HOME.
type Mounter interface {
	// Mount mounts the file system (waiting for DNS and retrying transient failures
	// until ctx ends) and proves it is the right one, as Verify does. Idempotent: a
	// verified mount already in place is success. An error means Jenkins must not start.
	Mount(ctx context.Context) error
	// Verify proves the mount point holds the configured file system now (mount table,
	// statfs, marker). It blocks on file system reads, bounded by ctx. Idempotent.
	Verify(ctx context.Context) error
	// Unmount unmounts the home (never lazily). Idempotent: nothing mounted is success.
	// An error means the home is still mounted.
	Unmount(ctx context.Context) error
	// Abort cuts this instance off the home after a fence, so that the killed Jenkins'
	// pending NFS writes never land in a home a successor holds (the NFS client is shut
	// down, or the mount forced off and detached). It blocks on the kernel, bounded by
	// ctx. Idempotent. An error means writes may still land: the instance should end.
	Abort(ctx context.Context) error
	// MountPoint is the host path of the home; it never blocks.
	MountPoint() string
}

// Lease is the single-writer lease on JENKINS_HOME.
type Lease interface {
	// Acquire takes the lease, blocking while another holder's lease is live, until ctx
	// ends. waiting is called when it first finds the lease held by another instance and
	// whenever the holder changes. Taking one's own unreleased lease back (an agent
	// restart) is immediate. An error means the lease is not held: ctx ended, or the
	// record is unreadable (never overwritten).
	Acquire(ctx context.Context, waiting func(status.LeaseState)) (status.LeaseState, error)
	// Announce sets what this waiting instance says of itself beside the lease: ready
	// means the home is mounted and verified and the image is present. It never blocks;
	// Acquire writes the announcement while it waits.
	Announce(ready bool)
	// Hold renews the lease until ctx ends or Release runs (then nil). When renewals
	// keep failing, fence is called once before the lease can lapse; if the record shows
	// another holder, fence is called and Hold returns an error. After Hold returns an
	// error the tenure is over: Held is false until Acquire succeeds again.
	Hold(ctx context.Context, fence func(context.Context) error) error
	// Release gives the lease up so a successor takes it at its next poll. It blocks on
	// the file system, bounded by ctx. Idempotent. An error means it is not released.
	Release(ctx context.Context) error
	// Held reports whether this instance holds the lease now; it never blocks.
	Held() bool
	// State is this instance's view of the lease and of a waiting successor; it never
	// blocks.
	State() status.LeaseState
	// Successor reads the announcement of an instance waiting on the lease; false when
	// none is there, it is stale, or it names this instance. It blocks on one file read,
	// bounded by ctx.
	Successor(ctx context.Context) (status.Successor, bool, error)
}

// Runtime runs the Jenkins container.
type Runtime interface {
	// Prepare makes the image present according to the pull policy. It blocks on the
	// daemon and the registry until ctx ends. Idempotent.
	Prepare(ctx context.Context) error
	// Start starts the Jenkins container, or adopts the one already running with the
	// same configuration (adopted=true). It blocks on the daemon. Idempotent.
	Start(ctx context.Context) (adopted bool, err error)
	// Stop stops the container with SIGTERM and kills it after grace. Idempotent: a
	// stopped or absent container is success. An error means it may still run.
	Stop(ctx context.Context, grace time.Duration) error
	// Kill kills the container at once. Idempotent. An error means it may still run.
	Kill(ctx context.Context) error
	// Running asks the daemon whether the container runs. An error means unknown.
	Running(ctx context.Context) (bool, error)
	// Wait blocks until the container exits and returns its exit code. An error means
	// the wait itself ended (ctx, the daemon went away): the container may still run, so
	// the caller looks again.
	Wait(ctx context.Context) (exitCode int64, err error)
}

// Jenkins is the controller's HTTP API, as far as the agent needs it. Every call blocks
// on one or a few HTTP requests, bounded by ctx.
type Jenkins interface {
	// Ready probes Jenkins: true when it serves; false with a nil error while it answers
	// 503 (loading: a large home on a slow EFS can load for minutes); an error when it
	// gives no HTTP answer at all or an unexpected one.
	Ready(ctx context.Context) (bool, error)
	// QuietDown stops new builds, keeping the queue; reason shows in Jenkins' banner.
	// Idempotent.
	QuietDown(ctx context.Context, reason string) error
	// CancelQuietDown ends a quiet-down. Idempotent.
	CancelQuietDown(ctx context.Context) error
	// QuietingDown reports whether Jenkins is in quiet-down.
	QuietingDown(ctx context.Context) (bool, error)
	// RunningBuilds lists the builds on regular and one-off executors, Pipelines parked
	// in the queue by the quiet-down marked as such. An error means unknown, never none.
	RunningBuilds(ctx context.Context) ([]status.Build, error)
	// BuildParameters returns a build's parameters (none: empty map).
	BuildParameters(ctx context.Context, buildURL string) (map[string]string, error)
	// Requeue queues a job again with its parameters and a cause that says why.
	Requeue(ctx context.Context, job string, params map[string]string, cause string) error
}

// Targets registers the instance in its load balancer target groups and deregisters
// it, asks the Auto Scaling group for a replacement, and completes the lifecycle action.
// Every call blocks on AWS APIs, bounded by ctx.
type Targets interface {
	// Discover looks the instance's Auto Scaling group and target groups up once and
	// caches them (the APIs throttle during mass interruptions). An error leaves the
	// configured target groups in use.
	Discover(ctx context.Context, id instance.Identity) error
	// Register puts the instance in every target group and returns once it is
	// registered and not draining. Idempotent.
	Register(ctx context.Context, instanceID string) error
	// Deregister takes the instance out of every target group. Idempotent.
	Deregister(ctx context.Context, instanceID string) error
	// RequestReplacement asks the instance's Auto Scaling group to launch a replacement
	// now while this instance keeps serving (registered again in its target groups).
	// requested is false, with no error, when the instance is in no group, or when the
	// group terminates it itself (its replacement comes only after it is gone, and the
	// lifecycle action is then to be completed). Idempotent.
	RequestReplacement(ctx context.Context, id instance.Identity) (requested bool, err error)
	// Heartbeat extends the pending termination lifecycle action. Idempotent; a no-op
	// without a lifecycle hook.
	Heartbeat(ctx context.Context, instanceID string) error
	// An error wrapping instance.ErrNoLifecycleAction means the group no longer waits.
	// HeartbeatInterval is how often Heartbeat must be sent; it never blocks.
	HeartbeatInterval() time.Duration
	// LifecycleWaitLimit is the longest the group waits however many heartbeats come
	// (0 while unknown); it never blocks.
	LifecycleWaitLimit() time.Duration
	// CompleteLifecycle completes the termination lifecycle action with CONTINUE,
	// retrying while the group has not caught up. Idempotent; a no-op without a hook or
	// once the instance has left the group.
	CompleteLifecycle(ctx context.Context, instanceID string) error
}

// Notifier talks to systemd. A nil Notifier is allowed. No call blocks for long.
type Notifier interface {
	Ready(status string) error
	Status(s string) error
	ExtendTimeout(d time.Duration) error
	Stopping(status string) error
}

// Recorder receives the figures Prometheus scrapes. A nil Recorder is allowed. No call
// blocks.
type Recorder interface {
	SetPhase(status.Phase)
	Notice(instance.Kind)
	NoticeInPool(kind instance.Kind, instanceType, zone string)
	SetDeadline(time.Time)
	ObserveStep(step status.Step, d time.Duration, err error)
	SetShutdownMargin(time.Duration)
	SetRunningBuilds(int)
	SetLeaseHeld(bool)
	SetSuccessorWaiting(bool)
	JenkinsRestarted()
	AbortedBuilds(n int)
	JenkinsAPIFailure(call string)
	ReplacementRequested(result string)
	LifecycleHeartbeat(result string)
}

// Deps are the adapters the agent drives. The constructors run once the instance's
// identity is known, since the EFS name, the lease holder and the AWS region depend on it.
type Deps struct {
	Metadata   Metadata
	Watcher    Watcher
	NewMounter func(instance.Identity) (Mounter, error)
	NewLease   func(id instance.Identity, home string) (Lease, error)
	NewTargets func(ctx context.Context, id instance.Identity) (Targets, error)
	Runtime    Runtime
	Jenkins    Jenkins
	Notifier   Notifier
	Metrics    Recorder
}

type noNotifier struct{}

func (noNotifier) Ready(string) error                { return nil }
func (noNotifier) Status(string) error               { return nil }
func (noNotifier) ExtendTimeout(time.Duration) error { return nil }
func (noNotifier) Stopping(string) error             { return nil }

type noRecorder struct{}

func (noRecorder) SetPhase(status.Phase)                         {}
func (noRecorder) Notice(instance.Kind)                          {}
func (noRecorder) NoticeInPool(instance.Kind, string, string)    {}
func (noRecorder) SetDeadline(time.Time)                         {}
func (noRecorder) ObserveStep(status.Step, time.Duration, error) {}
func (noRecorder) SetShutdownMargin(time.Duration)               {}
func (noRecorder) SetRunningBuilds(int)                          {}
func (noRecorder) SetLeaseHeld(bool)                             {}
func (noRecorder) SetSuccessorWaiting(bool)                      {}
func (noRecorder) JenkinsRestarted()                             {}
func (noRecorder) AbortedBuilds(int)                             {}
func (noRecorder) JenkinsAPIFailure(string)                      {}
func (noRecorder) ReplacementRequested(string)                   {}
func (noRecorder) LifecycleHeartbeat(string)                     {}
