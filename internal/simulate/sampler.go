package simulate

import (
	"context"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins/jenkinstest"
)

// sampler checks, all through a failover, that the two instances' Jenkins never run at
// the same time: the one thing the lease exists to prevent.
type sampler struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	both   bool
}

func startSampler(ctx context.Context, a, b *instance) *sampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &sampler{cancel: cancel}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				cctx, c := context.WithTimeout(ctx, 2*time.Second)
				ra, errA := a.runtime.Running(cctx)
				rb, errB := b.runtime.Running(cctx)
				c()
				if errA == nil && errB == nil && ra && rb {
					s.mu.Lock()
					s.both = true
					s.mu.Unlock()
				}
			}
		}
	}()
	return s
}

// stop ends the sampling and reports whether both ever ran at once.
func (s *sampler) stop() bool {
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.both
}

// resumedPipelines are the Pipelines the successor's Jenkins found saved in the home.
func resumedPipelines(b *instance) []string {
	st, err := jenkinstest.ReadHomeState(b.homeDir)
	if err != nil {
		return nil
	}
	return st.Resumed
}
