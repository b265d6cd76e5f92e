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

func TestJSONEndpointResolution(t *testing.T) {
	t.Setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "")
	for _, tc := range []struct {
		region, explicit, env, base, want string
	}{
		{"eu-west-1", "", "", "", "https://ssm.eu-west-1.amazonaws.com"},
		{"cn-north-1", "", "", "", "https://ssm.cn-north-1.amazonaws.com.cn"},
		{"eu-west-1", "", "", "http://global:1", "http://global:1"},
		{"eu-west-1", "", "http://svc:1/", "http://global:1", "http://svc:1"},
		{"eu-west-1", "http://explicit:1", "http://svc:1", "", "http://explicit:1"},
	} {
		t.Setenv("AWS_ENDPOINT_URL_SSM", tc.env)
		cfg := aws.Config{}
		if tc.base != "" {
			cfg.BaseEndpoint = aws.String(tc.base)
		}
		if got := newAWSJSON("ssm", "SSM", "AmazonSSM", tc.explicit, cfg).endpoint(tc.region); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc, got, tc.want)
		}
	}
	t.Setenv("AWS_ENDPOINT_URL_SSM", "http://svc:1")
	t.Setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
	if got := newAWSJSON("ssm", "SSM", "AmazonSSM", "", aws.Config{}).endpoint("eu-west-1"); got != "https://ssm.eu-west-1.amazonaws.com" {
		t.Errorf("ignoring configured endpoints: %s", got)
	}
}
