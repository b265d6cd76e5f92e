package targets

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

const (
	region     = "us-east-1"
	instanceID = "i-0123456789abcdef0"
	asgName    = "jenkins-asg"
	hook       = "drain-jenkins"
	tgA        = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/jenkins-a/0123456789abcdef"
	tgB        = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/jenkins-b/1123456789abcdef"
	tgC        = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/jenkins-c/2123456789abcdef"
	tgGone     = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/deleted/3123456789abcdef"
)

// TestMain keeps the SDK away from the machine's AWS files and from instance metadata:
// every client here gets the double's endpoint and credentials.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "targets-test")
	if err != nil {
		panic(err)
	}
	for k, v := range map[string]string{
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_PROFILE":                 "",
		"AWS_REGION":                  "",
	} {
		os.Setenv(k, v)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newClient(t testing.TB, srv *awstest.Server, opts Options) *Client {
	t.Helper()
	if opts.Region == "" {
		opts.Region = region
	}
	opts.Endpoint = srv.URL()
	opts.Credentials = srv.Credentials()
	if tt, ok := t.(*testing.T); ok {
		opts.Logger = slog.New(slog.NewTextHandler(tt.Output(), nil))
	} else {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := New(t.Context(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func newServer(t testing.TB) *awstest.Server {
	srv := awstest.NewServer()
	t.Cleanup(srv.Close)
	return srv
}

// world is an instance in an Auto Scaling group attached to tgB and tgC, with tgA
// configured only.
func world(t testing.TB) *awstest.Server {
	srv := newServer(t)
	srv.AddTargetGroup(tgA, awstest.Target{ID: instanceID})
	srv.AddAutoScalingGroup(asgName, []string{instanceID, "i-0fedcba9876543210"}, []string{tgB, tgC}, hook)
	return srv
}

func TestDiscoverFindsTheGroupsOfTheAutoScalingGroup(t *testing.T) {
	srv := world(t)
	c := newClient(t, srv, Options{
		TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}, {ARN: tgC, Port: 8080}},
		Discover:     true,
	})
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	want := []TargetGroup{{tgA, 8080}, {tgC, 8080}, {tgB, 0}}
	if got := c.TargetGroups(); !slices.Equal(got, want) {
		t.Errorf("TargetGroups() = %v, want %v", got, want)
	}
	if got := c.AutoScalingGroup(); got != asgName {
		t.Errorf("AutoScalingGroup() = %q, want %q", got, asgName)
	}
	if n := len(srv.CallsOf("DescribeAutoScalingInstances")); n != 1 {
		t.Errorf("DescribeAutoScalingInstances called %d times, want 1", n)
	}
	calls := srv.CallsOf("DescribeAutoScalingGroups")
	if len(calls) != 1 || calls[0].Params.Get("AutoScalingGroupNames.member.1") != asgName {
		t.Errorf("DescribeAutoScalingGroups calls = %+v, want one naming %s", calls, asgName)
	}
}

func TestDiscoverUsesTheGroupFromTheInstanceTag(t *testing.T) {
	srv := world(t)
	c := newClient(t, srv, Options{Discover: true})
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID, AutoScalingGroup: asgName}); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if n := len(srv.CallsOf("DescribeAutoScalingInstances")); n != 0 {
		t.Errorf("DescribeAutoScalingInstances called %d times though the tag named the group", n)
	}
	if got, want := c.TargetGroups(), []TargetGroup{{tgB, 0}, {tgC, 0}}; !slices.Equal(got, want) {
		t.Errorf("TargetGroups() = %v, want %v", got, want)
	}
}

func TestDiscoverOutsideAnyGroupKeepsTheConfiguredOnes(t *testing.T) {
	srv := newServer(t)
	srv.AddTargetGroup(tgA, awstest.Target{ID: instanceID})
	c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgA}}, Discover: true})
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if got, want := c.TargetGroups(), []TargetGroup{{tgA, 0}}; !slices.Equal(got, want) {
		t.Errorf("TargetGroups() = %v, want %v", got, want)
	}
	if got := c.AutoScalingGroup(); got != "" {
		t.Errorf("AutoScalingGroup() = %q, want empty", got)
	}
	if n := len(srv.CallsOf("DescribeAutoScalingGroups")); n != 0 {
		t.Errorf("DescribeAutoScalingGroups called %d times for an instance in no group", n)
	}
}

func TestDiscoverDisabledCallsNothing(t *testing.T) {
	srv := world(t)
	c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}})
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if calls := srv.Calls(); len(calls) != 0 {
		t.Errorf("calls = %+v, want none", calls)
	}
	if got, want := c.TargetGroups(), []TargetGroup{{tgA, 8080}}; !slices.Equal(got, want) {
		t.Errorf("TargetGroups() = %v, want %v", got, want)
	}
}

func TestDiscoverErrorKeepsConfiguredGroupsAndNamesTheGrant(t *testing.T) {
	srv := world(t)
	srv.Deny("DescribeAutoScalingGroups")
	c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}, Discover: true})
	err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID, AutoScalingGroup: asgName})
	if err == nil || !strings.Contains(err.Error(), "add autoscaling:DescribeAutoScalingGroups on * to the instance role") {
		t.Fatalf("Discover error = %v, want one naming the missing grant", err)
	}
	if got, want := c.TargetGroups(), []TargetGroup{{tgA, 8080}}; !slices.Equal(got, want) {
		t.Errorf("TargetGroups() = %v, want %v", got, want)
	}
	if got := c.AutoScalingGroup(); got != asgName {
		t.Errorf("AutoScalingGroup() = %q, want %q from the tag despite the error", got, asgName)
	}
}

func TestDeregisterDrainsConfiguredAndDiscoveredGroupsInParallel(t *testing.T) {
	srv := world(t)
	c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}, Discover: true})
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
		t.Fatalf("Discover: %v", err)
	}

	inParallelToEveryGroup(t, srv, "DeregisterTargets", func(ctx context.Context) error { return c.Deregister(ctx, instanceID) })
	for _, arn := range []string{tgA, tgB, tgC} {
		if got := srv.TargetState(arn, instanceID); got != awstest.StateDraining {
			t.Errorf("%s: target state %q, want draining", arn, got)
		}
	}
	if got := srv.TargetState(tgB, "i-0fedcba9876543210"); got != awstest.StateHealthy {
		t.Errorf("the other instance went %q, want healthy", got)
	}

	// The adapter reads the draining state back through DescribeTargetHealth.
	out, err := c.elb.describeTargetHealth(t.Context(), tgB, targetDescription{ID: instanceID})
	if err != nil {
		t.Fatalf("DescribeTargetHealth: %v", err)
	}
	if len(out) != 1 {
		t.Fatalf("DescribeTargetHealth returned %d descriptions, want 1", len(out))
	}
	th := out[0]
	if th.ID != instanceID || th.State != stateDraining || th.Reason != "Target.DeregistrationInProgress" {
		t.Errorf("target health = %s/%s, want draining/Target.DeregistrationInProgress", th.State, th.Reason)
	}
}

func TestDeregisterRetriesThrottling(t *testing.T) {
	srv := world(t)
	srv.FailNext("DeregisterTargets", "Throttling", 2)
	c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}})
	if err := c.Deregister(t.Context(), instanceID); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	var codes []string
	for _, call := range srv.CallsOf("DeregisterTargets") {
		codes = append(codes, call.Code)
	}
	if want := []string{"Throttling", "Throttling", ""}; !slices.Equal(codes, want) {
		t.Errorf("answers = %q, want %q", codes, want)
	}
	if got := srv.TargetState(tgA, instanceID); got != awstest.StateDraining {
		t.Errorf("target state %q, want draining", got)
	}
}

func TestDeregisterNamesAMissingTargetGroup(t *testing.T) {
	srv := world(t)
	c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgGone, Port: 8080}, {ARN: tgA, Port: 8080}}})
	err := c.Deregister(t.Context(), instanceID)
	if err == nil {
		t.Fatal("Deregister succeeded with a deleted target group")
	}
	if !strings.Contains(err.Error(), "target group "+tgGone+" not found") {
		t.Errorf("error %q does not name the missing group", err)
	}
	if strings.Contains(err.Error(), tgA) {
		t.Errorf("error %q names the group that worked", err)
	}
	if apiCode(err) != codeTargetGroupNotFound {
		t.Errorf("error %v does not unwrap to the API error TargetGroupNotFound", err)
	}
	if got := srv.TargetState(tgA, instanceID); got != awstest.StateDraining {
		t.Errorf("the existing group's target is %q, want draining despite the other failing", got)
	}
	if n := len(srv.CallsOf("DeregisterTargets")); n != 2 {
		t.Errorf("%d DeregisterTargets calls, want 2 (TargetGroupNotFound is not retried)", n)
	}
}

func TestDeregisterGivesUpAtTheCallTimeout(t *testing.T) {
	srv := world(t)
	srv.Delay("DeregisterTargets", time.Minute)
	c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}, CallTimeout: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	err := c.Deregister(ctx, instanceID)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Deregister error = %v, want a deadline exceeded", err)
	}
	if !strings.Contains(err.Error(), tgA) {
		t.Errorf("error %q does not name the target group", err)
	}
	if ctx.Err() != nil {
		t.Errorf("the caller's context ended too; the call timeout should have ended first")
	}
	if got := srv.TargetState(tgA, instanceID); got != awstest.StateHealthy {
		t.Errorf("target state %q, want healthy: the slow call was never answered", got)
	}
}

func TestDeregisterAccessDeniedNamesTheGrant(t *testing.T) {
	srv := world(t)
	srv.Deny("DeregisterTargets")
	c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}})
	err := c.Deregister(t.Context(), instanceID)
	if err == nil || !strings.Contains(err.Error(), "add elasticloadbalancing:DeregisterTargets on "+tgA+" to the instance role") {
		t.Fatalf("Deregister error = %v, want the missing grant named", err)
	}
}

func TestDeregisterWithoutGroupsDoesNothing(t *testing.T) {
	srv := newServer(t)
	c := newClient(t, srv, Options{})
	if err := c.Deregister(t.Context(), instanceID); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	if calls := srv.Calls(); len(calls) != 0 {
		t.Errorf("calls = %+v, want none", calls)
	}
}

func TestCompleteLifecycle(t *testing.T) {
	srv := world(t)
	srv.PendLifecycleAction(asgName, hook, instanceID)
	c := newClient(t, srv, Options{LifecycleHook: hook})
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if err := c.CompleteLifecycle(t.Context(), instanceID); err != nil {
		t.Fatalf("CompleteLifecycle: %v", err)
	}
	if got, ok := srv.LifecycleResult(asgName, instanceID); !ok || got != "CONTINUE" {
		t.Errorf("lifecycle result = %q, %v; want CONTINUE", got, ok)
	}
	call := srv.CallsOf("CompleteLifecycleAction")[0]
	for k, want := range map[string]string{"AutoScalingGroupName": asgName, "LifecycleHookName": hook, "InstanceId": instanceID, "LifecycleActionResult": "CONTINUE"} {
		if got := call.Params.Get(k); got != want {
			t.Errorf("CompleteLifecycleAction %s = %q, want %q", k, got, want)
		}
	}

	// A second completion (the plan resumed after a restart) finds no active action.
	if err := c.CompleteLifecycle(t.Context(), instanceID); err != nil {
		t.Fatalf("second CompleteLifecycle: %v", err)
	}
	calls := srv.CallsOf("CompleteLifecycleAction")
	if len(calls) != 2 || calls[1].Code != "ValidationError" {
		t.Errorf("second call answered %+v, want ValidationError taken as done", calls[len(calls)-1])
	}
}

func TestCompleteLifecycleWithoutHookDoesNothing(t *testing.T) {
	srv := world(t)
	c := newClient(t, srv, Options{})
	if err := c.CompleteLifecycle(t.Context(), instanceID); err != nil {
		t.Fatalf("CompleteLifecycle: %v", err)
	}
	if calls := srv.Calls(); len(calls) != 0 {
		t.Errorf("calls = %+v, want none", calls)
	}
}

func TestCompleteLifecycleErrors(t *testing.T) {
	t.Run("group unknown", func(t *testing.T) {
		srv := newServer(t)
		c := newClient(t, srv, Options{LifecycleHook: hook})
		if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
			t.Fatalf("Discover: %v", err)
		}
		err := c.CompleteLifecycle(t.Context(), instanceID)
		if err == nil || !strings.Contains(err.Error(), "Auto Scaling group is unknown") {
			t.Errorf("CompleteLifecycle error = %v, want the unknown group named", err)
		}
	})
	t.Run("hook missing", func(t *testing.T) {
		srv := world(t)
		c := newClient(t, srv, Options{LifecycleHook: "no-such-hook"})
		if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID, AutoScalingGroup: asgName}); err != nil {
			t.Fatalf("Discover: %v", err)
		}
		if err := c.CompleteLifecycle(t.Context(), instanceID); err == nil || !strings.Contains(err.Error(), "No Lifecycle Hook found") {
			t.Errorf("CompleteLifecycle error = %v, want the missing hook reported", err)
		}
	})
	t.Run("denied", func(t *testing.T) {
		srv := world(t)
		srv.Deny("CompleteLifecycleAction")
		c := newClient(t, srv, Options{LifecycleHook: hook, Discover: true})
		if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
			t.Fatalf("Discover: %v", err)
		}
		want := "add autoscaling:CompleteLifecycleAction on " + awstest.GroupARN(region, asgName)
		if err := c.CompleteLifecycle(t.Context(), instanceID); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CompleteLifecycle error = %v, want %q", err, want)
		}
	})
}

func TestInstanceTerminated(t *testing.T) {
	srv := newServer(t)
	c := newClient(t, srv, Options{})
	for _, tc := range []struct {
		state string
		want  bool
	}{
		{"pending", false},
		{"running", false},
		{"stopping", false},
		{"shutting-down", false}, // the old OS may still be stopping Jenkins
		{"terminated", true},
		{"stopped", false}, // a hibernated instance resumes writing at once
	} {
		srv.SetInstanceState(instanceID, tc.state)
		got, err := c.InstanceTerminated(t.Context(), instanceID)
		if err != nil || got != tc.want {
			t.Errorf("state %s: InstanceTerminated = %v, %v; want %v", tc.state, got, err, tc.want)
		}
	}
	if got, err := c.InstanceTerminated(t.Context(), "i-00000000000000000"); err != nil || !got {
		t.Errorf("unknown instance: InstanceTerminated = %v, %v; want true (InvalidInstanceID.NotFound)", got, err)
	}
	if _, err := c.InstanceTerminated(t.Context(), "not-an-id"); err == nil {
		t.Error("malformed id: InstanceTerminated succeeded")
	}
	srv.Deny("DescribeInstances")
	if _, err := c.InstanceTerminated(t.Context(), instanceID); err == nil || !strings.Contains(err.Error(), "add ec2:DescribeInstances on * to the instance role") {
		t.Errorf("denied: InstanceTerminated error = %v, want the grant named", err)
	}
}

func TestCheckPermissionsAllAllowed(t *testing.T) {
	srv := world(t)
	srv.SetLifecycleHook(asgName, hook, 150*time.Second, "CONTINUE")
	srv.PendLifecycleAction(asgName, hook, instanceID)
	before := srv.GroupInstances(asgName)
	c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}, Discover: true, LifecycleHook: hook, RequestReplacement: true})
	rows := c.CheckPermissions(t.Context(), instance.Identity{InstanceID: instanceID})
	want := []string{
		"autoscaling:DescribeAutoScalingInstances",
		"autoscaling:DescribeAutoScalingGroups",
		"elasticloadbalancing:DescribeTargetHealth " + tgA,
		"elasticloadbalancing:RegisterTargets " + tgA,
		"elasticloadbalancing:DeregisterTargets " + tgA,
		"elasticloadbalancing:DescribeTargetHealth " + tgB,
		"elasticloadbalancing:RegisterTargets " + tgB,
		"elasticloadbalancing:DeregisterTargets " + tgB,
		"elasticloadbalancing:DescribeTargetHealth " + tgC,
		"elasticloadbalancing:RegisterTargets " + tgC,
		"elasticloadbalancing:DeregisterTargets " + tgC,
		"autoscaling:CompleteLifecycleAction " + awstest.GroupARN(region, asgName),
		"autoscaling:DescribeLifecycleHooks",
		"autoscaling:RecordLifecycleActionHeartbeat " + awstest.GroupARN(region, asgName),
		"autoscaling:DetachInstances " + awstest.GroupARN(region, asgName),
	}
	var names []string
	for _, r := range rows {
		names = append(names, r.Name)
		if !r.OK || r.Fix != "" {
			t.Errorf("row %q failed: %s (fix %q)", r.Name, r.Detail, r.Fix)
		}
	}
	if !slices.Equal(names, want) {
		t.Errorf("rows =\n%s\nwant\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	if rows[2].Detail != "instance registered: port 8080 healthy" {
		t.Errorf("DescribeTargetHealth detail = %q", rows[2].Detail)
	}
	if want := "allowed (proven with an instance id that does not exist)"; rows[3].Detail != want {
		t.Errorf("RegisterTargets detail = %q, want %q", rows[3].Detail, want)
	}
	if n := len(srv.CallsOf("RegisterTargets")); n != 3 {
		t.Errorf("%d RegisterTargets calls, want one per target group", n)
	}

	// The checks changed nothing.
	for _, arn := range []string{tgA, tgB, tgC} {
		if got := srv.TargetState(arn, instanceID); got != awstest.StateHealthy {
			t.Errorf("%s: target state %q after preflight, want healthy", arn, got)
		}
	}
	if want := "hook " + hook + ": heartbeat timeout 2m30s (heartbeats every 50s), default result CONTINUE"; rows[12].Detail != want {
		t.Errorf("DescribeLifecycleHooks detail = %q, want %q", rows[12].Detail, want)
	}
	if _, done := srv.LifecycleResult(asgName, instanceID); done {
		t.Error("preflight completed the pending lifecycle action")
	}
	if after := srv.GroupInstances(asgName); !maps.Equal(after, before) {
		t.Errorf("preflight changed the group: %v, was %v", after, before)
	}
	if calls := srv.CallsOf("RecordLifecycleActionHeartbeat"); len(calls) != 1 || calls[0].Params.Get("LifecycleActionToken") != probeToken || calls[0].Params.Get("InstanceId") != "" {
		t.Errorf("heartbeat probes %+v, want one with the token that matches no action", calls)
	}
	if len(c.TargetGroups()) != 1 || c.AutoScalingGroup() != "" {
		t.Errorf("preflight changed the cache: %v, %q", c.TargetGroups(), c.AutoScalingGroup())
	}
}

func TestCheckPermissionsOneDenied(t *testing.T) {
	asgARN := awstest.GroupARN(region, asgName)
	for _, tc := range []struct {
		deny     string
		identity instance.Identity
		failing  map[string]string // row name → Fix
	}{
		{
			deny:    "DeregisterTargets",
			failing: map[string]string{"elasticloadbalancing:DeregisterTargets " + tgB: "add elasticloadbalancing:DeregisterTargets on " + tgB + " to the instance role"},
		},
		{
			deny:    "RegisterTargets",
			failing: map[string]string{"elasticloadbalancing:RegisterTargets " + tgB: "add elasticloadbalancing:RegisterTargets on " + tgB + " to the instance role"},
		},
		{
			// Whether registering would change anything is unknown: the register row
			// is not checked rather than failed.
			deny:    "DescribeTargetHealth",
			failing: map[string]string{"elasticloadbalancing:DescribeTargetHealth " + tgB: "add elasticloadbalancing:DescribeTargetHealth on * to the instance role"},
		},
		{
			deny:    "DescribeAutoScalingGroups",
			failing: map[string]string{"autoscaling:DescribeAutoScalingGroups": "add autoscaling:DescribeAutoScalingGroups on * to the instance role"},
		},
		{
			deny:    "CompleteLifecycleAction",
			failing: map[string]string{"autoscaling:CompleteLifecycleAction " + asgARN: "add autoscaling:CompleteLifecycleAction on " + asgARN + " to the instance role"},
		},
		{
			deny:    "RecordLifecycleActionHeartbeat",
			failing: map[string]string{"autoscaling:RecordLifecycleActionHeartbeat " + asgARN: "add autoscaling:RecordLifecycleActionHeartbeat on " + asgARN + " to the instance role"},
		},
		{
			deny:    "DescribeLifecycleHooks",
			failing: map[string]string{"autoscaling:DescribeLifecycleHooks": "add autoscaling:DescribeLifecycleHooks on * to the instance role"},
		},
		{
			deny:    "DetachInstances",
			failing: map[string]string{"autoscaling:DetachInstances " + asgARN: "add autoscaling:DetachInstances on " + asgARN + " to the instance role"},
		},
		{
			deny: "DescribeAutoScalingInstances",
			// Without the instance's group nothing can be discovered or completed; the
			// lifecycle row says so too.
			identity: instance.Identity{InstanceID: instanceID},
			failing: map[string]string{
				"autoscaling:DescribeAutoScalingInstances": "add autoscaling:DescribeAutoScalingInstances on * to the instance role",
				"autoscaling:CompleteLifecycleAction":      "clear lifecycle_hook, or run the instance in the Auto Scaling group that has the hook",
			},
		},
	} {
		t.Run(tc.deny, func(t *testing.T) {
			srv := newServer(t)
			srv.AddAutoScalingGroup(asgName, []string{instanceID}, []string{tgB}, hook)
			srv.Deny(tc.deny)
			c := newClient(t, srv, Options{Discover: true, LifecycleHook: hook, RequestReplacement: true})
			id := tc.identity
			if id.InstanceID == "" {
				id = instance.Identity{InstanceID: instanceID, AutoScalingGroup: asgName}
			}
			got := map[string]string{}
			for _, r := range c.CheckPermissions(t.Context(), id) {
				if !r.OK {
					got[r.Name] = r.Fix
				}
			}
			if !maps.Equal(got, tc.failing) {
				t.Errorf("failing rows = %v, want %v", got, tc.failing)
			}
		})
	}
}

func TestCheckPermissionsMissingTargetGroup(t *testing.T) {
	srv := newServer(t)
	c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgGone, Port: 8080}}})
	rows := c.CheckPermissions(t.Context(), instance.Identity{InstanceID: instanceID})
	if len(rows) != 3 {
		t.Fatalf("rows = %+v, want three", rows)
	}
	for _, r := range rows {
		if r.OK || !strings.Contains(r.Fix, "fix or remove this ARN in target_groups") {
			t.Errorf("row %q: OK=%v fix %q, want failed with the ARN to fix", r.Name, r.OK, r.Fix)
		}
	}
}

func TestCheckInstanceState(t *testing.T) {
	srv := newServer(t)
	srv.SetInstanceState(instanceID, "running")
	c := newClient(t, srv, Options{})
	if r := c.CheckInstanceState(t.Context(), instance.Identity{InstanceID: instanceID}); !r.OK || r.Detail != "instance "+instanceID+" is running" {
		t.Errorf("CheckInstanceState = %+v, want OK and running", r)
	}
	srv.Deny("DescribeInstances")
	if r := c.CheckInstanceState(t.Context(), instance.Identity{InstanceID: instanceID}); r.OK || r.Fix != "add ec2:DescribeInstances on * to the instance role" {
		t.Errorf("denied: CheckInstanceState = %+v, want failed with the grant", r)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no region", Options{}, "region is empty"},
		{"not an arn", Options{Region: region, TargetGroups: []TargetGroup{{ARN: "jenkins"}}}, "not an ARN"},
		{"other region", Options{Region: "eu-west-1", TargetGroups: []TargetGroup{{ARN: tgA}}}, "is in region us-east-1 but the agent calls eu-west-1"},
		{"twice", Options{Region: region, TargetGroups: []TargetGroup{{ARN: tgA}, {ARN: tgA, Port: 80}}}, "listed twice"},
		{"bad port", Options{Region: region, TargetGroups: []TargetGroup{{ARN: tgA, Port: 70000}}}, "outside 1..65535"},
		{"negative timeout", Options{Region: region, CallTimeout: -time.Second}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(t.Context(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// BenchmarkDeregister measures Deregister from three target groups against the double,
// and how long after the call the first DeregisterTargets reached it.
func BenchmarkDeregister(b *testing.B) {
	srv := newServer(b)
	srv.SetDeregistrationDelay(0)
	c := newClient(b, srv, Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}, {ARN: tgB, Port: 8080}, {ARN: tgC, Port: 8080}}})
	var firstSent time.Duration
	for b.Loop() {
		b.StopTimer()
		for _, arn := range []string{tgA, tgB, tgC} {
			srv.AddTargetGroup(arn, awstest.Target{ID: instanceID})
		}
		before := len(srv.Calls())
		b.StartTimer()
		start := time.Now()
		if err := c.Deregister(b.Context(), instanceID); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		first := srv.Calls()[before].At
		for _, call := range srv.Calls()[before:] {
			if call.At.Before(first) {
				first = call.At
			}
		}
		firstSent += first.Sub(start)
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	b.ReportMetric(float64(firstSent.Microseconds())/1000/float64(b.N), "ms-to-first-send/op")
}

// Without Endpoint the SDK's resolution rules apply, AWS_ENDPOINT_URL_<SERVICE> included:
// that is how simulate and operators point the agent at another endpoint.
func TestEndpointFromEnvironment(t *testing.T) {
	srv := world(t)
	for _, service := range []string{"ELASTIC_LOAD_BALANCING_V2", "AUTO_SCALING", "EC2"} {
		t.Setenv("AWS_ENDPOINT_URL_"+service, srv.URL())
	}
	c, err := New(t.Context(), Options{Region: region, Discover: true, Credentials: srv.Credentials(), Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if err := c.Deregister(t.Context(), instanceID); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	if gone, err := c.InstanceTerminated(t.Context(), instanceID); err != nil || gone {
		t.Fatalf("InstanceTerminated = %v, %v; want false", gone, err)
	}
	for _, arn := range []string{tgB, tgC} {
		if got := srv.TargetState(arn, instanceID); got != awstest.StateDraining {
			t.Errorf("%s: target state %q, want draining", arn, got)
		}
	}
}

// inParallelToEveryGroup runs call while the double holds every request of action until
// all three target groups have one in flight (sent one after another, they never would),
// then checks that each went for the instance, with the configured port to tgA and none
// to the discovered tgB and tgC.
func inParallelToEveryGroup(t *testing.T, srv *awstest.Server, action string, call func(context.Context) error) {
	t.Helper()
	release := srv.Hold(action)
	defer release()
	done := make(chan error, 1)
	go func() { done <- call(context.Background()) }()
	testenv.Eventually(t, "three "+action+" in flight at once", func() bool {
		return len(srv.CallsOf(action)) == 3
	})
	release()
	if err := <-done; err != nil {
		t.Fatalf("%s: %v", action, err)
	}
	ports := map[string]string{}
	for _, c := range srv.CallsOf(action) {
		if id := c.Params.Get("Targets.member.1.Id"); id != instanceID {
			t.Errorf("%s target id = %q, want %q", action, id, instanceID)
		}
		ports[c.Params.Get("TargetGroupArn")] = c.Params.Get("Targets.member.1.Port")
	}
	if want := map[string]string{tgA: "8080", tgB: "", tgC: ""}; !maps.Equal(ports, want) {
		t.Errorf("%s ports per group = %v, want %v (configured port, discovered none)", action, ports, want)
	}
}
