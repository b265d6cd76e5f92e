package targets

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
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
	call: func(ctx context.Context, elb *elbv2.Client, arn string, target elbtypes.TargetDescription) error {
		_, err := elb.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{
			TargetGroupArn: aws.String(arn),
			Targets:        []elbtypes.TargetDescription{target},
		})
		return err
	},
}

// Register puts the instance in every cached target group at once (the groups
// Deregister uses, on the same ports), each call with its own CallTimeout. Auto Scaling
// registers an instance only when it launches it: after a drill, or after the agent was
// stopped and started again on the same instance, nobody else undoes the agent's own
// deregistration, and the load balancer would keep no target although Jenkins runs.
// The load balancer sends requests once the target passes its health checks. It
// returns the failures joined, each naming its group.
func (c *Client) Register(ctx context.Context, instanceID string) error {
	return c.changeMembership(ctx, instanceID, registration)
}
