package webhook

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// Message is the generic JSON form (format json). Times are RFC 3339, durations
// seconds.
type Message struct {
	Kind   status.EventKind `json:"kind"`
	At     time.Time        `json:"at"`
	Source string           `json:"source"`
	Text   string           `json:"text"` // the same sentence the slack form sends
	Notice *NoticeJSON      `json:"notice,omitempty"`
	Report *ReportJSON      `json:"report,omitempty"`
	// Successor is the instance that took JENKINS_HOME over (handover).
	Successor string `json:"successor,omitempty"`
}

// NoticeJSON is a notice in the JSON form.
type NoticeJSON struct {
	Kind             string     `json:"kind"`
	Time             *time.Time `json:"time,omitempty"` // termination or event start, when the notice names one
	Detail           string     `json:"detail,omitempty"`
	InstanceType     string     `json:"instance_type,omitempty"`
	AvailabilityZone string     `json:"availability_zone,omitempty"`
	EventID          string     `json:"event_id,omitempty"`
	Code             string     `json:"code,omitempty"`
}

// ReportJSON is the end of a shutdown plan in the JSON form.
type ReportJSON struct {
	Notice        string     `json:"notice"`
	Deadline      *time.Time `json:"deadline,omitempty"`
	MarginSeconds float64    `json:"margin_seconds"`
	AbortedBuilds []string   `json:"aborted_builds"`
	FailedSteps   []string   `json:"failed_steps"`
	HandedOverTo  string     `json:"handed_over_to,omitempty"`
}

func (n *Notifier) payload(e status.Event) ([]byte, error) {
	text := Text(n.source, e)
	if n.format == FormatSlack {
		return json.Marshal(struct {
			Text string `json:"text"`
		}{text})
	}
	m := Message{Kind: e.Kind, At: e.At.UTC(), Source: n.source, Text: text}
	if e.Notice != nil {
		nj := &NoticeJSON{
			Kind: string(e.Notice.Kind), Detail: e.Notice.Detail,
			InstanceType: e.Notice.InstanceType, AvailabilityZone: e.Notice.AvailabilityZone,
			EventID: e.Notice.EventID, Code: e.Notice.Code,
		}
		if !e.Notice.Time.IsZero() {
			t := e.Notice.Time.UTC()
			nj.Time = &t
		}
		m.Notice = nj
	}
	if r := e.Report; r != nil {
		rj := &ReportJSON{
			Notice:        string(r.Notice.Kind),
			MarginSeconds: r.Margin.Seconds(),
			AbortedBuilds: append([]string{}, r.Aborted...),
			FailedSteps:   append([]string{}, r.Failed...),
			HandedOverTo:  r.HandedOverTo,
		}
		if !r.Deadline.IsZero() {
			d := r.Deadline.UTC()
			rj.Deadline = &d
		}
		m.Report = rj
	}
	if e.Successor != nil {
		m.Successor = e.Successor.InstanceID
	}
	return json.Marshal(m)
}

// Text is the one-line message for e, as the slack form sends it.
func Text(source string, e status.Event) string {
	who := "jenkins-spot-agent on " + source
	switch e.Kind {
	case status.EventNotice:
		no := e.Notice
		s := fmt.Sprintf("%s: %s notice", who, no.Kind)
		switch {
		case no.InstanceType != "" && no.AvailabilityZone != "":
			s += " (" + no.InstanceType + " in " + no.AvailabilityZone + ")"
		case no.InstanceType != "" || no.AvailabilityZone != "":
			s += " (" + no.InstanceType + no.AvailabilityZone + ")"
		}
		if !no.Time.IsZero() {
			s += ", termination at " + no.Time.UTC().Format(time.RFC3339)
		}
		if no.Detail != "" {
			s += ": " + no.Detail
		}
		return s
	case status.EventPlanDone:
		r := e.Report
		s := fmt.Sprintf("%s: shutdown plan for %s done, %s left before termination", who, r.Notice.Kind, r.Margin.Round(100*time.Millisecond))
		if r.Margin < 0 {
			s = fmt.Sprintf("%s: shutdown plan for %s done %s AFTER the termination time", who, r.Notice.Kind, (-r.Margin).Round(100*time.Millisecond))
		}
		s += fmt.Sprintf("; %d build(s) aborted", len(r.Aborted))
		if len(r.Aborted) > 0 {
			s += " (" + strings.Join(r.Aborted, ", ") + ")"
		}
		if r.HandedOverTo != "" {
			s += "; handed over to " + r.HandedOverTo
		}
		if len(r.Failed) > 0 {
			s += "; failed: " + strings.Join(r.Failed, "; ")
		}
		return s
	case status.EventHandover:
		if e.Successor != nil {
			return fmt.Sprintf("%s: handed JENKINS_HOME over to %s", who, e.Successor.InstanceID)
		}
		return who + ": released JENKINS_HOME for the next instance"
	case status.EventLeaseLost:
		s := who + ": lost the lease on JENKINS_HOME; Jenkins was stopped here"
		if e.Message != "" {
			s += ": " + e.Message
		}
		return s
	}
	return fmt.Sprintf("%s: %s %s", who, e.Kind, e.Message)
}
