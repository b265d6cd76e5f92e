package targets

import (
	"context"
	"fmt"
	"time"
)

// membershipChange is one of the two calls that take the instance out of a target group
// or put it back in. Deregister and Register differ only in this value; how the call
// reaches every group, how long it may take and how its failure reads are shared.
type membershipChange struct {
	verb   string // starts the error: "deregister", "register"
	prep   string // joins instance and group in the error: "from", "in"
	noun   string // names the change in logs: "deregistration", "registration"
	done   string // logged on success
	action string // the IAM action to name when it is refused
	call   func(ctx context.Context, elb *elbAPI, arn string, target targetDescription) error
}

// changeIn applies the change to one group and turns its failure into an error that
// says which group and what to do.
func (c *Client) changeIn(ctx context.Context, instanceID string, tg TargetGroup, m membershipChange) error {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	start := time.Now()
	err := m.call(ctx, c.elb, tg.ARN, targetOf(instanceID, tg))
	took := time.Since(start)
	if err == nil {
		c.log.Info(m.done, "instance", instanceID, "target_group", tg.ARN, "port", tg.Port, "took", took)
		return nil
	}
	switch apiCode(err) {
	case codeTargetGroupNotFound:
		err = fmt.Errorf("%s %s: target group %s not found (deleted, or in another account or region); fix or remove it in target_groups: %w", m.verb, instanceID, tg.ARN, err)
	case codeInvalidTarget:
		err = fmt.Errorf("%s %s %s target group %s: the group refuses the instance as a target (use a target group of target type instance, in the instance's VPC): %w", m.verb, instanceID, m.prep, tg.ARN, err)
	default:
		err = fmt.Errorf("%s %s %s target group %s: %w", m.verb, instanceID, m.prep, tg.ARN, explain(err, m.action, tg.ARN))
	}
	c.log.Warn(m.noun+" failed", "instance", instanceID, "target_group", tg.ARN, "took", took, "err", err)
	return err
}

// targetOf is the instance as a target of the group: on the configured port, or with
// the port left out, which ELBv2 takes as the group's own port (how Auto Scaling
// registers its instances).
func targetOf(instanceID string, tg TargetGroup) targetDescription {
	return targetDescription{ID: instanceID, Port: tg.Port}
}
