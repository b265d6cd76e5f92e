package awstest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const testARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/jenkins/0123456789abcdef"

// signed builds a form POST signed the way the SDK signs it.
func signed(t *testing.T, srv *Server, form url.Values, service, secret string, at time.Time) *http.Request {
	t.Helper()
	body := form.Encode()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL()+"/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	sum := sha256.Sum256([]byte(body))
	creds := aws.Credentials{AccessKeyID: AccessKeyID, SecretAccessKey: secret}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), service, "us-east-1", at); err != nil {
		t.Fatal(err)
	}
	return req
}

func send(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func deregisterForm() url.Values {
	return url.Values{
		"Action":                {"DeregisterTargets"},
		"Version":               {VersionELBv2},
		"TargetGroupArn":        {testARN},
		"Targets.member.1.Id":   {"i-0123456789abcdef0"},
		"Targets.member.1.Port": {"8080"},
		"Targets.member.2.Id":   {"i-0000000000000000a"},
		"Targets.member.2.Port": {"8080"},
		"Targets.member.3.Id":   {"i-0000000000000000b"},
	}
}

func TestSignedRequestIsAnsweredWithTheDocumentedXML(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	srv.AddTargetGroup(testARN, Target{ID: "i-0123456789abcdef0"})

	code, body := send(t, signed(t, srv, deregisterForm(), ServiceELBv2, SecretAccessKey, time.Now()))
	if code != http.StatusOK {
		t.Fatalf("status %d, body %s", code, body)
	}
	for _, want := range []string{
		`<DeregisterTargetsResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">`,
		`<DeregisterTargetsResult></DeregisterTargetsResult>`,
		`<ResponseMetadata><RequestId>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("body %s lacks %s", body, want)
		}
	}
	if got := srv.TargetState(testARN, "i-0123456789abcdef0"); got != StateDraining {
		t.Errorf("target state %q, want draining", got)
	}

	// An error in the query shape.
	form := deregisterForm()
	form.Set("TargetGroupArn", testARN+"0")
	code, body = send(t, signed(t, srv, form, ServiceELBv2, SecretAccessKey, time.Now()))
	if code != http.StatusBadRequest || !strings.Contains(body, "<ErrorResponse") ||
		!strings.Contains(body, "<Type>Sender</Type><Code>TargetGroupNotFound</Code>") || !strings.Contains(body, "<RequestId>") {
		t.Errorf("unknown group: status %d body %s, want 400 ErrorResponse TargetGroupNotFound", code, body)
	}
}

func TestEC2AnswersInItsOwnShape(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	srv.SetInstanceState("i-0123456789abcdef0", "stopping")
	form := url.Values{"Action": {"DescribeInstances"}, "Version": {VersionEC2}, "InstanceId.1": {"i-0123456789abcdef0"}}
	code, body := send(t, signed(t, srv, form, ServiceEC2, SecretAccessKey, time.Now()))
	if code != http.StatusOK || !strings.Contains(body, `<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>`) ||
		!strings.Contains(body, "<instanceState><code>64</code><name>stopping</name></instanceState>") {
		t.Errorf("status %d body %s", code, body)
	}
	form.Set("InstanceId.1", "i-00000000000000000")
	code, body = send(t, signed(t, srv, form, ServiceEC2, SecretAccessKey, time.Now()))
	if code != http.StatusBadRequest || !strings.Contains(body, "<Response><Errors><Error><Code>InvalidInstanceID.NotFound</Code>") || !strings.Contains(body, "<RequestID>") {
		t.Errorf("unknown instance: status %d body %s", code, body)
	}
}

func TestRequestsWithoutAValidSignatureAreRefused(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	srv.AddTargetGroup(testARN, Target{ID: "i-0123456789abcdef0"})

	tampered := signed(t, srv, deregisterForm(), ServiceELBv2, SecretAccessKey, time.Now())
	other := deregisterForm()
	other.Set("Targets.member.1.Id", "i-0aaaaaaaaaaaaaaaa")
	tampered.Body = io.NopCloser(strings.NewReader(other.Encode()))
	tampered.ContentLength = int64(len(other.Encode()))

	for _, tc := range []struct {
		name   string
		req    func() *http.Request
		status int
		code   string
	}{
		{"no authorization", func() *http.Request {
			r := signed(t, srv, deregisterForm(), ServiceELBv2, SecretAccessKey, time.Now())
			r.Header.Del("Authorization")
			return r
		}, http.StatusForbidden, "MissingAuthenticationToken"},
		{"garbled authorization", func() *http.Request {
			r := signed(t, srv, deregisterForm(), ServiceELBv2, SecretAccessKey, time.Now())
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=nonsense")
			return r
		}, http.StatusForbidden, "IncompleteSignature"},
		{"wrong secret", func() *http.Request {
			return signed(t, srv, deregisterForm(), ServiceELBv2, "not-the-secret", time.Now())
		}, http.StatusForbidden, "SignatureDoesNotMatch"},
		{"body changed after signing", func() *http.Request { return tampered }, http.StatusForbidden, "SignatureDoesNotMatch"},
		{"unknown key id", func() *http.Request {
			r := signed(t, srv, deregisterForm(), ServiceELBv2, SecretAccessKey, time.Now())
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), AccessKeyID, "AKIAOTHER00000000000", 1))
			return r
		}, http.StatusForbidden, "InvalidClientTokenId"},
		{"signed an hour ago", func() *http.Request {
			return signed(t, srv, deregisterForm(), ServiceELBv2, SecretAccessKey, time.Now().Add(-time.Hour))
		}, http.StatusForbidden, "SignatureDoesNotMatch"},
		{"scoped to another service", func() *http.Request {
			return signed(t, srv, deregisterForm(), ServiceAutoScaling, SecretAccessKey, time.Now())
		}, http.StatusForbidden, "SignatureDoesNotMatch"},
		{"ec2 with a bad signature", func() *http.Request {
			form := url.Values{"Action": {"DescribeInstances"}, "Version": {VersionEC2}}
			return signed(t, srv, form, ServiceEC2, "not-the-secret", time.Now())
		}, http.StatusUnauthorized, "AuthFailure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := send(t, tc.req())
			if code != tc.status || !strings.Contains(body, "<Code>"+tc.code+"</Code>") {
				t.Errorf("status %d body %s, want %d %s", code, body, tc.status, tc.code)
			}
		})
	}
	if got := srv.TargetState(testARN, "i-0123456789abcdef0"); got != StateHealthy {
		t.Errorf("a refused request changed state: %q", got)
	}
	for _, c := range srv.Calls() {
		if c.Code == "" {
			t.Errorf("call %+v recorded as answered", c)
		}
	}
}

func TestFaultsAndHold(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	srv.AddTargetGroup(testARN, Target{ID: "i-0123456789abcdef0"})
	srv.FailNext("DeregisterTargets", "Throttling", 1)
	code, body := send(t, signed(t, srv, deregisterForm(), ServiceELBv2, SecretAccessKey, time.Now()))
	if code != http.StatusBadRequest || !strings.Contains(body, "<Code>Throttling</Code><Message>Rate exceeded</Message>") {
		t.Errorf("throttled: status %d body %s", code, body)
	}
	srv.Deny("DescribeTargetHealth")
	form := url.Values{"Action": {"DescribeTargetHealth"}, "Version": {VersionELBv2}, "TargetGroupArn": {testARN}}
	code, body = send(t, signed(t, srv, form, ServiceELBv2, SecretAccessKey, time.Now()))
	if code != http.StatusForbidden || !strings.Contains(body, "<Code>AccessDenied</Code>") || !strings.Contains(body, "on resource: "+testARN) {
		t.Errorf("denied: status %d body %s", code, body)
	}

	release := srv.Hold("DeregisterTargets")
	answered := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(signed(t, srv, deregisterForm(), ServiceELBv2, SecretAccessKey, time.Now()))
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	for len(srv.CallsOf("DeregisterTargets")) < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case code := <-answered:
		t.Fatalf("a held call was answered (%d)", code)
	default:
	}
	release()
	if code := <-answered; code != http.StatusOK {
		t.Errorf("released call answered %d, want 200", code)
	}
}

func TestDrainingEndsAfterTheDeregistrationDelay(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	srv.now = func() time.Time { return now }
	srv.AddTargetGroup(testARN, Target{ID: "i-0123456789abcdef0"})
	if _, apiErr := srv.answer(request{service: ServiceELBv2, action: "DeregisterTargets", form: deregisterForm()}); apiErr != nil {
		t.Fatal(apiErr)
	}
	if got := srv.TargetState(testARN, "i-0123456789abcdef0"); got != StateDraining {
		t.Fatalf("state %q, want draining", got)
	}
	now = now.Add(DefaultDeregistrationDelay)
	if got := srv.TargetState(testARN, "i-0123456789abcdef0"); got != StateUnused {
		t.Errorf("state after the delay %q, want unused", got)
	}
}

func TestParseAuthorization(t *testing.T) {
	sig := strings.Repeat("ab", 32)
	good := "AWS4-HMAC-SHA256 Credential=AKID/20261125/us-east-1/elasticloadbalancing/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=" + sig
	for _, tc := range []struct {
		name, header string
		ok           bool
	}{
		{"sdk form", good, true},
		{"no spaces after commas", strings.ReplaceAll(good, ", ", ","), true},
		{"other algorithm", strings.Replace(good, "AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256", 1), false},
		{"empty", "", false},
		{"no signature", "AWS4-HMAC-SHA256 Credential=AKID/20261125/us-east-1/ec2/aws4_request, SignedHeaders=host;x-amz-date", false},
		{"short scope", strings.Replace(good, "/us-east-1", "", 1), false},
		{"bad terminator", strings.Replace(good, "aws4_request", "aws5_request", 1), false},
		{"bad date", strings.Replace(good, "20261125", "2026-11-25", 1), false},
		{"host unsigned", strings.Replace(good, "content-type;host;", "content-type;", 1), false},
		{"date unsigned", strings.Replace(good, ";x-amz-date", "", 1), false},
		{"unsorted headers", strings.Replace(good, "content-type;host", "host;content-type", 1), false},
		{"uppercase header", strings.Replace(good, "content-type", "Content-Type", 1), false},
		{"short signature", strings.Replace(good, sig, sig[:10], 1), false},
		{"uppercase signature", strings.Replace(good, sig, strings.ToUpper(sig), 1), false},
		{"duplicate component", good + ", Signature=" + sig, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := parseAuthorization(tc.header)
			if (err == nil) != tc.ok {
				t.Fatalf("parseAuthorization(%q) error = %v, want ok=%v", tc.header, err, tc.ok)
			}
			if tc.ok && (a.AccessKeyID != "AKID" || a.Region != "us-east-1" || a.Service != "elasticloadbalancing" || a.Signature != sig || len(a.SignedHeaders) != 3) {
				t.Errorf("parsed %+v", a)
			}
		})
	}
}

func FuzzParseAuthorization(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKID/20261125/us-east-1/ec2/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("0", 64))
	f.Add("AWS4-HMAC-SHA256 Credential=/////, SignedHeaders=;, Signature=")
	f.Add("AWS4-HMAC-SHA256 ,,,==")
	f.Fuzz(func(t *testing.T, h string) {
		a, err := parseAuthorization(h)
		if err != nil {
			return
		}
		if a.AccessKeyID == "" || a.Region == "" || a.Service == "" || len(a.Signature) != 64 {
			t.Errorf("accepted %q with empty parts: %+v", h, a)
		}
	})
}

func registerForm(ids ...string) url.Values {
	form := url.Values{"Action": {"RegisterTargets"}, "Version": {VersionELBv2}, "TargetGroupArn": {testARN}}
	for i, id := range ids {
		form.Set("Targets.member."+strconv.Itoa(i+1)+".Id", id)
	}
	return form
}

func TestRegisterTargets(t *testing.T) {
	const (
		running = "i-0123456789abcdef0"
		stopped = "i-0000000000000000a"
	)
	srv := NewServer()
	defer srv.Close()
	srv.AddTargetGroup(testARN, Target{ID: running})
	srv.SetInstanceState(stopped, "stopped")
	answer := func(form url.Values) *apiError {
		t.Helper()
		_, apiErr := srv.answer(request{service: ServiceELBv2, action: form.Get("Action"), form: form})
		return apiErr
	}

	// A draining target is registered again, and serves (no health checks here).
	if apiErr := answer(deregisterForm()); apiErr != nil {
		t.Fatal(apiErr)
	}
	code, body := send(t, signed(t, srv, registerForm(running), ServiceELBv2, SecretAccessKey, time.Now()))
	if code != http.StatusOK || !strings.Contains(body, `<RegisterTargetsResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><RegisterTargetsResult></RegisterTargetsResult>`) {
		t.Fatalf("status %d body %s", code, body)
	}
	if got := srv.TargetState(testARN, running); got != StateHealthy {
		t.Errorf("state %q after registering a draining target, want healthy", got)
	}

	// Registering a registered target leaves it as it is.
	srv.AddTargetGroup(testARN, Target{ID: running, Port: 9090, State: "unhealthy"})
	form := registerForm(running)
	form.Set("Targets.member.1.Port", "9090")
	if apiErr := answer(form); apiErr != nil {
		t.Fatal(apiErr)
	}
	if e := srv.targetGroups[testARN].targets[targetKey{running, 9090}]; e.state != "unhealthy" {
		t.Errorf("re-registering an unhealthy target made it %q; ELBv2 leaves it as it is", e.state)
	}

	// One target that cannot be registered refuses the whole call.
	for _, tc := range []struct{ name, id, msg string }{
		{"not running", stopped, "not in a running state"},
		{"unknown", "i-0ffffffffffffffff", "does not exist"},
	} {
		srv.SetDeregistrationDelay(0)
		if apiErr := answer(deregisterForm()); apiErr != nil {
			t.Fatal(apiErr)
		}
		apiErr := answer(registerForm(running, tc.id))
		if apiErr == nil || apiErr.code != "InvalidTarget" || !strings.Contains(apiErr.message, tc.msg) {
			t.Errorf("%s: answer %v, want InvalidTarget %q", tc.name, apiErr, tc.msg)
		}
		if got := srv.TargetState(testARN, running); got != StateUnused {
			t.Errorf("%s: the valid target went %q though the call was refused", tc.name, got)
		}
	}

	form = registerForm(running)
	form.Set("TargetGroupArn", testARN+"0")
	if apiErr := answer(form); apiErr == nil || apiErr.code != "TargetGroupNotFound" {
		t.Errorf("unknown group: %v, want TargetGroupNotFound", apiErr)
	}
	if apiErr := answer(url.Values{"Action": {"RegisterTargets"}, "TargetGroupArn": {testARN}}); apiErr == nil || apiErr.code != "ValidationError" {
		t.Errorf("no targets: %v, want ValidationError", apiErr)
	}

	srv.Deny("RegisterTargets")
	code, body = send(t, signed(t, srv, registerForm(running), ServiceELBv2, SecretAccessKey, time.Now()))
	if code != http.StatusForbidden || !strings.Contains(body, "<Code>AccessDenied</Code>") || !strings.Contains(body, "elasticloadbalancing:RegisterTargets on resource: "+testARN) {
		t.Errorf("denied: status %d body %s", code, body)
	}
	if got := srv.TargetState(testARN, running); got != StateUnused {
		t.Errorf("a denied call registered the target: %q", got)
	}
	calls := srv.CallsOf("RegisterTargets")
	if len(calls) != 2 || calls[0].Code != "" || calls[1].Code != "AccessDenied" || calls[1].Params.Get("Targets.member.1.Id") != running {
		t.Errorf("recorded calls %+v, want the two sent over HTTP, the second denied", calls)
	}
}
