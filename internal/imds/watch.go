package imds

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/clock"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// WatchOptions configures a Watcher.
type WatchOptions struct {
	// PollInterval is the period of spot/instance-action polls. Default 1s.
	PollInterval time.Duration
	// SlowInterval is the period of the rebalance, target lifecycle state and
	// scheduled event polls, which warn earlier and change less urgently. Default 5s.
	SlowInterval time.Duration
	// Logger receives blindness streaks and notices. Nil discards them.
	Logger *slog.Logger
}

// Watcher polls IMDS for the signals that end the instance and sends each one once:
// each spot action kind, the rebalance recommendation and the Auto Scaling Terminated
// state once per kind, and each scheduled event that takes the instance down (active
// or scheduled, never completed or canceled) once per EventId, with its EventID, Code
// and NotBefore (as Notice.Time).
type Watcher struct {
	c    *Client
	opts WatchOptions
	log  *slog.Logger

	mu     sync.Mutex
	health status.WatchHealth
}

// NewWatcher returns a Watcher over c.
func NewWatcher(c *Client, opts WatchOptions) *Watcher {
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.SlowInterval <= 0 {
		opts.SlowInterval = 5 * time.Second
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Watcher{c: c, opts: opts, log: logger}
}

// Health reports how the spot/instance-action polls are going. Safe for concurrent use.
func (w *Watcher) Health() status.WatchHealth {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.health
}

// Run polls until ctx is done, sending every distinct notice once to notices, and then
// returns ctx's error. A failed poll is never read as "no notice": it is counted in
// Health and the next poll tries again.
func (w *Watcher) Run(ctx context.Context, notices chan<- instance.Notice) error {
	var wg sync.WaitGroup
	wg.Add(2)
	// The spot poll runs on its own so that the slower items never delay it; each loop
	// has at most one request in flight.
	go func() { defer wg.Done(); w.spotLoop(ctx, notices) }()
	go func() { defer wg.Done(); w.slowLoop(ctx, notices) }()
	wg.Wait()
	return ctx.Err()
}

// requestTimeout keeps a poll well inside its period, yet not so short that a busy
// host turns every poll into a timeout.
func requestTimeout(interval time.Duration) time.Duration {
	return min(max(interval/2, 100*time.Millisecond), 2*time.Second)
}

// jitter spreads d over its last tenth (0.9 d to d) so that many instances do not poll
// in step. It only ever shortens the wait: a gap longer than the interval would add
// straight to the worst-case detection delay.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.1*rand.Float64()))
}

// backoff is the wait after the n-th (1-based) consecutive throttle or server error:
// doubling from the interval, at most four intervals, so a throttled watcher still
// looks several times within a two-minute warning.
func backoff(interval time.Duration, n int) time.Duration {
	return interval << min(max(n-1, 0), 2)
}

func send(ctx context.Context, notices chan<- instance.Notice, n instance.Notice) bool {
	select {
	case notices <- n:
		return true
	case <-ctx.Done():
		return false
	}
}

// streak tracks a run of failures on one item so it is logged once when it starts and
// once when it ends, not on every poll.
type streak struct {
	log      *slog.Logger
	endpoint string
	fails    int
	since    time.Time
}

func (s *streak) fail(err error, now time.Time) {
	s.fails++
	if s.fails == 1 {
		s.since = now
		s.log.Warn("imds poll failed; the watcher is blind until it recovers", "endpoint", s.endpoint, "err", err)
	}
}

func (s *streak) ok(now time.Time) {
	if s.fails > 0 {
		s.log.Info("imds poll recovered", "endpoint", s.endpoint, "failed_polls", s.fails, "blind_for", now.Sub(s.since).Round(time.Millisecond))
	}
	s.fails = 0
}

func (w *Watcher) spotLoop(ctx context.Context, notices chan<- instance.Notice) {
	interval := w.opts.PollInterval
	timeout := requestTimeout(interval)
	st := streak{log: w.log, endpoint: EndpointSpotAction}
	sent := map[instance.Kind]bool{}
	throttled := 0
	for {
		start := time.Now()
		n, found, err := w.pollSpot(ctx, timeout)
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		wait := jitter(interval)
		if err != nil {
			st.fail(err, now)
			w.recordFailure(err)
			if isThrottle(err) {
				throttled++
				wait = jitter(backoff(interval, throttled))
			} else {
				throttled = 0
			}
		} else {
			st.ok(now)
			throttled = 0
			w.recordSuccess(now)
			if found && !sent[n.Kind] {
				sent[n.Kind] = true
				n.Seen = now
				w.log.Warn("interruption notice", "kind", n.Kind, "time", n.Time, "detail", n.Detail)
				if !send(ctx, notices, n) {
					return
				}
			}
		}
		// The period runs from the start of the poll, so a slow answer does not stretch it.
		if !clock.Sleep(ctx, wait-time.Since(start)) {
			return
		}
	}
}

func (w *Watcher) pollSpot(ctx context.Context, timeout time.Duration) (instance.Notice, bool, error) {
	body, found, err := w.c.get(ctx, pathSpotAction, timeout)
	if err != nil || !found {
		return instance.Notice{}, false, err
	}
	kind, t, err := ParseInstanceAction(body)
	if err != nil {
		return instance.Notice{}, false, err
	}
	// The detail is what IMDS said: the action (terminate, stop, hibernate) and its path.
	action := strings.TrimPrefix(string(kind), "spot_")
	return instance.Notice{Kind: kind, Time: t, Detail: "action " + action + " in " + pathSpotAction}, true, nil
}

func (w *Watcher) recordFailure(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.health.Polls++
	w.health.ConsecutiveFails++
	w.health.LastError = err.Error()
}

func (w *Watcher) recordSuccess(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.health.Polls++
	w.health.ConsecutiveFails = 0
	w.health.LastSuccess = now
}

// slowLoop polls the items that warn early or come from outside EC2's Spot service.
// Their failures are logged per item but do not count in Health, which speaks for the
// spot poll that carries the two-minute deadline.
func (w *Watcher) slowLoop(ctx context.Context, notices chan<- instance.Notice) {
	interval := w.opts.SlowInterval
	timeout := requestTimeout(interval)
	items := []struct {
		st   streak
		poll func(context.Context, time.Duration) ([]finding, error)
	}{
		{streak{log: w.log, endpoint: EndpointRebalance}, w.pollRebalance},
		{streak{log: w.log, endpoint: EndpointTargetLifecycleState}, w.pollTargetLifecycleState},
		{streak{log: w.log, endpoint: EndpointScheduledEvents}, w.pollScheduledEvents},
	}
	sent := map[string]bool{}
	lastState := ""
	for {
		start := time.Now()
		worst := 0
		for i := range items {
			it := &items[i]
			found, err := it.poll(ctx, timeout)
			if ctx.Err() != nil {
				return
			}
			now := time.Now()
			if err != nil {
				it.st.fail(err, now)
				if isThrottle(err) {
					worst = max(worst, it.st.fails)
				}
				continue
			}
			it.st.ok(now)
			for _, f := range found {
				if f.state != "" && f.state != lastState {
					w.log.Info("auto scaling target lifecycle state", "state", f.state)
					lastState = f.state
				}
				if f.key == "" || sent[f.key] {
					continue
				}
				sent[f.key] = true
				n := f.notice
				n.Seen = now
				w.log.Warn("interruption notice", "kind", n.Kind, "time", n.Time, "detail", n.Detail)
				if !send(ctx, notices, n) {
					return
				}
			}
		}
		wait := jitter(interval)
		if worst > 0 {
			wait = jitter(backoff(interval, worst))
		}
		if !clock.Sleep(ctx, wait-time.Since(start)) {
			return
		}
	}
}

// finding is what one slow poll saw: a notice to send once per key, and for the
// lifecycle item the state, logged when it changes.
type finding struct {
	key    string
	notice instance.Notice
	state  string
}

func (w *Watcher) pollRebalance(ctx context.Context, timeout time.Duration) ([]finding, error) {
	body, found, err := w.c.get(ctx, pathRebalance, timeout)
	if err != nil || !found {
		return nil, err
	}
	if _, err := ParseRebalance(body); err != nil {
		return nil, err
	}
	// The notice names no termination time: a rebalance recommendation is a warning.
	return []finding{{key: "rebalance", notice: instance.Notice{Kind: instance.KindRebalance, Detail: "rebalance recommendation"}}}, nil
}

func (w *Watcher) pollTargetLifecycleState(ctx context.Context, timeout time.Duration) ([]finding, error) {
	body, found, err := w.c.get(ctx, pathTargetLifecycleState, timeout)
	if err != nil || !found {
		return nil, err
	}
	state, err := ParseTargetLifecycleState(body)
	if err != nil {
		return nil, err
	}
	// A warm-pool instance being terminated ends just the same.
	f := finding{state: state}
	if state == "Terminated" || state == "Warmed:Terminated" {
		f.key = "asg"
		f.notice = instance.Notice{Kind: instance.KindASGTerminated, Detail: "target lifecycle state " + state}
	}
	return []finding{f}, nil
}

func (w *Watcher) pollScheduledEvents(ctx context.Context, timeout time.Duration) ([]finding, error) {
	body, found, err := w.c.get(ctx, pathScheduledEvents, timeout)
	if err != nil || !found {
		return nil, err
	}
	events, err := ParseScheduledEvents(body)
	if err != nil {
		return nil, err
	}
	var out []finding
	for _, ev := range events {
		if !ev.IsEnding() {
			continue
		}
		// Keyed by the event id alone: two events of one code are two notices, and an
		// event rescheduled (a new NotBefore) is still the same event.
		out = append(out, finding{key: "event/" + ev.EventID, notice: instance.Notice{
			Kind:    instance.KindScheduledEvent,
			Time:    ev.NotBefore,
			Detail:  fmt.Sprintf("%s %s: %s", ev.Code, ev.EventID, ev.Description),
			EventID: ev.EventID,
			Code:    ev.Code,
		}})
	}
	return out, nil
}
