package targets

import (
	"strings"
	"testing"
)

func TestParseTargetGroupARN(t *testing.T) {
	for _, tc := range []struct {
		arn  string
		want targetGroupARN
		err  string
	}{
		{arn: tgA, want: targetGroupARN{Partition: "aws", Region: "us-east-1", AccountID: "123456789012", Name: "jenkins-a"}},
		{arn: "arn:aws-cn:elasticloadbalancing:cn-north-1:123456789012:targetgroup/j/0a1b", want: targetGroupARN{Partition: "aws-cn", Region: "cn-north-1", AccountID: "123456789012", Name: "j"}},
		{arn: "", err: "not an ARN"},
		{arn: "jenkins", err: "not an ARN"},
		{arn: "arn:aws:autoscaling:us-east-1:123456789012:targetgroup/j/0a", err: "not an elasticloadbalancing target group"},
		{arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/j/0a", err: "not a target group ARN"},
		{arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/j", err: "not a target group ARN"},
		{arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup//0a", err: "1 to 32 characters"},
		{arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/" + strings.Repeat("j", 33) + "/0a", err: "1 to 32 characters"},
		{arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/j/0A", err: "lowercase hex"},
		{arn: "arn:aws:elasticloadbalancing::123456789012:targetgroup/j/0a", err: "no region"},
		{arn: "arn:aws:elasticloadbalancing:us-east-1:1234:targetgroup/j/0a", err: "12 digits"},
	} {
		got, err := parseTargetGroupARN(tc.arn)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseTargetGroupARN(%q) error = %v, want %q", tc.arn, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseTargetGroupARN(%q) = %+v, %v; want %+v", tc.arn, got, err, tc.want)
		}
	}
}

func FuzzParseTargetGroupARN(f *testing.F) {
	f.Add(tgA)
	f.Add("arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup//")
	f.Add("arn:::::")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseTargetGroupARN(s)
		if err != nil {
			return
		}
		if a.Region == "" || a.Name == "" || len(a.AccountID) != 12 || !strings.HasPrefix(s, "arn:") {
			t.Errorf("accepted %q as %+v", s, a)
		}
	})
}
