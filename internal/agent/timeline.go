package agent

import (
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// timeline publishes what the agent does: the phase (status, metrics, systemd's
// STATUS=), the steps of the boot and the plan (timed, logged, counted), and every event
// to its subscribers (simulate, drills over the control socket, webhooks). It also keeps
// the pulse that feeds systemd's watchdog.
type timeline struct {
	now      func() time.Time
	log      *slog.Logger
	notifier Notifier
	metrics  Recorder
	pulse    pulse

	mu   sync.Mutex
	snap status.Snapshot
	subs map[int]func(status.Event)
	next int
}

func newTimeline(now func() time.Time, log *slog.Logger, n Notifier, m Recorder) *timeline {
	t := &timeline{now: now, log: log, notifier: n, metrics: m, subs: map[int]func(status.Event){}}
	t.snap.Phase = status.PhaseBooting
	t.snap.Since = now()
	t.pulse.beat(now())
	return t
}

// setPhase records a phase change for status, metrics, systemd and the timeline; msg
// goes to systemd's STATUS= whether or not the phase changed.
func (t *timeline) setPhase(p status.Phase, msg string) {
	t.mu.Lock()
	changed := t.snap.Phase != p
	t.snap.Phase = p
	if changed {
		t.snap.Since = t.now()
	}
	t.mu.Unlock()
	t.metrics.SetPhase(p)
	_ = t.notifier.Status(msg)
	if changed {
		t.log.Info("phase", "phase", p, "status", msg)
		t.emit(status.Event{Kind: status.EventPhase, At: t.now(), Phase: p, Message: msg})
	}
}

// say updates systemd's STATUS= line without a phase change.
func (t *timeline) say(msg string) { _ = t.notifier.Status(msg) }

// step runs one named step: timed, logged, counted, put on the timeline and in status.
// It feeds the pulse while f runs, so a long step is not mistaken for a hung agent.
func (t *timeline) step(s status.Step, f func() error) error {
	start := t.now()
	t.emit(status.Event{Kind: status.EventStep, At: start, Step: s})
	var err error
	t.beating(func() { err = f() })
	d := t.now().Sub(start)
	t.metrics.ObserveStep(s, d, err)
	ev := status.Event{Kind: status.EventStep, At: t.now(), Step: s, Duration: d, Done: true}
	if err != nil {
		ev.Err = err.Error()
		t.log.Error("step failed", "step", s, "duration", d, "err", err)
	} else {
		t.log.Info("step done", "step", s, "duration", d)
	}
	t.update(func(st *status.Snapshot) { st.Steps = append(st.Steps, ev) })
	t.emit(ev)
	return err
}

// beating runs f while feeding the pulse every second.
func (t *timeline) beating(f func()) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				t.pulse.beat(t.now())
			case <-stop:
				return
			}
		}
	}()
	f()
	close(stop)
	<-done
	t.pulse.beat(t.now())
}

// message puts a line on the timeline for a step under way.
func (t *timeline) message(s status.Step, msg string) {
	t.emit(status.Event{Kind: status.EventStep, At: t.now(), Step: s, Message: msg})
}

// update changes the status snapshot under the lock.
func (t *timeline) update(f func(*status.Snapshot)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f(&t.snap)
}

// snapshot is a copy of the status that callers may keep.
func (t *timeline) snapshot() status.Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.snap
	st.Notices = slices.Clone(st.Notices)
	st.Running = slices.Clone(st.Running)
	st.Steps = slices.Clone(st.Steps)
	st.Aborted = slices.Clone(st.Aborted)
	return st
}

func (t *timeline) subscribe(f func(status.Event)) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next++
	t.subs[t.next] = f
	return t.next
}

func (t *timeline) unsubscribe(id int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.subs, id)
}

func (t *timeline) emit(ev status.Event) {
	t.mu.Lock()
	subs := make([]func(status.Event), 0, len(t.subs))
	for _, f := range t.subs {
		subs = append(subs, f)
	}
	t.mu.Unlock()
	for _, f := range subs {
		f(ev)
	}
}

// pulse is the time of the agent's last sign of progress.
type pulse struct{ nanos atomic.Int64 }

func (p *pulse) beat(now time.Time) { p.nanos.Store(now.UnixNano()) }

func (p *pulse) last() time.Time { return time.Unix(0, p.nanos.Load()) }
