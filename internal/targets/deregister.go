package targets

import (
	"context"
	"errors"
)

// deregistration takes the instance out of a group. ELBv2 answers success for a target
// that is not registered, so repeating it (a plan resumed after a restart) is harmless.
var deregistration = membershipChange{
	verb:   "deregister",
	prep:   "from",
	noun:   "deregistration",
	done:   "deregistered from target group",
	action: "elasticloadbalancing:DeregisterTargets",
	call: func(ctx context.Context, elb *elbAPI, arn string, target targetDescription) error {
		return elb.deregisterTargets(ctx, arn, target)
	},
}

// Deregister takes the instance out of every cached target group at once (including
// those of the Auto Scaling group that RequestReplacement registered it in again), each
// call with its own CallTimeout, so that one slow or missing group delays no other. The
// load balancer then drains the target: requests in flight finish for up to the group's
// deregistration delay, new ones go elsewhere. It blocks for one DeregisterTargets call
// per group. A Register or RequestReplacement still running stops registering the
// instance again. Deregistering a target that is not registered succeeds, so repeating
// it is harmless. It returns the failures joined, each naming its group and, for a
// refused call, the grant to add.
func (c *Client) Deregister(ctx context.Context, instanceID string) error {
	if instanceID == "" {
		return errors.New("deregister: the instance id is empty")
	}
	c.mu.Lock()
	c.leaving++
	c.mu.Unlock()
	return c.eachGroup(instanceID, deregistration.noun, func(tg TargetGroup) error {
		return c.changeIn(ctx, instanceID, tg, deregistration)
	})
}
