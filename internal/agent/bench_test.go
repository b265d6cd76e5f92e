package agent

import (
	"context"
	"errors"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"
)

// stampRuntime records when the container start call arrives.
type stampRuntime struct {
	*fakeRuntime
	mu      sync.Mutex
	started time.Time
}

func (r *stampRuntime) Start(ctx context.Context) (bool, error) {
	r.mu.Lock()
	r.started = time.Now()
	r.mu.Unlock()
	return r.fakeRuntime.Start(ctx)
}

// stampJenkins records when Jenkins first answered.
type stampJenkins struct {
	*fakeJenkins
	mu    sync.Mutex
	ready time.Time
}

func (j *stampJenkins) Ready(ctx context.Context) (bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return !time.Now().Before(j.ready), nil
}

// stampNotifier records when READY=1 is sent.
type stampNotifier struct {
	recNotifier
	mu    sync.Mutex
	ready time.Time
	done  chan struct{}
}

func (n *stampNotifier) Ready(string) error {
	n.mu.Lock()
	n.ready = time.Now()
	n.mu.Unlock()
	close(n.done)
	return nil
}

// BenchmarkBootOverhead measures the orchestrator's own time on the boot path, with every
// adapter answering at once: from Run to the container start call (identity, mount,
// lease, verification and image steps cost nothing here, so what remains is the agent's
// own work), and from the moment Jenkins starts answering to READY=1 (probe cadence
// included).
func BenchmarkBootOverhead(b *testing.B) {
	var toStart, toReady []time.Duration
	for i := 0; i < b.N; i++ {
		r := newRig(b.TempDir(), b.TempDir())
		rt := &stampRuntime{fakeRuntime: r.rt}
		jk := &stampJenkins{fakeJenkins: r.jenkins}
		nt := &stampNotifier{done: make(chan struct{})}
		deps := r.deps()
		deps.Runtime, deps.Jenkins, deps.Notifier = rt, jk, nt
		a, err := New(Options{Config: r.cfg, Deps: deps, BootID: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		begin := time.Now()
		// Jenkins answers at a random moment after the container starts, so the probe
		// cadence is part of what is measured.
		jk.ready = begin.Add(time.Duration(rand.Int64N(int64(time.Second))))
		go func() { done <- a.Run(ctx) }()
		select {
		case <-nt.done:
		case <-time.After(10 * time.Second):
			b.Fatal("no READY")
		}
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			b.Fatal(err)
		}
		toStart = append(toStart, rt.started.Sub(begin))
		toReady = append(toReady, nt.ready.Sub(jk.ready))
	}
	b.ReportMetric(float64(percentile(toStart, 0.5).Microseconds())/1000, "run-to-start-p50-ms")
	b.ReportMetric(float64(percentile(toStart, 0.99).Microseconds())/1000, "run-to-start-p99-ms")
	b.ReportMetric(float64(percentile(toReady, 0.5).Microseconds())/1000, "ready-to-notify-p50-ms")
	b.ReportMetric(float64(percentile(toReady, 0.99).Microseconds())/1000, "ready-to-notify-p99-ms")
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p)]
}
