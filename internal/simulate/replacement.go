package simulate

import (
	"context"
	"net/http"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/clock"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"
)

// The Auto Scaling group's side of a rehearsal: the group launches the replacement (at
// the notice, asked for by the agent, or once the interrupted instance is gone), its
// target group checks every target's Jenkins as an ALB does, and EC2 reclaims the
// interrupted instance at its termination time.

// Order is when the Auto Scaling group launches the replacement of an interrupted
// controller.
type Order string

const (
	// OrderAtNotice: the agent asks the group for the replacement at the notice
	// (interruption.request_replacement, the default); the replacement boots and waits on
	// the lease while the old controller serves in quiet-down.
	OrderAtNotice Order = "replacement at the notice"
	// OrderAfterTermination: the order without request_replacement: the group launches
	// the replacement only once EC2 has reclaimed the interrupted instance.
	OrderAfterTermination Order = "replacement after termination"
)

const (
	// defaultLaunchDelay is the group's launch of a replacement to its agent starting
	// (EC2 launch and OS boot, compressed like the budget): short enough that the
	// replacement is ready well within the rehearsal's notice window.
	defaultLaunchDelay = 8 * time.Second
	// groupReaction is how long after the notice the group starts terminating the
	// interrupted instance through its termination hook (Terminating:Wait), if it is
	// still InService in the group. AWS does not say how soon a group reacts to a Spot
	// interruption; the agent's DetachInstances must come first, or the group refuses
	// it and the replacement comes only after the termination.
	groupReaction = 2 * time.Second
	// healthInterval and the thresholds are the target group's health check, as the
	// project's CloudFormation stack sets it (GET /login every 5 s; AWS's minimums).
	healthInterval  = 5 * time.Second
	healthThreshold = 2
	// probeTimeout bounds one GET /login of a health check or of the load balancer
	// sampler: a Jenkins that does not answer within it is not reachable.
	probeTimeout = 500 * time.Millisecond
)

// setUpGroup creates the Auto Scaling group once, with instance A in it, its target
// group's health checks, and the launch of the group's instances.
func (s *sim) setUpGroup() {
	s.aws.AddAutoScalingGroup(GroupName, []string{instanceA}, []string{TargetGroupARN}, HookName)
	s.aws.SetLaunchDelay(s.opts.LaunchDelay)
	s.aws.SetHealthCheck(awstest.HealthCheck{
		Answers:            func(id string, _ int32) bool { return s.answersLogin(id) },
		Interval:           healthInterval,
		HealthyThreshold:   healthThreshold,
		UnhealthyThreshold: healthThreshold,
	})
	s.aws.OnLaunch(s.groupLaunched)
}

// answersLogin is one GET /login of the instance's Jenkins: true on 200.
func (s *sim) answersLogin(id string) bool {
	in := s.hostByID(id)
	if in == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, in.url+"/login", nil)
	if err != nil {
		return false
	}
	resp, err := s.probe.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// groupLaunched boots an agent on an instance the group launched (in a failover
// rehearsal: the replacement), with its own IMDS emulator and the shared home.
func (s *sim) groupLaunched(id string) {
	s.mu.Lock()
	ctx := s.runCtx
	s.launchedAt[id] = time.Now()
	boot := ctx != nil && ctx.Err() == nil && !s.ended && s.opts.Failover
	if boot {
		s.launches++
		s.launching.Add(1)
		defer s.launching.Done()
	}
	name := string(rune('A' + s.launches))
	s.mu.Unlock()
	if !boot {
		s.say("simulate: the Auto Scaling group launched %s; no agent boots on it in this rehearsal", id)
		return
	}
	s.say("simulate: the Auto Scaling group launched %s; it is InService and instance %s boots on it", id, name)
	in, err := s.launch(ctx, name, id, s.home)
	if err != nil {
		s.say("simulate: instance %s could not boot: %v", name, err)
		return
	}
	select {
	case s.arrivals <- in:
	default:
	}
}

// groupReacts starts terminating A through the group's termination hook, groupReaction
// after the notice, unless A has left the group's service meanwhile (detached).
func (s *sim) groupReacts(ctx context.Context, a *host) {
	if !clock.Sleep(ctx, s.groupReaction) {
		return
	}
	if st := s.aws.GroupInstances(GroupName)[a.id.InstanceID]; st != "InService" {
		return
	}
	s.aws.PendLifecycleAction(GroupName, HookName, a.id.InstanceID)
	s.say("simulate: the Auto Scaling group starts terminating %s (%s): its termination hook %s waits", a.name, a.id.InstanceID, HookName)
}

// reclaim is EC2 taking instance a back at its termination time: the instance is
// terminated in the double (its group, if it is still in one, launches the replacement
// now) and its agent ends with it.
func (s *sim) reclaim(ctx context.Context, a *host, at time.Time) {
	if !clock.Sleep(ctx, time.Until(at)) {
		return
	}
	s.say("simulate: termination time: EC2 reclaims %s (%s)", a.name, a.id.InstanceID)
	s.aws.TerminateInstance(a.id.InstanceID)
	s.cleanup(a)
}
