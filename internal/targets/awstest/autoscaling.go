package awstest

import (
	"net/url"
	"slices"
	"sort"
	"strconv"
)

// accountID is the account every resource of the double belongs to.
const accountID = "123456789012"

func (s *Server) autoScalingLocked(req request) (any, *apiError) {
	switch req.action {
	case "DescribeAutoScalingInstances":
		return s.describeAutoScalingInstancesLocked(req.form)
	case "DescribeAutoScalingGroups":
		return s.describeAutoScalingGroupsLocked(req)
	case "CompleteLifecycleAction":
		return s.completeLifecycleActionLocked(req.form)
	}
	return nil, invalidAction(req.action)
}

type autoScalingInstanceDetails struct {
	AutoScalingGroupName string `xml:"AutoScalingGroupName"`
	InstanceID           string `xml:"InstanceId"`
	AvailabilityZone     string `xml:"AvailabilityZone"`
	LifecycleState       string `xml:"LifecycleState"`
	HealthStatus         string `xml:"HealthStatus"`
	ProtectedFromScaleIn bool   `xml:"ProtectedFromScaleIn"`
}

type describeAutoScalingInstancesResult struct {
	AutoScalingInstances []autoScalingInstanceDetails `xml:"AutoScalingInstances>member"`
}

// describeAutoScalingInstancesLocked lists the named instances that belong to a group;
// others are left out without error, as Auto Scaling does.
func (s *Server) describeAutoScalingInstancesLocked(form url.Values) (any, *apiError) {
	ids := memberStrings(form, "InstanceIds")
	var out describeAutoScalingInstancesResult
	for _, name := range s.groupNamesLocked() {
		g := s.groups[name]
		for _, id := range g.instances {
			if len(ids) > 0 && !slices.Contains(ids, id) {
				continue
			}
			out.AutoScalingInstances = append(out.AutoScalingInstances, autoScalingInstanceDetails{
				AutoScalingGroupName: name,
				InstanceID:           id,
				AvailabilityZone:     "us-east-1a",
				LifecycleState:       g.lifecycleState(id),
				HealthStatus:         "HEALTHY",
			})
		}
	}
	return &out, nil
}

type instanceSummary struct {
	InstanceID           string `xml:"InstanceId"`
	AvailabilityZone     string `xml:"AvailabilityZone"`
	LifecycleState       string `xml:"LifecycleState"`
	HealthStatus         string `xml:"HealthStatus"`
	ProtectedFromScaleIn bool   `xml:"ProtectedFromScaleIn"`
}

type autoScalingGroupXML struct {
	AutoScalingGroupName   string            `xml:"AutoScalingGroupName"`
	AutoScalingGroupARN    string            `xml:"AutoScalingGroupARN"`
	MinSize                int               `xml:"MinSize"`
	MaxSize                int               `xml:"MaxSize"`
	DesiredCapacity        int               `xml:"DesiredCapacity"`
	DefaultCooldown        int               `xml:"DefaultCooldown"`
	AvailabilityZones      []string          `xml:"AvailabilityZones>member"`
	TargetGroupARNs        []string          `xml:"TargetGroupARNs>member"`
	HealthCheckType        string            `xml:"HealthCheckType"`
	HealthCheckGracePeriod int               `xml:"HealthCheckGracePeriod"`
	Instances              []instanceSummary `xml:"Instances>member"`
	CreatedTime            string            `xml:"CreatedTime"`
	CapacityRebalance      bool              `xml:"CapacityRebalance"`
}

type describeAutoScalingGroupsResult struct {
	AutoScalingGroups []autoScalingGroupXML `xml:"AutoScalingGroups>member"`
}

// describeAutoScalingGroupsLocked lists the named groups; unknown names are left out.
func (s *Server) describeAutoScalingGroupsLocked(req request) (any, *apiError) {
	names := memberStrings(req.form, "AutoScalingGroupNames")
	region := req.region
	if region == "" {
		region = "us-east-1"
	}
	var out describeAutoScalingGroupsResult
	for _, name := range s.groupNamesLocked() {
		if len(names) > 0 && !slices.Contains(names, name) {
			continue
		}
		g := s.groups[name]
		x := autoScalingGroupXML{
			AutoScalingGroupName: name,
			AutoScalingGroupARN:  GroupARN(region, name),
			MinSize:              0,
			MaxSize:              len(g.instances) + 1,
			DesiredCapacity:      len(g.instances),
			DefaultCooldown:      300,
			AvailabilityZones:    []string{"us-east-1a"},
			TargetGroupARNs:      slices.Clone(g.tgARNs),
			HealthCheckType:      "EC2",
			CreatedTime:          "2026-01-01T00:00:00.000Z",
			CapacityRebalance:    true,
		}
		for _, id := range g.instances {
			x.Instances = append(x.Instances, instanceSummary{
				InstanceID: id, AvailabilityZone: "us-east-1a",
				LifecycleState: g.lifecycleState(id), HealthStatus: "Healthy",
			})
		}
		out.AutoScalingGroups = append(out.AutoScalingGroups, x)
	}
	return &out, nil
}

// GroupARN is the ARN the double gives an Auto Scaling group.
func GroupARN(region, name string) string {
	return "arn:aws:autoscaling:" + region + ":" + accountID + ":autoScalingGroup:0b9c5e0a-1d2e-4f60-8a7b-9c0d1e2f3a4b:autoScalingGroupName/" + name
}

// completeLifecycleActionLocked ends a pending action, found by token or by instance.
func (s *Server) completeLifecycleActionLocked(form url.Values) (any, *apiError) {
	hook, asg := form.Get("LifecycleHookName"), form.Get("AutoScalingGroupName")
	result := form.Get("LifecycleActionResult")
	token, instance := form.Get("LifecycleActionToken"), form.Get("InstanceId")
	switch {
	case hook == "":
		return nil, validation("1 validation error detected: Value null at 'lifecycleHookName' failed to satisfy constraint: Member must not be null")
	case asg == "":
		return nil, validation("1 validation error detected: Value null at 'autoScalingGroupName' failed to satisfy constraint: Member must not be null")
	case result == "":
		return nil, validation("1 validation error detected: Value null at 'lifecycleActionResult' failed to satisfy constraint: Member must not be null")
	case result != "CONTINUE" && result != "ABANDON":
		return nil, validation("Valid values for LifecycleActionResult are CONTINUE and ABANDON")
	case token == "" && instance == "":
		return nil, validation("Either LifecycleActionToken or InstanceId must be specified")
	}
	g, ok := s.groups[asg]
	if !ok {
		return nil, validation("AutoScalingGroup name not found - no such group: %s", asg)
	}
	if !slices.Contains(g.hooks, hook) {
		return nil, validation("No Lifecycle Hook found with name %s for group %s", hook, asg)
	}
	for id, a := range g.pending {
		if a.hook != hook {
			continue
		}
		if (token != "" && a.token == token) || (token == "" && id == instance) {
			delete(g.pending, id)
			g.results[id] = result
			return nil, nil
		}
	}
	if token != "" {
		return nil, validation("No active Lifecycle Action found with token %s", token)
	}
	return nil, validation("No active Lifecycle Action found with instance ID %s", instance)
}

func (g *autoScalingGroup) lifecycleState(id string) string {
	if _, ok := g.pending[id]; ok {
		return "Terminating:Wait"
	}
	if _, ok := g.results[id]; ok {
		return "Terminating:Proceed"
	}
	return "InService"
}

func (s *Server) groupNamesLocked() []string {
	names := make([]string, 0, len(s.groups))
	for n := range s.groups {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// memberStrings reads a query-protocol list: Name.member.1, Name.member.2, ...
func memberStrings(form url.Values, name string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := form[name+".member."+strconv.Itoa(i)]
		if !ok {
			return out
		}
		out = append(out, v[0])
	}
}
