package secretstest

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"
)

// call sends a JSON 1.1 request signed for service (empty: unsigned) the way the SDK
// signs it, and returns the status, the decoded answer and the answer's Content-Type.
func call(t *testing.T, srv *Server, target, service, secret, body string, mutate func(*http.Request)) (int, map[string]any, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL()+"/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("X-Amz-Target", target)
	if mutate != nil {
		mutate(req)
	}
	if service != "" {
		sum := sha256.Sum256([]byte(body))
		creds := aws.Credentials{AccessKeyID: awstest.AccessKeyID, SecretAccessKey: secret}
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), service, Region, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("answer is no JSON: %s", raw)
	}
	return resp.StatusCode, out, resp.Header.Get("Content-Type")
}

func TestSecureStringWithoutDecryptionIsEncrypted(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	srv.PutParameter("/jenkins/api-token", TypeSecureString, "plain-token-value")
	status, out, ct := call(t, srv, TargetGetParameter, "ssm", awstest.SecretAccessKey, `{"Name":"/jenkins/api-token"}`, nil)
	if status != http.StatusOK || ct != contentType {
		t.Fatalf("status %d, Content-Type %q", status, ct)
	}
	p := out["Parameter"].(map[string]any)
	value := p["Value"].(string)
	blob, err := base64.StdEncoding.DecodeString(value)
	if err != nil || strings.Contains(string(blob), "plain-token-value") || value == "plain-token-value" {
		t.Errorf("Value without WithDecryption = %q, want a ciphertext blob", value)
	}
	if p["Type"] != TypeSecureString || p["Name"] != "/jenkins/api-token" || p["Version"] != float64(1) ||
		p["ARN"] != "arn:aws:ssm:us-east-1:123456789012:parameter/jenkins/api-token" {
		t.Errorf("parameter = %v", p)
	}
	_, out, _ = call(t, srv, TargetGetParameter, "ssm", awstest.SecretAccessKey, `{"Name":"/jenkins/api-token","WithDecryption":true}`, nil)
	if got := out["Parameter"].(map[string]any)["Value"]; got != "plain-token-value" {
		t.Errorf("Value WithDecryption = %v", got)
	}
}

func TestErrorsInTheServicesShape(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	srv.PutParameter("/p", TypeSecureString, "v")
	secret := awstest.SecretAccessKey
	cases := []struct {
		name, target, service, secret, body string
		mutate                              func(*http.Request)
		status                              int
		code, message                       string
	}{
		{"parameter not found", TargetGetParameter, "ssm", secret, `{"Name":"/nope"}`, nil, 400, "ParameterNotFound", ""},
		{"name missing", TargetGetParameter, "ssm", secret, `{}`, nil, 400, "ValidationException", "Member must not be null"},
		{"path without slash", TargetGetParameter, "ssm", secret, `{"Name":"a/b"}`, nil, 400, "ValidationException", "sub-paths"},
		{"version not found", TargetGetParameter, "ssm", secret, `{"Name":"/p:7"}`, nil, 400, "ParameterVersionNotFound", "version 7"},
		{"secret not found", TargetGetSecretValue, "secretsmanager", secret, `{"SecretId":"nope"}`, nil, 400, "ResourceNotFoundException", "can't find the specified secret"},
		{"unsigned", TargetGetParameter, "", "", `{"Name":"/p"}`, nil, 400, "MissingAuthenticationTokenException", "Missing Authentication Token"},
		{"wrong secret key", TargetGetParameter, "ssm", "wrong", `{"Name":"/p"}`, nil, 400, "InvalidSignatureException", "does not match"},
		{"scoped to another service", TargetGetParameter, "secretsmanager", secret, `{"Name":"/p"}`, nil, 400, "InvalidSignatureException", "'ssm'"},
		{"unknown target", "AmazonSSM.PutParameter", "ssm", secret, `{"Name":"/p"}`, nil, 400, "UnknownOperationException", ""},
		{"wrong content type", TargetGetParameter, "ssm", secret, `{"Name":"/p"}`, func(r *http.Request) { r.Header.Set("Content-Type", "application/json") }, 400, "SerializationException", contentType},
		{"not JSON", TargetGetParameter, "ssm", secret, `Name=/p`, nil, 400, "SerializationException", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, out, _ := call(t, srv, tc.target, tc.service, tc.secret, tc.body, tc.mutate)
			if status != tc.status || out["__type"] != tc.code {
				t.Fatalf("answer %d %v, want %d %s", status, out, tc.status, tc.code)
			}
			msg, _ := out["message"].(string)
			if tc.message == "" && tc.code == "ParameterNotFound" && msg != "" {
				t.Errorf("ParameterNotFound carries message %q; SSM sends none", msg)
			}
			if !strings.Contains(msg, tc.message) {
				t.Errorf("message %q lacks %q", msg, tc.message)
			}
		})
	}
}

func TestSecretVersionsAndStages(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	arn := srv.PutSecret("jenkins/token", "one")
	srv.PutSecret("jenkins/token", "two")
	_, out, _ := call(t, srv, TargetGetSecretValue, "secretsmanager", awstest.SecretAccessKey, `{"SecretId":"jenkins/token"}`, nil)
	if out["SecretString"] != "two" || out["ARN"] != arn || out["Name"] != "jenkins/token" {
		t.Fatalf("current = %v", out)
	}
	_, out, _ = call(t, srv, TargetGetSecretValue, "secretsmanager", awstest.SecretAccessKey, `{"SecretId":"jenkins/token","VersionStage":"AWSPREVIOUS"}`, nil)
	if out["SecretString"] != "one" {
		t.Fatalf("previous = %v", out)
	}
	if !strings.HasPrefix(arn, "arn:aws:secretsmanager:us-east-1:123456789012:secret:jenkins/token-") || len(arn) != len("arn:aws:secretsmanager:us-east-1:123456789012:secret:jenkins/token-")+6 {
		t.Errorf("ARN %s lacks the six-character suffix", arn)
	}
}

func TestDeniedNamesActionAndResource(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	srv.Deny(TargetGetParameter)
	_, out, _ := call(t, srv, TargetGetParameter, "ssm", awstest.SecretAccessKey, `{"Name":"/jenkins/t"}`, nil)
	msg, _ := out["message"].(string)
	if out["__type"] != "AccessDeniedException" || !strings.Contains(msg, "ssm:GetParameter on resource: arn:aws:ssm:us-east-1:123456789012:parameter/jenkins/t") {
		t.Errorf("denied = %v", out)
	}
}
