package secrets

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/smithy-go"
)

// Retry policy of a call, as the SDK's standard retryer: three attempts, jittered
// exponential backoff of at most two seconds, within the call's deadline.
const (
	maxAttempts = 3
	maxBackoff  = 2 * time.Second
)

// awsJSON makes one kind of AWS JSON 1.1 call (POST /, X-Amz-Target, SigV4), with the
// SDK's own signer and credentials. The SDK's SSM client would do the same, but it
// costs 1.2 MB of binary and 1.6 MB of heap at start (its schemas are built at init)
// for this one call; Secrets Manager's a little less.
type awsJSON struct {
	service    string // signing name: ssm, secretsmanager
	envName    string // AWS_ENDPOINT_URL_<envName>
	target     string // X-Amz-Target prefix: AmazonSSM, secretsmanager
	explicit   string // Options.Endpoint
	cfgBase    *string
	creds      aws.CredentialsProvider
	httpClient *http.Client
	signer     *v4.Signer
}

func newAWSJSON(service, envName, target, explicit string, cfg aws.Config) *awsJSON {
	hc, ok := cfg.HTTPClient.(*http.Client)
	if !ok || hc == nil {
		hc = &http.Client{}
	}
	return &awsJSON{
		service: service, envName: envName, target: target, explicit: explicit,
		cfgBase: cfg.BaseEndpoint, creds: cfg.Credentials, httpClient: hc, signer: v4.NewSigner(),
	}
}

// endpoint resolves the base URL the way the SDK does: Options.Endpoint, else
// AWS_ENDPOINT_URL_<SERVICE>, else AWS_ENDPOINT_URL or the shared config's
// endpoint_url, else https://SERVICE.REGION.amazonaws.com (.com.cn in China).
// AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true skips the variables and the shared config.
func (c *awsJSON) endpoint(region string) string {
	e := c.explicit
	if e == "" && os.Getenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") != "true" {
		e = os.Getenv("AWS_ENDPOINT_URL_" + c.envName)
		if e == "" {
			e = aws.ToString(c.cfgBase)
		}
	}
	if e == "" {
		suffix := "amazonaws.com"
		if strings.HasPrefix(region, "cn-") {
			suffix = "amazonaws.com.cn"
		}
		e = "https://" + c.service + "." + region + "." + suffix
	}
	return strings.TrimRight(e, "/")
}

// call sends operation with in as its JSON body and decodes the answer into out.
// Errors the service answers are smithy.APIError values with its code
// (ParameterNotFound, AccessDeniedException, ...), as the SDK's would be.
func (c *awsJSON) call(ctx context.Context, region, operation string, in, out any) error {
	if c.creds == nil {
		return fmt.Errorf("operation error %s: %s: no AWS credentials provider", c.service, operation)
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		retry, err := c.once(ctx, region, operation, body, out)
		if err == nil || !retry || attempt >= maxAttempts {
			return err
		}
		t := time.NewTimer(time.Duration(rand.Int64N(int64(backoff) + 1)))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("operation error %s: %s: %w (last: %v)", c.service, operation, ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (c *awsJSON) once(ctx context.Context, region, operation string, body []byte, out any) (retry bool, err error) {
	fail := func(retry bool, format string, args ...any) (bool, error) {
		return retry, fmt.Errorf("operation error %s: %s: %w", c.service, operation, fmt.Errorf(format, args...))
	}
	creds, err := c.creds.Retrieve(ctx)
	if err != nil {
		return fail(false, "get credentials: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint(region)+"/", bytes.NewReader(body))
	if err != nil {
		return fail(false, "%w", err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", c.target+"."+operation)
	sum := sha256.Sum256(body)
	if err := c.signer.SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), c.service, region, time.Now().UTC()); err != nil {
		return fail(false, "sign: %w", err)
	}
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return fail(ctx.Err() == nil, "%w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fail(true, "read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		code, msg := errorShape(resp.Header.Get("X-Amzn-Errortype"), data)
		if code == "" {
			return fail(resp.StatusCode >= 500, "answered %s", resp.Status)
		}
		retry := resp.StatusCode >= 500 || code == "ThrottlingException" || code == "Throttling" || code == "RequestLimitExceeded"
		return fail(retry, "https response error StatusCode: %d, RequestID: %s, %w", resp.StatusCode,
			resp.Header.Get("X-Amzn-Requestid"), &smithy.GenericAPIError{Code: code, Message: msg})
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fail(false, "decode answer: %w", err)
	}
	return false, nil
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
