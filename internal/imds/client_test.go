package imds_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds/imdstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

var testIdentity = instance.Identity{
	InstanceID:       "i-0abc1234def567890",
	AvailabilityZone: "eu-west-1b",
	AZID:             "euw1-az2",
	Region:           "eu-west-1",
	Market:           "spot",
	AutoScalingGroup: "jenkins-controller",
}

func TestIdentity(t *testing.T) {
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	var counts requestCounts
	c := imds.New(imds.Options{Endpoint: srv.URL(), OnRequest: counts.record})
	ctx, cancel := context.WithTimeout(context.Background(), testenv.WaitLimit)
	defer cancel()
	id, err := c.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id != testIdentity {
		t.Fatalf("Identity = %+v, want %+v", id, testIdentity)
	}
	if got := counts.get(imds.EndpointIdentity, imds.ResultOK); got != 6 {
		t.Errorf("identity ok requests = %d, want 6", got)
	}
	if got := counts.get(imds.EndpointToken, imds.ResultOK); got != 1 {
		t.Errorf("token requests = %d, want 1 (the token is cached)", got)
	}
}

func TestIdentityWithoutInstanceTags(t *testing.T) {
	id := testIdentity
	id.AutoScalingGroup = ""
	srv := imdstest.NewServer(id)
	defer srv.Close()
	var counts requestCounts
	c := imds.New(imds.Options{Endpoint: srv.URL(), OnRequest: counts.record})
	got, err := c.Identity(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got != id {
		t.Fatalf("Identity = %+v, want %+v", got, id)
	}
	if counts.get(imds.EndpointIdentity, imds.ResultNotFound) != 1 {
		t.Error("the absent tag should be counted as not_found")
	}
}

func TestIdentityEndpointFromEnvironment(t *testing.T) {
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", srv.URL())
	c := imds.New(imds.Options{})
	if c.Endpoint() != srv.URL() {
		t.Fatalf("Endpoint = %s", c.Endpoint())
	}
	if _, err := c.Identity(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestIdentityErrors(t *testing.T) {
	closedPort := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return "http://" + ln.Addr().String()
	}()

	tests := []struct {
		name  string
		setup func(t *testing.T) string // returns the endpoint
		want  string
	}{
		{"unreachable", func(*testing.T) string { return closedPort }, "is this an EC2 instance?"},
		{"disabled", func(t *testing.T) string {
			srv := imdstest.NewServer(testIdentity)
			t.Cleanup(srv.Close)
			srv.SetDisabled(true)
			return srv.URL()
		}, "IMDS is disabled"},
		{"no IMDSv2", func(t *testing.T) string {
			srv := imdstest.NewServer(testIdentity)
			t.Cleanup(srv.Close)
			p := imdstest.NewFaultProxy(srv.URL())
			t.Cleanup(p.Close)
			p.SetFault("/latest/api/token", imdstest.Fault{Status: http.StatusNotFound})
			return p.URL()
		}, "never falls back to IMDSv1"},
		{"garbage instance id", func(t *testing.T) string {
			id := testIdentity
			id.InstanceID = "<html><body>hello</body></html>"
			srv := imdstest.NewServer(id)
			t.Cleanup(srv.Close)
			return srv.URL()
		}, "instance id"},
		{"zone outside region", func(t *testing.T) string {
			id := testIdentity
			id.AvailabilityZone = "us-east-1a"
			srv := imdstest.NewServer(id)
			t.Cleanup(srv.Close)
			return srv.URL()
		}, "not a zone of region"},
		{"region missing", func(t *testing.T) string {
			id := testIdentity
			id.Region = ""
			srv := imdstest.NewServer(id)
			t.Cleanup(srv.Close)
			return srv.URL()
		}, "placement/region not found"},
		{"slow service", func(t *testing.T) string {
			srv := imdstest.NewServer(testIdentity)
			t.Cleanup(srv.Close)
			p := imdstest.NewFaultProxy(srv.URL())
			t.Cleanup(p.Close)
			p.SetFault("/latest/", imdstest.Fault{Delay: time.Minute})
			return p.URL()
		}, "no answer from"},
		{"server error", func(t *testing.T) string {
			srv := imdstest.NewServer(testIdentity)
			t.Cleanup(srv.Close)
			p := imdstest.NewFaultProxy(srv.URL())
			t.Cleanup(p.Close)
			p.SetFault("/latest/meta-data/", imdstest.Fault{Status: http.StatusInternalServerError})
			return p.URL()
		}, "metadata service error (500)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := imds.New(imds.Options{Endpoint: tt.setup(t), RequestTimeout: 300 * time.Millisecond})
			_, err := c.Identity(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Identity error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestNoIMDSv1Fallback checks that a service refusing tokens never sees a request
// without one.
func TestNoIMDSv1Fallback(t *testing.T) {
	for _, status := range []int{http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusInternalServerError} {
		srv := imdstest.NewServer(testIdentity)
		p := imdstest.NewFaultProxy(srv.URL())
		p.SetFault("/latest/api/token", imdstest.Fault{Status: status})
		c := imds.New(imds.Options{Endpoint: p.URL()})
		_, err := c.Identity(context.Background())
		if err == nil {
			t.Errorf("token status %d: Identity succeeded", status)
		}
		if n := p.Requests("/latest/meta-data/"); n != 0 {
			t.Errorf("token status %d: %d metadata requests sent without a token", status, n)
		}
		p.Close()
		srv.Close()
	}
}

func TestTokenRefreshedAfterRevocation(t *testing.T) {
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	var counts requestCounts
	c := imds.New(imds.Options{Endpoint: srv.URL(), OnRequest: counts.record})
	ctx := context.Background()
	if _, err := c.Identity(ctx); err != nil {
		t.Fatal(err)
	}
	srv.RevokeTokens()
	if _, err := c.Identity(ctx); err != nil {
		t.Fatalf("after revocation: %v", err)
	}
	if got := counts.get(imds.EndpointToken, imds.ResultOK); got != 2 {
		t.Errorf("token requests = %d, want 2", got)
	}
	if got := counts.get(imds.EndpointIdentity, imds.ResultUnauthorized); got != 1 {
		t.Errorf("unauthorized answers = %d, want 1", got)
	}
}

func TestContextCancelled(t *testing.T) {
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	c := imds.New(imds.Options{Endpoint: srv.URL()})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Identity(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled in the chain", err)
	}
}
