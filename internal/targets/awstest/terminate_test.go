package awstest

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// A terminated instance leaves its group, drains, can no longer be registered, and the
// group launches its replacement only now, after the launch delay: the order of a group
// that replaces an instance once it is gone.
func TestTerminateInstanceLaunchesTheReplacementAfterwards(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	clock := newFakeClock()
	srv.SetClock(clock.Now)
	srv.SetLaunchDelay(8 * time.Second)
	launched := make(chan string, 2)
	srv.OnLaunch(func(id string) { launched <- id })
	srv.AddAutoScalingGroup(testASG, []string{testInstance}, []string{testARN}, testHook)
	srv.PendLifecycleAction(testASG, testHook, testInstance)
	complete := url.Values{
		"Action": {"CompleteLifecycleAction"}, "AutoScalingGroupName": {testASG}, "LifecycleHookName": {testHook},
		"InstanceId": {testInstance}, "LifecycleActionResult": {"CONTINUE"},
	}
	if code, body := asCall(t, srv, complete); code != http.StatusOK {
		t.Fatalf("complete the lifecycle action: %d %s", code, body)
	}

	srv.TerminateInstance(testInstance)
	instances := srv.GroupInstances(testASG)
	if _, in := instances[testInstance]; in || len(instances) != 1 {
		t.Fatalf("group instances %v after the termination, want only a replacement", instances)
	}
	var replacement string
	for id, st := range instances {
		replacement = id
		if st != "Pending" {
			t.Errorf("replacement %s is %s, want Pending until the launch delay passed", id, st)
		}
	}
	if st := srv.TargetState(testARN, testInstance); st != StateDraining {
		t.Errorf("terminated instance's target %s, want draining", st)
	}
	if r, ok := srv.LifecycleResult(testASG, testInstance); !ok || r != "CONTINUE" {
		t.Errorf("lifecycle result %q %v after the termination, want the CONTINUE it was completed with", r, ok)
	}
	code, body := send(t, signed(t, srv, registerForm(testInstance), ServiceELBv2, SecretAccessKey, time.Now()))
	if code != http.StatusBadRequest || !strings.Contains(body, "not in a running state") {
		t.Errorf("RegisterTargets of the terminated instance: %d %s, want InvalidTarget", code, body)
	}

	clock.Add(7 * time.Second)
	select {
	case id := <-launched:
		t.Fatalf("OnLaunch(%s) before the launch delay", id)
	default:
	}
	clock.Add(time.Second)
	if st := srv.GroupInstances(testASG)[replacement]; st != "InService" {
		t.Fatalf("replacement %s after the launch delay, want InService", st)
	}
	if id := <-launched; id != replacement {
		t.Errorf("OnLaunch(%s), want %s", id, replacement)
	}
	if st := srv.TargetState(testARN, replacement); st != StateHealthy {
		t.Errorf("replacement's target %s, want registered (healthy: no health checks set)", st)
	}
}

// An instance detached earlier had its replacement at the detach: its termination
// launches no other.
func TestTerminateDetachedInstanceLaunchesNoOther(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	clock := newFakeClock()
	srv.SetClock(clock.Now)
	launched := make(chan string, 2)
	srv.OnLaunch(func(id string) { launched <- id })
	srv.AddAutoScalingGroup(testASG, []string{testInstance}, []string{testARN}, testHook)
	if code, body := asCall(t, srv, detachForm(testInstance, "false")); code != http.StatusOK {
		t.Fatalf("detach: %d %s", code, body)
	}
	first := <-launched

	srv.TerminateInstance(testInstance)
	clock.Add(time.Hour)
	instances := srv.GroupInstances(testASG)
	if len(instances) != 1 || instances[first] != "InService" {
		t.Errorf("group instances %v, want only the replacement launched at the detach (%s)", instances, first)
	}
	select {
	case id := <-launched:
		t.Errorf("OnLaunch(%s) after the termination of a detached instance", id)
	default:
	}
}
