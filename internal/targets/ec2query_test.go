package targets

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestDescribeInstancesRetriesThrottling: EC2 throttles with RequestLimitExceeded
// (HTTP 503) during mass interruptions; the call is retried like the SDK's would be.
func TestDescribeInstancesRetriesThrottling(t *testing.T) {
	srv := newServer(t)
	c := newClient(t, srv, Options{})
	srv.SetInstanceState(instanceID, "terminated")
	srv.FailNext("DescribeInstances", "RequestLimitExceeded", 2)
	gone, err := c.InstanceTerminated(t.Context(), instanceID)
	if err != nil || !gone {
		t.Fatalf("after two throttles: %v, %v", gone, err)
	}
	if n := len(srv.CallsOf("DescribeInstances")); n != 3 {
		t.Errorf("%d calls, want 3", n)
	}
	for _, call := range srv.CallsOf("DescribeInstances") {
		if call.Service != "ec2" || call.Region != "us-east-1" || call.Params.Get("InstanceId.1") != instanceID || call.Params.Get("Version") != ec2Version {
			t.Errorf("call %+v", call)
		}
	}
}

func TestDescribeInstancesKeepsTheDeadline(t *testing.T) {
	srv := newServer(t)
	c := newClient(t, srv, Options{CallTimeout: 200 * time.Millisecond})
	release := srv.Hold("DescribeInstances")
	defer release()
	_, err := c.InstanceTerminated(t.Context(), instanceID)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("held call = %v, want a deadline error", err)
	}
}
