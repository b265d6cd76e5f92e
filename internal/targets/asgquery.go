package targets

import (
	"context"
	"fmt"
	"net/url"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/awsapi"
)

// asgVersion is the Auto Scaling Query API version the calls are made in.
const asgVersion = "2011-01-01"

var asgService = awsapi.Service{ID: "Auto Scaling", Signing: "autoscaling", Host: "autoscaling", EnvName: "AUTO_SCALING"}

// asgInstance is what DescribeAutoScalingInstances says about one instance.
type asgInstance struct {
	InstanceID       string `xml:"InstanceId"`
	AutoScalingGroup string `xml:"AutoScalingGroupName"`
	LifecycleState   string `xml:"LifecycleState"`
}

// asgGroup is what DescribeAutoScalingGroups says about one group.
type asgGroup struct {
	Name            string   `xml:"AutoScalingGroupName"`
	ARN             string   `xml:"AutoScalingGroupARN"`
	DesiredCapacity int      `xml:"DesiredCapacity"`
	TargetGroupARNs []string `xml:"TargetGroupARNs>member"`
	TrafficSources  []struct {
		Identifier string `xml:"Identifier"`
		Type       string `xml:"Type"`
	} `xml:"TrafficSources>member"`
	Instances []struct {
		InstanceID     string `xml:"InstanceId"`
		LifecycleState string `xml:"LifecycleState"`
	} `xml:"Instances>member"`
}

// lifecycleHook is what DescribeLifecycleHooks says about one hook.
type lifecycleHook struct {
	Name             string `xml:"LifecycleHookName"`
	Transition       string `xml:"LifecycleTransition"`
	HeartbeatTimeout int    `xml:"HeartbeatTimeout"`
	DefaultResult    string `xml:"DefaultResult"`
}

// lifecycleAction names a pending lifecycle action: by instance or by token.
type lifecycleAction struct {
	group, hook, instanceID, token string
}

func (a lifecycleAction) form() url.Values {
	form := url.Values{"AutoScalingGroupName": {a.group}, "LifecycleHookName": {a.hook}}
	if a.instanceID != "" {
		form.Set("InstanceId", a.instanceID)
	}
	if a.token != "" {
		form.Set("LifecycleActionToken", a.token)
	}
	return form
}

// asgAPI makes the Auto Scaling calls of the package.
type asgAPI struct{ q *queryAPI }

func newASGAPI(region, explicit string, cfg aws.Config) *asgAPI {
	return &asgAPI{newQueryAPI(asgService, asgVersion, region, explicit, cfg)}
}

// maxPages bounds the pages of one listing, against a service that keeps answering
// a NextToken.
const maxPages = 100

// pages calls action once per page, NextToken following, until a page has none.
func (a *asgAPI) pages(ctx context.Context, action string, form url.Values, page func() (out any, next func() string)) error {
	for n := 1; ; n++ {
		out, next := page()
		if err := a.q.call(ctx, action, form, out); err != nil {
			return err
		}
		token := next()
		if token == "" {
			return nil
		}
		if n >= maxPages || token == form.Get("NextToken") {
			err := fmt.Errorf("still a NextToken after %d pages", n)
			return &smithy.OperationError{ServiceID: a.q.api.Service.ID, OperationName: action, Err: err}
		}
		form.Set("NextToken", token)
	}
}

// describeAutoScalingInstances is DescribeAutoScalingInstances of the named instances,
// every page.
func (a *asgAPI) describeAutoScalingInstances(ctx context.Context, ids ...string) ([]asgInstance, error) {
	form := url.Values{}
	members(form, "InstanceIds", ids...)
	var all []asgInstance
	err := a.pages(ctx, "DescribeAutoScalingInstances", form, func() (any, func() string) {
		var out struct {
			Instances []asgInstance `xml:"DescribeAutoScalingInstancesResult>AutoScalingInstances>member"`
			NextToken string        `xml:"DescribeAutoScalingInstancesResult>NextToken"`
		}
		return &out, func() string { all = append(all, out.Instances...); return out.NextToken }
	})
	return all, err
}

// describeAutoScalingGroups is DescribeAutoScalingGroups of the named groups, every
// page.
func (a *asgAPI) describeAutoScalingGroups(ctx context.Context, names ...string) ([]asgGroup, error) {
	form := url.Values{}
	members(form, "AutoScalingGroupNames", names...)
	var all []asgGroup
	err := a.pages(ctx, "DescribeAutoScalingGroups", form, func() (any, func() string) {
		var out struct {
			Groups    []asgGroup `xml:"DescribeAutoScalingGroupsResult>AutoScalingGroups>member"`
			NextToken string     `xml:"DescribeAutoScalingGroupsResult>NextToken"`
		}
		return &out, func() string { all = append(all, out.Groups...); return out.NextToken }
	})
	return all, err
}

// describeLifecycleHooks is DescribeLifecycleHooks of the group's named hooks. The
// operation has no pages.
func (a *asgAPI) describeLifecycleHooks(ctx context.Context, group string, names ...string) ([]lifecycleHook, error) {
	form := url.Values{"AutoScalingGroupName": {group}}
	members(form, "LifecycleHookNames", names...)
	var out struct {
		Hooks []lifecycleHook `xml:"DescribeLifecycleHooksResult>LifecycleHooks>member"`
	}
	if err := a.q.call(ctx, "DescribeLifecycleHooks", form, &out); err != nil {
		return nil, err
	}
	return out.Hooks, nil
}

// completeLifecycleAction is CompleteLifecycleAction with the given result (CONTINUE,
// ABANDON).
func (a *asgAPI) completeLifecycleAction(ctx context.Context, action lifecycleAction, result string) error {
	form := action.form()
	form.Set("LifecycleActionResult", result)
	return a.q.call(ctx, "CompleteLifecycleAction", form, nil)
}

// recordLifecycleActionHeartbeat is RecordLifecycleActionHeartbeat.
func (a *asgAPI) recordLifecycleActionHeartbeat(ctx context.Context, action lifecycleAction) error {
	return a.q.call(ctx, "RecordLifecycleActionHeartbeat", action.form(), nil)
}

// detachInstances is DetachInstances.
func (a *asgAPI) detachInstances(ctx context.Context, group string, decrementDesired bool, ids ...string) error {
	form := url.Values{"AutoScalingGroupName": {group}, "ShouldDecrementDesiredCapacity": {strconv.FormatBool(decrementDesired)}}
	members(form, "InstanceIds", ids...)
	return a.q.call(ctx, "DetachInstances", form, nil)
}
