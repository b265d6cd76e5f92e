package targets

import (
	"context"
	"errors"
	"fmt"
)

// stateTerminated is the only EC2 state of an instance that can never write again.
// shutting-down is not: its operating system may still be stopping Jenkins and flushing
// writes. stopped is not either: a hibernated instance is stopped, and when it resumes,
// its Jenkins goes on writing from memory at once.
const stateTerminated = "terminated"

// InstanceTerminated reports whether EC2 says the instance is terminated (or no longer
// knows it: terminated instances drop out of DescribeInstances after a while), so that
// a lease it holds can be taken over without waiting for it to expire. Any other state,
// shutting-down and stopped included, is false.
func (c *Client) InstanceTerminated(ctx context.Context, instanceID string) (bool, error) {
	if instanceID == "" {
		return false, errors.New("describe instance: the instance id is empty")
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	out, err := c.ec2.describeInstances(ctx, instanceID)
	if apiCode(err) == codeInstanceNotFound {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("describe instance %s: %w", instanceID, explain(err, "ec2:DescribeInstances", "*"))
	}
	for _, inst := range out {
		if inst.ID == instanceID && inst.State != "" {
			return inst.State == stateTerminated, nil
		}
	}
	// Terminated instances drop out of DescribeInstances after a while.
	return true, nil
}
