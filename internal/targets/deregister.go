package targets

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

// deregistration takes the instance out of a group. ELBv2 answers success for a target
// that is not registered, so repeating it (a plan resumed after a restart) is harmless.
var deregistration = membershipChange{
	verb:   "deregister",
	prep:   "from",
	noun:   "deregistration",
	done:   "deregistered from target group",
	action: "elasticloadbalancing:DeregisterTargets",
	call: func(ctx context.Context, elb *elbv2.Client, arn string, target elbtypes.TargetDescription) error {
		_, err := elb.DeregisterTargets(ctx, &elbv2.DeregisterTargetsInput{
			TargetGroupArn: aws.String(arn),
			Targets:        []elbtypes.TargetDescription{target},
		})
		return err
	},
}

// Deregister takes the instance out of every cached target group at once, each call
// with its own CallTimeout, so that one slow or missing group delays no other. The
// load balancer then drains the target: requests in flight finish, new ones go
// elsewhere. It returns the failures joined, each naming its group.
func (c *Client) Deregister(ctx context.Context, instanceID string) error {
	return c.changeMembership(ctx, instanceID, deregistration)
}
