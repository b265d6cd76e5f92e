package awstest

import "slices"

// TerminateInstance ends an instance as EC2 does when it reclaims a Spot instance at its
// termination time: the instance is terminated (RegisterTargets refuses it from then on),
// its targets drain in every target group, and it leaves every Auto Scaling group it is
// in, whatever its lifecycle state there (a pending lifecycle action ends with it, as the
// instance it waited for is gone). A group that the instance leaves below its desired
// capacity launches replacements at once, which go InService after the launch delay
// (SetLaunchDelay), registered and health-checked, and OnLaunch hears of each: the order
// of a group that replaces an instance only once it is gone. An instance detached
// earlier (DetachInstances) has had its replacement already and launches none. An
// unknown instance becomes a terminated one.
func (s *Server) TerminateInstance(id string) {
	defer s.lock()()
	s.instances[id] = "terminated"
	for _, arn := range s.targetGroupARNsLocked() {
		tg := s.targetGroups[arn]
		for k := range tg.targets {
			if k.id == id {
				s.drainLocked(tg, k)
			}
		}
	}
	for _, name := range s.groupNamesLocked() {
		g := s.groups[name]
		if !slices.Contains(g.instances, id) {
			continue
		}
		detached := g.states[id] == "Detaching"
		g.instances = slices.DeleteFunc(g.instances, func(x string) bool { return x == id })
		delete(g.states, id)
		delete(g.pending, id)
		if detached {
			continue
		}
		for n := len(g.instances); n < g.desired; n++ {
			s.launchLocked(g)
		}
	}
}

// targetGroupARNsLocked is every target group's ARN, sorted, so that what depends on the
// order of map iteration does not.
func (s *Server) targetGroupARNsLocked() []string {
	arns := make([]string, 0, len(s.targetGroups))
	for arn := range s.targetGroups {
		arns = append(arns, arn)
	}
	slices.Sort(arns)
	return arns
}
