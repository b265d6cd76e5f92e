// Package status is the agent's observable state: its phase, the steps of the boot and
// of the shutdown plan as a timeline, and the snapshot that `status` prints. It imports
// only the standard library and the instance vocabulary, so every part can use it.
package status

import (
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

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

// Event is one line of the timeline: a step that started or ended, a phase change or a
// notice.
type Event struct {
	At       time.Time
	Step     Step  // empty for a notice or a phase change
	Phase    Phase // set on a phase change
	Notice   *instance.Notice
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

// Snapshot is the agent's answer to `status`.
type Snapshot struct {
	Phase      Phase
	InstanceID string
	Lease      LeaseState
	Watch      WatchHealth
	Notices    []instance.Notice
	Deadline   time.Time     // termination time being worked to; zero when none
	Running    []string      // running builds at the last look
	Steps      []Event       // ended steps of the current boot and plan
	Since      time.Time     // when the current phase began
	Restarts   int           // Jenkins containers restarted after a crash
	Margin     time.Duration // time left before the deadline when the last plan finished
}
