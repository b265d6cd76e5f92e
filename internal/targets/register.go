package targets

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// registration puts the instance back in a group. ELBv2 answers success for a target
// that is registered already and leaves it as it is, so calling it at every boot is
// harmless; a draining target is registered again and serves once healthy.
var registration = membershipChange{
	verb:   "register",
	prep:   "in",
	noun:   "registration",
	done:   "registered in target group; the load balancer routes to it once its health checks pass",
	action: "elasticloadbalancing:RegisterTargets",
	call: func(ctx context.Context, elb *elbAPI, arn string, target targetDescription) error {
		return elb.registerTargets(ctx, arn, target)
	},
}

// errSuperseded ends a registration that a later Deregister made moot.
var errSuperseded = errors.New("a deregistration started meanwhile; the instance stays deregistered")

// Register puts the instance in every cached target group at once (the groups
// Deregister uses, on the same ports) and returns once DescribeTargetHealth shows it
// registered and not draining in each (initial, healthy, unhealthy or unavailable):
// where it still shows draining or unused (a deregistration by the Auto Scaling group
// can land after RegisterTargets), it registers again every PollInterval until ctx
// ends. Each call has its own CallTimeout. Auto Scaling registers an instance only when
// it launches it: after a drill, a detach, or after the agent was stopped and started
// again on the same instance, nobody else undoes the deregistration, and the load
// balancer would keep no target although Jenkins runs. The load balancer sends requests
// once the target passes its health checks. A Deregister that starts meanwhile ends the
// registration (the later call wins). It returns the failures joined, each naming its
// group and, for a refused call, the grant to add (RegisterTargets on the group,
// DescribeTargetHealth on *).
func (c *Client) Register(ctx context.Context, instanceID string) error {
	if instanceID == "" {
		return errors.New("register: the instance id is empty")
	}
	since := c.leavingCount()
	return c.eachGroup(instanceID, registration.noun, func(tg TargetGroup) error {
		return c.registerIn(ctx, instanceID, tg, since)
	})
}

// registerIn registers the instance in one group until it shows registered.
func (c *Client) registerIn(ctx context.Context, instanceID string, tg TargetGroup, since uint64) error {
	for tries := 1; ; tries++ {
		if c.leavingCount() != since {
			return fmt.Errorf("register %s in target group %s: %w", instanceID, tg.ARN, errSuperseded)
		}
		if err := c.changeIn(ctx, instanceID, tg, registration); err != nil {
			return err
		}
		state, err := c.targetState(ctx, instanceID, tg)
		if err != nil {
			return fmt.Errorf("register %s in target group %s: registered, but whether it stays so is unknown: %w", instanceID, tg.ARN, err)
		}
		if registered(state) {
			return nil
		}
		c.log.Info("target not registered after RegisterTargets (a deregistration landed after it); registering again",
			"instance", instanceID, "target_group", tg.ARN, "state", state, "tries", tries)
		if err := c.pause(ctx, c.poll); err != nil {
			return fmt.Errorf("register %s in target group %s: still %s after %d tries: %w", instanceID, tg.ARN, state, tries, err)
		}
	}
}

// registered reports whether a target health state is a registration that the load
// balancer keeps: anything but draining and unused (or no state at all).
func registered(state targetHealthState) bool {
	switch state {
	case "", stateDraining, stateUnused:
		return false
	}
	return true
}

// targetState is the instance's health state in the group on its port, as
// DescribeTargetHealth shows it: unused when it is not registered.
func (c *Client) targetState(ctx context.Context, instanceID string, tg TargetGroup) (targetHealthState, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	target := targetOf(instanceID, tg)
	out, err := c.elb.describeTargetHealth(ctx, tg.ARN, target)
	if err != nil {
		// Describe actions of ELBv2 take no resource-level permission.
		return "", fmt.Errorf("describe target health in %s: %w", tg.ARN, explain(err, "elasticloadbalancing:DescribeTargetHealth", "*"))
	}
	for _, d := range out {
		if d.ID != instanceID || d.State == "" {
			continue
		}
		if tg.Port != 0 && d.Port != tg.Port {
			continue
		}
		return d.State, nil
	}
	return stateUnused, nil
}

// leavingCount counts the Deregister calls so far; a registration that sees it change
// stops.
func (c *Client) leavingCount() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaving
}

// pause waits d, or until ctx ends.
func (c *Client) pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// eachGroup runs f for every cached target group at once and joins the failures.
func (c *Client) eachGroup(instanceID, noun string, f func(TargetGroup) error) error {
	groups := c.TargetGroups()
	if len(groups) == 0 {
		c.log.Info("no target groups for "+noun, "instance", instanceID)
		return nil
	}
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, tg := range groups {
		wg.Go(func() { errs[i] = f(tg) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
