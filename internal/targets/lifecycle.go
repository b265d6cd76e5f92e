package targets

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
)

// noActiveAction starts Auto Scaling's answer when no lifecycle action waits for the
// instance: it was completed already, timed out, or none was started.
const noActiveAction = "No active Lifecycle Action found"

// CompleteLifecycle tells Auto Scaling to go on terminating the instance (CONTINUE) on
// the configured termination hook. Without a hook it does nothing; when no action is
// pending it succeeds, so that repeating the plan after a restart is harmless.
func (c *Client) CompleteLifecycle(ctx context.Context, instanceID string) error {
	if c.hook == "" {
		return nil
	}
	if instanceID == "" {
		return errors.New("complete lifecycle action: the instance id is empty")
	}
	asg := c.AutoScalingGroup()
	if asg == "" {
		return fmt.Errorf("complete lifecycle action %s: the instance's Auto Scaling group is unknown (discovery failed or it is in none); clear lifecycle_hook or check autoscaling:DescribeAutoScalingInstances", c.hook)
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	_, err := c.asg.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName:  aws.String(asg),
		LifecycleHookName:     aws.String(c.hook),
		InstanceId:            aws.String(instanceID),
		LifecycleActionResult: aws.String("CONTINUE"),
	})
	switch {
	case err == nil:
		c.log.Info("lifecycle action completed", "auto_scaling_group", asg, "hook", c.hook, "instance", instanceID)
		return nil
	case isNoActiveAction(err):
		c.log.Info("no lifecycle action pending; nothing to complete", "auto_scaling_group", asg, "hook", c.hook, "instance", instanceID)
		return nil
	}
	return fmt.Errorf("complete lifecycle action %s of %s: %w", c.hook, asg, explain(err, "autoscaling:CompleteLifecycleAction", c.groupResource(asg)))
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
