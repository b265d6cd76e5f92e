package simulate

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"
)

// reachEvery is how often the load balancer sampler looks at the target group.
const reachEvery = 50 * time.Millisecond

// targetSeen is one target of the target group in one round of the load balancer
// sampler: its health state in the double and whether its Jenkins answered GET /login.
type targetSeen struct {
	ID       string
	State    string
	Answered bool
}

// reachSample is one round of the load balancer sampler.
type reachSample struct {
	At        time.Time
	Reachable bool
	// Via are the targets a request could have reached Jenkins through.
	Via []string
	// Targets are the registered targets (not draining, not unused).
	Targets []targetSeen
}

// through reports whether the round reached Jenkins through the instance id.
func (r reachSample) through(id string) bool { return slices.Contains(r.Via, id) }

// registered reports whether the round found the instance id registered.
func (r reachSample) registered(id string) bool {
	return slices.ContainsFunc(r.Targets, func(t targetSeen) bool { return t.ID == id })
}

// registeredState reports whether an ELBv2 target health state is a registration the
// load balancer routes by: anything but draining and unused.
func registeredState(state string) bool {
	switch state {
	case "", awstest.StateDraining, awstest.StateUnused:
		return false
	}
	return true
}

// albRoute is where an Application Load Balancer sends a request, given the registered
// targets: to the healthy ones; when none is healthy it fails open and routes to every
// registered target whatever its health. It returns the targets among those whose
// Jenkins answered. Draining and unused targets are never in ts.
func albRoute(ts []targetSeen) []string {
	healthy := slices.ContainsFunc(ts, func(t targetSeen) bool { return t.State == awstest.StateHealthy })
	var via []string
	for _, t := range ts {
		if t.Answered && (!healthy || t.State == awstest.StateHealthy) {
			via = append(via, t.ID)
		}
	}
	return via
}

// reachSampler looks, every reachEvery, at the target group as an ALB does: which
// targets are registered, which are healthy, and whether each one's Jenkins answers
// GET /login (200 reachable; 503, a refused connection or no answer within
// probeTimeout not). It stops by itself after its bound.
type reachSampler struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	samples []reachSample
}

// startReach starts sampling the target group until stop, or for bound at most.
func (s *sim) startReach(ctx context.Context, bound time.Duration) *reachSampler {
	ctx, cancel := context.WithTimeout(ctx, bound)
	r := &reachSampler{cancel: cancel}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTicker(reachEvery)
		defer t.Stop()
		for {
			sample := s.reachRound()
			if ctx.Err() != nil {
				return
			}
			r.mu.Lock()
			r.samples = append(r.samples, sample)
			r.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return r
}

// reachRound looks at every instance the rehearsal knows (those booted, and those in
// the group), and probes the registered ones at once.
func (s *sim) reachRound() reachSample {
	at := time.Now()
	ids := map[string]bool{}
	for _, in := range s.hostList() {
		ids[in.id.InstanceID] = true
	}
	for id := range s.aws.GroupInstances(GroupName) {
		ids[id] = true
	}
	var ts []targetSeen
	for id := range ids {
		if st := s.aws.TargetState(TargetGroupARN, id); registeredState(st) {
			ts = append(ts, targetSeen{ID: id, State: st})
		}
	}
	slices.SortFunc(ts, func(a, b targetSeen) int { return cmp.Compare(a.ID, b.ID) })
	var wg sync.WaitGroup
	for i := range ts {
		wg.Go(func() { ts[i].Answered = s.answersLogin(ts[i].ID) })
	}
	wg.Wait()
	via := albRoute(ts)
	return reachSample{At: at, Reachable: len(via) > 0, Via: via, Targets: ts}
}

// waitThrough waits until a round reached Jenkins through the instance id, or timeout.
func (r *reachSampler) waitThrough(ctx context.Context, id string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		ok := slices.ContainsFunc(r.samples, func(s reachSample) bool { return s.through(id) })
		r.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(reachEvery):
		}
	}
	return false
}

// stop ends the sampling and returns the rounds; calling it again returns the same.
func (r *reachSampler) stop() []reachSample {
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.samples)
}

// outage is what the load balancer sampler saw of Jenkins across an interruption.
type outage struct {
	// Total is the time no target answered, from the notice until the first round that
	// reached Jenkins through the successor; Longest the longest stretch of it.
	Total, Longest time.Duration
	// Gaps are the stretches, in order: from a round that found no target answering to
	// the next round that found one.
	Gaps []gap
	// End is the round that first reached Jenkins through the successor; zero when none
	// did (then Total runs to the last round).
	End time.Time
}

type gap struct{ From, To time.Time }

// measureOutage adds up the rounds from the notice on that reached no Jenkins, until the
// first round that reached it through the successor. Each unreachable round counts until
// the next round: the resolution is one round (reachEvery plus the probes' time).
func measureOutage(samples []reachSample, notice time.Time, successor string) outage {
	var o outage
	var open *gap
	closeGap := func(to time.Time) {
		if open == nil {
			return
		}
		open.To = to
		d := open.To.Sub(open.From)
		o.Total += d
		o.Longest = max(o.Longest, d)
		o.Gaps = append(o.Gaps, *open)
		open = nil
	}
	for _, sm := range samples {
		if sm.At.Before(notice) {
			continue
		}
		if sm.Reachable {
			closeGap(sm.At)
			if sm.through(successor) {
				o.End = sm.At
				return o
			}
			continue
		}
		if open == nil {
			open = &gap{From: sm.At}
		}
	}
	if len(samples) > 0 {
		closeGap(samples[len(samples)-1].At)
	}
	return o
}

// answered reports whether the round found the instance id registered and answering.
func (r reachSample) answered(id string) bool {
	return slices.ContainsFunc(r.Targets, func(t targetSeen) bool { return t.ID == id && t.Answered })
}
