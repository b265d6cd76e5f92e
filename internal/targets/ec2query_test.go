package targets

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
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

func TestEC2EndpointResolution(t *testing.T) {
	creds := aws.AnonymousCredentials{}
	t.Setenv("AWS_ENDPOINT_URL_EC2", "")
	t.Setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "")
	for _, tc := range []struct {
		region, explicit, env, base, want string
	}{
		{"eu-west-1", "", "", "", "https://ec2.eu-west-1.amazonaws.com"},
		{"cn-north-1", "", "", "", "https://ec2.cn-north-1.amazonaws.com.cn"},
		{"eu-west-1", "", "", "http://global:1", "http://global:1"},
		{"eu-west-1", "", "http://ec2env:1/", "http://global:1", "http://ec2env:1"},
		{"eu-west-1", "http://explicit:1", "http://ec2env:1", "", "http://explicit:1"},
	} {
		t.Setenv("AWS_ENDPOINT_URL_EC2", tc.env)
		var base *string
		if tc.base != "" {
			base = aws.String(tc.base)
		}
		if got := newEC2Query(tc.region, tc.explicit, base, creds, nil).endpoint; got != tc.want {
			t.Errorf("%+v: endpoint %s, want %s", tc, got, tc.want)
		}
	}
}
