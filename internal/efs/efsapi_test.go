package efs

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/awsapi/awsapitest"
)

// TestEFSRESTEndpoint: EFS's default host and endpoint variable (awsapi tests the rest
// of the resolution).
func TestEFSRESTEndpoint(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL_EFS", "")
	t.Setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "")
	if got := newEFSREST("eu-west-1", "", aws.Config{}).api.Endpoint; got != "https://elasticfilesystem.eu-west-1.amazonaws.com" {
		t.Errorf("default endpoint %q", got)
	}
	t.Setenv("AWS_ENDPOINT_URL_EFS", "http://env")
	if got := newEFSREST("eu-west-1", "", aws.Config{}).api.Endpoint; got != "http://env" {
		t.Errorf("AWS_ENDPOINT_URL_EFS: endpoint %q", got)
	}
}

func TestRESTJSONError(t *testing.T) {
	cases := []struct {
		header, body, code, msg string
	}{
		{"FileSystemNotFound", `{"ErrorCode":"FileSystemNotFound","Message":"File system 'fs-1' does not exist."}`, "FileSystemNotFound", "File system 'fs-1' does not exist."},
		{"", `{"ErrorCode":"BadRequest","Message":"bad"}`, "BadRequest", "bad"},
		{"ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.availability/", `{"message":"Rate exceeded"}`, "ThrottlingException", "Rate exceeded"},
		{"", `{"__type":"com.amazon.coral.service#AccessDeniedException","message":"no"}`, "AccessDeniedException", "no"},
		{"", `{"code":"InternalServerError"}`, "InternalServerError", ""},
		{"", `<html>bad gateway</html>`, "", ""},
	}
	for _, tc := range cases {
		code, msg := restJSONError(tc.header, []byte(tc.body))
		if code != tc.code || msg != tc.msg {
			t.Errorf("restJSONError(%q, %s) = %q, %q; want %q, %q", tc.header, tc.body, code, msg, tc.code, tc.msg)
		}
	}
}

// restOn returns an efsREST pointed at h, with the retryer the MountTargetClient uses
// but no waiting between attempts.
func restOn(t *testing.T, h http.HandlerFunc) *efsREST {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	cfg := aws.Config{
		Credentials: credentials.NewStaticCredentialsProvider("AKIATEST", "secret", ""),
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = 5
				o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return time.Millisecond, nil })
			})
		},
	}
	return newEFSREST("us-east-1", ts.URL, cfg)
}

// TestEFSRESTRetries: EFS's errors, read from X-Amzn-ErrorType and the body, reach the
// retryer and the caller as the SDK's would: server errors and throttling are retried
// until the attempts run out, errors the caller must fix are not; the error keeps the
// operation, the status, the request id and the service's code and message (awsapi
// tests the retries themselves).
func TestEFSRESTRetries(t *testing.T) {
	answer := func(status int, code string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=AKIATEST/") ||
				!strings.Contains(r.Header.Get("Authorization"), "/us-east-1/elasticfilesystem/aws4_request") {
				t.Errorf("Authorization %q", r.Header.Get("Authorization"))
			}
			w.Header().Set("X-Amzn-RequestId", "req-1")
			w.Header().Set("X-Amzn-ErrorType", code)
			w.WriteHeader(status)
			w.Write([]byte(`{"ErrorCode":"` + code + `","Message":"the message"}`))
		}
	}
	cases := []struct {
		status   int
		code     string
		attempts int32
	}{
		{http.StatusInternalServerError, "InternalServerError", 5},
		{http.StatusServiceUnavailable, "", 5},
		{http.StatusTooManyRequests, "ThrottlingException", 5},
		{http.StatusBadRequest, "BadRequest", 1},
		{http.StatusForbidden, "AccessDeniedException", 1},
		{http.StatusNotFound, "FileSystemNotFound", 1},
	}
	for _, tc := range cases {
		var n atomic.Int32
		h := answer(tc.status, tc.code)
		c := restOn(t, func(w http.ResponseWriter, r *http.Request) { n.Add(1); h(w, r) })
		_, err := c.describeMountTargets(t.Context(), "FileSystemId", "fs-12345678")
		if got := n.Load(); got != tc.attempts {
			t.Errorf("%d %s: %d attempts, want %d", tc.status, tc.code, got, tc.attempts)
		}
		for _, p := range awsapitest.Problems(err, awsapitest.Want{
			Service: "EFS", Operation: "DescribeMountTargets", Status: tc.status, RequestID: "req-1", Code: tc.code, Message: "the message",
		}) {
			t.Errorf("%d %s: %s", tc.status, tc.code, p)
		}
	}
}

// TestEFSRESTPaging: Marker carries NextMarker, escaped; a marker answered twice ends
// the paging with an error instead of a loop; an undecodable answer is an error.
func TestEFSRESTPaging(t *testing.T) {
	const odd = "a+b/c=="
	c := restOn(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/2015-02-01/mount-targets" || r.Method != http.MethodGet || r.URL.Query().Get("AccessPointId") != "fsap-1" {
			t.Errorf("request %s %s", r.Method, r.URL)
		}
		switch r.URL.Query().Get("Marker") {
		case "":
			w.Write([]byte(`{"MountTargets":[{"MountTargetId":"fsmt-1"}],"NextMarker":"` + odd + `"}`))
		case odd:
			w.Write([]byte(`{"Marker":"` + odd + `","MountTargets":[{"MountTargetId":"fsmt-2"}]}`))
		default:
			t.Errorf("marker %q", r.URL.Query().Get("Marker"))
		}
	})
	got, err := c.describeMountTargets(t.Context(), "AccessPointId", "fsap-1")
	if err != nil || len(got) != 2 || got[1].MountTargetID != "fsmt-2" {
		t.Errorf("two pages: %+v, %v", got, err)
	}

	c = restOn(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"MountTargets":[],"NextMarker":"again"}`))
	})
	if _, err := c.describeMountTargets(t.Context(), "FileSystemId", "fs-12345678"); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("a repeated marker: %v", err)
	}

	c = restOn(t, func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`<xml/>`)) })
	if _, err := c.describeMountTargets(t.Context(), "FileSystemId", "fs-12345678"); err == nil || !strings.Contains(err.Error(), "decode answer") {
		t.Errorf("an undecodable answer: %v", err)
	}
}
