package targets

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// goneStates are the EC2 states of an instance that runs no Jenkins any more. stopping
// is not one: its operating system may still be flushing writes.
var goneStates = map[string]bool{"shutting-down": true, "terminated": true, "stopped": true}

// InstanceTerminated reports whether EC2 says the instance is gone or going (shutting
// down, terminated, stopped, or unknown to EC2), so that a lease it holds can be taken
// over without waiting for it to expire.
func (c *Client) InstanceTerminated(ctx context.Context, instanceID string) (bool, error) {
	if instanceID == "" {
		return false, errors.New("describe instance: the instance id is empty")
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	out, err := c.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{instanceID}})
	if apiCode(err) == codeInstanceNotFound {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("describe instance %s: %w", instanceID, explain(err, "ec2:DescribeInstances", "*"))
	}
	for _, r := range out.Reservations {
		for _, inst := range r.Instances {
			if aws.ToString(inst.InstanceId) != instanceID || inst.State == nil {
				continue
			}
			return goneStates[string(inst.State.Name)], nil
		}
	}
	// Terminated instances drop out of DescribeInstances after a while.
	return true, nil
}
