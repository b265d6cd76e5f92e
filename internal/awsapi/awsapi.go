// Package awsapi makes SigV4-signed calls of AWS APIs without the SDK's service
// clients, which weigh megabytes of binary and of heap for the few calls the agent
// makes. It owns what every such call shares and mirrors the SDK's behaviour for it;
// the callers keep only their protocol (AWS Query, EC2 Query, REST-JSON, JSON 1.1):
// how a request is built and how an answer or an error is read.
//
// Shapes: a Client is one service in one region (Service, the resolved endpoint, the
// SDK's credentials provider, retryer and HTTP client from an aws.Config, the SDK's
// v4.Signer). A Request is one operation: method, path and query, headers, body. Do
// signs the request with the body's SHA-256, sends it, reads at most MaxAnswer bytes
// of the answer and hands the *http.Response and the body to the caller's Decoder,
// which decodes a success and turns anything else into an error (ResponseError).
//
// Errors, as the SDK's clients return them: every error of Do is a
// *smithy.OperationError naming the service and the operation. Inside it, an error
// the service answered is an *awshttp.ResponseError (the HTTP status, the request id)
// around what the decoder made of the body, typically a *smithy.GenericAPIError with
// the service's code and message; a connection or read failure is a
// *smithyhttp.RequestSendError, or an *aws.RequestCanceledError when the context
// ended; an undecodable success is a *smithy.DeserializationError (Deserialization).
// A context that ends between two attempts gives its error, wrapping the last one.
//
// Sources it mirrors: the endpoint resolution of the SDK's service clients and
// config (an explicit BaseEndpoint, AWS_ENDPOINT_URL_<SERVICE>, AWS_ENDPOINT_URL or
// the shared config's endpoint_url, AWS_IGNORE_CONFIGURED_ENDPOINT_URLS, the default
// https://HOST.REGION.amazonaws.com or .com.cn in China); the SDK's retry middleware
// (aws/retry: MaxAttempts, IsErrorRetryable, RetryDelay, waiting with the context);
// and its send and deserialize middleware (aws/transport/http, smithy-go
// transport/http) for the error types above.
package awsapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
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

// DefaultMaxAnswer bounds the answer Do reads when Client.MaxAnswer is 0.
const DefaultMaxAnswer = 4 << 20

// Service names an AWS service the ways a call needs.
type Service struct {
	ID      string // in errors (smithy.OperationError): EFS, Auto Scaling, EC2, ...
	Signing string // SigV4 signing name: elasticfilesystem, autoscaling, ec2, ...
	Host    string // first label of the default endpoint host: elasticfilesystem, ec2, ...
	EnvName string // AWS_ENDPOINT_URL_<EnvName>: EFS, AUTO_SCALING, EC2, ...
}

// Endpoint resolves the service's base URL in region the way the SDK does: explicit
// (Options.BaseEndpoint: tests, simulate), else AWS_ENDPOINT_URL_<EnvName>, else
// AWS_ENDPOINT_URL or the shared config's endpoint_url (base, cfg.BaseEndpoint), else
// https://<Host>.REGION.amazonaws.com (.com.cn in China).
// AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true skips the variables and base. The result
// has no trailing slash.
func (s Service) Endpoint(region, explicit string, base *string) string {
	endpoint := explicit
	if endpoint == "" && os.Getenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") != "true" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL_" + s.EnvName)
		if endpoint == "" {
			endpoint = aws.ToString(base)
		}
	}
	if endpoint == "" {
		suffix := "amazonaws.com"
		if strings.HasPrefix(region, "cn-") {
			suffix = "amazonaws.com.cn"
		}
		endpoint = "https://" + s.Host + "." + region + "." + suffix
	}
	return strings.TrimRight(endpoint, "/")
}

// Client calls one service in one region.
type Client struct {
	Service   Service
	Region    string
	Endpoint  string // resolved by Service.Endpoint, without a trailing slash
	MaxAnswer int64  // bytes of an answer read at most; 0: DefaultMaxAnswer

	creds   aws.CredentialsProvider
	retryer aws.Retryer
	http    *http.Client
	signer  *v4.Signer
}

// New returns a client of svc in region with the endpoint resolved from explicit and
// cfg.BaseEndpoint, cfg's credentials, the retryer cfg.Retryer makes (the SDK's
// standard one when cfg has none), and cfg.HTTPClient when it is an *http.Client
// (else a plain one).
func New(svc Service, region, explicit string, cfg aws.Config) *Client {
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
	return &Client{
		Service: svc, Region: region, Endpoint: svc.Endpoint(region, explicit, cfg.BaseEndpoint),
		creds: cfg.Credentials, retryer: retryer, http: client, signer: v4.NewSigner(),
	}
}

// Request is one operation to make.
type Request struct {
	Operation string      // in errors: DescribeMountTargets, GetParameter, ...
	Method    string      // http.MethodGet, http.MethodPost
	Path      string      // after the endpoint, with its query: "/", "/2015-02-01/mount-targets?FileSystemId=fs-1"
	Header    http.Header // Content-Type, X-Amz-Target, Accept, ...
	Body      []byte      // nil for none
}

// Decoder reads one answer, its body read in full (up to MaxAnswer): it decodes a
// success and returns nil, or returns the error the answer means, typically
// ResponseError around the service's code and message. The retryer judges that error.
type Decoder func(resp *http.Response, body []byte) error

// Do makes the request, retried as the retryer says (throttling, server and connection
// errors) until its attempts or the context run out, and hands each answer to decode.
// Every error is a *smithy.OperationError (see the package documentation).
func (c *Client) Do(ctx context.Context, req Request, decode Decoder) error {
	opErr := func(err error) error {
		return &smithy.OperationError{ServiceID: c.Service.ID, OperationName: req.Operation, Err: err}
	}
	if c.creds == nil {
		return opErr(fmt.Errorf("no AWS credentials provider"))
	}
	sum := sha256.Sum256(req.Body)
	payloadHash := hex.EncodeToString(sum[:])
	for attempt := 1; ; attempt++ {
		err := c.once(ctx, req, payloadHash, decode)
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

func (c *Client) once(ctx context.Context, r Request, payloadHash string, decode Decoder) error {
	creds, err := c.creds.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("get credentials: %w", err)
	}
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, c.Endpoint+r.Path, body)
	if err != nil {
		return err
	}
	if r.Header != nil {
		req.Header = r.Header.Clone()
	}
	if err := c.signer.SignHTTP(ctx, creds, req, payloadHash, c.Service.Signing, c.Region, time.Now().UTC()); err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return sendError(ctx, err)
	}
	defer resp.Body.Close()
	limit := c.MaxAnswer
	if limit == 0 {
		limit = DefaultMaxAnswer
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return sendError(ctx, fmt.Errorf("read answer: %w", err))
	}
	return decode(resp, data)
}

// sendError marks a failed exchange as the SDK does: canceled with the context (never
// retried), else a connection error (retried).
func sendError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return &aws.RequestCanceledError{Err: err}
	}
	return &smithyhttp.RequestSendError{Err: err}
}

// ResponseError is the error of an answer the service gave, as the SDK's: err (a
// smithy.APIError, or a description of the answer) with the HTTP status and the
// request id (the X-Amzn-RequestId header when requestID is empty).
func ResponseError(resp *http.Response, requestID string, err error) error {
	if requestID == "" {
		requestID = resp.Header.Get("X-Amzn-Requestid")
	}
	return &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: resp}, Err: err},
		RequestID:     requestID,
	}
}

// Deserialization is the error of a success that does not decode, as the SDK's.
func Deserialization(err error) error {
	return &smithy.DeserializationError{Err: fmt.Errorf("decode answer: %w", err)}
}
