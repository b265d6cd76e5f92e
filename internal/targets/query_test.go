package targets

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/awsapi/awsapitest"
)

// TestServiceEndpoints: each service's default host and endpoint variable (awsapi
// tests the rest of the resolution).
func TestServiceEndpoints(t *testing.T) {
	for _, v := range []string{"AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2", "AWS_ENDPOINT_URL_AUTO_SCALING", "AWS_ENDPOINT_URL_EC2", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"} {
		t.Setenv(v, "")
	}
	cases := []struct {
		name, got, want string
	}{
		{"ELBv2", newELBAPI("eu-west-1", "", aws.Config{}).q.api.Endpoint, "https://elasticloadbalancing.eu-west-1.amazonaws.com"},
		{"Auto Scaling", newASGAPI("cn-north-1", "", aws.Config{}).q.api.Endpoint, "https://autoscaling.cn-north-1.amazonaws.com.cn"},
		{"EC2", newEC2Query("eu-west-1", "", aws.Config{}).api.Endpoint, "https://ec2.eu-west-1.amazonaws.com"},
	}
	t.Setenv("AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2", "http://elb")
	t.Setenv("AWS_ENDPOINT_URL_AUTO_SCALING", "http://asg")
	t.Setenv("AWS_ENDPOINT_URL_EC2", "http://ec2")
	cases = append(cases,
		struct{ name, got, want string }{"ELBv2 variable", newELBAPI("us-east-1", "", aws.Config{}).q.api.Endpoint, "http://elb"},
		struct{ name, got, want string }{"Auto Scaling variable", newASGAPI("us-east-1", "", aws.Config{}).q.api.Endpoint, "http://asg"},
		struct{ name, got, want string }{"EC2 variable", newEC2Query("us-east-1", "", aws.Config{}).api.Endpoint, "http://ec2"})
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s: endpoint %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}

// asgOn is the Auto Scaling caller pointed at h, with the package's retryer but no
// waiting between attempts.
func asgOn(t *testing.T, h http.HandlerFunc) *asgAPI {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return newASGAPI(region, ts.URL, aws.Config{
		Credentials: credentials.NewStaticCredentialsProvider("AKIATEST", "secret", ""),
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = maxAttempts
				o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return time.Millisecond, nil })
			})
		},
	})
}

func queryError(w http.ResponseWriter, status int, kind, code, msg string) {
	w.WriteHeader(status)
	w.Write([]byte(`<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>` + kind +
		`</Type><Code>` + code + `</Code><Message>` + msg + `</Message></Error><RequestId>req-7</RequestId></ErrorResponse>`))
}

// TestQueryErrors: the XML error's code and message come back as a smithy.APIError
// with the status and the request id, inside the operation's error; throttling and
// server errors are retried until the attempts run out, the caller's errors are not.
func TestQueryErrors(t *testing.T) {
	cases := []struct {
		status         int
		kind, code     string
		attempts       int32
		classifiedWith func(error) bool
	}{
		{http.StatusBadRequest, "Sender", codeValidationError, 1, func(err error) bool { return isNoActiveAction(err) }},
		{http.StatusForbidden, "Sender", codeAccessDenied, 1, isAccessDenied},
		{http.StatusBadRequest, "Sender", "Throttling", maxAttempts, nil},
		{http.StatusServiceUnavailable, "Receiver", "ServiceUnavailable", maxAttempts, nil},
		{http.StatusInternalServerError, "Receiver", "InternalFailure", maxAttempts, nil},
	}
	for _, tc := range cases {
		var n atomic.Int32
		a := asgOn(t, func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			if err := r.ParseForm(); err != nil || r.Form.Get("Action") != "CompleteLifecycleAction" || r.Form.Get("Version") != asgVersion ||
				r.Form.Get("LifecycleActionToken") != "tok" || r.Form.Get("LifecycleActionResult") != "CONTINUE" || r.Form.Has("InstanceId") {
				t.Errorf("form %v", r.Form)
			}
			if a := r.Header.Get("Authorization"); !strings.Contains(a, "/"+region+"/autoscaling/aws4_request") {
				t.Errorf("Authorization %q", a)
			}
			queryError(w, tc.status, tc.kind, tc.code, noActiveAction+" with the token")
		})
		err := a.completeLifecycleAction(t.Context(), lifecycleAction{group: "g", hook: "h", token: "tok"}, "CONTINUE")
		if got := n.Load(); got != tc.attempts {
			t.Errorf("%s: %d attempts, want %d", tc.code, got, tc.attempts)
		}
		for _, p := range awsapitest.Problems(err, awsapitest.Want{
			Service: "Auto Scaling", Operation: "CompleteLifecycleAction", Status: tc.status, RequestID: "req-7",
			Code: tc.code, Message: noActiveAction + " with the token",
		}) {
			t.Errorf("%s: %s", tc.code, p)
		}
		if apiCode(err) != tc.code || apiMessage(err) != noActiveAction+" with the token" {
			t.Errorf("%s: the package reads code %q, message %q", tc.code, apiCode(err), apiMessage(err))
		}
		if tc.classifiedWith != nil && !tc.classifiedWith(err) {
			t.Errorf("%s: %v not classified", tc.code, err)
		}
	}

	// An answer that is no XML error keeps the status.
	a := asgOn(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	err := a.detachInstances(t.Context(), "g", false, "i-1")
	if err == nil || !strings.Contains(err.Error(), "502") {
		t.Errorf("a bare 502: %v", err)
	}
}

// TestQueryPages: DescribeAutoScalingGroups and DescribeAutoScalingInstances follow
// NextToken; a token answered again ends the listing with an error instead of a loop.
func TestQueryPages(t *testing.T) {
	page := func(action, inner string, tokens map[string]string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if err := r.ParseForm(); err != nil || r.Form.Get("Action") != action {
				t.Errorf("form %v", r.Form)
			}
			next := tokens[r.Form.Get("NextToken")]
			body := "<" + action + "Response><" + action + "Result>" + strings.ReplaceAll(inner, "PAGE", r.Form.Get("NextToken"))
			if next != "" {
				body += "<NextToken>" + next + "</NextToken>"
			}
			w.Write([]byte(body + "</" + action + "Result></" + action + "Response>"))
		}
	}
	a := asgOn(t, page("DescribeAutoScalingGroups",
		`<AutoScalingGroups><member><AutoScalingGroupName>g-PAGE</AutoScalingGroupName><DesiredCapacity>2</DesiredCapacity>`+
			`<TrafficSources><member><Identifier>arn:tg</Identifier><Type>elbv2</Type></member></TrafficSources></member></AutoScalingGroups>`,
		map[string]string{"": "t/1+", "t/1+": "t2"}))
	groups, err := a.describeAutoScalingGroups(t.Context(), "g")
	if err != nil || len(groups) != 3 || groups[1].Name != "g-t/1+" || groups[2].DesiredCapacity != 2 || attachedTargetGroups(groups[0])[0] != "arn:tg" {
		t.Errorf("three pages of groups: %+v, %v", groups, err)
	}

	a = asgOn(t, page("DescribeAutoScalingInstances",
		`<AutoScalingInstances><member><InstanceId>i-PAGE</InstanceId><AutoScalingGroupName>g</AutoScalingGroupName><LifecycleState>InService</LifecycleState></member></AutoScalingInstances>`,
		map[string]string{"": "a"}))
	insts, err := a.describeAutoScalingInstances(t.Context(), "i-")
	if err != nil || len(insts) != 2 || insts[1].InstanceID != "i-a" || insts[1].LifecycleState != "InService" {
		t.Errorf("two pages of instances: %+v, %v", insts, err)
	}

	a = asgOn(t, page("DescribeAutoScalingGroups", "", map[string]string{"": "again", "again": "again"}))
	if _, err := a.describeAutoScalingGroups(t.Context(), "g"); err == nil || !strings.Contains(err.Error(), "NextToken") {
		t.Errorf("a repeated NextToken: %v", err)
	}
}

func TestMembers(t *testing.T) {
	form := url.Values{}
	members(form, "InstanceIds", "i-1", "i-2")
	if form.Encode() != "InstanceIds.member.1=i-1&InstanceIds.member.2=i-2" {
		t.Errorf("form %s", form.Encode())
	}
}
