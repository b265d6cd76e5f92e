package status

import (
	"fmt"
	"time"
)

// Line renders the event as one line of a timeline, without its time: a column naming
// what happened (the step, "notice", "phase", or the event's kind) and then what there
// is to say. A step's start reads "started" unless it carries a message; its end reads
// "ok" or "FAILED: <error>" with its duration. `drill` and `simulate` print it after
// the time since their start.
func (ev Event) Line() string {
	col := func(name string) string { return fmt.Sprintf("%-13s ", name) }
	switch {
	case ev.Notice != nil:
		s := col("notice") + string(ev.Notice.Kind)
		if ev.Notice.Detail != "" {
			s += " " + ev.Notice.Detail
		}
		if !ev.Notice.Time.IsZero() {
			s += ", for " + ev.Notice.Time.UTC().Format(time.TimeOnly) + " UTC"
		}
		return s
	case ev.Phase != "":
		msg := ev.Message
		if msg == "" {
			msg = string(ev.Phase)
		}
		return col("phase") + msg
	case ev.Step != "" && !ev.Done:
		if ev.Message != "" {
			return col(string(ev.Step)) + ev.Message
		}
		return col(string(ev.Step)) + "started"
	case ev.Step != "":
		outcome := "ok"
		if ev.Err != "" {
			outcome = "FAILED: " + ev.Err
		}
		return fmt.Sprintf("%s%s (%s)", col(string(ev.Step)), outcome, ev.Duration.Round(time.Millisecond))
	case ev.Kind != "":
		return col(string(ev.Kind)) + ev.Message
	}
	return ev.Message
}

// OrNone returns s, or "none" when s is empty: how the tables of `status` and
// `simulate` show a value that is not there.
func OrNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
