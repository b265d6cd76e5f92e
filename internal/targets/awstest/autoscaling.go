package awstest

import (
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"time"
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
	case "RecordLifecycleActionHeartbeat":
		return s.recordLifecycleActionHeartbeatLocked(req.form)
	case "DescribeLifecycleHooks":
		return s.describeLifecycleHooksLocked(req.form)
	case "DetachInstances":
		return s.detachInstancesLocked(req.form)
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
			MinSize:              g.min,
			MaxSize:              g.max,
			DesiredCapacity:      g.desired,
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
	result := form.Get("LifecycleActionResult")
	if apiErr := requireLifecycleParams(form); apiErr != nil {
		return nil, apiErr
	}
	switch {
	case result == "":
		return nil, validation("1 validation error detected: Value null at 'lifecycleActionResult' failed to satisfy constraint: Member must not be null")
	case result != "CONTINUE" && result != "ABANDON":
		return nil, validation("Valid values for LifecycleActionResult are CONTINUE and ABANDON")
	}
	g, id, _, apiErr := s.activeActionLocked(form)
	if apiErr != nil {
		return nil, apiErr
	}
	delete(g.pending, id)
	g.results[id] = result
	return nil, nil
}

// recordLifecycleActionHeartbeatLocked restarts the heartbeat timeout of a pending
// action, found by token or by instance, within the action's global timeout.
func (s *Server) recordLifecycleActionHeartbeatLocked(form url.Values) (any, *apiError) {
	if apiErr := requireLifecycleParams(form); apiErr != nil {
		return nil, apiErr
	}
	_, _, a, apiErr := s.activeActionLocked(form)
	if apiErr != nil {
		return nil, apiErr
	}
	a.deadline = minTime(s.nowLocked().Add(a.hook.heartbeatTimeout), a.endAt)
	return nil, nil
}

// requireLifecycleParams checks what CompleteLifecycleAction and
// RecordLifecycleActionHeartbeat share: the hook, the group, and a token or an instance.
func requireLifecycleParams(form url.Values) *apiError {
	switch {
	case form.Get("LifecycleHookName") == "":
		return validation("1 validation error detected: Value null at 'lifecycleHookName' failed to satisfy constraint: Member must not be null")
	case form.Get("AutoScalingGroupName") == "":
		return validation("1 validation error detected: Value null at 'autoScalingGroupName' failed to satisfy constraint: Member must not be null")
	case form.Get("LifecycleActionToken") == "" && form.Get("InstanceId") == "":
		return validation("Either LifecycleActionToken or InstanceId must be specified")
	}
	return nil
}

// activeActionLocked finds the pending action the request names, by token or by
// instance. An action is found only once its propagation delay has passed, although
// the group shows Terminating:Wait from the start.
func (s *Server) activeActionLocked(form url.Values) (*autoScalingGroup, string, *lifecycleAction, *apiError) {
	hook, asg := form.Get("LifecycleHookName"), form.Get("AutoScalingGroupName")
	token, instance := form.Get("LifecycleActionToken"), form.Get("InstanceId")
	g, ok := s.groups[asg]
	if !ok {
		return nil, "", nil, noSuchGroup(asg)
	}
	if g.hookNamed(hook) == nil {
		return nil, "", nil, validation("No Lifecycle Hook found with name %s for group %s", hook, asg)
	}
	now := s.nowLocked()
	for id, a := range g.pending {
		if a.hook.name != hook || now.Before(a.visibleAt) {
			continue
		}
		if (token != "" && a.token == token) || (token == "" && id == instance) {
			return g, id, a, nil
		}
	}
	if token != "" {
		return nil, "", nil, validation("No active Lifecycle Action found with token %s", token)
	}
	return nil, "", nil, validation("No active Lifecycle Action found with instance ID %s", instance)
}

// expireLocked ends the actions whose heartbeat timeout or global timeout has passed,
// with their hook's default result, as Auto Scaling does.
func (s *Server) expireLocked(g *autoScalingGroup) {
	now := s.nowLocked()
	for id, a := range g.pending {
		if now.Before(a.deadline) && now.Before(a.endAt) {
			continue
		}
		delete(g.pending, id)
		g.results[id] = a.hook.defaultResult
		g.timedOut[id] = true
	}
}

type lifecycleHookXML struct {
	LifecycleHookName    string `xml:"LifecycleHookName"`
	AutoScalingGroupName string `xml:"AutoScalingGroupName"`
	LifecycleTransition  string `xml:"LifecycleTransition"`
	HeartbeatTimeout     int    `xml:"HeartbeatTimeout"`
	GlobalTimeout        int    `xml:"GlobalTimeout"`
	DefaultResult        string `xml:"DefaultResult"`
}

type describeLifecycleHooksResult struct {
	LifecycleHooks []lifecycleHookXML `xml:"LifecycleHooks>member"`
}

// describeLifecycleHooksLocked lists the group's hooks, or the named ones; names the
// group lacks are left out.
func (s *Server) describeLifecycleHooksLocked(form url.Values) (any, *apiError) {
	asg := form.Get("AutoScalingGroupName")
	if asg == "" {
		return nil, validation("1 validation error detected: Value null at 'autoScalingGroupName' failed to satisfy constraint: Member must not be null")
	}
	g, ok := s.groups[asg]
	if !ok {
		return nil, noSuchGroup(asg)
	}
	names := memberStrings(form, "LifecycleHookNames")
	var out describeLifecycleHooksResult
	for _, h := range g.hooks {
		if len(names) > 0 && !slices.Contains(names, h.name) {
			continue
		}
		out.LifecycleHooks = append(out.LifecycleHooks, lifecycleHookXML{
			LifecycleHookName:    h.name,
			AutoScalingGroupName: asg,
			LifecycleTransition:  h.transition,
			HeartbeatTimeout:     int(h.heartbeatTimeout / time.Second),
			GlobalTimeout:        int(h.globalTimeout() / time.Second),
			DefaultResult:        h.defaultResult,
		})
	}
	return &out, nil
}

type activityXML struct {
	ActivityID           string `xml:"ActivityId"`
	AutoScalingGroupName string `xml:"AutoScalingGroupName"`
	Description          string `xml:"Description"`
	Cause                string `xml:"Cause"`
	StartTime            string `xml:"StartTime"`
	StatusCode           string `xml:"StatusCode"`
	Progress             int    `xml:"Progress"`
}

type detachInstancesResult struct {
	Activities []activityXML `xml:"Activities>member"`
}

// maxDetach is how many instances one DetachInstances call may name.
const maxDetach = 20

// detachInstancesLocked removes InService or Standby instances from their group. Each
// goes Detaching; after the detach lag the group deregisters it from the group's target
// groups (it drains), and once the deregistration delay has passed it is no longer in
// the group. The instance itself keeps running. Without decrementing the desired
// capacity, the group launches one replacement per detached instance at once.
func (s *Server) detachInstancesLocked(form url.Values) (any, *apiError) {
	asg := form.Get("AutoScalingGroupName")
	if asg == "" {
		return nil, validation("1 validation error detected: Value null at 'autoScalingGroupName' failed to satisfy constraint: Member must not be null")
	}
	raw, ok := form["ShouldDecrementDesiredCapacity"]
	if !ok {
		return nil, validation("1 validation error detected: Value null at 'shouldDecrementDesiredCapacity' failed to satisfy constraint: Member must not be null")
	}
	decrement, err := strconv.ParseBool(raw[0])
	if err != nil || (raw[0] != "true" && raw[0] != "false") {
		return nil, validation("Value '%s' for parameter ShouldDecrementDesiredCapacity is invalid: expected true or false", raw[0])
	}
	ids := memberStrings(form, "InstanceIds")
	if len(ids) > maxDetach {
		return nil, validation("List exceeds the maximum number of instances to detach. Please retry your request with fewer instances.")
	}
	g, ok := s.groups[asg]
	if !ok {
		return nil, noSuchGroup(asg)
	}
	for _, id := range ids {
		if !slices.Contains(g.instances, id) {
			return nil, validation("The instance %s is not part of Auto Scaling group %s.", id, asg)
		}
		if st := g.lifecycleState(id); st != "InService" && st != "Standby" {
			return nil, validation("The instance %s is not in InService or Standby.", id)
		}
	}
	if decrement {
		if g.desired-len(ids) < g.min {
			return nil, validation("Detaching %d instance(s) would set the desired capacity of %s to %d, below its minimum size %d.", len(ids), asg, g.desired-len(ids), g.min)
		}
		g.desired -= len(ids)
	}

	now := s.nowLocked()
	var out detachInstancesResult
	for _, id := range ids {
		g.states[id] = "Detaching"
		s.scheduleLocked(s.detachLag, func() {
			for _, arn := range g.tgARNs {
				s.drainLocked(s.targetGroupLocked(arn), targetKey{id, DefaultPort})
			}
			s.scheduleLocked(s.drainDelay, func() {
				g.instances = slices.DeleteFunc(g.instances, func(x string) bool { return x == id })
				delete(g.states, id)
			})
		})
		cause := fmt.Sprintf("At %s instance %s was detached in response to a user request", now.UTC().Format(time.RFC3339), id)
		if !decrement {
			cause += ", keeping the Auto Scaling group at its desired capacity"
		} else {
			cause += ", shrinking the capacity from " + strconv.Itoa(g.desired+len(ids)) + " to " + strconv.Itoa(g.desired)
		}
		out.Activities = append(out.Activities, activityXML{
			ActivityID:           newRequestID(),
			AutoScalingGroupName: asg,
			Description:          "Detaching EC2 instance: " + id,
			Cause:                cause + ".",
			StartTime:            now.UTC().Format("2006-01-02T15:04:05.000Z"),
			StatusCode:           "InProgress",
			Progress:             50,
		})
	}
	if !decrement {
		for range ids {
			s.launchLocked(g)
		}
	}
	return &out, nil
}

// launchLocked starts a new instance in the group, Pending; after the launch delay it is
// InService and running, registered in the group's target groups (health checks decide
// when it is healthy), and OnLaunch is told.
func (s *Server) launchLocked(g *autoScalingGroup) {
	id := newInstanceID()
	g.instances = append(g.instances, id)
	g.states[id] = "Pending"
	s.instances[id] = "pending"
	s.scheduleLocked(s.launchDelay, func() {
		if g.states[id] != "Pending" {
			return
		}
		delete(g.states, id)
		s.instances[id] = "running"
		for _, arn := range g.tgARNs {
			tg := s.targetGroupLocked(arn)
			if s.entryLocked(tg, targetKey{id, DefaultPort}) == nil {
				tg.targets[targetKey{id, DefaultPort}] = s.newTargetLocked()
			}
		}
		if f := s.onLaunch; f != nil {
			s.notify = append(s.notify, func() { f(id) })
		}
	})
}

func noSuchGroup(asg string) *apiError {
	return validation("AutoScalingGroup name not found - no such group: %s", asg)
}

func newHook(name string) *lifecycleHook {
	return &lifecycleHook{
		name:             name,
		transition:       "autoscaling:EC2_INSTANCE_TERMINATING",
		heartbeatTimeout: DefaultHeartbeatTimeout,
		defaultResult:    "CONTINUE",
	}
}

func (g *autoScalingGroup) hookNamed(name string) *lifecycleHook {
	for _, h := range g.hooks {
		if h.name == name {
			return h
		}
	}
	return nil
}

func (g *autoScalingGroup) lifecycleState(id string) string {
	if _, ok := g.pending[id]; ok {
		return "Terminating:Wait"
	}
	if _, ok := g.results[id]; ok {
		return "Terminating:Proceed"
	}
	if st, ok := g.states[id]; ok {
		return st
	}
	return "InService"
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// newInstanceID returns a random instance id of the current 17-digit form.
func newInstanceID() string {
	return "i-0" + newRequestID()[:8] + newRequestID()[:8]
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
