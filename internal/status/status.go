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
	// StepRequestReplacement asks the Auto Scaling group for the replacement at a notice.
	StepRequestReplacement Step = "request_replacement"
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

// EventKind says what an Event reports; values appear in webhooks and JSON.
type EventKind string

// The kinds of timeline event.
const (
	EventNotice    EventKind = "notice"     // a notice was seen (Notice is set)
	EventPhase     EventKind = "phase"      // the phase changed (Phase is set)
	EventStep      EventKind = "step"       // a step started or ended (Step is set)
	EventSuccessor EventKind = "successor"  // a successor announced itself or changed (Successor is set)
	EventHandover  EventKind = "handover"   // the lease was released to a successor (Successor may be set)
	EventLeaseLost EventKind = "lease_lost" // another controller holds the lease; Jenkins was stopped
	EventPlanDone  EventKind = "plan_done"  // the shutdown plan ended (Report is set)
)

// Event is one line of the timeline: a step that started or ended, a phase change, a
// notice, a successor, a handover, a lost lease or the end of a plan.
type Event struct {
	Kind     EventKind        `json:"kind"`
	At       time.Time        `json:"at,omitzero"`
	Step     Step             `json:"step,omitzero"`  // empty for a notice or a phase change
	Phase    Phase            `json:"phase,omitzero"` // set on a phase change
	Notice   *instance.Notice `json:"notice,omitzero"`
	Duration time.Duration    `json:"duration_ns,omitzero"` // for an ended step
	Err      string           `json:"error,omitzero"`       // empty when the step succeeded
	Message  string           `json:"message,omitzero"`
	Done     bool             `json:"done,omitzero"` // the step ended (false: it started)
	// Successor is set for EventSuccessor and EventHandover.
	Successor *Successor `json:"successor,omitzero"`
	// Report is set for EventPlanDone.
	Report *PlanReport `json:"report,omitzero"`
}

// Successor is an instance waiting on the lease to take JENKINS_HOME over, as it
// announces itself in a record beside the lease.
type Successor struct {
	InstanceID string    `json:"instance_id"`
	Since      time.Time `json:"since,omitzero"`   // when it began to wait
	Updated    time.Time `json:"updated,omitzero"` // its last announcement
	Ready      bool      `json:"ready"`            // home mounted and verified, image present: it can start Jenkins at once
}

// PlanReport sums a finished shutdown plan up.
type PlanReport struct {
	Notice   instance.Notice `json:"notice"`
	Deadline time.Time       `json:"deadline,omitzero"`
	Margin   time.Duration   `json:"margin_ns"`        // time left before the deadline when the plan ended
	Aborted  []string        `json:"aborted,omitzero"` // builds the stop aborted (not Pipelines, which resume)
	Failed   []string        `json:"failed,omitzero"`  // steps that failed, "step: error"
	// HandedOverTo is the successor that waited on the lease at the handover, if any.
	HandedOverTo string `json:"handed_over_to,omitzero"`
}

// Build is one running build as Jenkins lists it.
type Build struct {
	URL    string `json:"url"` // absolute URL of the run, e.g. http://127.0.0.1:8080/job/nightly/7/
	Job    string `json:"job"` // full job name, e.g. folder/nightly
	Number int    `json:"number"`
	// Pipeline runs are saved when Jenkins stops and resume on the next start of the
	// same home; other builds are aborted.
	Pipeline bool `json:"pipeline"`
	// Parked is a Pipeline waiting in the queue for a node block that quiet-down keeps
	// from starting: it cannot finish before the handover, so the drain does not wait.
	Parked bool `json:"parked"`
}

// AbortedBuild is a build the stop aborted, recorded on the home for the successor.
// Its keys are single words, so a note written by an agent that wrote them capitalised
// still reads (encoding/json matches keys without regard to case).
type AbortedBuild struct {
	Job        string            `json:"job"`
	Number     int               `json:"number"`
	URL        string            `json:"url"`
	Parameters map[string]string `json:"parameters,omitzero"`
	Requeued   bool              `json:"requeued"` // queued again on the successor
}

// WatchHealth is the IMDS watcher's view of its own sight.
type WatchHealth struct {
	LastSuccess      time.Time `json:"last_success,omitzero"`
	ConsecutiveFails int       `json:"consecutive_fails"`
	LastError        string    `json:"last_error,omitzero"`
	Polls            uint64    `json:"polls"`
}

// LeaseState is what the agent knows of the lease on JENKINS_HOME.
type LeaseState struct {
	Held    bool      `json:"held"`
	Holder  string    `json:"holder,omitzero"`
	Epoch   uint64    `json:"epoch"`
	Expires time.Time `json:"expires,omitzero"`
	// Successor is the instance that announced itself waiting beside the lease; nil
	// when none has, or its announcement is stale.
	Successor *Successor `json:"successor,omitzero"`
	// ClockSkew, while waiting on another holder, is this instance's wall clock minus
	// the holder's renewed_at when this instance first read that renewal: the skew
	// between the two clocks plus up to one poll interval. The lease does not depend
	// on it (no instance trusts another's clock); it is shown so that a drifting clock
	// gets fixed. Zero when unknown.
	ClockSkew time.Duration `json:"clock_skew_ns,omitzero"`
}

// Snapshot is the agent's answer to `status`, and what `status --json` prints. Its JSON
// keys are snake_case; a time, a duration, a string, a list or an object that means
// "none" when zero is left out rather than written as its zero value. Durations are
// integer nanoseconds, their keys ending in _ns (the Go type, time.Duration, as is).
type Snapshot struct {
	Phase      Phase             `json:"phase"`
	InstanceID string            `json:"instance_id,omitzero"`
	Lease      LeaseState        `json:"lease"`
	Watch      WatchHealth       `json:"watch"`
	Notices    []instance.Notice `json:"notices,omitzero"`
	Deadline   time.Time         `json:"deadline,omitzero"`  // termination time being worked to; zero when none
	Running    []string          `json:"running,omitzero"`   // running builds at the last look
	Steps      []Event           `json:"steps,omitzero"`     // ended steps of the current boot and plan
	Since      time.Time         `json:"since,omitzero"`     // when the current phase began
	Restarts   int               `json:"restarts"`           // Jenkins containers restarted after a crash
	Margin     time.Duration     `json:"margin_ns,omitzero"` // time left before the deadline when the last plan finished
	// BuildListFailures counts executor lists that could not be read (unknown, never
	// taken as "no builds").
	BuildListFailures int `json:"build_list_failures"`
	// Aborted are the builds the previous controller's stop aborted, as found at boot.
	Aborted []AbortedBuild `json:"aborted,omitzero"`
	// Replaced says why this instance stays idle: it handed JENKINS_HOME over and the
	// group replaced it. Empty otherwise.
	Replaced string `json:"replaced,omitzero"`
	// Pending is an advisory notice worked to later (a scheduled event, a rebalance
	// recommendation waiting for a successor), for operators.
	Pending string `json:"pending,omitzero"`
}
