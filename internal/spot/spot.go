// Package spot holds the small vocabulary that the agent's parts exchange: who this
// instance is, which notice ended it, and how each step of the plan went. It imports
// nothing outside the standard library so that every adapter can use it.
package spot

import "time"

// Identity is what IMDS says about this instance.
type Identity struct {
	InstanceID       string
	AvailabilityZone string // e.g. us-east-1a
	AZID             string // e.g. use1-az6
	Region           string // e.g. us-east-1
	Lifecycle        string // spot | on-demand, when IMDS tells
	AutoScalingGroup string // from the instance tag aws:autoscaling:groupName, when tags are enabled
}

// Kind names what ended (or may end) the instance. The values are the metric labels.
type Kind string

// The kinds of notice, as counted in jenkins_spot_agent_interruption_notices_total.
const (
	KindSpotTerminate  Kind = "spot_terminate"
	KindSpotStop       Kind = "spot_stop"
	KindSpotHibernate  Kind = "spot_hibernate"
	KindRebalance      Kind = "rebalance"
	KindASGTerminated  Kind = "asg_terminated"
	KindScheduledEvent Kind = "scheduled_event"
	KindSignal         Kind = "signal"
	KindDrill          Kind = "drill"
)

// Notice is one observed end-of-instance signal.
type Notice struct {
	Kind Kind
	// Time is the termination (or event start) time the notice names; zero when the
	// notice names none (rebalance, ASG Terminated, a signal, a drill).
	Time time.Time
	// Seen is when the agent first saw it.
	Seen time.Time
	// Detail is a short human text (the action, the event code, the signal).
	Detail string
}

// Step names a step of the boot or of the shutdown plan; values are metric labels.
type Step string

// Steps, as labelled in jenkins_spot_agent_step_duration_seconds.
const (
	StepMount             Step = "mount"
	StepLease             Step = "lease"
	StepContainerStart    Step = "container_start"
	StepJenkinsReady      Step = "jenkins_ready"
	StepDeregister        Step = "deregister"
	StepQuietDown         Step = "quiet_down"
	StepDrain             Step = "drain"
	StepContainerStop     Step = "container_stop"
	StepLeaseRelease      Step = "lease_release"
	StepUnmount           Step = "unmount"
	StepLifecycleComplete Step = "lifecycle_complete"
)

// Phase is the agent's coarse state; values are metric labels.
type Phase string

// Phases, as labelled in jenkins_spot_agent_phase.
const (
	PhaseBooting         Phase = "booting"
	PhaseMounting        Phase = "mounting"
	PhaseWaitingForLease Phase = "waiting_for_lease"
	PhaseStartingJenkins Phase = "starting_jenkins"
	PhaseServing         Phase = "serving"
	PhaseDraining        Phase = "draining"
	PhaseStopped         Phase = "stopped"
)

// Phases lists every phase in order, for exporting one gauge per phase.
var Phases = []Phase{PhaseBooting, PhaseMounting, PhaseWaitingForLease, PhaseStartingJenkins, PhaseServing, PhaseDraining, PhaseStopped}

// Event is one line of the timeline: a step that started or ended, or a notice.
type Event struct {
	At       time.Time
	Step     Step  // empty for a notice or a phase change
	Phase    Phase // set on a phase change
	Notice   *Notice
	Duration time.Duration // for an ended step
	Err      string        // empty when the step succeeded
	Message  string
	Done     bool // the step ended (false: it started)
}

// WatchHealth is the IMDS watcher's view of its own sight.
type WatchHealth struct {
	LastSuccess      time.Time
	ConsecutiveFails int
	LastError        string
	Polls            uint64
}

// LeaseState is what the agent knows of the lease on JENKINS_HOME.
type LeaseState struct {
	Held    bool
	Holder  string
	Epoch   uint64
	Expires time.Time
}

// Status is the agent's answer to `status`.
type Status struct {
	Phase      Phase
	InstanceID string
	Lease      LeaseState
	Watch      WatchHealth
	Notices    []Notice
	Deadline   time.Time     // termination time being worked to; zero when none
	Running    []string      // running builds at the last look
	Steps      []Event       // ended steps of the current boot and plan
	Since      time.Time     // when the current phase began
	Restarts   int           // Jenkins containers restarted after a crash
	Margin     time.Duration // time left before the deadline when the last plan finished
}
