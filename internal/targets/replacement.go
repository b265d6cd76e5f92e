package targets

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

// RequestReplacement asks the instance's Auto Scaling group for a replacement now, by
// detaching the instance with ShouldDecrementDesiredCapacity=false: the group launches
// the replacement at once and keeps its desired capacity, with nothing to undo later.
// The detached instance keeps running until Spot reclaims it, but the group deregisters
// it from the group's target groups and its lifecycle hooks no longer apply to it
// (Heartbeat then wraps ErrNoLifecycleAction; CompleteLifecycle succeeds with nothing to
// do). So RequestReplacement at once registers the instance again in every target group
// it serves in (the configured ones and the group's, which Deregister then covers too)
// and returns only once each shows it registered and not draining after the group's
// deregistration landed (or the group finished the detach), re-registering every
// PollInterval meanwhile: Jenkins stays reachable until the handover. It blocks for the
// detach call and those few seconds, bounded by ctx; cancel ctx (or call Deregister)
// before the handover, so that it never registers the instance again after it.
//
// requested reports whether a replacement is under way: true after the detach, and on a
// repeated call (or after an agent restart) when the instance is already detached or
// Detaching and the group keeps a desired capacity of at least one (the project's group
// holds one controller, so the group is launching or has launched another instance). It
// is false with a nil error when the instance is in no Auto Scaling group (there is
// nothing to ask for) or when the group is terminating it itself (Terminating:*: the
// group replaces it only once it is gone, and its lifecycle hook waits for this one),
// and false with an error when
// the group refuses (the instance is Pending, say) or cannot be asked. When the
// replacement was asked for but staying registered failed, requested is true and err
// says what failed. A refused call names the grant: autoscaling:DetachInstances on the
// group's ARN, elasticloadbalancing:RegisterTargets on the target group,
// DescribeTargetHealth, DescribeAutoScalingInstances or DescribeAutoScalingGroups on *.
func (c *Client) RequestReplacement(ctx context.Context, id instance.Identity) (requested bool, err error) {
	if id.InstanceID == "" {
		return false, errors.New("request replacement: the instance id is empty")
	}
	asg := c.AutoScalingGroup()
	if asg == "" {
		asg = id.AutoScalingGroup
	}
	if asg == "" {
		group, _, err := c.instanceState(ctx, id.InstanceID)
		if err != nil {
			return false, fmt.Errorf("request replacement: %w", err)
		}
		if group == "" {
			c.log.Info("instance is in no Auto Scaling group; no replacement to ask for", "instance", id.InstanceID)
			return false, nil
		}
		asg = group
		c.mu.Lock()
		if c.asgName == "" {
			c.asgName = asg
		}
		c.mu.Unlock()
	}

	since := c.leavingCount()
	start := time.Now()
	cctx, cancel := c.callContext(ctx)
	err = c.asg.detachInstances(cctx, asg, false, id.InstanceID)
	cancel()
	switch {
	case err == nil:
		c.log.Warn("detached from the Auto Scaling group, which launches a replacement now; registering again to serve until the handover",
			"auto_scaling_group", asg, "instance", id.InstanceID, "took", time.Since(start))
	case apiCode(err) != codeValidationError:
		return false, fmt.Errorf("request replacement from %s: detach %s: %w", asg, id.InstanceID, explain(err, "autoscaling:DetachInstances", c.groupResource(asg)))
	default:
		// Not InService or Standby, or not in the group: see where it stands.
		st, derr := c.describeGroup(ctx, asg, id.InstanceID)
		if derr != nil {
			return false, fmt.Errorf("request replacement from %s: detach %s: %w; and where it stands is unknown: %w", asg, id.InstanceID, err, derr)
		}
		if !st.found {
			return false, fmt.Errorf("request replacement: auto scaling group %s not found: %w", asg, err)
		}
		under := st.desired >= 1
		switch {
		case st.state == "" || st.state == stateDetaching:
			c.log.Info("instance already detached from the Auto Scaling group; registering again to serve until the handover",
				"auto_scaling_group", asg, "instance", id.InstanceID, "state", cmp.Or(st.state, "Detached"), "replacement_under_way", under)
		case strings.HasPrefix(st.state, "Terminating") || st.state == "Terminated":
			// The group replaces the instance only once it is gone, and its lifecycle
			// hook still waits for this one: no replacement to wait for, an action to
			// complete.
			c.log.Info("the Auto Scaling group is terminating the instance itself; nothing to detach, the replacement comes after it",
				"auto_scaling_group", asg, "instance", id.InstanceID, "state", st.state)
			return false, nil
		default:
			return false, fmt.Errorf("request replacement from %s: the instance is %s there, and only InService or Standby instances can be detached; ask again once it is InService: %w", asg, st.state, err)
		}
		if err := c.stayRegistered(ctx, id.InstanceID, asg, since); err != nil {
			return under, fmt.Errorf("request replacement: %w", err)
		}
		return under, nil
	}
	if err := c.stayRegistered(ctx, id.InstanceID, asg, since); err != nil {
		return true, fmt.Errorf("request replacement: replacement asked for, but %w", err)
	}
	return true, nil
}

// stayRegistered registers the instance again in every target group after a detach,
// and returns once each shows it registered and not draining, after the group's own
// deregistration was seen in each of the group's target groups or the group finished
// the detach (Auto Scaling deregisters while the instance is Detaching).
func (c *Client) stayRegistered(ctx context.Context, instanceID, asg string, since uint64) error {
	groupTGs, known := c.groupTargetGroups()
	if !known {
		st, err := c.describeGroup(ctx, asg, instanceID)
		if err != nil {
			c.log.Warn("the Auto Scaling group's target groups are unknown; registering again in the cached ones only", "auto_scaling_group", asg, "err", err)
		} else {
			groupTGs = st.targetGroups
			c.mu.Lock()
			c.asgTGs, c.asgTGsKnown = groupTGs, true
			c.mu.Unlock()
		}
	}
	c.addTargetGroups(groupTGs)

	groups := c.TargetGroups()
	var seen sync.Map // target group ARN → the group's deregistration was seen there
	allSeen := func() bool {
		for _, arn := range groupTGs {
			if _, ok := seen.Load(arn); !ok {
				return false
			}
		}
		return true
	}
	detachOver := false
	for tries := 1; ; tries++ {
		if c.leavingCount() != since {
			return fmt.Errorf("register %s again: %w", instanceID, errSuperseded)
		}
		states := make([]targetHealthState, len(groups))
		errs := make([]error, len(groups))
		var wg sync.WaitGroup
		for i, tg := range groups {
			wg.Go(func() {
				state, err := c.targetState(ctx, instanceID, tg)
				if err != nil {
					errs[i] = fmt.Errorf("register %s again in target group %s: %w", instanceID, tg.ARN, err)
					return
				}
				states[i] = state
				if registered(state) {
					return
				}
				if slices.Contains(groupTGs, tg.ARN) {
					seen.Store(tg.ARN, true)
				}
				errs[i] = c.changeIn(ctx, instanceID, tg, registration)
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		settled := !slices.ContainsFunc(states, func(s targetHealthState) bool { return !registered(s) })
		if settled && !detachOver && !allSeen() {
			group, state, err := c.instanceState(ctx, instanceID)
			if err != nil {
				c.log.Warn("cannot tell whether the group has finished the detach; taking the registration as it stands", "err", err)
			}
			detachOver = err != nil || group != asg || state != stateDetaching
		}
		if settled && (detachOver || allSeen()) {
			c.log.Info("registered again in every target group after the detach", "instance", instanceID, "tries", tries)
			return nil
		}
		if err := c.pause(ctx, c.poll); err != nil {
			return fmt.Errorf("register %s again: the group's deregistration or the end of the detach not seen yet after %d looks: %w", instanceID, tries, err)
		}
	}
}

// groupState is what DescribeAutoScalingGroups says about the group and the instance.
type groupState struct {
	found        bool
	desired      int
	state        string // the instance's lifecycle state; empty when it is not in the group
	targetGroups []string
}

func (c *Client) describeGroup(ctx context.Context, asg, instanceID string) (groupState, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	out, err := c.asg.describeAutoScalingGroups(ctx, asg)
	if err != nil {
		return groupState{}, fmt.Errorf("describe auto scaling group %s: %w", asg, explain(err, "autoscaling:DescribeAutoScalingGroups", "*"))
	}
	for _, g := range out {
		if g.Name != asg {
			continue
		}
		st := groupState{found: true, desired: g.DesiredCapacity, targetGroups: attachedTargetGroups(g)}
		for _, inst := range g.Instances {
			if inst.InstanceID == instanceID {
				st.state = inst.LifecycleState
			}
		}
		return st, nil
	}
	return groupState{}, nil
}

// groupTargetGroups is the Auto Scaling group's own target groups, and whether they are
// known.
func (c *Client) groupTargetGroups() ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.asgTGs), c.asgTGsKnown
}

// addTargetGroups adds target groups to the cache, with the group's port, so that
// Register and Deregister cover them too.
func (c *Client) addTargetGroups(arns []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.groups = mergeTargetGroups(c.groups, arns)
}
