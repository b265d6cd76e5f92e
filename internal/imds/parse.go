package imds

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

// The parsers below are pure: they see only the body IMDS answered with. They accept
// fields they do not know (AWS adds fields; refusing them would blind the watcher to a
// real notice) but reject anything whose known fields are missing or malformed, and
// any trailing data after the JSON value.

// decodeOne decodes exactly one JSON value from body into v.
func decodeOne(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// ParseInstanceAction reads a spot/instance-action answer:
// {"action":"terminate|stop|hibernate","time":"2026-11-25T10:02:00Z"}.
func ParseInstanceAction(body []byte) (instance.Kind, time.Time, error) {
	var v struct {
		Action *string `json:"action"`
		Time   *string `json:"time"`
	}
	if err := decodeOne(body, &v); err != nil {
		return "", time.Time{}, fmt.Errorf("parse instance-action: %w", err)
	}
	if v.Action == nil || v.Time == nil {
		return "", time.Time{}, errors.New("parse instance-action: action and time are required")
	}
	var kind instance.Kind
	switch *v.Action {
	case "terminate":
		kind = instance.KindSpotTerminate
	case "stop":
		kind = instance.KindSpotStop
	case "hibernate":
		kind = instance.KindSpotHibernate
	default:
		return "", time.Time{}, fmt.Errorf("parse instance-action: unknown action %s", quoteShort(*v.Action))
	}
	t, err := parseRFC3339(*v.Time)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("parse instance-action: %w", err)
	}
	return kind, t, nil
}

// ParseRebalance reads an events/recommendations/rebalance answer:
// {"noticeTime":"2026-11-25T10:00:00Z"}.
func ParseRebalance(body []byte) (time.Time, error) {
	var v struct {
		NoticeTime *string `json:"noticeTime"`
	}
	if err := decodeOne(body, &v); err != nil {
		return time.Time{}, fmt.Errorf("parse rebalance: %w", err)
	}
	if v.NoticeTime == nil {
		return time.Time{}, errors.New("parse rebalance: noticeTime is required")
	}
	t, err := parseRFC3339(*v.NoticeTime)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse rebalance: %w", err)
	}
	return t, nil
}

func parseRFC3339(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %s is not RFC 3339", quoteShort(s))
	}
	if t.Year() < 2000 || t.Year() > 9000 {
		return time.Time{}, fmt.Errorf("time %s is out of range", quoteShort(s))
	}
	return t.UTC(), nil
}

// lifecycleStateRe matches the shape of Auto Scaling lifecycle states: InService,
// Terminated, Pending:Wait, Warmed:Running, Warmed:Pending:Wait...
var lifecycleStateRe = regexp.MustCompile(`^[A-Z][A-Za-z]{1,31}(:[A-Z][A-Za-z]{1,31}){0,2}$`)

// ParseTargetLifecycleState reads an autoscaling/target-lifecycle-state answer, a
// plain-text state such as InService or Terminated.
func ParseTargetLifecycleState(body []byte) (string, error) {
	s := strings.TrimSpace(string(body))
	if !lifecycleStateRe.MatchString(s) {
		return "", fmt.Errorf("parse target-lifecycle-state: %s is not a lifecycle state", quoteShort(s))
	}
	return s, nil
}

// ScheduledEvent is one entry of events/maintenance/scheduled.
type ScheduledEvent struct {
	Code        string // instance-reboot, system-reboot, system-maintenance, instance-retirement, instance-stop
	Description string
	EventID     string
	State       string // active, completed, canceled
	NotBefore   time.Time
	NotAfter    time.Time // zero when IMDS gives none
}

// scheduledTimeLayout is how IMDS writes event dates: 21 Jan 2019 09:00:43 GMT.
const scheduledTimeLayout = "2 Jan 2006 15:04:05 GMT"

// FormatScheduledTime writes t the way IMDS writes scheduled event dates.
func FormatScheduledTime(t time.Time) string {
	return t.UTC().Format(scheduledTimeLayout)
}

// ParseScheduledEvents reads an events/maintenance/scheduled answer, a JSON array of
// {"Code","Description","EventId","State","NotBefore","NotAfter"}.
func ParseScheduledEvents(body []byte) ([]ScheduledEvent, error) {
	var raw []struct {
		Code        *string `json:"Code"`
		Description string  `json:"Description"`
		EventID     *string `json:"EventId"`
		State       *string `json:"State"`
		NotBefore   *string `json:"NotBefore"`
		NotAfter    string  `json:"NotAfter"`
	}
	if err := decodeOne(body, &raw); err != nil {
		return nil, fmt.Errorf("parse scheduled events: %w", err)
	}
	if raw == nil {
		return nil, errors.New("parse scheduled events: expected a JSON array")
	}
	events := make([]ScheduledEvent, 0, len(raw))
	for i, r := range raw {
		if r.Code == nil || *r.Code == "" || r.EventID == nil || *r.EventID == "" || r.State == nil || r.NotBefore == nil {
			return nil, fmt.Errorf("parse scheduled events: event %d lacks Code, EventId, State or NotBefore", i)
		}
		ev := ScheduledEvent{Code: *r.Code, Description: r.Description, EventID: *r.EventID, State: *r.State}
		var err error
		if ev.NotBefore, err = parseScheduledTime(*r.NotBefore); err != nil {
			return nil, fmt.Errorf("parse scheduled events: event %s NotBefore: %w", quoteShort(ev.EventID), err)
		}
		if r.NotAfter != "" {
			if ev.NotAfter, err = parseScheduledTime(r.NotAfter); err != nil {
				return nil, fmt.Errorf("parse scheduled events: event %s NotAfter: %w", quoteShort(ev.EventID), err)
			}
		}
		events = append(events, ev)
	}
	return events, nil
}

func parseScheduledTime(s string) (time.Time, error) {
	t, err := time.Parse(scheduledTimeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s is not like 21 Jan 2019 09:00:43 GMT", quoteShort(s))
	}
	return t.UTC(), nil
}

// endingEventCodes are the scheduled event codes that take the instance (or its host)
// down.
var endingEventCodes = map[string]bool{
	"instance-stop":       true,
	"instance-retirement": true,
	"instance-reboot":     true,
	"system-reboot":       true,
	"system-maintenance":  true,
}

// IsEnding reports whether the event is still to come (or under way) and takes the
// instance down, so it deserves a notice.
func (e ScheduledEvent) IsEnding() bool {
	return (e.State == "active" || e.State == "scheduled") && endingEventCodes[e.Code]
}
