package efs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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

// efsAPIVersion is the EFS API version, the first segment of its REST paths.
const efsAPIVersion = "2015-02-01"

// emptyPayloadHash is the SHA-256 of an empty body, the payload hash of a GET.
var emptyPayloadHash = func() string { s := sha256.Sum256(nil); return hex.EncodeToString(s[:]) }()

// efsREST makes the one EFS call the agent needs, DescribeMountTargets, over the EFS
// REST-JSON API: a GET signed with the SDK's own SigV4 signer, its credentials and its
// retryer, and a JSON answer. The SDK's EFS client would do the same, but it weighs
// about 0.8 MB of the binary for this single call.
type efsREST struct {
	endpoint string
	region   string
	creds    aws.CredentialsProvider
	retryer  aws.Retryer
	http     *http.Client
	signer   *v4.Signer
}

// newEFSREST resolves the endpoint the way the SDK does for EFS: an explicit base URL
// (tests, simulate), else AWS_ENDPOINT_URL_EFS, else AWS_ENDPOINT_URL or the shared
// config's endpoint_url (cfg.BaseEndpoint), else
// https://elasticfilesystem.REGION.amazonaws.com (.com.cn in China).
// AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true skips the variables.
func newEFSREST(region, explicit string, cfg aws.Config) *efsREST {
	endpoint := explicit
	if endpoint == "" && os.Getenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") != "true" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL_EFS")
		if endpoint == "" {
			endpoint = aws.ToString(cfg.BaseEndpoint)
		}
	}
	if endpoint == "" {
		suffix := "amazonaws.com"
		if strings.HasPrefix(region, "cn-") {
			suffix = "amazonaws.com.cn"
		}
		endpoint = "https://elasticfilesystem." + region + "." + suffix
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
		retryer = retry.NewStandard()
	}
	return &efsREST{
		endpoint: strings.TrimRight(endpoint, "/"), region: region, creds: cfg.Credentials,
		retryer: retryer, http: client, signer: v4.NewSigner(),
	}
}

// mountTargetDescription is what DescribeMountTargets says about one mount target.
type mountTargetDescription struct {
	MountTargetID        string `json:"MountTargetId"`
	IPAddress            string `json:"IpAddress"`
	IPv6Address          string `json:"Ipv6Address"`
	AvailabilityZoneName string `json:"AvailabilityZoneName"`
	LifeCycleState       string `json:"LifeCycleState"`
}

type describeMountTargetsOutput struct {
	MountTargets []mountTargetDescription `json:"MountTargets"`
	NextMarker   string                   `json:"NextMarker"`
}

// describeMountTargets pages through the mount targets of a file system (query
// FileSystemId) or of an access point (AccessPointId), following NextMarker. Errors
// EFS answers are smithy.APIError values with EFS's code (FileSystemNotFound,
// AccessDeniedException, ...) and the HTTP status, inside a smithy.OperationError, as
// the SDK's would be. Each page is retried as the retryer says (throttling, server and
// connection errors) until its attempts or the context's deadline run out.
func (c *efsREST) describeMountTargets(ctx context.Context, param, id string) ([]mountTargetDescription, error) {
	var all []mountTargetDescription
	marker := ""
	for seen := map[string]bool{}; ; {
		q := url.Values{param: {id}}
		if marker != "" {
			q.Set("Marker", marker)
		}
		var page describeMountTargetsOutput
		if err := c.get(ctx, "DescribeMountTargets", "/"+efsAPIVersion+"/mount-targets", q, &page); err != nil {
			return nil, err
		}
		all = append(all, page.MountTargets...)
		if page.NextMarker == "" {
			return all, nil
		}
		if seen[page.NextMarker] {
			err := fmt.Errorf("the service answered marker %q twice", page.NextMarker)
			return nil, &smithy.OperationError{ServiceID: "EFS", OperationName: "DescribeMountTargets", Err: err}
		}
		seen[page.NextMarker] = true
		marker = page.NextMarker
	}
}

// get makes one operation (a GET of path with query q), retried, and decodes the JSON
// answer into out.
func (c *efsREST) get(ctx context.Context, operation, path string, q url.Values, out any) error {
	opErr := func(err error) error {
		return &smithy.OperationError{ServiceID: "EFS", OperationName: operation, Err: err}
	}
	if c.creds == nil {
		return opErr(fmt.Errorf("no AWS credentials provider"))
	}
	for attempt := 1; ; attempt++ {
		err := c.once(ctx, path, q, out)
		if err == nil {
			return nil
		}
		if attempt >= c.retryer.MaxAttempts() || !c.retryer.IsErrorRetryable(err) {
			return opErr(err)
		}
		wait, derr := c.retryer.RetryDelay(attempt, err)
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

func (c *efsREST) once(ctx context.Context, path string, q url.Values, out any) error {
	creds, err := c.creds.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("get credentials: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if err := c.signer.SignHTTP(ctx, creds, req, emptyPayloadHash, "elasticfilesystem", c.region, time.Now().UTC()); err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return sendError(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return sendError(ctx, fmt.Errorf("read answer: %w", err))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		code, msg := restJSONError(resp.Header.Get("X-Amzn-Errortype"), data)
		var apiErr error = &smithy.GenericAPIError{Code: code, Message: msg}
		if code == "" {
			apiErr = fmt.Errorf("answered %s", resp.Status)
		}
		return &awshttp.ResponseError{
			ResponseError: &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: resp}, Err: apiErr},
			RequestID:     resp.Header.Get("X-Amzn-Requestid"),
		}
	}
	if err := json.Unmarshal(data, out); err != nil {
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

// restJSONError reads a REST-JSON protocol error: the code from the X-Amzn-ErrorType
// header ("Code:url"), else the body's ErrorCode, code or __type (possibly
// "namespace#Code"); the message from the body's Message or message.
func restJSONError(header string, body []byte) (code, message string) {
	var e struct {
		ErrorCode string `json:"ErrorCode"`
		Code      string `json:"code"`
		Type      string `json:"__type"`
		Message   string `json:"Message"`
		Lower     string `json:"message"`
	}
	_ = json.Unmarshal(body, &e)
	code, _, _ = strings.Cut(header, ":")
	for _, c := range []string{e.ErrorCode, e.Code, e.Type} {
		if code == "" {
			code = c
		}
	}
	if i := strings.LastIndex(code, "#"); i >= 0 {
		code = code[i+1:]
	}
	message = e.Message
	if message == "" {
		message = e.Lower
	}
	return strings.TrimSpace(code), message
}
