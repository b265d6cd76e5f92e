package targets

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// Auto Scaling shows Terminating:Wait before it lets the action be completed:
// CompleteLifecycle keeps trying until it can, where one "No active Lifecycle Action"
// used to count as done and left the instance waiting out the heartbeat timeout.
func TestCompleteLifecycleWaitsForTheActionToPropagate(t *testing.T) {
	srv := single(t)
	clk := newClock(srv)
	srv.SetLifecyclePropagationDelay(5 * time.Second)
	c := newClient(t, srv, fast(Options{LifecycleHook: hook}))
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	srv.PendLifecycleAction(asgName, hook, instanceID)
	done := make(chan error, 1)
	go func() { done <- c.CompleteLifecycle(t.Context(), instanceID) }()
	testenv.Eventually(t, "two completions refused while the action propagates", func() bool {
		return len(srv.CallsOf("CompleteLifecycleAction")) >= 2
	})
	select {
	case err := <-done:
		t.Fatalf("CompleteLifecycle returned %v while the action was not completable", err)
	default:
	}
	clk.Add(5 * time.Second)
	if err := <-done; err != nil {
		t.Fatalf("CompleteLifecycle: %v", err)
	}
	if r, ok := srv.LifecycleResult(asgName, instanceID); !ok || r != "CONTINUE" || srv.LifecycleTimedOut(asgName, instanceID) {
		t.Errorf("lifecycle result %q %v, want completed with CONTINUE", r, ok)
	}
	calls := srv.CallsOf("CompleteLifecycleAction")
	for _, call := range calls[:len(calls)-1] {
		if call.Code != "ValidationError" {
			t.Errorf("an early completion answered %q, want ValidationError", call.Code)
		}
	}
	if last := calls[len(calls)-1]; last.Code != "" {
		t.Errorf("the last completion answered %q, want success", last.Code)
	}
}

func TestCompleteLifecycleGivesUpWhenCtxEnds(t *testing.T) {
	srv := single(t)
	newClock(srv) // the action never becomes completable
	srv.SetLifecyclePropagationDelay(time.Minute)
	c := newClient(t, srv, fast(Options{LifecycleHook: hook}))
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	srv.PendLifecycleAction(asgName, hook, instanceID)
	described := len(srv.CallsOf("DescribeAutoScalingInstances"))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.CompleteLifecycle(ctx, instanceID) }()
	// A completion refused, and the look that found the instance still waiting.
	testenv.Eventually(t, "a refused completion", func() bool {
		return len(srv.CallsOf("CompleteLifecycleAction")) >= 2 && len(srv.CallsOf("DescribeAutoScalingInstances")) > described
	})
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "the instance is Terminating:Wait but Auto Scaling found no active lifecycle action") {
		t.Fatalf("CompleteLifecycle error = %v, want the wait named and the context's end", err)
	}
}

// After a detach the group's hooks no longer apply: "No active Lifecycle Action" with
// the instance out of the group is done.
func TestCompleteLifecycleAfterADetach(t *testing.T) {
	srv := single(t)
	srv.SetDeregistrationDelay(0)
	c := newClient(t, srv, fast(Options{Discover: true, LifecycleHook: hook}))
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if requested, err := c.RequestReplacement(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil || !requested {
		t.Fatalf("RequestReplacement = %v, %v", requested, err)
	}
	if err := c.CompleteLifecycle(t.Context(), instanceID); err != nil {
		t.Fatalf("CompleteLifecycle: %v", err)
	}
	if n := len(srv.CallsOf("CompleteLifecycleAction")); n != 1 {
		t.Errorf("%d completions, want 1 (not retried)", n)
	}
	if err := c.Heartbeat(t.Context(), instanceID); !errors.Is(err, ErrNoLifecycleAction) || !strings.Contains(err.Error(), "not in the group") {
		t.Errorf("Heartbeat after the detach = %v, want ErrNoLifecycleAction, not in the group", err)
	}
}

// Heartbeats every HeartbeatInterval keep a group-started termination waiting past the
// hook's heartbeat timeout; once they stop, the action times out.
func TestHeartbeatsHoldTheTerminationBack(t *testing.T) {
	srv := single(t)
	clk := newClock(srv)
	srv.SetLifecycleHook(asgName, hook, 30*time.Second, "CONTINUE")
	c := newClient(t, srv, fast(Options{LifecycleHook: hook}))
	if got := c.HeartbeatInterval(); got != DefaultHeartbeatInterval {
		t.Errorf("HeartbeatInterval before Discover = %s, want %s", got, DefaultHeartbeatInterval)
	}
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	interval := c.HeartbeatInterval()
	if interval != 10*time.Second || c.LifecycleWaitLimit() != 3000*time.Second {
		t.Fatalf("HeartbeatInterval %s, LifecycleWaitLimit %s; want 10s and 50m (a third and 100 times the 30 s timeout)", interval, c.LifecycleWaitLimit())
	}
	if err := c.Heartbeat(t.Context(), instanceID); !errors.Is(err, ErrNoLifecycleAction) {
		t.Errorf("Heartbeat with no action pending = %v, want ErrNoLifecycleAction", err)
	}

	srv.PendLifecycleAction(asgName, hook, instanceID)
	for range 9 { // 90 s, three heartbeat timeouts
		clk.Add(interval)
		if err := c.Heartbeat(t.Context(), instanceID); err != nil {
			t.Fatalf("Heartbeat: %v", err)
		}
	}
	if st := srv.GroupInstances(asgName)[instanceID]; st != "Terminating:Wait" {
		t.Fatalf("instance %s after 90 s of heartbeats, want still Terminating:Wait", st)
	}
	calls := srv.CallsOf("RecordLifecycleActionHeartbeat")
	last := calls[len(calls)-1]
	for k, want := range map[string]string{"AutoScalingGroupName": asgName, "LifecycleHookName": hook, "InstanceId": instanceID} {
		if got := last.Params.Get(k); got != want {
			t.Errorf("RecordLifecycleActionHeartbeat %s = %q, want %q", k, got, want)
		}
	}
	clk.Add(30 * time.Second)
	if !srv.LifecycleTimedOut(asgName, instanceID) {
		t.Error("the action did not time out once heartbeats stopped")
	}
	if err := c.Heartbeat(t.Context(), instanceID); !errors.Is(err, ErrNoLifecycleAction) {
		t.Errorf("Heartbeat after the timeout = %v, want ErrNoLifecycleAction", err)
	}
}

func TestHeartbeatErrors(t *testing.T) {
	t.Run("without a hook", func(t *testing.T) {
		srv := single(t)
		c := newClient(t, srv, Options{})
		if err := c.Heartbeat(t.Context(), instanceID); err != nil {
			t.Errorf("Heartbeat: %v", err)
		}
		if calls := srv.Calls(); len(calls) != 0 {
			t.Errorf("calls %+v, want none", calls)
		}
	})
	t.Run("denied", func(t *testing.T) {
		srv := single(t)
		srv.PendLifecycleAction(asgName, hook, instanceID)
		srv.Deny("RecordLifecycleActionHeartbeat")
		c := newClient(t, srv, fast(Options{Discover: true, LifecycleHook: hook}))
		if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
			t.Fatalf("Discover: %v", err)
		}
		want := "add autoscaling:RecordLifecycleActionHeartbeat on " + awstest.GroupARN(region, asgName) + " to the instance role"
		if err := c.Heartbeat(t.Context(), instanceID); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Heartbeat error = %v, want %q", err, want)
		}
	})
	t.Run("state unknown", func(t *testing.T) {
		srv := single(t)
		srv.Deny("DescribeAutoScalingInstances")
		c := newClient(t, srv, fast(Options{LifecycleHook: hook}))
		if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID, AutoScalingGroup: asgName}); err != nil {
			t.Fatalf("Discover: %v", err)
		}
		err := c.Heartbeat(t.Context(), instanceID)
		if err == nil || errors.Is(err, ErrNoLifecycleAction) || !strings.Contains(err.Error(), "add autoscaling:DescribeAutoScalingInstances on * to the instance role") {
			t.Errorf("Heartbeat error = %v, want the missing grant, not ErrNoLifecycleAction", err)
		}
	})
}

// A hook that cannot be learned leaves the safe default interval, and Discover still
// caches the target groups.
func TestDiscoverWithAHookItCannotLearn(t *testing.T) {
	for _, tc := range []struct {
		name string
		hook string
		deny string
	}{
		{"denied", hook, "DescribeLifecycleHooks"},
		{"missing", "no-such-hook", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := single(t)
			if tc.deny != "" {
				srv.Deny(tc.deny)
			}
			c := newClient(t, srv, Options{Discover: true, LifecycleHook: tc.hook})
			if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
				t.Fatalf("Discover: %v", err)
			}
			if got := c.HeartbeatInterval(); got != DefaultHeartbeatInterval || c.LifecycleWaitLimit() != 0 {
				t.Errorf("HeartbeatInterval %s, LifecycleWaitLimit %s; want the default and 0", got, c.LifecycleWaitLimit())
			}
			if n := len(c.TargetGroups()); n != 2 {
				t.Errorf("%d target groups cached, want the group's 2", n)
			}
		})
	}
}
