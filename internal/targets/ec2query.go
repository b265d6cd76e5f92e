package targets

import (
	"context"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/awsapi"
)

// ec2Version is the EC2 Query API version the calls are made in.
const ec2Version = "2016-11-15"

var ec2Service = awsapi.Service{ID: "EC2", Signing: "ec2", Host: "ec2", EnvName: "EC2"}

// ec2Query makes the one EC2 call the agent needs, DescribeInstances for one instance,
// over the EC2 Query API through awsapi: a form POST and an XML answer. The SDK's EC2
// client would do the same, but it weighs about 19 MB of the binary for this single
// call.
type ec2Query struct{ api *awsapi.Client }

// newEC2Query calls EC2 in region at the endpoint awsapi resolves from explicit and
// cfg, retried by an awsapi.JitterRetryer of maxAttempts (cfg's retryer is not used:
// a lease takeover waits for this call).
func newEC2Query(region, explicit string, cfg aws.Config) *ec2Query {
	cfg.Retryer = func() aws.Retryer { return awsapi.JitterRetryer{Attempts: maxAttempts, MaxBackoff: maxBackoff} }
	return &ec2Query{awsapi.New(ec2Service, region, explicit, cfg)}
}

// ec2Instance is what DescribeInstances says about one instance.
type ec2Instance struct {
	ID    string `xml:"instanceId"`
	State string `xml:"instanceState>name"`
}

type describeInstancesXML struct {
	Reservations []struct {
		Instances []ec2Instance `xml:"instancesSet>item"`
	} `xml:"reservationSet>item"`
}

type ec2ErrorXML struct {
	Errors []struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Errors>Error"`
	RequestID string `xml:"RequestID"`
}

// describeInstances lists the named instances. Errors EC2 answers are smithy.APIError
// values with EC2's code (InvalidInstanceID.NotFound, UnauthorizedOperation, ...) and
// the HTTP status, inside a smithy.OperationError, as the SDK's would be. Throttling,
// server and connection errors are retried with backoff until maxAttempts or the
// context's deadline.
func (q *ec2Query) describeInstances(ctx context.Context, ids ...string) ([]ec2Instance, error) {
	form := url.Values{"Action": {"DescribeInstances"}, "Version": {ec2Version}}
	for i, id := range ids {
		form.Set("InstanceId."+strconv.Itoa(i+1), id)
	}
	req := awsapi.Request{
		Operation: "DescribeInstances", Method: http.MethodPost, Path: "/",
		Header: http.Header{"Content-Type": {"application/x-www-form-urlencoded; charset=utf-8"}},
		Body:   []byte(form.Encode()),
	}
	var list []ec2Instance
	err := q.api.Do(ctx, req, func(resp *http.Response, data []byte) error {
		if resp.StatusCode != http.StatusOK {
			return ec2Error(resp, data)
		}
		var out describeInstancesXML
		if err := xml.Unmarshal(data, &out); err != nil {
			return awsapi.Deserialization(err)
		}
		list = nil
		for _, r := range out.Reservations {
			list = append(list, r.Instances...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return list, nil
}

// ec2Error reads EC2's <Response><Errors><Error><Code/><Message/></Error></Errors>:
// the first error's code and message as a smithy.APIError, else the bare status.
func ec2Error(resp *http.Response, data []byte) error {
	var e ec2ErrorXML
	if xml.Unmarshal(data, &e) != nil || len(e.Errors) == 0 {
		return awsapi.ResponseError(resp, e.RequestID, fmt.Errorf("answered %s", resp.Status))
	}
	return awsapi.ResponseError(resp, e.RequestID, &smithy.GenericAPIError{Code: e.Errors[0].Code, Message: e.Errors[0].Message})
}
