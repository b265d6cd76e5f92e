package awstest

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testASG      = "jenkins-asg"
	testHook     = "drain-jenkins"
	testInstance = "i-0123456789abcdef0"
)

// asCall sends an Auto Scaling form, signed as the SDK signs it.
func asCall(t *testing.T, srv *Server, form url.Values) (int, string) {
	t.Helper()
	form.Set("Version", VersionAutoScaling)
	return send(t, signed(t, srv, form, ServiceAutoScaling, SecretAccessKey, time.Now()))
}

func detachForm(instance, decrement string) url.Values {
	form := url.Values{"Action": {"DetachInstances"}, "AutoScalingGroupName": {testASG}, "InstanceIds.member.1": {instance}}
	if decrement != "" {
		form.Set("ShouldDecrementDesiredCapacity", decrement)
	}
	return form
}

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestDetachInstancesRefusesWhatAutoScalingRefuses(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	srv.AddAutoScalingGroup(testASG, []string{testInstance}, []string{testARN}, testHook)
	for _, tc := range []struct {
		name string
		form url.Values
		want string
	}{
		{"decrement missing", detachForm(testInstance, ""), "Value null at &#39;shouldDecrementDesiredCapacity&#39;"},
		{"decrement not a boolean", detachForm(testInstance, "maybe"), "ShouldDecrementDesiredCapacity is invalid"},
		{"not in the group", detachForm("i-0ffffffffffffffff", "false"), "The instance i-0ffffffffffffffff is not part of Auto Scaling group " + testASG + "."},
		{"no such group", func() url.Values {
			f := detachForm(testInstance, "false")
			f.Set("AutoScalingGroupName", "other")
			return f
		}(), "no such group: other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := asCall(t, srv, tc.form)
			if code != http.StatusBadRequest || !strings.Contains(body, "<Code>ValidationError</Code>") || !strings.Contains(body, tc.want) {
				t.Errorf("status %d body %s, want ValidationError %q", code, body, tc.want)
			}
		})
	}
	if got := srv.GroupInstances(testASG); len(got) != 1 || got[testInstance] != "InService" {
		t.Errorf("group instances %v after refused calls, want only %s InService", got, testInstance)
	}

	// Only InService or Standby instances can be detached.
	srv.PendLifecycleAction(testASG, testHook, testInstance)
	code, body := asCall(t, srv, detachForm(testInstance, "false"))
	if code != http.StatusBadRequest || !strings.Contains(body, "The instance "+testInstance+" is not in InService or Standby.") {
		t.Errorf("Terminating:Wait instance: status %d body %s", code, body)
	}
}

// Detaching without decrementing the desired capacity: the group deregisters the
// instance (after the detach lag), drops it once draining ended, and launches a
// replacement that goes InService after the launch delay, registered initial and healthy
// once it answers its health checks; OnLaunch hears of it.
func TestDetachInstancesLaunchesAReplacement(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	clock := newFakeClock()
	srv.SetClock(clock.Now)
	srv.SetDetachLag(2 * time.Second)
	srv.SetLaunchDelay(30 * time.Second)
	srv.SetDeregistrationDelay(15 * time.Second)
	answering := map[string]bool{}
	var answerMu sync.Mutex
	srv.SetHealthCheck(HealthCheck{Answers: func(id string, port int32) bool {
		answerMu.Lock()
		defer answerMu.Unlock()
		return answering[id] && port == DefaultPort
	}})
	launched := make(chan string, 2)
	srv.OnLaunch(func(id string) { launched <- id })
	srv.AddAutoScalingGroup(testASG, []string{testInstance}, []string{testARN}, testHook)

	code, body := asCall(t, srv, detachForm(testInstance, "false"))
	if code != http.StatusOK || !strings.Contains(body, "<DetachInstancesResult><Activities><member>") ||
		!strings.Contains(body, "<Description>Detaching EC2 instance: "+testInstance+"</Description>") ||
		!strings.Contains(body, "<StatusCode>InProgress</StatusCode>") {
		t.Fatalf("status %d body %s", code, body)
	}
	instances := srv.GroupInstances(testASG)
	if len(instances) != 2 || instances[testInstance] != "Detaching" {
		t.Fatalf("group instances %v, want %s Detaching and a replacement", instances, testInstance)
	}
	var replacement string
	for id, st := range instances {
		if id != testInstance {
			replacement = id
			if st != "Pending" {
				t.Errorf("replacement %s is %s, want Pending", id, st)
			}
		}
	}
	if len(replacement) != 19 || !strings.HasPrefix(replacement, "i-0") {
		t.Errorf("replacement id %q is not an instance id", replacement)
	}
	if d := srv.DesiredCapacity(testASG); d != 1 {
		t.Errorf("desired capacity %d, want 1 (not decremented)", d)
	}
	if st := srv.TargetState(testARN, testInstance); st != StateHealthy {
		t.Errorf("target %s before the detach lag, want still healthy", st)
	}

	clock.Add(2 * time.Second)
	if st := srv.TargetState(testARN, testInstance); st != StateDraining {
		t.Errorf("target %s after the detach lag, want draining (the group deregistered it)", st)
	}
	clock.Add(15 * time.Second)
	if _, in := srv.GroupInstances(testASG)[testInstance]; in {
		t.Error("instance still in the group once draining ended")
	}
	if st := srv.TargetState(testARN, testInstance); st != StateUnused {
		t.Errorf("target %s after draining, want unused", st)
	}
	srv.mu.Lock()
	ec2State := srv.instances[testInstance]
	srv.mu.Unlock()
	if ec2State != "running" {
		t.Errorf("detached instance is %s in EC2, want still running", ec2State)
	}

	select {
	case id := <-launched:
		t.Fatalf("OnLaunch(%s) before the launch delay", id)
	default:
	}
	clock.Add(13 * time.Second)
	if st := srv.GroupInstances(testASG)[replacement]; st != "InService" {
		t.Fatalf("replacement %s after the launch delay, want InService", st)
	}
	if id := <-launched; id != replacement {
		t.Errorf("OnLaunch(%s), want %s", id, replacement)
	}
	if st := srv.TargetState(testARN, replacement); st != StateInitial {
		t.Errorf("replacement target %s, want initial until its health checks pass", st)
	}
	srv.CheckHealth()
	srv.CheckHealth()
	if st := srv.TargetState(testARN, replacement); st != StateUnhealthy {
		t.Errorf("replacement target %s after two failed checks, want unhealthy", st)
	}
	answerMu.Lock()
	answering[replacement] = true
	answerMu.Unlock()
	srv.CheckHealth()
	if st := srv.TargetState(testARN, replacement); st != StateUnhealthy {
		t.Errorf("replacement target %s after one passed check, want still unhealthy", st)
	}
	srv.CheckHealth()
	if st := srv.TargetState(testARN, replacement); st != StateHealthy {
		t.Errorf("replacement target %s after two passed checks, want healthy", st)
	}

	// Detaching with a decrement launches nothing.
	if code, body := asCall(t, srv, detachForm(replacement, "true")); code != http.StatusOK {
		t.Fatalf("detach with decrement: %d %s", code, body)
	}
	if d, n := srv.DesiredCapacity(testASG), len(srv.GroupInstances(testASG)); d != 0 || n != 1 {
		t.Errorf("desired %d with %d instances after a decrementing detach, want 0 and only the detaching one", d, n)
	}
	clock.Add(time.Hour)
	select {
	case id := <-launched:
		t.Errorf("OnLaunch(%s) after a decrementing detach", id)
	default:
	}
}

// Registering a draining target again brings it back: initial, then healthy once it
// answers; without health checks, healthy at once.
func TestRegisterTargetsBringsADrainingTargetBack(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	srv.AddTargetGroup(testARN, Target{ID: testInstance})
	srv.SetHealthCheck(HealthCheck{Answers: func(string, int32) bool { return true }, HealthyThreshold: 3})
	if _, apiErr := srv.answer(request{service: ServiceELBv2, action: "DeregisterTargets", form: deregisterForm()}); apiErr != nil {
		t.Fatal(apiErr)
	}
	srv.CheckHealth() // draining targets are not checked
	if st := srv.TargetState(testARN, testInstance); st != StateDraining {
		t.Fatalf("state %s, want draining", st)
	}
	if _, apiErr := srv.answer(request{service: ServiceELBv2, action: "RegisterTargets", form: registerForm(testInstance)}); apiErr != nil {
		t.Fatal(apiErr)
	}
	for i, want := range []string{StateInitial, StateInitial, StateInitial, StateHealthy} {
		if i > 0 {
			srv.CheckHealth()
		}
		if st := srv.TargetState(testARN, testInstance); st != want {
			t.Errorf("after %d checks: %s, want %s", i, st, want)
		}
	}
}

// A lifecycle action shows as Terminating:Wait at once but is completable only after the
// propagation delay; heartbeats restart its heartbeat timeout up to the global timeout;
// without them it ends with the hook's default result.
func TestLifecycleActionPropagationAndHeartbeats(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	clock := newFakeClock()
	srv.SetClock(clock.Now)
	srv.AddAutoScalingGroup(testASG, []string{testInstance}, []string{testARN}, "")
	srv.SetLifecycleHook(testASG, testHook, 30*time.Second, "ABANDON")
	srv.SetLifecyclePropagationDelay(3 * time.Second)
	srv.PendLifecycleAction(testASG, testHook, testInstance)

	heartbeat := url.Values{"Action": {"RecordLifecycleActionHeartbeat"}, "AutoScalingGroupName": {testASG}, "LifecycleHookName": {testHook}, "InstanceId": {testInstance}}
	if st := srv.GroupInstances(testASG)[testInstance]; st != "Terminating:Wait" {
		t.Fatalf("state %s, want Terminating:Wait at once", st)
	}
	code, body := asCall(t, srv, heartbeat)
	if code != http.StatusBadRequest || !strings.Contains(body, "No active Lifecycle Action found with instance ID "+testInstance) {
		t.Errorf("heartbeat during propagation: %d %s", code, body)
	}
	clock.Add(3 * time.Second)
	for range 5 { // 5 × 20 s = 100 s, far past one 30 s timeout
		clock.Add(20 * time.Second)
		if code, body := asCall(t, srv, heartbeat); code != http.StatusOK || !strings.Contains(body, "<RecordLifecycleActionHeartbeatResult>") {
			t.Fatalf("heartbeat: %d %s", code, body)
		}
	}
	if srv.LifecycleTimedOut(testASG, testInstance) || srv.GroupInstances(testASG)[testInstance] != "Terminating:Wait" {
		t.Fatal("the action timed out although heartbeats came in time")
	}
	clock.Add(30 * time.Second)
	if r, ok := srv.LifecycleResult(testASG, testInstance); !ok || r != "ABANDON" || !srv.LifecycleTimedOut(testASG, testInstance) {
		t.Errorf("after a missed heartbeat: result %q %v timed out %v, want the default result ABANDON", r, ok, srv.LifecycleTimedOut(testASG, testInstance))
	}
	if code, body := asCall(t, srv, heartbeat); code != http.StatusBadRequest || !strings.Contains(body, "No active Lifecycle Action") {
		t.Errorf("heartbeat after the timeout: %d %s", code, body)
	}

	// The global timeout (100 heartbeat timeouts) ends it whatever comes.
	srv.PendLifecycleAction(testASG, testHook, testInstance)
	clock.Add(3 * time.Second)
	for range 200 {
		clock.Add(20 * time.Second)
		asCall(t, srv, heartbeat)
	}
	if !srv.LifecycleTimedOut(testASG, testInstance) {
		t.Error("heartbeats held the action past 100 heartbeat timeouts")
	}
}

func TestDescribeLifecycleHooks(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	srv.AddAutoScalingGroup(testASG, []string{testInstance}, nil, testHook)
	srv.SetLifecycleHook(testASG, testHook, 150*time.Second, "CONTINUE")
	srv.SetLifecycleHook(testASG, "other", 60*time.Second, "ABANDON")
	form := url.Values{"Action": {"DescribeLifecycleHooks"}, "AutoScalingGroupName": {testASG}, "LifecycleHookNames.member.1": {testHook}}
	code, body := asCall(t, srv, form)
	for _, want := range []string{
		"<LifecycleHookName>" + testHook + "</LifecycleHookName>",
		"<LifecycleTransition>autoscaling:EC2_INSTANCE_TERMINATING</LifecycleTransition>",
		"<HeartbeatTimeout>150</HeartbeatTimeout>",
		"<GlobalTimeout>15000</GlobalTimeout>",
		"<DefaultResult>CONTINUE</DefaultResult>",
	} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("status %d body %s lacks %s", code, body, want)
		}
	}
	if strings.Contains(body, "<LifecycleHookName>other</LifecycleHookName>") {
		t.Errorf("body %s lists a hook that was not asked for", body)
	}
	form.Set("AutoScalingGroupName", "missing")
	if code, body := asCall(t, srv, form); code != http.StatusBadRequest || !strings.Contains(body, "no such group: missing") {
		t.Errorf("unknown group: %d %s", code, body)
	}
}
