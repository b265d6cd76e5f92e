package targets

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

// Deregister takes the instance out of every cached target group at once, each call
// with its own CallTimeout, so that one slow or missing group delays no other. The
// load balancer then drains the target: requests in flight finish, new ones go
// elsewhere. It returns the failures joined, each naming its group.
func (c *Client) Deregister(ctx context.Context, instanceID string) error {
	if instanceID == "" {
		return errors.New("deregister: the instance id is empty")
	}
	groups := c.TargetGroups()
	if len(groups) == 0 {
		c.log.Info("no target groups to deregister from", "instance", instanceID)
		return nil
	}
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, tg := range groups {
		wg.Go(func() { errs[i] = c.deregisterFrom(ctx, instanceID, tg) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Client) deregisterFrom(ctx context.Context, instanceID string, tg TargetGroup) error {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	target := elbtypes.TargetDescription{Id: aws.String(instanceID)}
	if tg.Port != 0 {
		target.Port = aws.Int32(tg.Port)
	}
	start := time.Now()
	_, err := c.elb.DeregisterTargets(ctx, &elbv2.DeregisterTargetsInput{
		TargetGroupArn: aws.String(tg.ARN),
		Targets:        []elbtypes.TargetDescription{target},
	})
	took := time.Since(start)
	if err == nil {
		c.log.Info("deregistered from target group", "instance", instanceID, "target_group", tg.ARN, "port", tg.Port, "took", took)
		return nil
	}
	if apiCode(err) == codeTargetGroupNotFound {
		err = fmt.Errorf("deregister %s: target group %s not found (deleted, or in another account or region); fix or remove it in target_groups: %w", instanceID, tg.ARN, err)
	} else {
		err = fmt.Errorf("deregister %s from target group %s: %w", instanceID, tg.ARN, explain(err, "elasticloadbalancing:DeregisterTargets", tg.ARN))
	}
	c.log.Warn("deregistration failed", "instance", instanceID, "target_group", tg.ARN, "took", took, "err", err)
	return err
}
