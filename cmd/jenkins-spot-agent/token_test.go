package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/secrets/secretstest"
)

// TestPreflightTokenFromSSM: with the token in Parameter Store, preflight reads it
// through the SDK (endpoint from AWS_ENDPOINT_URL_SSM, region from the environment)
// and reports the source in the "jenkins credentials" row; refused by IAM, the row
// fails with the grant to add. The token never shows in any output.
func TestPreflightTokenFromSSM(t *testing.T) {
	w := pfNewWorld(t)
	sm := secretstest.NewServer()
	defer sm.Close()
	t.Setenv("AWS_ENDPOINT_URL_SSM", sm.URL())
	const param = "/jenkins-pf/api-token"
	sm.PutParameter(param, secretstest.TypeSecureString, w.token)

	path := w.pfConfig(t, pfResolvable, pfTrue(t), "")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := regexp.MustCompile(`(?m)^  api_token_file: .*$`).ReplaceAllString(string(data), "  api_token_ssm_parameter: "+param)
	pfWrite(t, path, cfg)

	_, out, errOut := pfRun(t, "preflight", "--config", path, "--log-level", "debug")
	rows, _ := pfTable(t, out)
	row := pfFind(t, rows, "jenkins credentials")
	if row.result != "pass" || row.detail != "token from ssm parameter "+param {
		t.Errorf("jenkins credentials row = %+v, want a pass naming the parameter", row)
	}
	if strings.Contains(out+errOut, w.token) {
		t.Fatalf("the token shows in preflight's output")
	}
	var read bool
	for _, c := range sm.Calls() {
		read = read || (c.Target == secretstest.TargetGetParameter && c.Code == "" && c.Region == pfRegion)
	}
	if !read {
		t.Errorf("no successful GetParameter in %s: %+v", pfRegion, sm.Calls())
	}

	sm.Deny(secretstest.TargetGetParameter)
	_, out, _ = pfRun(t, "preflight", "--config", path)
	row = pfFind(t, func() []pfRow { r, _ := pfTable(t, out); return r }(), "jenkins credentials")
	if row.result != "FAIL" || !strings.Contains(row.fix, "ssm:GetParameter") || !strings.Contains(row.detail, "access denied") {
		t.Errorf("denied: row = %+v, want a failure with the grant to add", row)
	}
}
