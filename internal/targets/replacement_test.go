package targets

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// clock is a clock a test moves by hand, for the double.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock(srv *awstest.Server) *clock {
	c := &clock{now: time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)}
	srv.SetClock(c.Now)
	return c
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// single is the project's group: one controller, desired capacity 1, attached to tgB
// and tgC, with tgA configured only.
func single(t testing.TB) *awstest.Server {
	srv := newServer(t)
	srv.AddTargetGroup(tgA, awstest.Target{ID: instanceID})
	srv.AddAutoScalingGroup(asgName, []string{instanceID}, []string{tgB, tgC}, hook)
	return srv
}

// replacements lists the instances of the group other than the controller.
func replacements(srv *awstest.Server) []string {
	var out []string
	for id := range srv.GroupInstances(asgName) {
		if id != instanceID {
			out = append(out, id)
		}
	}
	return out
}

func fast(opts Options) Options {
	opts.PollInterval = 10 * time.Millisecond
	return opts
}

// The group's deregistration lands after DetachInstances answered (and after a first
// look at the target groups): RequestReplacement returns only once it has seen it in
// every one of the group's target groups and registered the instance again.
func TestRequestReplacementDetachesAndStaysRegistered(t *testing.T) {
	srv := single(t)
	clk := newClock(srv)
	srv.SetDetachLag(2 * time.Second)
	srv.SetDeregistrationDelay(15 * time.Second)
	c := newClient(t, srv, fast(Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}, Discover: true, LifecycleHook: hook}))
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
		t.Fatalf("Discover: %v", err)
	}

	type result struct {
		requested bool
		err       error
	}
	done := make(chan result, 1)
	go func() {
		requested, err := c.RequestReplacement(t.Context(), instance.Identity{InstanceID: instanceID})
		done <- result{requested, err}
	}()
	testenv.Eventually(t, "a look at the instance while it is Detaching", func() bool {
		return len(srv.CallsOf("DescribeAutoScalingInstances")) >= 2 // Discover's, then the look
	})
	select {
	case r := <-done:
		t.Fatalf("RequestReplacement returned (%v, %v) before the group deregistered the instance", r.requested, r.err)
	default:
	}
	clk.Add(2 * time.Second) // the group's deregistration lands
	r := <-done
	if r.err != nil || !r.requested {
		t.Fatalf("RequestReplacement = %v, %v; want true, nil", r.requested, r.err)
	}

	calls := srv.CallsOf("DetachInstances")
	if len(calls) != 1 {
		t.Fatalf("DetachInstances calls %+v, want one", calls)
	}
	for k, want := range map[string]string{"AutoScalingGroupName": asgName, "InstanceIds.member.1": instanceID, "ShouldDecrementDesiredCapacity": "false"} {
		if got := calls[0].Params.Get(k); got != want {
			t.Errorf("DetachInstances %s = %q, want %q", k, got, want)
		}
	}
	if got := srv.GroupInstances(asgName)[instanceID]; got != "Detaching" {
		t.Errorf("controller is %q in the group, want Detaching", got)
	}
	if reps := replacements(srv); len(reps) != 1 || srv.DesiredCapacity(asgName) != 1 {
		t.Errorf("replacements %v with desired capacity %d, want one and 1", reps, srv.DesiredCapacity(asgName))
	}
	for _, arn := range []string{tgA, tgB, tgC} {
		if got := srv.TargetState(arn, instanceID); got != awstest.StateHealthy {
			t.Errorf("%s: target %s, want registered again (healthy: the double runs no health checks here)", arn, got)
		}
	}
	// The group's target groups were registered in again after its deregistration.
	var again []string
	for _, call := range srv.CallsOf("RegisterTargets") {
		again = append(again, call.Params.Get("TargetGroupArn"))
	}
	slices.Sort(again)
	if want := []string{tgB, tgC}; !slices.Equal(again, want) {
		t.Errorf("RegisterTargets went to %v, want %v", again, want)
	}
	// It stays so once the group finished the detach.
	clk.Add(15 * time.Second)
	if _, in := srv.GroupInstances(asgName)[instanceID]; in {
		t.Fatal("controller still in the group after the deregistration delay")
	}
	for _, arn := range []string{tgA, tgB, tgC} {
		if got := srv.TargetState(arn, instanceID); got != awstest.StateHealthy {
			t.Errorf("%s: target %s once the detach ended, want healthy", arn, got)
		}
	}

	// A second call (an agent restarted mid-plan) launches nothing more.
	requested, err := c.RequestReplacement(t.Context(), instance.Identity{InstanceID: instanceID})
	if err != nil || !requested {
		t.Fatalf("second RequestReplacement = %v, %v; want true, nil", requested, err)
	}
	if reps := replacements(srv); len(reps) != 1 {
		t.Errorf("replacements %v after a second request, want still one", reps)
	}
	if calls := srv.CallsOf("DetachInstances"); len(calls) != 2 || calls[1].Code != "ValidationError" {
		t.Errorf("second DetachInstances answered %+v, want ValidationError", calls[len(calls)-1])
	}

	// The handover's Deregister covers the group's target groups too.
	if err := c.Deregister(t.Context(), instanceID); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	for _, arn := range []string{tgA, tgB, tgC} {
		if got := srv.TargetState(arn, instanceID); got != awstest.StateDraining {
			t.Errorf("%s: target %s after Deregister, want draining", arn, got)
		}
	}
}

// With health checks, the instance registered again is initial and healthy once it
// answers; the replacement, registered by the group, stays unhealthy until its Jenkins
// answers.
func TestRequestReplacementWithHealthChecks(t *testing.T) {
	srv := single(t)
	var mu sync.Mutex
	answering := map[string]bool{instanceID: true}
	srv.SetHealthCheck(awstest.HealthCheck{Answers: func(id string, _ int32) bool {
		mu.Lock()
		defer mu.Unlock()
		return answering[id]
	}})
	srv.SetDeregistrationDelay(time.Second)
	launched := make(chan string, 1)
	srv.OnLaunch(func(id string) { launched <- id })
	c := newClient(t, srv, fast(Options{Discover: true}))
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID, AutoScalingGroup: asgName}); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if requested, err := c.RequestReplacement(t.Context(), instance.Identity{InstanceID: instanceID, AutoScalingGroup: asgName}); err != nil || !requested {
		t.Fatalf("RequestReplacement = %v, %v", requested, err)
	}
	replacement := <-launched
	for _, arn := range []string{tgB, tgC} {
		if got := srv.TargetState(arn, instanceID); got != awstest.StateInitial {
			t.Errorf("%s: controller %s after RequestReplacement, want initial (registered again)", arn, got)
		}
		if got := srv.TargetState(arn, replacement); got != awstest.StateInitial {
			t.Errorf("%s: replacement %s, want initial", arn, got)
		}
	}
	srv.CheckHealth()
	srv.CheckHealth()
	for _, arn := range []string{tgB, tgC} {
		if got := srv.TargetState(arn, instanceID); got != awstest.StateHealthy {
			t.Errorf("%s: controller %s after two checks, want healthy", arn, got)
		}
		if got := srv.TargetState(arn, replacement); got != awstest.StateUnhealthy {
			t.Errorf("%s: replacement %s while its Jenkins does not answer, want unhealthy", arn, got)
		}
	}
}

func TestRequestReplacementOutsideAnyGroup(t *testing.T) {
	srv := newServer(t)
	srv.AddTargetGroup(tgA, awstest.Target{ID: instanceID})
	c := newClient(t, srv, fast(Options{TargetGroups: []TargetGroup{{ARN: tgA}}}))
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	requested, err := c.RequestReplacement(t.Context(), instance.Identity{InstanceID: instanceID})
	if err != nil || requested {
		t.Fatalf("RequestReplacement = %v, %v; want false, nil", requested, err)
	}
	if n := len(srv.CallsOf("DetachInstances")) + len(srv.CallsOf("RegisterTargets")); n != 0 {
		t.Errorf("%d detach or register calls for an instance in no group", n)
	}
}

// Without discovery the group's target groups are read at the request, registered in
// again and then covered by Deregister.
func TestRequestReplacementWithoutDiscovery(t *testing.T) {
	srv := single(t)
	c := newClient(t, srv, fast(Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}}))
	id := instance.Identity{InstanceID: instanceID, AutoScalingGroup: asgName}
	if err := c.Discover(t.Context(), id); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if requested, err := c.RequestReplacement(t.Context(), id); err != nil || !requested {
		t.Fatalf("RequestReplacement = %v, %v", requested, err)
	}
	if got, want := c.TargetGroups(), []TargetGroup{{tgA, 8080}, {tgB, 0}, {tgC, 0}}; !slices.Equal(got, want) {
		t.Errorf("TargetGroups() = %v, want %v", got, want)
	}
	for _, arn := range []string{tgA, tgB, tgC} {
		if got := srv.TargetState(arn, instanceID); got != awstest.StateHealthy {
			t.Errorf("%s: target %s, want registered again", arn, got)
		}
	}
}

// Where the group is terminating the instance itself, or someone detached it while
// decrementing the desired capacity, the answer says whether a replacement comes.
func TestRequestReplacementWhereTheGroupDecided(t *testing.T) {
	t.Run("terminating", func(t *testing.T) {
		srv := single(t)
		srv.PendLifecycleAction(asgName, hook, instanceID)
		c := newClient(t, srv, fast(Options{Discover: true, LifecycleHook: hook}))
		if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
			t.Fatalf("Discover: %v", err)
		}
		// The group replaces the instance only after it is gone, and its hook waits for
		// this one: no replacement under way now, a lifecycle action to complete.
		requested, err := c.RequestReplacement(t.Context(), instance.Identity{InstanceID: instanceID})
		if err != nil || requested {
			t.Fatalf("RequestReplacement = %v, %v; want false (the replacement comes after the termination), nil", requested, err)
		}
		if n := len(srv.CallsOf("RegisterTargets")); n != 0 || len(replacements(srv)) != 0 {
			t.Errorf("%d RegisterTargets calls and replacements %v for an instance the group terminates", n, replacements(srv))
		}
	})
	t.Run("detached with a decrement", func(t *testing.T) {
		srv := single(t)
		srv.SetDeregistrationDelay(0)
		c := newClient(t, srv, fast(Options{Discover: true}))
		if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
			t.Fatalf("Discover: %v", err)
		}
		// An operator detaches it, shrinking the group.
		if err := c.asg.detachInstances(t.Context(), asgName, true, instanceID); err != nil {
			t.Fatal(err)
		}
		requested, err := c.RequestReplacement(t.Context(), instance.Identity{InstanceID: instanceID})
		if err != nil || requested {
			t.Fatalf("RequestReplacement = %v, %v; want false (desired capacity 0), nil", requested, err)
		}
		for _, arn := range []string{tgB, tgC} {
			if got := srv.TargetState(arn, instanceID); got != awstest.StateHealthy {
				t.Errorf("%s: target %s, want registered again: Jenkins serves until the handover", arn, got)
			}
		}
	})
	t.Run("pending", func(t *testing.T) {
		srv := single(t)
		newClock(srv) // the launch never ends
		srv.SetLaunchDelay(time.Minute)
		c := newClient(t, srv, fast(Options{Discover: true}))
		if err := c.asg.detachInstances(t.Context(), asgName, false, instanceID); err != nil {
			t.Fatal(err)
		}
		pending := replacements(srv)[0]
		requested, err := c.RequestReplacement(t.Context(), instance.Identity{InstanceID: pending, AutoScalingGroup: asgName})
		if requested || err == nil || !strings.Contains(err.Error(), "the instance is Pending there, and only InService or Standby instances can be detached") {
			t.Fatalf("RequestReplacement of a Pending instance = %v, %v; want false and the state named", requested, err)
		}
		if n := len(replacements(srv)); n != 1 {
			t.Errorf("%d instances besides the controller, want the one Pending", n)
		}
	})
}

func TestRequestReplacementDeniedNamesTheGrant(t *testing.T) {
	srv := single(t)
	srv.Deny("DetachInstances")
	c := newClient(t, srv, fast(Options{Discover: true}))
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	requested, err := c.RequestReplacement(t.Context(), instance.Identity{InstanceID: instanceID})
	want := "add autoscaling:DetachInstances on " + awstest.GroupARN(region, asgName) + " to the instance role"
	if requested || err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("RequestReplacement = %v, %v; want false and %q", requested, err, want)
	}
	if len(replacements(srv)) != 0 || srv.GroupInstances(asgName)[instanceID] != "InService" {
		t.Errorf("a denied request changed the group: %v", srv.GroupInstances(asgName))
	}
}

// A Deregister (the handover) that starts while RequestReplacement waits for the group's
// deregistration ends the wait: the instance is never registered again after it.
func TestDeregisterEndsTheRegistrationAfterADetach(t *testing.T) {
	srv := single(t)
	clk := newClock(srv)
	srv.SetDetachLag(2 * time.Second)
	c := newClient(t, srv, fast(Options{Discover: true}))
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	type result struct {
		requested bool
		err       error
	}
	done := make(chan result, 1)
	go func() {
		requested, err := c.RequestReplacement(t.Context(), instance.Identity{InstanceID: instanceID})
		done <- result{requested, err}
	}()
	testenv.Eventually(t, "a look at the instance while it is Detaching", func() bool {
		return len(srv.CallsOf("DescribeAutoScalingInstances")) >= 2
	})
	if err := c.Deregister(t.Context(), instanceID); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	clk.Add(2 * time.Second)
	r := <-done
	if !r.requested || !errors.Is(r.err, errSuperseded) {
		t.Fatalf("RequestReplacement = %v, %v; want true and the deregistration named", r.requested, r.err)
	}
	if n := len(srv.CallsOf("RegisterTargets")); n != 0 {
		t.Errorf("%d RegisterTargets calls, want none after the deregistration", n)
	}
	for _, arn := range []string{tgB, tgC} {
		if got := srv.TargetState(arn, instanceID); got != awstest.StateDraining {
			t.Errorf("%s: target %s, want draining", arn, got)
		}
	}
}

// A deregistration by someone else that lands between RegisterTargets and the look at
// the target's health is undone: Register registers again.
func TestRegisterRegistersAgainWhenADeregistrationLandsAfterIt(t *testing.T) {
	srv := world(t)
	c := newClient(t, srv, fast(Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}}))
	release := srv.Hold("DescribeTargetHealth")
	defer release()
	done := make(chan error, 1)
	go func() { done <- c.Register(context.Background(), instanceID) }()
	testenv.Eventually(t, "a look at the target's health", func() bool {
		return len(srv.CallsOf("DescribeTargetHealth")) == 1
	})
	// The group's deregistration, not the agent's.
	if err := (&Client{elb: c.elb, log: c.log, callTimeout: time.Minute}).changeIn(t.Context(), instanceID, TargetGroup{ARN: tgA, Port: 8080}, deregistration); err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("Register: %v", err)
	}
	if n := len(srv.CallsOf("RegisterTargets")); n != 2 {
		t.Errorf("%d RegisterTargets calls, want 2 (once more after seeing it draining)", n)
	}
	if got := srv.TargetState(tgA, instanceID); got != awstest.StateHealthy {
		t.Errorf("target %s, want registered", got)
	}
}

func TestRegisterNamesTheMissingDescribeTargetHealthGrant(t *testing.T) {
	srv := world(t)
	srv.Deny("DescribeTargetHealth")
	c := newClient(t, srv, fast(Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}}))
	err := c.Register(t.Context(), instanceID)
	if err == nil || !strings.Contains(err.Error(), "add elasticloadbalancing:DescribeTargetHealth on * to the instance role") {
		t.Fatalf("Register error = %v, want the grant named", err)
	}
}

// BenchmarkRequestReplacement measures RequestReplacement against the double, the
// group's deregistration landing at once: how long until DetachInstances reached the
// group (the replacement's launch starts there), and until the call returned with the
// instance registered again in the configured and the group's two target groups.
func BenchmarkRequestReplacement(b *testing.B) {
	srv := newServer(b)
	srv.SetDeregistrationDelay(0)
	c := newClient(b, srv, Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}, PollInterval: 10 * time.Millisecond})
	id := instance.Identity{InstanceID: instanceID, AutoScalingGroup: asgName}
	var toDetach time.Duration
	for b.Loop() {
		b.StopTimer()
		srv.AddTargetGroup(tgA, awstest.Target{ID: instanceID})
		srv.AddAutoScalingGroup(asgName, []string{instanceID}, []string{tgB, tgC}, "")
		before := len(srv.Calls())
		b.StartTimer()
		start := time.Now()
		if requested, err := c.RequestReplacement(b.Context(), id); err != nil || !requested {
			b.Fatalf("RequestReplacement = %v, %v", requested, err)
		}
		b.StopTimer()
		for _, call := range srv.Calls()[before:] {
			if call.Action == "DetachInstances" {
				toDetach += call.At.Sub(start)
			}
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	b.ReportMetric(float64(toDetach.Microseconds())/1000/float64(b.N), "ms-to-detach/op")
}
