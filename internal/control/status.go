package control

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// WriteStatus writes st as the table that `jenkins-spot-agent status` prints, with
// ages and time left counted from now.
func WriteStatus(w io.Writer, st status.Snapshot) error {
	return writeStatus(w, st, time.Now())
}

func writeStatus(w io.Writer, st status.Snapshot, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(key, value string) { fmt.Fprintf(tw, "%s\t%s\n", key, value) }

	phase := string(st.Phase)
	if phase == "" {
		phase = "unknown"
	}
	if !st.Since.IsZero() {
		phase += " since " + when(st.Since, now)
	}
	row("phase", phase)
	row("instance", status.OrNone(st.InstanceID))
	row("lease", lease(st.Lease, now))
	if sc := st.Lease.Successor; sc != nil {
		ready := "not ready yet"
		if sc.Ready {
			ready = "ready to start Jenkins"
		}
		row("successor", fmt.Sprintf("%s waits on the lease since %s, %s", sc.InstanceID, when(sc.Since, now), ready))
	}
	if st.Lease.ClockSkew != 0 {
		row("clock skew", fmt.Sprintf("%s against the holder's clock", round(st.Lease.ClockSkew)))
	}
	if st.Replaced != "" {
		row("replaced", st.Replaced)
	}
	if st.Pending != "" {
		row("pending", st.Pending)
	}

	if st.Watch.LastSuccess.IsZero() {
		row("last IMDS poll", fmt.Sprintf("never (%d polls)", st.Watch.Polls))
	} else {
		row("last IMDS poll", fmt.Sprintf("%s, %d polls", when(st.Watch.LastSuccess, now), st.Watch.Polls))
	}
	blind := fmt.Sprintf("%d failed polls in a row", st.Watch.ConsecutiveFails)
	if st.Watch.LastError != "" {
		blind += "; last error: " + st.Watch.LastError
	}
	row("blind streak", blind)

	if len(st.Notices) == 0 {
		row("notices", "none")
	}
	for i, n := range st.Notices {
		key := ""
		if i == 0 {
			key = "notices"
		}
		text := fmt.Sprintf("%s seen %s", n.Kind, when(n.Seen, now))
		if !n.Time.IsZero() {
			text += ", for " + stamp(n.Time)
		}
		if n.InstanceType != "" || n.AvailabilityZone != "" {
			text += fmt.Sprintf(" [%s in %s]", status.OrNone(n.InstanceType), status.OrNone(n.AvailabilityZone))
		}
		if n.Detail != "" {
			text += ": " + n.Detail
		}
		row(key, text)
	}

	if st.Deadline.IsZero() {
		row("deadline", "none")
	} else {
		row("deadline", fmt.Sprintf("%s (%s)", stamp(st.Deadline), left(st.Deadline, now)))
	}

	builds := fmt.Sprint(len(st.Running))
	if len(st.Running) > 0 {
		builds += ": " + strings.Join(st.Running, ", ")
	}
	row("running builds", builds)
	if st.BuildListFailures > 0 {
		row("build list failures", fmt.Sprintf("%d (unknown, never taken as no builds)", st.BuildListFailures))
	}
	if st.Restarts > 0 {
		row("jenkins restarts", fmt.Sprint(st.Restarts))
	}
	for i, b := range st.Aborted {
		key := ""
		if i == 0 {
			key = "aborted builds"
		}
		text := fmt.Sprintf("%s #%d", b.Job, b.Number)
		if b.Requeued {
			text += " (queued again)"
		}
		row(key, text)
	}

	for i, ev := range st.Steps {
		key := ""
		if i == 0 {
			key = "steps"
		}
		outcome := "ok"
		if ev.Err != "" {
			outcome = "failed: " + ev.Err
		}
		row(key, fmt.Sprintf("%s %s %s", ev.Step, round(ev.Duration), outcome))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}

func lease(l status.LeaseState, now time.Time) string {
	if l.Holder == "" {
		if l.Held {
			return "held"
		}
		return "not held"
	}
	s := "not held; holder " + l.Holder
	if l.Held {
		s = "held by " + l.Holder
	}
	s += fmt.Sprintf(", epoch %d", l.Epoch)
	if !l.Expires.IsZero() {
		s += fmt.Sprintf(", expires %s (%s)", stamp(l.Expires), left(l.Expires, now))
	}
	return s
}

// when is a timestamp with its age: "2025-01-02T03:04:05Z (1m5s ago)".
func when(t, now time.Time) string {
	age := now.Sub(t)
	if age < 0 {
		return fmt.Sprintf("%s (in %s)", stamp(t), round(-age))
	}
	return fmt.Sprintf("%s (%s ago)", stamp(t), round(age))
}

// left is the time until t: "1m30s left", or how long ago it passed.
func left(t, now time.Time) string {
	d := t.Sub(now)
	if d < 0 {
		return round(-d) + " ago"
	}
	return round(d) + " left"
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// round keeps durations readable: tenths of a second below a minute, seconds above.
func round(d time.Duration) string {
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
