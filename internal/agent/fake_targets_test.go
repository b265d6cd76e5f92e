package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

// fakeHeartbeatTimeout is the heartbeat timeout of the fake group's lifecycle hook.
const fakeHeartbeatTimeout = 30 * time.Second

// fakeLifecycleAction is the termination lifecycle action of a group-started
// termination.
type fakeLifecycleAction struct {
	visibleAt time.Time // it can be acted on from then
	completed bool
}

// fakeTargets is the instance's target groups and Auto Scaling group: registration,
// the replacement a detach starts, and the termination lifecycle action.
type fakeTargets struct {
	j            *journal
	mu           sync.Mutex
	deregErr     error
	deregWait    time.Duration
	inGroup      bool // in an Auto Scaling group, with a target group attached
	hook         bool // the group has a termination lifecycle hook, and it is configured
	registered   bool // registered, not draining, in every target group it serves in
	detached     bool // RequestReplacement detached it: its replacement is under way
	replacements int
	heartbeats   int
	action       *fakeLifecycleAction
}

func (t *fakeTargets) Discover(ctx context.Context, _ instance.Identity) error {
	t.j.add("discover")
	return ctx.Err()
}

// call is the checks every call makes before the world changes.
func (t *fakeTargets) call(ctx context.Context, what, instanceID string) error {
	if instanceID == "" {
		return fmt.Errorf("%s: no instance id", what)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func (t *fakeTargets) Register(ctx context.Context, id string) error {
	t.j.add("register")
	if err := t.call(ctx, "register", id); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.registered = true
	return nil
}

func (t *fakeTargets) Deregister(ctx context.Context, id string) error {
	t.j.add("deregister")
	if err := t.call(ctx, "deregister", id); err != nil {
		return err
	}
	if t.deregWait > 0 {
		select {
		case <-time.After(t.deregWait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.deregErr != nil {
		return t.deregErr
	}
	t.registered = false
	return nil
}

func (t *fakeTargets) RequestReplacement(ctx context.Context, id instance.Identity) (bool, error) {
	t.j.add("request-replacement")
	if err := t.call(ctx, "request replacement", id.InstanceID); err != nil {
		return false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.inGroup {
		return false, nil
	}
	if !t.detached {
		t.detached = true // the group launches a replacement at once
		t.replacements++
	}
	t.registered = true // registered again wherever the detach took it out
	return true, nil
}

// pendingAction waits until the pending lifecycle action can be acted on and returns
// it; nil when none is pending or coming (none started, completed, or detached).
func (t *fakeTargets) pendingAction(ctx context.Context) (*fakeLifecycleAction, error) {
	t.mu.Lock()
	a := t.action
	if a == nil || a.completed || t.detached {
		t.mu.Unlock()
		return nil, nil
	}
	wait := time.Until(a.visibleAt)
	t.mu.Unlock()
	if wait > 0 {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the lifecycle action is still coming: %w", ctx.Err())
		case <-timer.C:
		}
	}
	return a, nil
}

func (t *fakeTargets) Heartbeat(ctx context.Context, id string) error {
	t.j.add("heartbeat")
	if err := t.call(ctx, "lifecycle heartbeat", id); err != nil {
		return err
	}
	if !t.hook {
		return nil
	}
	a, err := t.pendingAction(ctx)
	if err != nil {
		return fmt.Errorf("lifecycle heartbeat: %w", err)
	}
	if a == nil {
		return fmt.Errorf("lifecycle heartbeat: %w", instance.ErrNoLifecycleAction)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.heartbeats++
	return nil
}

func (t *fakeTargets) HeartbeatInterval() time.Duration  { return 200 * time.Millisecond }
func (t *fakeTargets) LifecycleWaitLimit() time.Duration { return 0 }

func (t *fakeTargets) CompleteLifecycle(ctx context.Context, id string) error {
	t.j.add("lifecycle-complete")
	if err := t.call(ctx, "complete lifecycle action", id); err != nil {
		return err
	}
	if !t.hook {
		return nil
	}
	a, err := t.pendingAction(ctx)
	if err != nil || a == nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	a.completed = true
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
