package simulate

import (
	"context"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins/jenkinstest"
)

// sampleEvery is how often the sampler asks each runtime whether its Jenkins runs.
const sampleEvery = 50 * time.Millisecond

// sampler checks, all through a failover, that the instances' Jenkins never run at the
// same time: the one thing the lease exists to prevent. It asks the runtimes
// themselves (Docker, or the in-process stand-in), not the agents.
type sampler struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu  sync.Mutex
	rep samples
}

// samples is what the sampler saw.
type samples struct {
	// Both is true when one round of samples found two Jenkins running.
	Both bool
	// FirstBoth is the round's time when Both was first seen.
	FirstBoth time.Time
	// Rounds counts the rounds; Errors the runtime answers that were errors (a round
	// with an error for an instance says nothing about it).
	Rounds, Errors int
	// FirstRunning and LastRunning are, per instance in launch order, the first and the
	// last time its Jenkins was seen running (zero: never).
	FirstRunning, LastRunning []time.Time
}

// startSampler samples the instances' runtimes every 50 ms until stop.
func startSampler(ctx context.Context, instances ...*host) *sampler {
	return startSamplerOf(ctx, func() []*host { return instances })
}

// startSamplerOf samples every 50 ms, until stop, the runtimes of the instances that
// list returns at each round, in launch order: instances that boot later (the
// replacement the Auto Scaling group launched) join when they appear, and an instance
// that is gone (its Jenkins stopped and removed) is no longer asked.
func startSamplerOf(ctx context.Context, list func() []*host) *sampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &sampler{cancel: cancel}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			s.round(ctx, list())
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// round asks every runtime once. The successors are asked first: a handover goes from
// the earlier instance to the later one, so with this order a Jenkins that stopped
// just before its successor started is never counted together with it.
func (s *sampler) round(ctx context.Context, instances []*host) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	running := 0
	at := time.Now()
	s.mu.Lock()
	for len(s.rep.FirstRunning) < len(instances) {
		s.rep.FirstRunning = append(s.rep.FirstRunning, time.Time{})
		s.rep.LastRunning = append(s.rep.LastRunning, time.Time{})
	}
	s.mu.Unlock()
	for i := len(instances) - 1; i >= 0; i-- {
		if instances[i].isGone() {
			continue
		}
		up, err := instances[i].runtime.Running(cctx)
		if ctx.Err() != nil {
			return // stopped mid-round: the answers may be cut short
		}
		now := time.Now()
		s.mu.Lock()
		switch {
		case err != nil:
			s.rep.Errors++
		case up:
			running++
			if s.rep.FirstRunning[i].IsZero() {
				s.rep.FirstRunning[i] = now
			}
			s.rep.LastRunning[i] = now
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.rep.Rounds++
	if running > 1 && !s.rep.Both {
		s.rep.Both, s.rep.FirstBoth = true, at
	}
	s.mu.Unlock()
}

// stop ends the sampling and returns what it saw; calling it again returns the same.
func (s *sampler) stop() samples {
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rep
	r.FirstRunning = append([]time.Time(nil), r.FirstRunning...)
	r.LastRunning = append([]time.Time(nil), r.LastRunning...)
	return r
}

// resumedPipelines are the Pipelines the successor's Jenkins found saved in the home.
func resumedPipelines(b *host) []string {
	st, err := jenkinstest.ReadHomeState(b.homeDir)
	if err != nil {
		return nil
	}
	return st.Resumed
}
