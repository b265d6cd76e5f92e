package targets

import (
	"context"
	"net/url"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/awsapi"
)

// elbVersion is the Elastic Load Balancing v2 Query API version the calls are made in.
const elbVersion = "2015-12-01"

var elbService = awsapi.Service{
	ID: "Elastic Load Balancing v2", Signing: "elasticloadbalancing", Host: "elasticloadbalancing",
	EnvName: "ELASTIC_LOAD_BALANCING_V2",
}

// targetHealthState is a target's state in its group: initial, healthy, unhealthy,
// unhealthy.draining, unused, draining, unavailable.
type targetHealthState string

const (
	stateDraining targetHealthState = "draining"
	stateUnused   targetHealthState = "unused"
)

// targetDescription names a target: an instance, and a port when not the group's.
type targetDescription struct {
	ID   string
	Port int32 // 0: the group's port
}

// targetHealth is what DescribeTargetHealth says about one target.
type targetHealth struct {
	ID     string
	Port   int32
	State  targetHealthState // empty when the answer has no TargetHealth
	Reason string
}

// elbAPI makes the Elastic Load Balancing v2 calls of the package.
type elbAPI struct{ q *queryAPI }

func newELBAPI(region, explicit string, cfg aws.Config) *elbAPI {
	return &elbAPI{newQueryAPI(elbService, elbVersion, region, explicit, cfg)}
}

func targetsForm(arn string, targets []targetDescription) url.Values {
	form := url.Values{"TargetGroupArn": {arn}}
	for i, t := range targets {
		p := "Targets.member." + strconv.Itoa(i+1)
		form.Set(p+".Id", t.ID)
		if t.Port != 0 {
			form.Set(p+".Port", strconv.Itoa(int(t.Port)))
		}
	}
	return form
}

// registerTargets is RegisterTargets.
func (e *elbAPI) registerTargets(ctx context.Context, arn string, targets ...targetDescription) error {
	return e.q.call(ctx, "RegisterTargets", targetsForm(arn, targets), nil)
}

// deregisterTargets is DeregisterTargets.
func (e *elbAPI) deregisterTargets(ctx context.Context, arn string, targets ...targetDescription) error {
	return e.q.call(ctx, "DeregisterTargets", targetsForm(arn, targets), nil)
}

type describeTargetHealthXML struct {
	Descriptions []struct {
		Target struct {
			ID   string `xml:"Id"`
			Port int32  `xml:"Port"`
		} `xml:"Target"`
		TargetHealth *struct {
			State  string `xml:"State"`
			Reason string `xml:"Reason"`
		} `xml:"TargetHealth"`
	} `xml:"DescribeTargetHealthResult>TargetHealthDescriptions>member"`
}

// describeTargetHealth is DescribeTargetHealth: the named targets, or every registered
// one when none is named. The operation has no pages.
func (e *elbAPI) describeTargetHealth(ctx context.Context, arn string, targets ...targetDescription) ([]targetHealth, error) {
	var out describeTargetHealthXML
	if err := e.q.call(ctx, "DescribeTargetHealth", targetsForm(arn, targets), &out); err != nil {
		return nil, err
	}
	list := make([]targetHealth, 0, len(out.Descriptions))
	for _, d := range out.Descriptions {
		th := targetHealth{ID: d.Target.ID, Port: d.Target.Port}
		if d.TargetHealth != nil {
			th.State, th.Reason = targetHealthState(d.TargetHealth.State), d.TargetHealth.Reason
		}
		list = append(list, th)
	}
	return list, nil
}
