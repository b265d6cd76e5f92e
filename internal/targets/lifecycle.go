package targets

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

// noActiveAction starts Auto Scaling's answer when no lifecycle action waits for the
// instance: it was completed already, timed out, none was started, or none is visible
// yet (for a few seconds after the group shows Terminating:Wait).
const noActiveAction = "No active Lifecycle Action found"

// Lifecycle states of an instance in its group that matter here.
const (
	stateInService       = "InService"
	stateStandby         = "Standby"
	stateDetaching       = "Detaching"
	stateTerminatingWait = "Terminating:Wait"
)

// terminationTransition is the lifecycle transition of a termination hook.
const terminationTransition = "autoscaling:EC2_INSTANCE_TERMINATING"

// DefaultHeartbeatInterval is HeartbeatInterval while the hook's heartbeat timeout is
// unknown: a third of the shortest timeout Auto Scaling accepts (30 s), so it is in
// time whatever the hook says.
const DefaultHeartbeatInterval = 10 * time.Second

// maxLifecycleWait is the longest any lifecycle action may wait on Auto Scaling,
// heartbeats or not; the other cap is 100 heartbeat timeouts.
const maxLifecycleWait = 48 * time.Hour

// ErrNoLifecycleAction is wrapped by Heartbeat when Auto Scaling has no lifecycle action
// pending for the instance and none is coming (the instance is not in Terminating:Wait,
// or no longer in the group, as after a detach): the group does not wait for this
// instance, so heartbeats cannot hold its termination back.
var ErrNoLifecycleAction = instance.ErrNoLifecycleAction

// CompleteLifecycle tells Auto Scaling to go on terminating the instance (CONTINUE) on
// the configured termination hook. Without a hook it does nothing. Auto Scaling shows
// the instance in Terminating:Wait a few seconds before it lets the action be completed
// and answers "No active Lifecycle Action found" meanwhile: while
// DescribeAutoScalingInstances still says Terminating:Wait, CompleteLifecycle tries
// again, with a pause growing from PollInterval to 5 s, until ctx ends. When no action
// is pending and none is coming (completed before, timed out, the instance detached or
// never in Terminating:Wait) it succeeds, so that repeating the plan after a restart is
// harmless. Each call is bounded by CallTimeout; an error names the grant that is
// missing, or says that the action was still not completable when ctx ended.
func (c *Client) CompleteLifecycle(ctx context.Context, instanceID string) error {
	if c.hook == "" {
		return nil
	}
	asg, err := c.lifecycleGroup("complete lifecycle action", instanceID)
	if err != nil {
		return err
	}
	err = c.onPendingAction(ctx, instanceID, asg, "autoscaling:CompleteLifecycleAction", func(ctx context.Context) error {
		return c.asg.completeLifecycleAction(ctx, lifecycleAction{group: asg, hook: c.hook, instanceID: instanceID}, "CONTINUE")
	})
	switch {
	case err == nil:
		c.log.Info("lifecycle action completed", "auto_scaling_group", asg, "hook", c.hook, "instance", instanceID)
		return nil
	case errors.Is(err, ErrNoLifecycleAction):
		c.log.Info("no lifecycle action pending; nothing to complete", "auto_scaling_group", asg, "hook", c.hook, "instance", instanceID, "detail", err)
		return nil
	}
	return fmt.Errorf("complete lifecycle action %s of %s: %w", c.hook, asg, err)
}

// Heartbeat records a heartbeat on the instance's pending termination lifecycle action
// (RecordLifecycleActionHeartbeat), which restarts the hook's heartbeat timeout: the
// group keeps waiting for the instance, up to LifecycleWaitLimit in all. Without a hook
// it does nothing. Like CompleteLifecycle it tries again while the action is not yet
// visible and the group shows Terminating:Wait, until ctx ends. When no action is
// pending and none is coming, the error wraps ErrNoLifecycleAction. Send one every
// HeartbeatInterval. Each call is bounded by CallTimeout; a refused call names the grant.
func (c *Client) Heartbeat(ctx context.Context, instanceID string) error {
	if c.hook == "" {
		return nil
	}
	asg, err := c.lifecycleGroup("record lifecycle action heartbeat", instanceID)
	if err != nil {
		return err
	}
	err = c.onPendingAction(ctx, instanceID, asg, "autoscaling:RecordLifecycleActionHeartbeat", func(ctx context.Context) error {
		return c.asg.recordLifecycleActionHeartbeat(ctx, lifecycleAction{group: asg, hook: c.hook, instanceID: instanceID})
	})
	if err != nil {
		return fmt.Errorf("record lifecycle action heartbeat %s of %s: %w", c.hook, asg, err)
	}
	c.log.Debug("lifecycle action heartbeat recorded", "auto_scaling_group", asg, "hook", c.hook, "instance", instanceID)
	return nil
}

// HeartbeatInterval is how often Heartbeat should be called: a third of the hook's
// heartbeat timeout learned by Discover, which leaves room for two more tries before
// it runs out; DefaultHeartbeatInterval while it is unknown.
func (c *Client) HeartbeatInterval() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return heartbeatInterval(c.hookTimeout)
}

// LifecycleWaitLimit is the longest the group waits on the hook's action however many
// heartbeats come: 100 heartbeat timeouts or 48 hours, whichever is shorter (Auto
// Scaling's global timeout). Zero while the hook's timeout is unknown.
func (c *Client) LifecycleWaitLimit() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hookTimeout == 0 {
		return 0
	}
	return min(100*c.hookTimeout, maxLifecycleWait)
}

func heartbeatInterval(timeout time.Duration) time.Duration {
	if timeout <= 0 {
		return DefaultHeartbeatInterval
	}
	return timeout / 3
}

// lifecycleGroup is the group whose hook the lifecycle calls act on.
func (c *Client) lifecycleGroup(verb, instanceID string) (string, error) {
	if instanceID == "" {
		return "", fmt.Errorf("%s: the instance id is empty", verb)
	}
	asg := c.AutoScalingGroup()
	if asg == "" {
		return "", fmt.Errorf("%s %s: the instance's Auto Scaling group is unknown (discovery failed or it is in none); clear lifecycle_hook or check autoscaling:DescribeAutoScalingInstances", verb, c.hook)
	}
	return asg, nil
}

// onPendingAction makes a call that acts on the instance's pending lifecycle action.
// "No active Lifecycle Action found" is tried again while the group shows the instance
// in Terminating:Wait (the action is not visible yet), and wraps ErrNoLifecycleAction
// once it does not.
func (c *Client) onPendingAction(ctx context.Context, instanceID, asg, action string, call func(context.Context) error) error {
	pause := c.poll
	waiting := false // the group was seen in Terminating:Wait
	for tries := 1; ; tries++ {
		cctx, cancel := c.callContext(ctx)
		err := call(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if waiting && ctx.Err() != nil {
			return fmt.Errorf("the instance is %s but Auto Scaling found no active lifecycle action in %d tries: %w", stateTerminatingWait, tries, ctx.Err())
		}
		if !isNoActiveAction(err) {
			return explain(err, action, c.groupResource(asg))
		}
		group, state, derr := c.instanceState(ctx, instanceID)
		if derr != nil {
			if waiting && ctx.Err() != nil {
				return fmt.Errorf("the instance is %s but Auto Scaling found no active lifecycle action in %d tries: %w", stateTerminatingWait, tries, ctx.Err())
			}
			return fmt.Errorf("%w; whether an action is still to come is unknown: %w", err, derr)
		}
		if group != asg || state != stateTerminatingWait {
			where := "not in the group"
			if group == asg {
				where = state
			}
			return fmt.Errorf("%w (Auto Scaling shows the instance %s): %w", ErrNoLifecycleAction, where, err)
		}
		waiting = true
		c.log.Debug("lifecycle action not visible yet although the instance is Terminating:Wait; trying again",
			"action", action, "instance", instanceID, "tries", tries, "pause", pause)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("the instance is %s but Auto Scaling found no active lifecycle action in %d tries: %w", stateTerminatingWait, tries, ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, maxRetryPause)
	}
}

// instanceState is the instance's Auto Scaling group and lifecycle state there, both
// empty when it is in no group (never was, or detached).
func (c *Client) instanceState(ctx context.Context, instanceID string) (group, state string, err error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	out, err := c.asg.describeAutoScalingInstances(ctx, instanceID)
	if err != nil {
		return "", "", fmt.Errorf("describe auto scaling instance %s: %w", instanceID, explain(err, "autoscaling:DescribeAutoScalingInstances", "*"))
	}
	for _, inst := range out {
		if inst.InstanceID == instanceID {
			return inst.AutoScalingGroup, inst.LifecycleState, nil
		}
	}
	return "", "", nil
}

// describeHook reads the configured hook of the group and returns its heartbeat timeout.
// A hook that is missing or no termination hook is an error that says what to fix.
func (c *Client) describeHook(ctx context.Context, asg string) (time.Duration, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	out, err := c.asg.describeLifecycleHooks(ctx, asg, c.hook)
	if err != nil {
		return 0, fmt.Errorf("describe lifecycle hook %s of %s: %w", c.hook, asg, explain(err, "autoscaling:DescribeLifecycleHooks", "*"))
	}
	for _, h := range out {
		if h.Name != c.hook {
			continue
		}
		if t := h.Transition; t != terminationTransition {
			return 0, fmt.Errorf("lifecycle hook %s of %s is for %s, not %s: set lifecycle_hook to the group's termination hook", c.hook, asg, t, terminationTransition)
		}
		timeout := time.Duration(h.HeartbeatTimeout) * time.Second
		if timeout <= 0 {
			return 0, fmt.Errorf("lifecycle hook %s of %s shows no heartbeat timeout", c.hook, asg)
		}
		return timeout, nil
	}
	return 0, fmt.Errorf("auto scaling group %s has no lifecycle hook %s: fix lifecycle_hook (aws autoscaling describe-lifecycle-hooks --auto-scaling-group-name %s lists them)", asg, c.hook, asg)
}

func isNoActiveAction(err error) bool {
	return apiCode(err) == codeValidationError && strings.HasPrefix(apiMessage(err), noActiveAction)
}

// groupResource is the IAM resource of the Auto Scaling group, as exact as known.
func (c *Client) groupResource(asg string) string {
	c.mu.Lock()
	arn := c.asgARN
	c.mu.Unlock()
	if arn != "" && strings.HasSuffix(arn, "autoScalingGroupName/"+asg) {
		return arn
	}
	return fmt.Sprintf("arn:aws:autoscaling:%s:*:autoScalingGroup:*:autoScalingGroupName/%s", c.region, asg)
}
