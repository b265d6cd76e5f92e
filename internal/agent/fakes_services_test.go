package agent

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// Fakes of the services the agent talks to: Jenkins, the AWS target groups and Auto
// Scaling, systemd.

type fakeJenkins struct {
	j            *journal
	mu           sync.Mutex
	builds       []status.Build
	until        time.Time // builds finish then
	loadingUntil time.Time // Ready answers 503 until then
	silent       bool      // Ready gets no answer
	listFails    int       // RunningBuilds fails this many more times
	quieting     bool
	params       map[string]map[string]string
	requeued     []string
}

func (f *fakeJenkins) Ready(context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.silent:
		return false, errors.New("dial tcp 127.0.0.1:8080: connect: connection refused")
	case time.Now().Before(f.loadingUntil):
		return false, nil
	}
	return true, nil
}

func (f *fakeJenkins) QuietDown(_ context.Context, reason string) error {
	f.j.add("quiet-down")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.quieting = true
	return nil
}

func (f *fakeJenkins) CancelQuietDown(context.Context) error {
	f.j.add("cancel-quiet-down")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.quieting = false
	return nil
}

func (f *fakeJenkins) QuietingDown(context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.quieting, nil
}

func (f *fakeJenkins) RunningBuilds(context.Context) ([]status.Build, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listFails > 0 {
		f.listFails--
		return nil, errors.New("GET /computer/api/json: 500 Internal Server Error")
	}
	if !f.until.IsZero() && time.Now().After(f.until) {
		f.builds = nil
	}
	return slices.Clone(f.builds), nil
}

func (f *fakeJenkins) BuildParameters(_ context.Context, url string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.params[url], nil
}

func (f *fakeJenkins) Requeue(_ context.Context, job string, params map[string]string, cause string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requeued = append(f.requeued, job+" "+cause)
	return nil
}

func (f *fakeJenkins) set(fn func(*fakeJenkins)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// build is a running build on the fake Jenkins.
func build(job string, n int, pipeline bool) status.Build {
	return status.Build{URL: "http://127.0.0.1:8080/job/" + job + "/" + strconv.Itoa(n) + "/", Job: job, Number: n, Pipeline: pipeline}
}

type fakeTargets struct {
	j          *journal
	mu         sync.Mutex
	deregErr   error
	deregWait  time.Duration
	inGroup    bool
	requested  int
	heartbeats int
	replErr    error
}

func (t *fakeTargets) Discover(context.Context, instance.Identity) error {
	t.j.add("discover")
	return nil
}
func (t *fakeTargets) Register(context.Context, string) error { t.j.add("register"); return nil }

func (t *fakeTargets) Deregister(ctx context.Context, id string) error {
	t.j.add("deregister")
	if t.deregWait > 0 {
		select {
		case <-time.After(t.deregWait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return t.deregErr
}

func (t *fakeTargets) RequestReplacement(context.Context, instance.Identity) (bool, error) {
	t.j.add("request-replacement")
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.replErr != nil {
		return false, t.replErr
	}
	if !t.inGroup {
		return false, nil
	}
	t.requested++
	return true, nil
}

func (t *fakeTargets) Heartbeat(context.Context, string) error {
	t.j.add("heartbeat")
	t.mu.Lock()
	defer t.mu.Unlock()
	t.heartbeats++
	return nil
}

func (t *fakeTargets) HeartbeatInterval() time.Duration  { return 200 * time.Millisecond }
func (t *fakeTargets) LifecycleWaitLimit() time.Duration { return 0 }

func (t *fakeTargets) CompleteLifecycle(context.Context, string) error {
	t.j.add("lifecycle-complete")
	return nil
}

type recNotifier struct {
	mu   sync.Mutex
	msgs []string
}

func (n *recNotifier) add(s string) { n.mu.Lock(); n.msgs = append(n.msgs, s); n.mu.Unlock() }
func (n *recNotifier) Ready(s string) error {
	n.add("READY " + s)
	return nil
}
func (n *recNotifier) Status(s string) error             { n.add("STATUS " + s); return nil }
func (n *recNotifier) ExtendTimeout(time.Duration) error { n.add("EXTEND"); return nil }
func (n *recNotifier) Stopping(s string) error           { n.add("STOPPING " + s); return nil }
func (n *recNotifier) joined() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.msgs, "\n")
}

var (
	_ Metadata = (*fakeMetadata)(nil)
	_ Watcher  = (*fakeWatcher)(nil)
	_ Mounter  = (*fakeMounter)(nil)
	_ Lease    = (*fakeLease)(nil)
	_ Runtime  = (*fakeRuntime)(nil)
	_ Jenkins  = (*fakeJenkins)(nil)
	_ Targets  = (*fakeTargets)(nil)
	_ Notifier = (*recNotifier)(nil)
)
