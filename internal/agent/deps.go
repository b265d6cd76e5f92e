package agent

import (
	"context"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// The agent declares the small interfaces it needs; adapters in their own packages
// implement them and main wires them in. Nothing here knows AWS or Docker.

// Metadata tells who this instance is.
type Metadata interface {
	Identity(ctx context.Context) (instance.Identity, error)
}

// Watcher polls for the end of the instance and sends each notice once.
type Watcher interface {
	Run(ctx context.Context, notices chan<- instance.Notice) error
	Health() status.WatchHealth
}

// Mounter mounts, verifies and unmounts the file system that holds JENKINS_HOME.
// Every method is idempotent.
type Mounter interface {
	Mount(ctx context.Context) error
	Verify(ctx context.Context) error
	Unmount(ctx context.Context) error
	MountPoint() string
}

// Lease is the single-writer lease on JENKINS_HOME.
type Lease interface {
	Acquire(ctx context.Context, waiting func(status.LeaseState)) (status.LeaseState, error)
	Hold(ctx context.Context, fence func(context.Context) error) error
	Release(ctx context.Context) error
	Held() bool
	State() status.LeaseState
}

// Runtime runs the Jenkins container.
type Runtime interface {
	Prepare(ctx context.Context) error
	Start(ctx context.Context) (adopted bool, err error)
	Stop(ctx context.Context, grace time.Duration) error
	Kill(ctx context.Context) error
	Running(ctx context.Context) (bool, error)
	Wait(ctx context.Context) (exitCode int64, err error)
}

// Jenkins is the controller's HTTP API, as far as the agent needs it.
type Jenkins interface {
	Probe(ctx context.Context) error
	QuietDown(ctx context.Context, reason string) error
	RunningBuilds(ctx context.Context) ([]string, error)
}

// Targets registers the instance in its load balancer target groups and deregisters it,
// and completes the Auto Scaling lifecycle action.
type Targets interface {
	Discover(ctx context.Context, id instance.Identity) error
	Register(ctx context.Context, instanceID string) error
	Deregister(ctx context.Context, instanceID string) error
	CompleteLifecycle(ctx context.Context, instanceID string) error
}

// Notifier talks to systemd. A nil Notifier is allowed.
type Notifier interface {
	Ready(status string) error
	Status(s string) error
	ExtendTimeout(d time.Duration) error
	Stopping(status string) error
}

// Recorder receives the figures Prometheus scrapes. A nil Recorder is allowed.
type Recorder interface {
	SetPhase(status.Phase)
	Notice(instance.Kind)
	SetDeadline(time.Time)
	ObserveStep(step status.Step, d time.Duration, err error)
	SetShutdownMargin(time.Duration)
	SetRunningBuilds(int)
	SetLeaseHeld(bool)
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
func (noRecorder) SetDeadline(time.Time)                         {}
func (noRecorder) ObserveStep(status.Step, time.Duration, error) {}
func (noRecorder) SetShutdownMargin(time.Duration)               {}
func (noRecorder) SetRunningBuilds(int)                          {}
func (noRecorder) SetLeaseHeld(bool)                             {}
