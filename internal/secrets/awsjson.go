package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/awsapi"
)

// Retry policy of a call: three attempts, jittered exponential backoff of at most two
// seconds (awsapi.JitterRetryer), within the call's deadline.
const (
	maxAttempts = 3
	maxBackoff  = 2 * time.Second
)

// maxAnswer bounds an answer: a parameter or a secret is far smaller.
const maxAnswer = 1 << 20

// awsJSON makes one kind of AWS JSON 1.1 call (POST /, X-Amz-Target) through awsapi.
// The SDK's SSM client would do the same, but it costs 1.2 MB of binary and 1.6 MB of
// heap at start (its schemas are built at init) for this one call; Secrets Manager's a
// little less.
type awsJSON struct {
	svc      awsapi.Service
	target   string // X-Amz-Target prefix: AmazonSSM, secretsmanager
	explicit string // Options.Endpoint
	cfg      aws.Config
}

// newAWSJSON calls service (its signing name, its endpoint host and its name in errors:
// ssm, secretsmanager) with cfg's credentials and HTTP client, retried by an
// awsapi.JitterRetryer.
func newAWSJSON(service, envName, target, explicit string, cfg aws.Config) *awsJSON {
	cfg.Retryer = func() aws.Retryer { return awsapi.JitterRetryer{Attempts: maxAttempts, MaxBackoff: maxBackoff} }
	return &awsJSON{
		svc:    awsapi.Service{ID: service, Signing: service, Host: service, EnvName: envName},
		target: target, explicit: explicit, cfg: cfg,
	}
}

// client is the awsapi client of region, its endpoint resolved as awsapi says
// (Options.Endpoint first) at each call.
func (c *awsJSON) client(region string) *awsapi.Client {
	api := awsapi.New(c.svc, region, c.explicit, c.cfg)
	api.MaxAnswer = maxAnswer
	return api
}

// call sends operation with in as its JSON body and decodes the answer into out.
// Errors the service answers are smithy.APIError values with its code
// (ParameterNotFound, AccessDeniedException, ...) and the HTTP status, inside a
// smithy.OperationError, as the SDK's would be.
func (c *awsJSON) call(ctx context.Context, region, operation string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req := awsapi.Request{
		Operation: operation, Method: http.MethodPost, Path: "/",
		Header: http.Header{"Content-Type": {"application/x-amz-json-1.1"}, "X-Amz-Target": {c.target + "." + operation}},
		Body:   body,
	}
	return c.client(region).Do(ctx, req, func(resp *http.Response, data []byte) error {
		if resp.StatusCode != http.StatusOK {
			code, msg := errorShape(resp.Header.Get("X-Amzn-Errortype"), data)
			var apiErr error = &smithy.GenericAPIError{Code: code, Message: msg}
			if code == "" {
				apiErr = errors.New("answered " + resp.Status)
			}
			return awsapi.ResponseError(resp, "", apiErr)
		}
		if err := json.Unmarshal(data, out); err != nil {
			return awsapi.Deserialization(err)
		}
		return nil
	})
}

// errorShape reads a JSON protocol error: the code from __type (possibly
// "namespace#Code") or the X-Amzn-ErrorType header ("Code:url"), the message from
// message or Message.
func errorShape(header string, body []byte) (code, message string) {
	var e struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
		Upper   string `json:"Message"`
	}
	_ = json.Unmarshal(body, &e)
	code = e.Type
	if code == "" {
		code, _, _ = strings.Cut(header, ":")
	}
	if i := strings.LastIndex(code, "#"); i >= 0 {
		code = code[i+1:]
	}
	message = e.Message
	if message == "" {
		message = e.Upper
	}
	return code, message
}

// errNoValue is returned when an answer holds no value at all.
var errNoValue = errors.New("the answer holds no value")
