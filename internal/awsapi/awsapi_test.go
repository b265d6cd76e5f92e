package awsapi

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/awsapi/awsapitest"
)

var testService = Service{ID: "Test Service", Signing: "testsvc", Host: "testhost", EnvName: "TEST_SERVICE"}

func TestEndpoint(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL_TEST_SERVICE", "")
	t.Setenv("AWS_ENDPOINT_URL_OTHER", "")
	t.Setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "")
	cases := []struct {
		name, region, explicit, env, other, base, ignore, want string
	}{
		{name: "default", region: "eu-west-1", want: "https://testhost.eu-west-1.amazonaws.com"},
		{name: "China", region: "cn-north-1", want: "https://testhost.cn-north-1.amazonaws.com.cn"},
		{name: "explicit first", region: "us-east-1", explicit: "http://127.0.0.1:9/", env: "http://env", base: "http://base", want: "http://127.0.0.1:9"},
		{name: "service variable", region: "us-east-1", env: "http://env/", base: "http://base", want: "http://env"},
		{name: "other service's variable", region: "us-east-1", other: "http://other", want: "https://testhost.us-east-1.amazonaws.com"},
		{name: "global endpoint", region: "us-east-1", base: "http://base/", want: "http://base"},
		{name: "ignored", region: "us-east-1", env: "http://env", base: "http://base", ignore: "true", want: "https://testhost.us-east-1.amazonaws.com"},
		{name: "explicit, ignored", region: "us-east-1", explicit: "http://127.0.0.1:9", ignore: "true", want: "http://127.0.0.1:9"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("AWS_ENDPOINT_URL_TEST_SERVICE", tc.env)
			t.Setenv("AWS_ENDPOINT_URL_OTHER", tc.other)
			t.Setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", tc.ignore)
			cfg := aws.Config{}
			if tc.base != "" {
				cfg.BaseEndpoint = aws.String(tc.base)
			}
			if got := New(testService, tc.region, tc.explicit, cfg).Endpoint; got != tc.want {
				t.Errorf("endpoint = %q, want %q", got, tc.want)
			}
		})
	}
}

// testConfig has static credentials and a standard retryer of five attempts that does
// not wait.
func testConfig() aws.Config {
	return aws.Config{
		Credentials: credentials.NewStaticCredentialsProvider("AKIATEST", "secret", ""),
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = 5
				o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return time.Millisecond, nil })
			})
		},
	}
}

func clientOn(t *testing.T, cfg aws.Config, h http.HandlerFunc) *Client {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return New(testService, "us-east-1", ts.URL, cfg)
}

var post = Request{
	Operation: "DoThing", Method: http.MethodPost, Path: "/",
	Header: http.Header{"Content-Type": {"application/x-amz-json-1.1"}, "X-Amz-Target": {"Test.DoThing"}},
	Body:   []byte(`{"Name":"x"}`),
}

// decodeStatus answers an error with the status and the X-Test-Code header as code,
// else nil.
func decodeStatus(resp *http.Response, _ []byte) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var apiErr error = &smithy.GenericAPIError{Code: resp.Header.Get("X-Test-Code"), Message: "the message"}
	if resp.Header.Get("X-Test-Code") == "" {
		apiErr = errors.New("answered " + resp.Status)
	}
	return ResponseError(resp, "", apiErr)
}

// TestDoSigns: the request goes out as built, signed for the service and the region,
// with the body's hash; the decoder sees the answer's status, headers and body.
func TestDoSigns(t *testing.T) {
	c := clientOn(t, testConfig(), func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		if r.Method != http.MethodPost || r.URL.Path != "/" || r.Header.Get("X-Amz-Target") != "Test.DoThing" ||
			!strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential=AKIATEST/") || !strings.Contains(auth, "/us-east-1/testsvc/aws4_request") ||
			!strings.Contains(auth, "content-type") || !strings.Contains(auth, "x-amz-target") {
			t.Errorf("request %s %s %v", r.Method, r.URL, r.Header)
		}
		w.Header().Set("X-Answer", "yes")
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte("the body"))
	})
	err := c.Do(t.Context(), post, func(resp *http.Response, body []byte) error {
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("X-Answer") != "yes" || string(body) != "the body" {
			t.Errorf("answer %d %v %q", resp.StatusCode, resp.Header, body)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if post.Header.Get("Authorization") != "" {
		t.Error("Do signed the caller's headers")
	}
}

// TestDoRetries: server errors and throttling are retried as the retryer says until an
// answer or its attempts run out; errors the caller must fix are not; the error keeps
// the operation, the status, the request id and the decoder's error.
func TestDoRetries(t *testing.T) {
	cases := []struct {
		status   int
		code     string
		attempts int32
	}{
		{http.StatusInternalServerError, "InternalServerError", 5},
		{http.StatusServiceUnavailable, "", 5},
		{http.StatusBadRequest, "ThrottlingException", 5},
		{http.StatusBadRequest, "ValidationException", 1},
		{http.StatusForbidden, "AccessDeniedException", 1},
	}
	for _, tc := range cases {
		var n atomic.Int32
		c := clientOn(t, testConfig(), func(w http.ResponseWriter, _ *http.Request) {
			n.Add(1)
			w.Header().Set("X-Amzn-RequestId", "req-1")
			w.Header().Set("X-Test-Code", tc.code)
			w.WriteHeader(tc.status)
		})
		err := c.Do(t.Context(), post, decodeStatus)
		if got := n.Load(); got != tc.attempts {
			t.Errorf("%d %s: %d attempts, want %d", tc.status, tc.code, got, tc.attempts)
		}
		for _, p := range awsapitest.Problems(err, awsapitest.Want{
			Service: "Test Service", Operation: "DoThing", Status: tc.status, RequestID: "req-1", Code: tc.code, Message: "the message",
		}) {
			t.Errorf("%d %s: %s", tc.status, tc.code, p)
		}
	}

	// Recovered after two server errors.
	var n atomic.Int32
	c := clientOn(t, testConfig(), func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1) <= 2 {
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	if err := c.Do(t.Context(), post, decodeStatus); err != nil || n.Load() != 3 {
		t.Errorf("after two server errors: %v, %d attempts", err, n.Load())
	}
}

// TestDoCanceled: a call canceled during an attempt is not retried and says so.
func TestDoCanceled(t *testing.T) {
	var n atomic.Int32
	ctx, cancel := context.WithCancel(t.Context())
	c := clientOn(t, testConfig(), func(_ http.ResponseWriter, r *http.Request) {
		// The server notices the client going away only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		n.Add(1)
		cancel()
		<-r.Context().Done()
	})
	err := c.Do(ctx, post, decodeStatus)
	var canceled *aws.RequestCanceledError
	if !errors.Is(err, context.Canceled) || !errors.As(err, &canceled) || n.Load() != 1 {
		t.Errorf("canceled: %v after %d attempts", err, n.Load())
	}
}

// TestDoDeadlineBetweenAttempts: a deadline that ends while waiting for the next
// attempt gives the deadline's error, wrapping the last attempt's.
func TestDoDeadlineBetweenAttempts(t *testing.T) {
	cfg := testConfig()
	cfg.Retryer = func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return time.Hour, nil })
		})
	}
	c := clientOn(t, cfg, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := c.Do(ctx, post, decodeStatus)
	var sc interface{ HTTPStatusCode() int }
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &sc) || sc.HTTPStatusCode() != http.StatusServiceUnavailable {
		t.Errorf("deadline between attempts: %v", err)
	}
}

// TestDoSendError: a connection that fails is a RequestSendError, retried.
func TestDoSendError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			conn.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	c := New(testService, "us-east-1", "http://"+l.Addr().String(), testConfig())
	err = c.Do(t.Context(), post, decodeStatus)
	var send *smithyhttp.RequestSendError
	if !errors.As(err, &send) || n.Load() != 5 {
		t.Errorf("dropped connections: %v after %d attempts", err, n.Load())
	}
}

// TestDoDecodeAndCredentials: an undecodable success is a DeserializationError, not
// retried; a client without credentials makes no request.
func TestDoDecodeAndCredentials(t *testing.T) {
	var n atomic.Int32
	c := clientOn(t, testConfig(), func(w http.ResponseWriter, _ *http.Request) { n.Add(1); w.Write([]byte("<xml/>")) })
	err := c.Do(t.Context(), post, func(*http.Response, []byte) error { return Deserialization(errors.New("not JSON")) })
	var de *smithy.DeserializationError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "decode answer") || n.Load() != 1 {
		t.Errorf("undecodable: %v after %d attempts", err, n.Load())
	}

	cfg := testConfig()
	cfg.Credentials = nil
	c = clientOn(t, cfg, func(http.ResponseWriter, *http.Request) { n.Add(1) })
	if err := c.Do(t.Context(), post, decodeStatus); err == nil || !strings.Contains(err.Error(), "no AWS credentials provider") || n.Load() != 1 {
		t.Errorf("no credentials: %v", err)
	}
}

// TestMaxAnswer: the decoder sees at most MaxAnswer bytes.
func TestMaxAnswer(t *testing.T) {
	c := clientOn(t, testConfig(), func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(strings.Repeat("x", 100))) })
	c.MaxAnswer = 10
	err := c.Do(t.Context(), post, func(_ *http.Response, body []byte) error {
		if len(body) != 10 {
			t.Errorf("%d bytes", len(body))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestJitterRetryer: what it retries, and its waits.
func TestJitterRetryer(t *testing.T) {
	r := JitterRetryer{Attempts: 6, MaxBackoff: 2 * time.Second}
	resp := func(status int) *http.Response { return &http.Response{StatusCode: status, Header: http.Header{}} }
	cases := []struct {
		name  string
		err   error
		retry bool
	}{
		{"connection", &smithyhttp.RequestSendError{Err: errors.New("reset")}, true},
		{"canceled", &aws.RequestCanceledError{Err: context.Canceled}, false},
		{"server error", ResponseError(resp(500), "", errors.New("answered 500")), true},
		{"RequestLimitExceeded", ResponseError(resp(503), "", &smithy.GenericAPIError{Code: "RequestLimitExceeded"}), true},
		{"Throttling", ResponseError(resp(400), "", &smithy.GenericAPIError{Code: "Throttling"}), true},
		{"ThrottlingException", ResponseError(resp(400), "", &smithy.GenericAPIError{Code: "ThrottlingException"}), true},
		{"not found", ResponseError(resp(400), "", &smithy.GenericAPIError{Code: "InvalidInstanceID.NotFound"}), false},
		{"undecodable", Deserialization(errors.New("bad")), false},
		{"credentials", errors.New("get credentials: none"), false},
	}
	for _, tc := range cases {
		if got := r.IsErrorRetryable(tc.err); got != tc.retry {
			t.Errorf("%s: retryable %v, want %v", tc.name, got, tc.retry)
		}
	}
	if r.MaxAttempts() != 6 {
		t.Errorf("MaxAttempts %d", r.MaxAttempts())
	}
	for attempt, limit := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 5: 1600 * time.Millisecond, 6: 2 * time.Second, 60: 2 * time.Second} {
		for range 50 {
			if d, err := r.RetryDelay(attempt, nil); err != nil || d < 0 || d > limit {
				t.Errorf("attempt %d: delay %v, %v; want at most %v", attempt, d, err, limit)
			}
		}
	}
}
