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
	InstanceType:     "m7g.large",
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
	if got := counts.get(imds.EndpointIdentity, imds.ResultOK); got != 7 {
		t.Errorf("identity ok requests = %d, want 7", got)
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
		}, "instance-id: \"<html><body>hello</body></html>\" is not i- followed by"},
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
			// Failures that may pass are retried until the deadline; the last one is
			// named in the error.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := c.Identity(ctx)
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
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Identity(ctx)
		cancel()
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

// TestIdentityRetriesEachItemOnItsOwn fails several items a few times each, in every
// way a request can fail short of a permanent refusal: Identity must come back whole,
// and an item that already answered must not be asked again.
func TestIdentityRetriesEachItemOnItsOwn(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out seconds of backoff")
	}
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	p := imdstest.NewFaultProxy(srv.URL())
	defer p.Close()
	md := "/latest/meta-data/"
	p.Schedule("/latest/api/token", imdstest.Fault{Status: http.StatusInternalServerError}, imdstest.Fault{Drop: true})
	p.Schedule(md+"instance-id",
		imdstest.Fault{Status: http.StatusServiceUnavailable},
		imdstest.Fault{Status: http.StatusTooManyRequests},
		imdstest.Fault{Drop: true},
		imdstest.Fault{Delay: time.Minute},
		imdstest.Fault{Body: []byte("<html>Bad Gateway</html>")})
	p.Schedule(md+"placement/region", imdstest.Fault{Status: http.StatusInternalServerError}, imdstest.Fault{Status: http.StatusUnauthorized}, imdstest.Fault{Status: http.StatusUnauthorized})
	p.Schedule(md+"instance-type", imdstest.Fault{Body: []byte("m7g")})
	p.Schedule(md+"tags/instance/", imdstest.Fault{Status: http.StatusTooManyRequests})

	c := imds.New(imds.Options{Endpoint: p.URL(), RequestTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), testenv.WaitLimit)
	defer cancel()
	id, err := c.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id != testIdentity {
		t.Fatalf("Identity = %+v, want %+v", id, testIdentity)
	}
	if p.Pending() != 0 {
		t.Fatalf("%d scheduled faults never met", p.Pending())
	}
	for path, want := range map[string]int{
		"instance-id": 6, "placement/region": 4, "instance-type": 2, "tags/instance/aws:autoscaling:groupName": 2,
		"placement/availability-zone-id": 1, "instance-life-cycle": 1,
	} {
		if got := p.Requests(md + path); got != want {
			t.Errorf("%s: %d requests, want %d (each item is retried on its own until it answers)", path, got, want)
		}
	}
}

// TestIdentityNeverAnswers: an IMDS that stalls every request ends at the caller's
// deadline, with an error that says which item, how long and why.
func TestIdentityNeverAnswers(t *testing.T) {
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	p := imdstest.NewFaultProxy(srv.URL())
	defer p.Close()
	p.SetFault("/latest/", imdstest.Fault{Delay: time.Hour})
	c := imds.New(imds.Options{Endpoint: p.URL(), RequestTimeout: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err := c.Identity(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Identity = %v, want the deadline in the chain", err)
	}
	for _, want := range []string{"instance-id", "no good answer in", "attempts", "stayed away until the deadline", "no answer from"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if n := p.Requests("/latest/api/token"); n < 2 {
		t.Errorf("%d token requests: a stalled request must cost one attempt, not the whole identity", n)
	}
}

// TestIdentityGarbageGivesUp: an item that keeps answering garbage fails after a few
// answers, naming the item and the value, long before the deadline.
func TestIdentityGarbageGivesUp(t *testing.T) {
	for _, tc := range []struct {
		path string
		body string
		want string
	}{
		{"placement/region", "<html>hello</html>", `placement/region: "<html>hello</html>" is not a region name`},
		{"instance-type", "m7g large", `instance-type: "m7g large" is not an instance type`},
		{"instance-life-cycle", "SPOT!", `instance-life-cycle: "SPOT!" is not spot or on-demand`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			srv := imdstest.NewServer(testIdentity)
			defer srv.Close()
			p := imdstest.NewFaultProxy(srv.URL())
			defer p.Close()
			p.SetFault("/latest/meta-data/"+tc.path, imdstest.Fault{Body: []byte(tc.body)})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err := imds.New(imds.Options{Endpoint: p.URL()}).Identity(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Identity = %v, want an error containing %q before the deadline", err, tc.want)
			}
			if n := p.Requests("/latest/meta-data/" + tc.path); n != 3 {
				t.Errorf("%d requests for %s, want 3", n, tc.path)
			}
		})
	}
}

// TestIdentityPermanentRefusalAtOnce: a disabled IMDS or one without IMDSv2 cannot get
// better by asking again; Identity says so at once instead of waiting for the deadline.
func TestIdentityPermanentRefusalAtOnce(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   string
	}{{http.StatusForbidden, "IMDS is disabled"}, {http.StatusNotFound, "never falls back to IMDSv1"}, {http.StatusMethodNotAllowed, "never falls back to IMDSv1"}} {
		srv := imdstest.NewServer(testIdentity)
		p := imdstest.NewFaultProxy(srv.URL())
		p.SetFault("/latest/api/token", imdstest.Fault{Status: tc.status})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := imds.New(imds.Options{Endpoint: p.URL()}).Identity(ctx)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("token %d: Identity = %v, want %q at once", tc.status, err, tc.want)
		}
		if n := p.Requests("/latest/api/token"); n != 1 {
			t.Errorf("token %d: %d token requests, want 1", tc.status, n)
		}
		p.Close()
		srv.Close()
	}
}

// TestIdentityOptionalItemsAbsent: a 404 on the zone id, life cycle, instance type or
// group tag leaves the field empty after one request; it is not a failure.
func TestIdentityOptionalItemsAbsent(t *testing.T) {
	id := instance.Identity{InstanceID: testIdentity.InstanceID, AvailabilityZone: testIdentity.AvailabilityZone, Region: testIdentity.Region}
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
	if n := counts.get(imds.EndpointIdentity, imds.ResultNotFound); n != 4 {
		t.Errorf("not_found answers = %d, want 4 (one per optional item)", n)
	}
}

func TestTargetLifecycleState(t *testing.T) {
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	p := imdstest.NewFaultProxy(srv.URL())
	defer p.Close()
	c := imds.New(imds.Options{Endpoint: p.URL()})
	ctx, cancel := context.WithTimeout(context.Background(), testenv.WaitLimit)
	defer cancel()
	if st, err := c.TargetLifecycleState(ctx); err != nil || st != "" {
		t.Fatalf("before any transition = %q, %v; want \"\", nil (404)", st, err)
	}
	for _, want := range []string{"Warmed:Running", "Warmed:Stopped", "InService"} {
		srv.SetTargetLifecycleState(want)
		if st, err := c.TargetLifecycleState(ctx); err != nil || st != want {
			t.Fatalf("TargetLifecycleState = %q, %v; want %q", st, err, want)
		}
	}
	path := "/latest/meta-data/autoscaling/target-lifecycle-state"
	p.Schedule(path, imdstest.Fault{Body: []byte("<html>")}, imdstest.Fault{Status: http.StatusInternalServerError})
	if st, err := c.TargetLifecycleState(ctx); err == nil || !strings.Contains(err.Error(), "is not a lifecycle state") {
		t.Errorf("garbage: %q, %v; want an error", st, err)
	}
	if st, err := c.TargetLifecycleState(ctx); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("server error: %q, %v; want an error, never \"\"", st, err)
	}
}
