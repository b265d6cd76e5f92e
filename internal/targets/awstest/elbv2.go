package awstest

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
)

func (s *Server) elbv2Locked(req request) (any, *apiError) {
	switch req.action {
	case "DeregisterTargets":
		return s.deregisterTargetsLocked(req.form)
	case "RegisterTargets":
		return s.registerTargetsLocked(req.form)
	case "DescribeTargetHealth":
		return s.describeTargetHealthLocked(req.form)
	}
	return nil, invalidAction(req.action)
}

func invalidAction(action string) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidAction", "Could not find operation " + action + " for version of this service"}
}

// targetsRequestLocked reads what RegisterTargets and DeregisterTargets share: the
// target group, which must exist, and a list of targets, which must not be empty.
func (s *Server) targetsRequestLocked(form url.Values) (*targetGroup, []targetKey, *apiError) {
	tg, apiErr := s.targetGroupParamLocked(form)
	if apiErr != nil {
		return nil, nil, apiErr
	}
	keys, apiErr := targetsParam(form)
	if apiErr != nil {
		return nil, nil, apiErr
	}
	if len(keys) == 0 {
		return nil, nil, validation("1 validation error detected: Value null at 'targets' failed to satisfy constraint: Member must not be null")
	}
	return tg, keys, nil
}

// deregisterTargetsLocked starts draining the named targets. Like ELBv2 it is idempotent:
// a target that is not registered (or registered on another port) is no error.
func (s *Server) deregisterTargetsLocked(form url.Values) (any, *apiError) {
	tg, keys, apiErr := s.targetsRequestLocked(form)
	if apiErr != nil {
		return nil, apiErr
	}
	for _, k := range keys {
		s.drainLocked(tg, k)
	}
	return nil, nil
}

// drainLocked starts draining a registered target, which is gone after the
// deregistration delay; an unregistered or draining target is left as it is.
func (s *Server) drainLocked(tg *targetGroup, k targetKey) {
	e := s.entryLocked(tg, k)
	if e == nil || e.state == StateDraining {
		return
	}
	if s.drainDelay <= 0 {
		delete(tg.targets, k)
		return
	}
	e.state = StateDraining
	e.drainingEnd = s.nowLocked().Add(s.drainDelay)
}

// registerTargetsLocked registers the named targets. Like ELBv2 it refuses the whole
// call, registering none, when one target is no running instance it knows; a target
// that is registered already is left as it is (healthy stays healthy, no health check
// starts over), and a draining one is registered again. A new registration starts
// initial and goes healthy once it passes its health checks (SetHealthCheck); without
// health checks it is healthy at once.
func (s *Server) registerTargetsLocked(form url.Values) (any, *apiError) {
	tg, keys, apiErr := s.targetsRequestLocked(form)
	if apiErr != nil {
		return nil, apiErr
	}
	for _, k := range keys {
		state, known := s.instances[k.id]
		if !known {
			return nil, invalidTarget("The specified target does not exist, is not in the same VPC as the target group, or has an unsupported instance type")
		}
		if state != "running" {
			return nil, invalidTarget(fmt.Sprintf("The following targets are not in a running state and can not be registered: '%s'", k.id))
		}
	}
	for _, k := range keys {
		if e := s.entryLocked(tg, k); e != nil && e.state != StateDraining {
			continue
		}
		tg.targets[k] = s.newTargetLocked()
	}
	return nil, nil
}

func invalidTarget(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidTarget", msg}
}

type targetHealthDescription struct {
	Target struct {
		ID   string `xml:"Id"`
		Port int32  `xml:"Port"`
	} `xml:"Target"`
	HealthCheckPort string `xml:"HealthCheckPort"`
	TargetHealth    struct {
		State       string `xml:"State"`
		Reason      string `xml:"Reason,omitempty"`
		Description string `xml:"Description,omitempty"`
	} `xml:"TargetHealth"`
}

type describeTargetHealthResult struct {
	TargetHealthDescriptions []targetHealthDescription `xml:"TargetHealthDescriptions>member"`
}

// describeTargetHealthLocked lists the registered targets, or the named ones; a named
// target that is not registered shows as unused, Target.NotRegistered.
func (s *Server) describeTargetHealthLocked(form url.Values) (any, *apiError) {
	tg, apiErr := s.targetGroupParamLocked(form)
	if apiErr != nil {
		return nil, apiErr
	}
	keys, apiErr := targetsParam(form)
	if apiErr != nil {
		return nil, apiErr
	}
	if len(keys) == 0 {
		for k := range tg.targets {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b targetKey) int {
			return cmp.Or(cmp.Compare(a.id, b.id), cmp.Compare(a.port, b.port))
		})
	}
	var out describeTargetHealthResult
	for _, k := range keys {
		state := StateUnused
		if e := s.entryLocked(tg, k); e != nil {
			state = e.state
		} else if _, named := form["Targets.member.1.Id"]; !named {
			continue // gone after draining while listing all
		}
		var d targetHealthDescription
		d.Target.ID, d.Target.Port = k.id, k.port
		d.HealthCheckPort = strconv.Itoa(int(k.port))
		d.TargetHealth.State = state
		d.TargetHealth.Reason, d.TargetHealth.Description = healthReason(state)
		out.TargetHealthDescriptions = append(out.TargetHealthDescriptions, d)
	}
	return &out, nil
}

// healthReason gives the reason code and text ELBv2 shows with a state.
func healthReason(state string) (string, string) {
	switch state {
	case StateDraining:
		return "Target.DeregistrationInProgress", "Target deregistration is in progress"
	case StateUnused:
		return "Target.NotRegistered", "Target is not registered to the target group"
	case "unhealthy":
		return "Target.FailedHealthChecks", "Health checks failed"
	case "initial":
		return "Elb.RegistrationInProgress", "Target registration is in progress"
	}
	return "", ""
}

func (s *Server) targetGroupParamLocked(form url.Values) (*targetGroup, *apiError) {
	arn := form.Get("TargetGroupArn")
	if arn == "" {
		return nil, validation("1 validation error detected: Value null at 'targetGroupArn' failed to satisfy constraint: Member must not be null")
	}
	tg, ok := s.targetGroups[arn]
	if !ok {
		return nil, &apiError{http.StatusBadRequest, "TargetGroupNotFound", "One or more target groups not found"}
	}
	return tg, nil
}

// targetsParam reads Targets.member.N.Id / .Port; a target without a port is on the
// group's port.
func targetsParam(form url.Values) ([]targetKey, *apiError) {
	var keys []targetKey
	for i := 1; ; i++ {
		p := "Targets.member." + strconv.Itoa(i)
		id, hasID := form[p+".Id"]
		_, hasPort := form[p+".Port"]
		if !hasID && !hasPort {
			return keys, nil
		}
		if !hasID || id[0] == "" {
			return nil, validation("1 validation error detected: Value null at 'targets.%d.member.id' failed to satisfy constraint: Member must not be null", i)
		}
		var port int32
		if hasPort {
			n, err := strconv.ParseInt(form.Get(p+".Port"), 10, 32)
			if err != nil || n < 1 || n > 65535 {
				return nil, validation("1 validation error detected: Value '%s' at 'targets.%d.member.port' failed to satisfy constraint: Member must have value between 1 and 65535", form.Get(p+".Port"), i)
			}
			port = int32(n)
		}
		keys = append(keys, targetKey{id[0], portOrDefault(port)})
	}
}
