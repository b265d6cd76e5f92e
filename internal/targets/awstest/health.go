package awstest

import (
	"time"
)

// HealthCheck is how the target groups check their targets. Without one (the default),
// the double runs no health checks: a registered target is healthy at once.
type HealthCheck struct {
	// Answers says whether the target answers its health check (for Jenkins: GET /login
	// answers 200). It is called without the server's lock held, and may be slow.
	Answers func(instanceID string, port int32) bool
	// Interval between two rounds of checks (HealthCheckIntervalSeconds); zero runs
	// rounds only when CheckHealth is called.
	Interval time.Duration
	// HealthyThreshold is how many checks in a row a target must pass to become healthy
	// (HealthyThresholdCount); 2 when zero.
	HealthyThreshold int
	// UnhealthyThreshold is how many checks in a row it must fail to become unhealthy
	// (UnhealthyThresholdCount); 2 when zero.
	UnhealthyThreshold int
}

// SetHealthCheck makes the target groups check their targets: a target registered from
// now on (by RegisterTargets, or by the group when it launches an instance) starts
// initial and is healthy once it passed HealthyThreshold checks in a row, unhealthy once
// it failed UnhealthyThreshold in a row, as ELBv2 does. Draining targets are not
// checked. With a positive Interval the rounds run on their own until Close or the next
// SetHealthCheck.
func (s *Server) SetHealthCheck(hc HealthCheck) {
	if hc.HealthyThreshold <= 0 {
		hc.HealthyThreshold = 2
	}
	if hc.UnhealthyThreshold <= 0 {
		hc.UnhealthyThreshold = 2
	}
	stop := make(chan struct{})
	s.mu.Lock()
	s.health = hc
	close(s.healthStop)
	s.healthStop = stop
	s.mu.Unlock()
	if hc.Interval <= 0 || hc.Answers == nil {
		return
	}
	go func() {
		t := time.NewTicker(hc.Interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.CheckHealth()
			case <-stop:
				return
			case <-s.done:
				return
			}
		}
	}()
}

// CheckHealth runs one round of health checks now and returns when it is applied.
func (s *Server) CheckHealth() {
	type checked struct {
		tg *targetGroup
		k  targetKey
		e  *targetEntry
	}
	unlock := s.lock()
	hc := s.health
	var round []checked
	if hc.Answers != nil {
		for _, tg := range s.targetGroups {
			for k := range tg.targets {
				if e := s.entryLocked(tg, k); e != nil && e.state != StateDraining {
					round = append(round, checked{tg, k, e})
				}
			}
		}
	}
	unlock()
	if len(round) == 0 {
		return
	}

	answers := map[targetKey]bool{}
	for _, c := range round {
		if _, done := answers[c.k]; !done {
			answers[c.k] = hc.Answers(c.k.id, c.k.port)
		}
	}

	defer s.lock()()
	for _, c := range round {
		if c.tg.targets[c.k] != c.e || c.e.state == StateDraining {
			continue // deregistered or registered anew while the checks ran
		}
		if answers[c.k] {
			c.e.passed, c.e.failed = c.e.passed+1, 0
			if c.e.passed >= hc.HealthyThreshold {
				c.e.state = StateHealthy
			}
			continue
		}
		c.e.passed, c.e.failed = 0, c.e.failed+1
		if c.e.failed >= hc.UnhealthyThreshold {
			c.e.state = StateUnhealthy
		}
	}
}

// newTargetLocked is a target as ELBv2 starts it when it is registered: initial until
// its health checks decide, or healthy at once when the double runs none.
func (s *Server) newTargetLocked() *targetEntry {
	if s.health.Answers == nil {
		return &targetEntry{state: StateHealthy}
	}
	return &targetEntry{state: StateInitial}
}
