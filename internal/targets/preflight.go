package targets

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

// Check is one row of the preflight table.
type Check struct {
	Name   string // the IAM action, and the resource when it has one
	OK     bool
	Detail string // what the call showed
	Fix    string // what to change when it failed
}

// probePort is the port DeregisterTargets is proven with: the instance is not
// registered on it, so the call is authorized and validated but changes nothing.
const probePort int32 = 1

// probeInstanceID is a well-formed instance id that no instance has: RegisterTargets
// is proven with it.
const probeInstanceID = "i-00000000000000000"

// probeToken is a lifecycle action token that matches no action: Auto Scaling checks
// the permission, then answers ValidationError, and no action is completed.
const probeToken = "00000000-0000-0000-0000-000000000000"

// CheckPermissions proves, with calls that change nothing, each permission that
// Discover, Deregister, Register, CompleteLifecycle, Heartbeat and (with
// Options.RequestReplacement) RequestReplacement will need for this instance: one row
// per action and target group. The cache of Discover is left as it is.
func (c *Client) CheckPermissions(ctx context.Context, id instance.Identity) []Check {
	var rows []Check
	asg := id.AutoScalingGroup
	var discovered []string
	var asgARN string

	if (c.discover || c.hook != "" || c.replace) && asg == "" {
		row := Check{Name: "autoscaling:DescribeAutoScalingInstances"}
		cctx, cancel := c.callContext(ctx)
		out, err := c.asg.describeAutoScalingInstances(cctx, id.InstanceID)
		cancel()
		if err != nil {
			row = failed(row, err, "autoscaling:DescribeAutoScalingInstances", "*", "Auto Scaling")
		} else {
			for _, inst := range out {
				if inst.InstanceID == id.InstanceID {
					asg = inst.AutoScalingGroup
				}
			}
			row.OK, row.Detail = true, "instance is in no Auto Scaling group"
			if asg != "" {
				row.Detail = "instance is in Auto Scaling group " + asg
			}
		}
		rows = append(rows, row)
	}

	if c.discover && asg != "" {
		row := Check{Name: "autoscaling:DescribeAutoScalingGroups"}
		cctx, cancel := c.callContext(ctx)
		out, err := c.asg.describeAutoScalingGroups(cctx, asg)
		cancel()
		if err != nil {
			row = failed(row, err, "autoscaling:DescribeAutoScalingGroups", "*", "Auto Scaling")
		} else {
			row.OK, row.Detail = true, "Auto Scaling group "+asg+" not found"
			for _, g := range out {
				if g.Name == asg {
					asgARN = g.ARN
					discovered = attachedTargetGroups(g)
					row.Detail = fmt.Sprintf("group %s has %d target group(s)", asg, len(discovered))
				}
			}
		}
		rows = append(rows, row)
	}

	for _, tg := range mergeTargetGroups(c.configured, discovered) {
		rows = append(rows, c.checkTargetHealth(ctx, tg, id.InstanceID), c.checkRegister(ctx, tg), c.checkDeregister(ctx, tg, id.InstanceID))
	}

	if c.hook != "" {
		rows = append(rows, c.checkLifecycle(ctx, asg, asgARN))
		if asg != "" {
			rows = append(rows, c.checkHook(ctx, asg), c.checkHeartbeat(ctx, asg, asgARN))
		}
	}
	if c.replace && asg != "" {
		rows = append(rows, c.checkDetach(ctx, asg, asgARN))
	}
	return rows
}

// CheckInstanceState proves ec2:DescribeInstances, needed only to take a lease over from
// a terminated holder, by describing this instance.
func (c *Client) CheckInstanceState(ctx context.Context, id instance.Identity) Check {
	row := Check{Name: "ec2:DescribeInstances"}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	out, err := c.ec2.describeInstances(ctx, id.InstanceID)
	if err != nil {
		return failed(row, err, "ec2:DescribeInstances", "*", "EC2")
	}
	row.OK, row.Detail = true, "instance "+id.InstanceID+" not listed"
	for _, inst := range out {
		if inst.ID == id.InstanceID && inst.State != "" {
			row.Detail = "instance " + id.InstanceID + " is " + inst.State
		}
	}
	return row
}

// checkTargetHealth proves DescribeTargetHealth and says where the instance is
// registered in the group.
func (c *Client) checkTargetHealth(ctx context.Context, tg TargetGroup, instanceID string) Check {
	const action = "elasticloadbalancing:DescribeTargetHealth"
	row := Check{Name: action + " " + tg.ARN}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	out, err := c.elb.describeTargetHealth(ctx, tg.ARN)
	if err != nil {
		// Describe actions of ELBv2 take no resource-level permission.
		return failed(row, err, action, "*", "Elastic Load Balancing")
	}
	var shown []string
	for _, d := range out {
		if d.ID != instanceID {
			continue
		}
		state := d.State
		if state == "" {
			state = "unknown"
		}
		shown = append(shown, fmt.Sprintf("port %d %s", d.Port, state))
	}
	row.OK, row.Detail = true, "instance is not registered in this group"
	if len(shown) > 0 {
		row.Detail = "instance registered: " + strings.Join(shown, ", ")
	}
	return row
}

// checkRegister proves RegisterTargets without changing anything: it registers an
// instance id that cannot exist. ELBv2 authorizes the call before it validates the
// targets, so InvalidTarget ("not in a running state") shows the permission is there and
// AccessDenied that it is not, while no registration of this instance is ever added or
// revived. (Registering this instance again would be harmless only while it is healthy,
// and would race with a deregistration by the shutdown plan or by Auto Scaling.)
func (c *Client) checkRegister(ctx context.Context, tg TargetGroup) Check {
	const action = "elasticloadbalancing:RegisterTargets"
	row := Check{Name: action + " " + tg.ARN}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	err := c.elb.registerTargets(ctx, tg.ARN, targetDescription{ID: probeInstanceID})
	switch apiCode(err) {
	case codeInvalidTarget:
		row.OK, row.Detail = true, "allowed (proven with an instance id that does not exist)"
	case "":
		if err != nil {
			return failed(row, err, action, tg.ARN, "Elastic Load Balancing")
		}
		// Not expected from ELBv2; take the impossible target out again at once.
		_ = c.elb.deregisterTargets(ctx, tg.ARN, targetDescription{ID: probeInstanceID})
		row.OK, row.Detail = true, "allowed (the group accepted an instance id that does not exist; removed again)"
	default:
		return failed(row, err, action, tg.ARN, "Elastic Load Balancing")
	}
	return row
}

func (c *Client) checkDeregister(ctx context.Context, tg TargetGroup, instanceID string) Check {
	const action = "elasticloadbalancing:DeregisterTargets"
	row := Check{Name: action + " " + tg.ARN}
	port := probePort
	if tg.Port == port {
		port++
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	err := c.elb.deregisterTargets(ctx, tg.ARN, targetDescription{ID: instanceID, Port: port})
	switch apiCode(err) {
	case "":
		if err != nil {
			return failed(row, err, action, tg.ARN, "Elastic Load Balancing")
		}
		row.OK, row.Detail = true, fmt.Sprintf("allowed (proven on port %d, where the instance is not registered)", port)
	case codeInvalidTarget:
		row.Detail = "allowed, but the group refuses the instance as a target: " + apiMessage(err)
		row.Fix = "use a target group of target type instance"
	default:
		return failed(row, err, action, tg.ARN, "Elastic Load Balancing")
	}
	return row
}

func (c *Client) checkLifecycle(ctx context.Context, asg, asgARN string) Check {
	const action = "autoscaling:CompleteLifecycleAction"
	row := Check{Name: action}
	if asg == "" {
		row.Detail = "lifecycle_hook " + c.hook + " is set but the instance's Auto Scaling group is unknown"
		row.Fix = "clear lifecycle_hook, or run the instance in the Auto Scaling group that has the hook"
		return row
	}
	resource := c.probeResource(asg, asgARN)
	row.Name = action + " " + resource
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	err := c.asg.completeLifecycleAction(ctx, lifecycleAction{group: asg, hook: c.hook, token: probeToken}, "CONTINUE")
	switch {
	case err == nil || isNoActiveAction(err):
		row.OK, row.Detail = true, "allowed (proven with a token that matches no action)"
	case apiCode(err) == codeValidationError:
		row.Detail = apiMessage(err)
		row.Fix = fmt.Sprintf("make lifecycle_hook name a termination hook of %s", asg)
	default:
		return failed(row, err, action, resource, "Auto Scaling")
	}
	return row
}

// probeResource is the group's ARN as preflight found it, else its pattern.
func (c *Client) probeResource(asg, asgARN string) string {
	if asgARN != "" {
		return asgARN
	}
	return fmt.Sprintf("arn:aws:autoscaling:%s:*:autoScalingGroup:*:autoScalingGroupName/%s", c.region, asg)
}

// checkHook proves DescribeLifecycleHooks, which Discover uses to learn the hook's
// heartbeat timeout, and shows what the hook says.
func (c *Client) checkHook(ctx context.Context, asg string) Check {
	const action = "autoscaling:DescribeLifecycleHooks"
	row := Check{Name: action}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	out, err := c.asg.describeLifecycleHooks(ctx, asg, c.hook)
	if err != nil {
		// Describe actions of Auto Scaling take no resource-level permission.
		return failed(row, err, action, "*", "Auto Scaling")
	}
	for _, h := range out {
		if h.Name != c.hook {
			continue
		}
		if t := h.Transition; t != terminationTransition {
			row.Detail = fmt.Sprintf("lifecycle hook %s of %s is for %s", c.hook, asg, t)
			row.Fix = fmt.Sprintf("set lifecycle_hook to the termination hook (%s) of %s", terminationTransition, asg)
			return row
		}
		timeout := time.Duration(h.HeartbeatTimeout) * time.Second
		row.OK = true
		row.Detail = fmt.Sprintf("hook %s: heartbeat timeout %s (heartbeats every %s), default result %s",
			c.hook, timeout, heartbeatInterval(timeout), h.DefaultResult)
		return row
	}
	row.Detail = fmt.Sprintf("auto scaling group %s has no lifecycle hook %s", asg, c.hook)
	row.Fix = fmt.Sprintf("set lifecycle_hook to a termination hook of %s (aws autoscaling describe-lifecycle-hooks --auto-scaling-group-name %s)", asg, asg)
	return row
}

// checkHeartbeat proves RecordLifecycleActionHeartbeat with a token that matches no
// action: Auto Scaling checks the permission, then answers ValidationError, and no
// action is touched.
func (c *Client) checkHeartbeat(ctx context.Context, asg, asgARN string) Check {
	const action = "autoscaling:RecordLifecycleActionHeartbeat"
	resource := c.probeResource(asg, asgARN)
	row := Check{Name: action + " " + resource}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	err := c.asg.recordLifecycleActionHeartbeat(ctx, lifecycleAction{group: asg, hook: c.hook, token: probeToken})
	switch {
	case err == nil || isNoActiveAction(err):
		row.OK, row.Detail = true, "allowed (proven with a token that matches no action)"
	case apiCode(err) == codeValidationError:
		row.Detail = apiMessage(err)
		row.Fix = fmt.Sprintf("make lifecycle_hook name a termination hook of %s", asg)
	default:
		return failed(row, err, action, resource, "Auto Scaling")
	}
	return row
}

// checkDetach proves DetachInstances by detaching an instance id that cannot be in the
// group: Auto Scaling checks the permission on the group, then answers ValidationError
// ("not part of Auto Scaling group"), and nothing is detached or launched.
func (c *Client) checkDetach(ctx context.Context, asg, asgARN string) Check {
	const action = "autoscaling:DetachInstances"
	resource := c.probeResource(asg, asgARN)
	row := Check{Name: action + " " + resource}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	err := c.asg.detachInstances(ctx, asg, false, probeInstanceID)
	switch {
	case apiCode(err) == codeValidationError && strings.Contains(apiMessage(err), "not part of"):
		row.OK, row.Detail = true, "allowed (proven with an instance id that is not in the group)"
	case err == nil:
		row.OK, row.Detail = true, "allowed"
	case apiCode(err) == codeValidationError:
		row.Detail = apiMessage(err)
		row.Fix = fmt.Sprintf("run the instance in an existing Auto Scaling group (%s was refused), or turn replacement requests off", asg)
	default:
		return failed(row, err, action, resource, "Auto Scaling")
	}
	return row
}

// failed fills a row for a call that did not pass: a refused permission names the grant
// to add; anything else says what went wrong and where to look.
func failed(row Check, err error, action, resource, service string) Check {
	row.OK = false
	row.Detail = err.Error()
	switch code := apiCode(err); {
	case isAccessDenied(err):
		row.Detail = "denied: " + apiMessage(err)
		row.Fix = grantFix(action, resource)
	case code == codeTargetGroupNotFound:
		row.Fix = "fix or remove this ARN in target_groups (deleted, or in another account or region)"
	case code != "":
		row.Fix = fmt.Sprintf("%s answered %s; check the request and retry", service, code)
	default:
		row.Fix = fmt.Sprintf("check the instance's route and credentials to the %s endpoint", service)
	}
	return row
}
