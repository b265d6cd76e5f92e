package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// fakeMetadata is IMDS for one instance.
type fakeMetadata struct {
	mu       sync.Mutex
	id       instance.Identity
	err      error    // IMDS refuses for good (disabled, no IMDSv2): Identity fails with it at once
	silent   bool     // IMDS never answers: every read waits until its context ends
	failures int      // reads that fail before IMDS answers (throttled, 5xx): Identity retries them
	states   []string // target lifecycle states returned in turn; the last one stays
	calls    int
}

// readCalls is how many times the identity was asked for.
func (f *fakeMetadata) readCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeMetadata) Identity(ctx context.Context) (instance.Identity, error) {
	f.mu.Lock()
	f.calls++
	id, err, silent := f.id, f.err, f.silent
	f.mu.Unlock()
	for f.failed() {
		t := time.NewTimer(10 * time.Millisecond) // the retry's backoff
		select {
		case <-ctx.Done():
			t.Stop()
			return instance.Identity{}, fmt.Errorf("imds: instance-id: still failing (500 Internal Server Error): %w", ctx.Err())
		case <-t.C:
		}
	}
	switch {
	case ctx.Err() != nil:
		return instance.Identity{}, fmt.Errorf("imds: instance-id: %w", ctx.Err())
	case err != nil:
		return instance.Identity{}, err
	case silent:
		<-ctx.Done()
		return instance.Identity{}, fmt.Errorf("imds: instance-id: no answer before the deadline: %w", ctx.Err())
	}
	return id, nil
}

// failed reports whether the next read fails, and counts it.
func (f *fakeMetadata) failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failures > 0 {
		f.failures--
		return true
	}
	return false
}

func (f *fakeMetadata) TargetLifecycleState(ctx context.Context) (string, error) {
	f.mu.Lock()
	silent := f.silent
	f.mu.Unlock()
	if silent {
		<-ctx.Done()
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("imds: autoscaling/target-lifecycle-state: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.states) == 0 {
		return "", nil
	}
	s := f.states[0]
	if len(f.states) > 1 {
		f.states = f.states[1:]
	}
	return s, nil
}

// fakeWatcher delivers whatever the test sends, like the IMDS watcher would.
type fakeWatcher struct {
	in     chan instance.Notice
	mu     sync.Mutex
	health status.WatchHealth
}

func (w *fakeWatcher) Run(ctx context.Context, out chan<- instance.Notice) error {
	for {
		select {
		case n := <-w.in:
			out <- n
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (w *fakeWatcher) Health() status.WatchHealth {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.health
}
