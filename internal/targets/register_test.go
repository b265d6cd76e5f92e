package targets

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"
)

// health is every target of the group as DescribeTargetHealth shows it through the
// adapter's call, "id:port:state", sorted.
func health(t *testing.T, c *Client, arn string) []string {
	t.Helper()
	out, err := c.elb.describeTargetHealth(t.Context(), arn)
	if err != nil {
		t.Fatalf("DescribeTargetHealth %s: %v", arn, err)
	}
	var rows []string
	for _, d := range out {
		rows = append(rows, fmt.Sprintf("%s:%d:%s", d.ID, d.Port, d.State))
	}
	slices.Sort(rows)
	return rows
}

// A drill (or a stop of the agent) deregisters the instance; Register must bring it back
// into every group, whether the target is still draining or already gone.
func TestRegisterPutsTheInstanceBackInEveryGroup(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delay time.Duration
		after string // the state Deregister leaves behind
	}{
		{"while draining", awstest.DefaultDeregistrationDelay, awstest.StateDraining},
		{"after draining ended", 0, awstest.StateUnused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := world(t)
			srv.SetDeregistrationDelay(tc.delay)
			c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}, Discover: true})
			if err := c.Discover(t.Context(), instance.Identity{InstanceID: instanceID}); err != nil {
				t.Fatalf("Discover: %v", err)
			}
			if err := c.Deregister(t.Context(), instanceID); err != nil {
				t.Fatalf("Deregister: %v", err)
			}
			for _, arn := range []string{tgA, tgB, tgC} {
				if got := srv.TargetState(arn, instanceID); got != tc.after {
					t.Fatalf("%s: state %q after Deregister, want %q", arn, got, tc.after)
				}
			}

			inParallelToEveryGroup(t, srv, "RegisterTargets", func(ctx context.Context) error { return c.Register(ctx, instanceID) })
			want := map[string][]string{
				tgA: {instanceID + ":8080:healthy"},
				tgB: {instanceID + ":8080:healthy", "i-0fedcba9876543210:8080:healthy"},
				tgC: {instanceID + ":8080:healthy", "i-0fedcba9876543210:8080:healthy"},
			}
			for arn, w := range want {
				if got := health(t, c, arn); !slices.Equal(got, w) {
					t.Errorf("%s: targets %v, want %v", arn, got, w)
				}
			}

			// Registering a registered target succeeds and changes nothing.
			if err := c.Register(t.Context(), instanceID); err != nil {
				t.Fatalf("second Register: %v", err)
			}
			for arn, w := range want {
				if got := health(t, c, arn); !slices.Equal(got, w) {
					t.Errorf("%s after a second Register: targets %v, want %v", arn, got, w)
				}
			}
		})
	}
}

func TestRegisterNamesAMissingTargetGroup(t *testing.T) {
	srv := world(t)
	c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgGone, Port: 8080}, {ARN: tgA, Port: 8080}}})
	if err := c.Deregister(t.Context(), instanceID); err == nil {
		t.Fatal("Deregister succeeded with a deleted target group")
	}
	err := c.Register(t.Context(), instanceID)
	if err == nil {
		t.Fatal("Register succeeded with a deleted target group")
	}
	if !strings.Contains(err.Error(), "register "+instanceID+": target group "+tgGone+" not found") {
		t.Errorf("error %q does not name the missing group", err)
	}
	if strings.Contains(err.Error(), tgA) {
		t.Errorf("error %q names the group that worked", err)
	}
	if apiCode(err) != codeTargetGroupNotFound {
		t.Errorf("error %v does not unwrap to the API error TargetGroupNotFound", err)
	}
	if got := srv.TargetState(tgA, instanceID); got != awstest.StateHealthy {
		t.Errorf("the existing group's target is %q, want healthy despite the other failing", got)
	}
}

func TestRegisterAccessDeniedNamesTheGrant(t *testing.T) {
	srv := world(t)
	c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}})
	if err := c.Deregister(t.Context(), instanceID); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	srv.Deny("RegisterTargets")
	err := c.Register(t.Context(), instanceID)
	if err == nil || !strings.Contains(err.Error(), "add elasticloadbalancing:RegisterTargets on "+tgA+" to the instance role") {
		t.Fatalf("Register error = %v, want the missing grant named", err)
	}
	if !strings.Contains(err.Error(), "register "+instanceID+" in target group "+tgA) {
		t.Errorf("error %q does not name the target group", err)
	}
	calls := srv.CallsOf("RegisterTargets")
	if len(calls) != 1 || calls[0].Code != "AccessDenied" {
		t.Errorf("RegisterTargets calls = %+v, want one answered AccessDenied (not retried)", calls)
	}
	if got := srv.TargetState(tgA, instanceID); got != awstest.StateDraining {
		t.Errorf("target state %q, want still draining", got)
	}
}

func TestRegisterRefusedTargetSaysWhy(t *testing.T) {
	srv := world(t)
	srv.SetInstanceState(instanceID, "stopped")
	c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 9090}}})
	err := c.Register(t.Context(), instanceID)
	if apiCode(err) != codeInvalidTarget || !strings.Contains(err.Error(), "use a target group of target type instance") {
		t.Fatalf("Register error = %v, want InvalidTarget with what to do", err)
	}
	if got := health(t, c, tgA); !slices.Equal(got, []string{instanceID + ":8080:healthy"}) {
		t.Errorf("targets %v: a refused registration added one", got)
	}
}

func TestRegisterGivesUpAtTheCallTimeout(t *testing.T) {
	srv := world(t)
	srv.Delay("RegisterTargets", time.Minute)
	c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}, CallTimeout: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	err := c.Register(ctx, instanceID)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), tgA) {
		t.Fatalf("Register error = %v, want a deadline exceeded naming %s", err, tgA)
	}
	if ctx.Err() != nil {
		t.Errorf("the caller's context ended too; the call timeout should have ended first")
	}
}

func TestRegisterWithoutGroupsOrInstance(t *testing.T) {
	srv := newServer(t)
	c := newClient(t, srv, Options{})
	if err := c.Register(t.Context(), instanceID); err != nil {
		t.Fatalf("Register: %v", err)
	}
	if err := c.Register(t.Context(), ""); err == nil || !strings.Contains(err.Error(), "instance id is empty") {
		t.Errorf("Register without an instance id = %v, want it refused", err)
	}
	if calls := srv.Calls(); len(calls) != 0 {
		t.Errorf("calls = %+v, want none", calls)
	}
}

// The RegisterTargets row is proven with an instance id that cannot exist: allowed shows
// as InvalidTarget, denied as AccessDenied, and the group never changes, whatever state
// the instance is in (healthy, draining after a drill, never registered).
func TestCheckPermissionsRegisterRow(t *testing.T) {
	const other = "i-0fedcba9876543210"
	for _, tc := range []struct {
		name       string
		targets    []awstest.Target
		deregister bool // the agent deregistered the instanceID before (a drill)
		deny       bool // RegisterTargets is refused
	}{
		{name: "healthy", targets: []awstest.Target{{ID: instanceID}, {ID: other}}},
		{name: "healthy and denied", targets: []awstest.Target{{ID: instanceID}}, deny: true},
		{name: "draining after a drill", targets: []awstest.Target{{ID: instanceID}, {ID: other}}, deregister: true},
		{name: "never registered, and denied", targets: []awstest.Target{{ID: other}}, deny: true},
		{name: "registered but still initial", targets: []awstest.Target{{ID: instanceID, State: "initial"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t)
			srv.AddTargetGroup(tgA, tc.targets...)
			c := newClient(t, srv, Options{TargetGroups: []TargetGroup{{ARN: tgA}}})
			if tc.deregister {
				if err := c.Deregister(t.Context(), instanceID); err != nil {
					t.Fatalf("Deregister: %v", err)
				}
			}
			if tc.deny {
				srv.Deny("RegisterTargets")
			}
			before := health(t, c, tgA)

			rows := c.CheckPermissions(t.Context(), instance.Identity{InstanceID: instanceID})
			var row Check
			for _, r := range rows {
				if r.Name == "elasticloadbalancing:RegisterTargets "+tgA {
					row = r
				}
			}
			if row.Name == "" {
				t.Fatalf("no RegisterTargets row in %+v", rows)
			}
			if row.OK == tc.deny {
				t.Errorf("row = %+v with RegisterTargets denied: %v", row, tc.deny)
			}
			if tc.deny && row.Fix != "add elasticloadbalancing:RegisterTargets on "+tgA+" to the instance role" {
				t.Errorf("row fix %q does not name the grant", row.Fix)
			}
			if !tc.deny && (row.Fix != "" || !strings.Contains(row.Detail, "does not exist")) {
				t.Errorf("allowed row = %+v", row)
			}
			calls := srv.CallsOf("RegisterTargets")
			if len(calls) != 1 || calls[0].Params.Get("Targets.member.1.Id") != probeInstanceID {
				t.Errorf("RegisterTargets calls %+v, want one for the impossible instance", calls)
			}
			if after := health(t, c, tgA); !slices.Equal(after, before) {
				t.Errorf("preflight changed the group: %v, was %v", after, before)
			}
		})
	}
}

// BenchmarkRegister measures Register into three target groups against the double,
// the instance deregistered (draining) before each run.
func BenchmarkRegister(b *testing.B) {
	srv := newServer(b)
	groups := []TargetGroup{{ARN: tgA, Port: 8080}, {ARN: tgB, Port: 8080}, {ARN: tgC, Port: 8080}}
	for _, tg := range groups {
		srv.AddTargetGroup(tg.ARN, awstest.Target{ID: instanceID})
	}
	c := newClient(b, srv, Options{TargetGroups: groups})
	for b.Loop() {
		b.StopTimer()
		if err := c.Deregister(b.Context(), instanceID); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := c.Register(b.Context(), instanceID); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
}
