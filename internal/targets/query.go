package targets

import (
	"context"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/awsapi"
)

// queryAPI makes calls of one AWS Query API with a wrapped result (Elastic Load
// Balancing v2, Auto Scaling) through awsapi: a form POST (Action, Version, the
// parameters) and an XML answer <ActionResponse><ActionResult>...</ActionResult></ActionResponse>
// or <ErrorResponse><Error><Code/><Message/></Error></ErrorResponse>. The SDK's clients
// for the two services would do the same, but weigh 1.6 MB of the binary and build
// about 2 MB of tables at start for the nine calls the agent makes.
type queryAPI struct {
	api     *awsapi.Client
	version string // API version sent as Version
}

// newQueryAPI calls svc in region at the endpoint awsapi resolves from explicit and
// cfg, with cfg's retryer, else the package's standard one.
func newQueryAPI(svc awsapi.Service, version, region, explicit string, cfg aws.Config) *queryAPI {
	if cfg.Retryer == nil {
		cfg.Retryer = func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = maxAttempts
				o.MaxBackoff = maxBackoff
			})
		}
	}
	return &queryAPI{api: awsapi.New(svc, region, explicit, cfg), version: version}
}

// call makes action with the parameters in form and decodes the answer into out (nil:
// the answer is not read). Errors the service answers are smithy.APIError values with
// its code (ValidationError, TargetGroupNotFound, AccessDenied, Throttling, ...) and
// the HTTP status, inside a smithy.OperationError, as the SDK's would be. Throttling,
// server and connection errors are retried as the retryer says, until its attempts or
// the context's deadline run out.
func (q *queryAPI) call(ctx context.Context, action string, form url.Values, out any) error {
	form.Set("Action", action)
	form.Set("Version", q.version)
	req := awsapi.Request{
		Operation: action, Method: http.MethodPost, Path: "/",
		Header: http.Header{"Content-Type": {"application/x-www-form-urlencoded; charset=utf-8"}},
		Body:   []byte(form.Encode()),
	}
	return q.api.Do(ctx, req, func(resp *http.Response, data []byte) error {
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return decodeQueryError(resp, data)
		}
		if out == nil {
			return nil
		}
		if err := xml.Unmarshal(data, out); err != nil {
			return awsapi.Deserialization(err)
		}
		return nil
	})
}

type queryErrorXML struct {
	Error struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Error"`
	RequestID string `xml:"RequestId"`
}

// decodeQueryError reads an ErrorResponse: its code and message as a smithy.APIError (a
// server fault for a Receiver error or a 5xx status), else the bare status.
func decodeQueryError(resp *http.Response, data []byte) error {
	var e queryErrorXML
	apiErr := fmt.Errorf("answered %s", resp.Status)
	if xml.Unmarshal(data, &e) == nil && e.Error.Code != "" {
		fault := smithy.FaultClient
		if e.Error.Type == "Receiver" || resp.StatusCode >= 500 {
			fault = smithy.FaultServer
		}
		apiErr = &smithy.GenericAPIError{Code: e.Error.Code, Message: e.Error.Message, Fault: fault}
	}
	return awsapi.ResponseError(resp, e.RequestID, apiErr)
}

// members adds a list parameter the Query way: name.member.1, name.member.2, ...
func members(form url.Values, name string, values ...string) {
	for i, v := range values {
		form.Set(fmt.Sprintf("%s.member.%d", name, i+1), v)
	}
}
