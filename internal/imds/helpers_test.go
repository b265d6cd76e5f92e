package imds_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds/imdstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// testLogger returns a debug logger writing to a buffer that the test reads and that is
// printed if the test fails.
func testLogger(t testing.TB) (*slog.Logger, *testenv.Buffer) {
	buf := testenv.NewLog(t, "watcher logs")
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// requestCounts records OnRequest calls.
type requestCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *requestCounts) record(endpoint, result string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[endpoint+" "+result]++
}

func (c *requestCounts) get(endpoint, result string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[endpoint+" "+result]
}

// result sums one result over every endpoint.
func (c *requestCounts) result(result string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, v := range c.m {
		if strings.HasSuffix(k, " "+result) {
			n += v
		}
	}
	return n
}

// running is a watcher started in the background; stop ends it and waits.
type running struct {
	t       testing.TB
	w       *imds.Watcher
	notices chan instance.Notice
	cancel  context.CancelFunc
	done    chan error
}

func startWatcher(t testing.TB, c *imds.Client, opts imds.WatchOptions, buffered int) *running {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*testenv.WaitLimit)
	r := &running{t: t, w: imds.NewWatcher(c, opts), notices: make(chan instance.Notice, buffered), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- r.w.Run(ctx, r.notices) }()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.cancel()
	if err := <-r.done; err != nil && !errors.Is(err, context.Canceled) {
		r.t.Errorf("watcher ended with %v, want context.Canceled", err)
	}
	r.done <- nil // later stops return at once
}

// next waits for a notice of the given kind, skipping others into skipped.
func (r *running) next(t testing.TB, kind instance.Kind) instance.Notice {
	t.Helper()
	timer := time.NewTimer(testenv.WaitLimit)
	defer timer.Stop()
	for {
		select {
		case n := <-r.notices:
			if n.Kind == kind {
				return n
			}
		case <-timer.C:
			t.Fatalf("no %s notice arrived", kind)
		}
	}
}

// drain returns the notices waiting in the channel.
func (r *running) drain() []instance.Notice {
	var out []instance.Notice
	for {
		select {
		case n := <-r.notices:
			out = append(out, n)
		default:
			return out
		}
	}
}

func countKind(ns []instance.Notice, kind instance.Kind) int {
	c := 0
	for _, n := range ns {
		if n.Kind == kind {
			c++
		}
	}
	return c
}

// startAEMM runs amazon-ec2-metadata-mock (see imdstest.StartAEMM).
func startAEMM(t testing.TB, args ...string) string {
	t.Helper()
	return imdstest.StartAEMM(t, args...)
}
