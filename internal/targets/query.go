package targets

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// queryAPI makes calls of one AWS Query API with a wrapped result (Elastic Load
// Balancing v2, Auto Scaling): a form POST (Action, Version, the parameters) signed with
// the SDK's own SigV4 signer and credentials, retried as the SDK's retryer says, and an
// XML answer <ActionResponse><ActionResult>...</ActionResult></ActionResponse> or
// <ErrorResponse><Error><Code/><Message/></Error></ErrorResponse>. The SDK's clients for
// the two services would do the same, but weigh 1.6 MB of the binary and build about
// 2 MB of tables at start for the nine calls the agent makes.
type queryAPI struct {
	serviceID string // in errors: Elastic Load Balancing v2, Auto Scaling
	signing   string // SigV4 name: elasticloadbalancing, autoscaling
	version   string // API version sent as Version
	endpoint  string
	region    string
	creds     aws.CredentialsProvider
	retryer   aws.Retryer
	http      *http.Client
	signer    *v4.Signer
}

// newQueryAPI resolves the endpoint the way the SDK does: an explicit base URL (tests,
// simulate), else AWS_ENDPOINT_URL_<envName>, else AWS_ENDPOINT_URL or the shared
// config's endpoint_url (cfg.BaseEndpoint), else https://<host>.REGION.amazonaws.com
// (.com.cn in China). AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true skips the variables.
func newQueryAPI(serviceID, signing, host, envName, version, region, explicit string, cfg aws.Config) *queryAPI {
	endpoint := explicit
	if endpoint == "" && os.Getenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") != "true" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL_" + envName)
		if endpoint == "" {
			endpoint = aws.ToString(cfg.BaseEndpoint)
		}
	}
	if endpoint == "" {
		suffix := "amazonaws.com"
		if strings.HasPrefix(region, "cn-") {
			suffix = "amazonaws.com.cn"
		}
		endpoint = "https://" + host + "." + region + "." + suffix
	}
	client, ok := cfg.HTTPClient.(*http.Client)
	if !ok || client == nil {
		client = &http.Client{}
	}
	var retryer aws.Retryer
	if cfg.Retryer != nil {
		retryer = cfg.Retryer()
	}
	if retryer == nil {
		retryer = retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = maxAttempts
			o.MaxBackoff = maxBackoff
		})
	}
	return &queryAPI{
		serviceID: serviceID, signing: signing, version: version,
		endpoint: strings.TrimRight(endpoint, "/"), region: region,
		creds: cfg.Credentials, retryer: retryer, http: client, signer: v4.NewSigner(),
	}
}

// call makes action with the parameters in form and decodes the answer into out (nil:
// the answer is not read). Errors the service answers are smithy.APIError values with
// its code (ValidationError, TargetGroupNotFound, AccessDenied, Throttling, ...) and
// the HTTP status, inside a smithy.OperationError, as the SDK's would be. Throttling,
// server and connection errors are retried as the retryer says, until its attempts or
// the context's deadline run out.
func (q *queryAPI) call(ctx context.Context, action string, form url.Values, out any) error {
	opErr := func(err error) error {
		return &smithy.OperationError{ServiceID: q.serviceID, OperationName: action, Err: err}
	}
	if q.creds == nil {
		return opErr(fmt.Errorf("no AWS credentials provider"))
	}
	form.Set("Action", action)
	form.Set("Version", q.version)
	body := form.Encode()
	for attempt := 1; ; attempt++ {
		err := q.once(ctx, body, out)
		if err == nil {
			return nil
		}
		if attempt >= q.retryer.MaxAttempts() || !q.retryer.IsErrorRetryable(err) {
			return opErr(err)
		}
		wait, derr := q.retryer.RetryDelay(attempt, err)
		if derr != nil {
			return opErr(err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return opErr(fmt.Errorf("%w (last: %w)", ctx.Err(), err))
		case <-t.C:
		}
	}
}

type queryErrorXML struct {
	Error struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Error"`
	RequestID string `xml:"RequestId"`
}

func (q *queryAPI) once(ctx context.Context, body string, out any) error {
	creds, err := q.creds.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("get credentials: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, q.endpoint+"/", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	sum := sha256.Sum256([]byte(body))
	if err := q.signer.SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), q.signing, q.region, time.Now().UTC()); err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	resp, err := q.http.Do(req)
	if err != nil {
		return sendError(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return sendError(ctx, fmt.Errorf("read answer: %w", err))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e queryErrorXML
		apiErr := fmt.Errorf("answered %s", resp.Status)
		if xml.Unmarshal(data, &e) == nil && e.Error.Code != "" {
			fault := smithy.FaultClient
			if e.Error.Type == "Receiver" || resp.StatusCode >= 500 {
				fault = smithy.FaultServer
			}
			apiErr = &smithy.GenericAPIError{Code: e.Error.Code, Message: e.Error.Message, Fault: fault}
		}
		id := e.RequestID
		if id == "" {
			id = resp.Header.Get("X-Amzn-Requestid")
		}
		return &awshttp.ResponseError{
			ResponseError: &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: resp}, Err: apiErr},
			RequestID:     id,
		}
	}
	if out == nil {
		return nil
	}
	if err := xml.Unmarshal(data, out); err != nil {
		return &smithy.DeserializationError{Err: fmt.Errorf("decode answer: %w", err)}
	}
	return nil
}

// sendError marks a failed exchange as the SDK does: canceled with the context (never
// retried), else a connection error (retried).
func sendError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return &aws.RequestCanceledError{Err: err}
	}
	return &smithyhttp.RequestSendError{Err: err}
}

// members adds a list parameter the Query way: name.member.1, name.member.2, ...
func members(form url.Values, name string, values ...string) {
	for i, v := range values {
		form.Set(fmt.Sprintf("%s.member.%d", name, i+1), v)
	}
}
