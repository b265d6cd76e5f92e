package targets

import (
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/arn"
)

// targetGroupARN is the parts of a target group ARN that matter here.
type targetGroupARN struct {
	Partition string
	Region    string
	AccountID string
	Name      string
}

// parseTargetGroupARN reads
// arn:<partition>:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<id>.
func parseTargetGroupARN(s string) (targetGroupARN, error) {
	a, err := arn.Parse(s)
	if err != nil {
		return targetGroupARN{}, fmt.Errorf("%q is not an ARN", s)
	}
	if a.Service != "elasticloadbalancing" {
		return targetGroupARN{}, fmt.Errorf("%q is a %s ARN, not an elasticloadbalancing target group", s, a.Service)
	}
	parts := strings.Split(a.Resource, "/")
	if len(parts) != 3 || parts[0] != "targetgroup" {
		return targetGroupARN{}, fmt.Errorf("%q is not a target group ARN (resource should be targetgroup/<name>/<id>)", s)
	}
	name, id := parts[1], parts[2]
	if name == "" || len(name) > 32 {
		return targetGroupARN{}, fmt.Errorf("%q: target group name must have 1 to 32 characters", s)
	}
	if id == "" || strings.Trim(id, "0123456789abcdef") != "" {
		return targetGroupARN{}, fmt.Errorf("%q: target group id must be lowercase hex", s)
	}
	if a.Region == "" {
		return targetGroupARN{}, fmt.Errorf("%q has no region", s)
	}
	if len(a.AccountID) != 12 || strings.Trim(a.AccountID, "0123456789") != "" {
		return targetGroupARN{}, fmt.Errorf("%q: account id must be 12 digits", s)
	}
	return targetGroupARN{Partition: a.Partition, Region: a.Region, AccountID: a.AccountID, Name: name}, nil
}

// validateTargetGroup checks a configured target group against the region the agent
// calls: a group elsewhere would only show up as TargetGroupNotFound at the worst time.
func validateTargetGroup(tg TargetGroup, region string) error {
	a, err := parseTargetGroupARN(tg.ARN)
	if err != nil {
		return fmt.Errorf("target group: %w", err)
	}
	if a.Region != region {
		return fmt.Errorf("target group %s is in region %s but the agent calls %s; list only groups of the instance's region", tg.ARN, a.Region, region)
	}
	if tg.Port < 0 || tg.Port > 65535 {
		return fmt.Errorf("target group %s: port %d is outside 1..65535 (0 for the group's port)", tg.ARN, tg.Port)
	}
	return nil
}
