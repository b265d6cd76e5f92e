// Package instance names this EC2 instance and the notices that announce its end: the
// Spot interruption notice, the rebalance recommendation, the Auto Scaling target
// lifecycle state, scheduled events, and the agent's own stop signal and drill. It
// imports only the standard library, so every adapter can use it.
package instance

import (
	"errors"
	"time"
)

// Identity is what IMDS says about this instance.
type Identity struct {
	InstanceID       string
	InstanceType     string // e.g. m7g.large
	AvailabilityZone string // e.g. us-east-1a
	AZID             string // e.g. use1-az6
	Region           string // e.g. us-east-1
	Market           string // spot | on-demand: IMDS instance-life-cycle, when it tells
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

// Kinds lists every kind, for exporting one counter per kind.
var Kinds = []Kind{
	KindSpotTerminate, KindSpotStop, KindSpotHibernate, KindRebalance, KindASGTerminated,
	KindScheduledEvent, KindSignal, KindDrill,
}

// Notice is one observed end-of-instance signal.
type Notice struct {
	Kind Kind `json:"kind"`
	// Time is the termination (or event start) time the notice names; zero when the
	// notice names none (rebalance, ASG Terminated, a signal, a drill).
	Time time.Time `json:"time,omitzero"`
	// Seen is when the agent first saw it.
	Seen time.Time `json:"seen,omitzero"`
	// Detail is a short human text (the action, the event code, the signal).
	Detail string `json:"detail,omitzero"`
	// EventID identifies a scheduled event (IMDS EventId, e.g. instance-event-0d59937288b749b32);
	// empty for other kinds. A scheduled event is remembered by it across reboots.
	EventID string `json:"event_id,omitzero"`
	// Code is a scheduled event's code: instance-stop, instance-retirement,
	// instance-reboot, system-reboot or system-maintenance; empty for other kinds.
	Code string `json:"code,omitzero"`
	// InstanceType and AvailabilityZone are the capacity pool the notice hit, so that
	// operators can prune the group's instance types.
	InstanceType     string `json:"instance_type,omitzero"`
	AvailabilityZone string `json:"availability_zone,omitzero"`
}

// ErrNoLifecycleAction means the Auto Scaling group has no termination lifecycle action
// pending for the instance and none is coming (it timed out, was completed, or the
// instance left the group): the group no longer waits for it.
var ErrNoLifecycleAction = errors.New("no lifecycle action is pending for the instance")
