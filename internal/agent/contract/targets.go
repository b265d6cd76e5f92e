package contract

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

// Targets is the method set the agent uses to keep the instance in its load balancer
// target groups, to take it out, to ask its Auto Scaling group for a replacement and to
// deal with the group's termination lifecycle action. Every method may be called
// concurrently with the others and takes a context that bounds it: none blocks past
// ctx, and each returns an error when ctx ends before it is done.
type Targets interface {
	// Discover learns, once at boot, the instance's Auto Scaling group, the target
	// groups to use (configured and, when asked, the group's) and the lifecycle hook's
	// heartbeat timeout, and caches them: the APIs throttle during mass interruptions.
	// It blocks for a few API calls. An instance in no group is no error; on error the
	// configured target groups stay in force and the other methods still work.
	Discover(ctx context.Context, id instance.Identity) error

	// Register puts the instance in every target group it serves in and returns once
	// each shows it registered and not draining (initial, healthy or unhealthy), even
	// when a deregistration by someone else lands after the registration call: it
	// registers again until ctx ends. Idempotent: registering a registered instance
	// changes nothing. Errors name the target group and, when the call was refused,
	// the permission to grant. A Deregister that starts meanwhile wins.
	Register(ctx context.Context, instanceID string) error

	// Deregister takes the instance out of every target group it serves in, including
	// the Auto Scaling group's that RequestReplacement registered it in again. The load
	// balancer drains it: requests in flight finish, new ones go elsewhere. It blocks
	// for one call per group, made in parallel. Idempotent. A Register or
	// RequestReplacement still running stops registering the instance. Errors name the
	// target group and the permission to grant.
	Deregister(ctx context.Context, instanceID string) error

	// RequestReplacement asks the instance's Auto Scaling group for a replacement now
	// (by detaching the instance without decrementing the desired capacity: the group
	// launches one at once), then registers the instance again wherever the detach took
	// it out and returns once it is registered and stays so: Jenkins keeps serving until
	// the handover. requested reports whether a replacement is under way; it is false
	// with a nil error when the instance is in no group, or when the group terminates it
	// itself (the replacement comes after it, and the lifecycle action is to be
	// completed). Idempotent: a repeated call
	// (an agent restarted mid-plan) launches no second replacement and reports the one
	// under way. When the replacement was asked for but the instance could not be
	// registered again, requested is true and err says why. Cancel ctx before the
	// handover's Deregister.
	RequestReplacement(ctx context.Context, id instance.Identity) (requested bool, err error)

	// Heartbeat records a heartbeat on the instance's pending termination lifecycle
	// action, so that the group keeps waiting (builds of a scale-in may finish). Without
	// a configured hook it does nothing. Where the action is not visible yet although
	// the group shows the instance Terminating:Wait, it tries again until ctx ends. When
	// no action is pending and none is coming (completed, timed out, the instance
	// detached), the error wraps the implementation's no-action error.
	Heartbeat(ctx context.Context, instanceID string) error

	// HeartbeatInterval is how often to call Heartbeat while a group-started termination
	// waits: well inside the hook's heartbeat timeout as Discover learned it, and a safe
	// default (inside any timeout Auto Scaling accepts) before or without that. It does
	// not block.
	HeartbeatInterval() time.Duration

	// CompleteLifecycle lets the group go on terminating the instance (CONTINUE). Without
	// a configured hook it does nothing. Where the action is not visible yet although
	// the group shows the instance Terminating:Wait, it tries again until ctx ends; with
	// no action pending and none coming it succeeds, so it is idempotent. Errors name the
	// permission to grant, or say that ctx ended while the action was still coming.
	CompleteLifecycle(ctx context.Context, instanceID string) error
}

// TargetsSetup is the world one case of the suite needs.
type TargetsSetup struct {
	// InGroup puts the instance InService in an Auto Scaling group of desired capacity
	// 1 with a target group attached; otherwise it is in no group and only in a
	// configured target group.
	InGroup bool
	// Hook gives the group a termination lifecycle hook and configures the
	// implementation with it.
	Hook bool
}

// TargetsWorld is the world behind an implementation, as the suite steers and sees it.
type TargetsWorld interface {
	// Identity is the instance's identity as IMDS gives it.
	Identity() instance.Identity
	// Registered reports whether the instance is registered and not draining in every
	// target group it serves in.
	Registered() bool
	// Deregistered reports whether it is draining or not registered in every one.
	Deregistered() bool
	// Replacements is how many instances the group launched to replace it.
	Replacements() int
	// Settle returns once everything the group does by itself after the last call has
	// happened (a detach's deregistration, the end of the detach).
	Settle()
	// StartTermination puts the instance in Terminating:Wait on the hook, as a scale-in
	// does; the action becomes completable only after visibleAfter.
	StartTermination(visibleAfter time.Duration)
	// LifecycleCompleted reports whether the action was completed with CONTINUE (not
	// timed out).
	LifecycleCompleted() bool
	// Heartbeats is how many heartbeats the pending action received.
	Heartbeats() int
	// HeartbeatTimeout is the hook's heartbeat timeout.
	HeartbeatTimeout() time.Duration
}

// minHeartbeatTimeout is the shortest heartbeat timeout Auto Scaling accepts.
const minHeartbeatTimeout = 30 * time.Second

// TargetsHarness makes implementations for the suite.
type TargetsHarness struct {
	// New returns a fresh implementation in a fresh world for one case.
	New func(t *testing.T, s TargetsSetup) (Targets, TargetsWorld)
	// NoLifecycleAction is the error that Heartbeat wraps when no action is pending.
	NoLifecycleAction error
}

// caseTimeout bounds every call of a case: generous, it only keeps a broken
// implementation from hanging the suite.
const caseTimeout = 30 * time.Second

// TestTargets runs the suite against the implementations h makes.
func TestTargets(t *testing.T, h TargetsHarness) {
	start := func(t *testing.T, s TargetsSetup) (Targets, TargetsWorld, context.Context) {
		t.Helper()
		tg, w := h.New(t, s)
		ctx, cancel := context.WithTimeout(t.Context(), caseTimeout)
		t.Cleanup(cancel)
		if err := tg.Discover(ctx, w.Identity()); err != nil {
			t.Fatalf("Discover: %v", err)
		}
		return tg, w, ctx
	}

	t.Run("register is idempotent", func(t *testing.T) {
		for _, s := range []TargetsSetup{{}, {InGroup: true}} {
			tg, w, ctx := start(t, s)
			id := w.Identity().InstanceID
			for i := range 2 {
				if err := tg.Register(ctx, id); err != nil {
					t.Fatalf("%+v: Register #%d: %v", s, i+1, err)
				}
				if !w.Registered() {
					t.Errorf("%+v: not registered after Register #%d", s, i+1)
				}
			}
		}
	})

	t.Run("deregister then register again", func(t *testing.T) {
		tg, w, ctx := start(t, TargetsSetup{InGroup: true})
		id := w.Identity().InstanceID
		for i := range 2 {
			if err := tg.Deregister(ctx, id); err != nil {
				t.Fatalf("Deregister #%d: %v", i+1, err)
			}
			if !w.Deregistered() {
				t.Errorf("still registered after Deregister #%d", i+1)
			}
		}
		if err := tg.Register(ctx, id); err != nil {
			t.Fatalf("Register: %v", err)
		}
		if !w.Registered() {
			t.Error("not registered after Register")
		}
	})

	t.Run("an empty instance id is refused", func(t *testing.T) {
		tg, _, ctx := start(t, TargetsSetup{InGroup: true, Hook: true})
		for name, err := range map[string]error{
			"Register":          tg.Register(ctx, ""),
			"Deregister":        tg.Deregister(ctx, ""),
			"Heartbeat":         tg.Heartbeat(ctx, ""),
			"CompleteLifecycle": tg.CompleteLifecycle(ctx, ""),
		} {
			if err == nil {
				t.Errorf("%s with an empty instance id succeeded", name)
			}
		}
		if requested, err := tg.RequestReplacement(ctx, instance.Identity{}); err == nil || requested {
			t.Errorf("RequestReplacement with an empty identity = %v, %v; want false and an error", requested, err)
		}
	})

	t.Run("replacement in a group keeps the instance registered", func(t *testing.T) {
		tg, w, ctx := start(t, TargetsSetup{InGroup: true, Hook: true})
		requested, err := tg.RequestReplacement(ctx, w.Identity())
		if err != nil || !requested {
			t.Fatalf("RequestReplacement = %v, %v; want true, nil", requested, err)
		}
		if n := w.Replacements(); n != 1 {
			t.Errorf("%d replacements launched, want 1", n)
		}
		if !w.Registered() {
			t.Error("not registered right after RequestReplacement")
		}
		w.Settle()
		if !w.Registered() {
			t.Error("not registered once the group finished the detach: its deregistration won")
		}

		// Repeated (an agent restarted mid-plan): no second replacement.
		requested, err = tg.RequestReplacement(ctx, w.Identity())
		if err != nil || !requested {
			t.Fatalf("second RequestReplacement = %v, %v; want true, nil", requested, err)
		}
		if n := w.Replacements(); n != 1 {
			t.Errorf("%d replacements after a second request, want still 1", n)
		}
		if !w.Registered() {
			t.Error("not registered after the second RequestReplacement")
		}

		// The group's hooks no longer apply to a detached instance.
		if err := tg.CompleteLifecycle(ctx, w.Identity().InstanceID); err != nil {
			t.Errorf("CompleteLifecycle after the detach: %v, want nil (nothing to complete)", err)
		}
		if err := tg.Heartbeat(ctx, w.Identity().InstanceID); !errors.Is(err, h.NoLifecycleAction) {
			t.Errorf("Heartbeat after the detach = %v, want the no-action error", err)
		}

		// The handover takes it out of every group, the group's included.
		if err := tg.Deregister(ctx, w.Identity().InstanceID); err != nil {
			t.Fatalf("Deregister: %v", err)
		}
		if !w.Deregistered() {
			t.Error("still registered after Deregister")
		}
	})

	t.Run("no replacement outside a group", func(t *testing.T) {
		tg, w, ctx := start(t, TargetsSetup{})
		requested, err := tg.RequestReplacement(ctx, w.Identity())
		if err != nil || requested {
			t.Fatalf("RequestReplacement = %v, %v; want false, nil", requested, err)
		}
		if n := w.Replacements(); n != 0 {
			t.Errorf("%d replacements, want none", n)
		}
		if !w.Registered() {
			t.Error("RequestReplacement outside a group changed the registration")
		}
	})

	t.Run("heartbeats go well inside the hook's timeout", func(t *testing.T) {
		tg, w := h.New(t, TargetsSetup{InGroup: true, Hook: true})
		if d := tg.HeartbeatInterval(); d <= 0 || d > minHeartbeatTimeout/2 {
			t.Errorf("HeartbeatInterval before Discover = %s, want positive and at most half of %s", d, minHeartbeatTimeout)
		}
		ctx, cancel := context.WithTimeout(t.Context(), caseTimeout)
		defer cancel()
		if err := tg.Discover(ctx, w.Identity()); err != nil {
			t.Fatalf("Discover: %v", err)
		}
		if d := tg.HeartbeatInterval(); d <= 0 || d > w.HeartbeatTimeout()/2 {
			t.Errorf("HeartbeatInterval = %s, want positive and at most half of the hook's %s", d, w.HeartbeatTimeout())
		}
	})

	t.Run("lifecycle calls without a hook do nothing", func(t *testing.T) {
		tg, w, ctx := start(t, TargetsSetup{InGroup: true})
		id := w.Identity().InstanceID
		if err := tg.Heartbeat(ctx, id); err != nil {
			t.Errorf("Heartbeat without a hook: %v", err)
		}
		if err := tg.CompleteLifecycle(ctx, id); err != nil {
			t.Errorf("CompleteLifecycle without a hook: %v", err)
		}
	})

	t.Run("lifecycle action of a group-started termination", func(t *testing.T) {
		tg, w, ctx := start(t, TargetsSetup{InGroup: true, Hook: true})
		id := w.Identity().InstanceID
		if err := tg.CompleteLifecycle(ctx, id); err != nil {
			t.Errorf("CompleteLifecycle with no action pending: %v, want nil", err)
		}
		if err := tg.Heartbeat(ctx, id); !errors.Is(err, h.NoLifecycleAction) {
			t.Errorf("Heartbeat with no action pending = %v, want the no-action error", err)
		}

		// The action shows in the group before it can be acted on.
		w.StartTermination(300 * time.Millisecond)
		for i := range 2 {
			if err := tg.Heartbeat(ctx, id); err != nil {
				t.Fatalf("Heartbeat #%d: %v", i+1, err)
			}
		}
		if n := w.Heartbeats(); n < 2 {
			t.Errorf("%d heartbeats recorded, want 2", n)
		}
		if err := tg.CompleteLifecycle(ctx, id); err != nil {
			t.Fatalf("CompleteLifecycle: %v", err)
		}
		if !w.LifecycleCompleted() {
			t.Error("the action was not completed")
		}
		if err := tg.CompleteLifecycle(ctx, id); err != nil {
			t.Errorf("second CompleteLifecycle: %v, want nil", err)
		}
	})

	t.Run("completion waits for the action to become visible", func(t *testing.T) {
		tg, w, ctx := start(t, TargetsSetup{InGroup: true, Hook: true})
		w.StartTermination(time.Second)
		if err := tg.CompleteLifecycle(ctx, w.Identity().InstanceID); err != nil {
			t.Fatalf("CompleteLifecycle: %v", err)
		}
		if !w.LifecycleCompleted() {
			t.Error("CompleteLifecycle returned before the action was completed")
		}
	})

	t.Run("an ended context is an error", func(t *testing.T) {
		tg, w, _ := start(t, TargetsSetup{InGroup: true, Hook: true})
		w.StartTermination(0)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		id := w.Identity().InstanceID
		for name, call := range map[string]func() error{
			"Register":          func() error { return tg.Register(ctx, id) },
			"Deregister":        func() error { return tg.Deregister(ctx, id) },
			"Heartbeat":         func() error { return tg.Heartbeat(ctx, id) },
			"CompleteLifecycle": func() error { return tg.CompleteLifecycle(ctx, id) },
			"RequestReplacement": func() error {
				_, err := tg.RequestReplacement(ctx, w.Identity())
				return err
			},
		} {
			if err := call(); err == nil {
				t.Errorf("%s with an ended context succeeded", name)
			}
		}
		if w.LifecycleCompleted() || w.Replacements() != 0 || !w.Registered() {
			t.Error("a call with an ended context changed the world")
		}
	})
}
