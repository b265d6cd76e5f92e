package secrets

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
)

func TestErrorShape(t *testing.T) {
	for _, tc := range []struct {
		header, body, code, message string
	}{
		{"", `{"__type":"ParameterNotFound"}`, "ParameterNotFound", ""},
		{"", `{"__type":"com.amazonaws.secretsmanager#ResourceNotFoundException","Message":"gone"}`, "ResourceNotFoundException", "gone"},
		{"AccessDeniedException:http://internal.amazon.com/coral/com.amazon.coral.service/", `{"message":"no"}`, "AccessDeniedException", "no"},
		{"", `not json`, "", ""},
	} {
		code, msg := errorShape(tc.header, []byte(tc.body))
		if code != tc.code || msg != tc.message {
			t.Errorf("%q %q: %q %q, want %q %q", tc.header, tc.body, code, msg, tc.code, tc.message)
		}
	}
}

// TestJSONEndpoints: each service's default host and endpoint variable, resolved for the
// call's region (awsapi tests the rest of the resolution).
func TestJSONEndpoints(t *testing.T) {
	t.Setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "")
	t.Setenv("AWS_ENDPOINT_URL_SSM", "")
	t.Setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "")
	ssm := newAWSJSON("ssm", "SSM", "AmazonSSM", "", aws.Config{})
	sm := newAWSJSON("secretsmanager", "SECRETS_MANAGER", "secretsmanager", "", aws.Config{})
	for _, tc := range []struct{ got, want string }{
		{ssm.client("eu-west-1").Endpoint, "https://ssm.eu-west-1.amazonaws.com"},
		{ssm.client("cn-north-1").Endpoint, "https://ssm.cn-north-1.amazonaws.com.cn"},
		{sm.client("us-east-2").Endpoint, "https://secretsmanager.us-east-2.amazonaws.com"},
	} {
		if tc.got != tc.want {
			t.Errorf("endpoint %s, want %s", tc.got, tc.want)
		}
	}
	t.Setenv("AWS_ENDPOINT_URL_SSM", "http://svc:1/")
	t.Setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://sm:1")
	if got := ssm.client("eu-west-1").Endpoint; got != "http://svc:1" {
		t.Errorf("AWS_ENDPOINT_URL_SSM: %s", got)
	}
	if got := sm.client("eu-west-1").Endpoint; got != "http://sm:1" {
		t.Errorf("AWS_ENDPOINT_URL_SECRETS_MANAGER: %s", got)
	}
}
