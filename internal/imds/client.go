// Package imds reads this instance's identity and watches for the end of the instance
// over the EC2 instance metadata service, IMDSv2 only.
//
// The client never falls back to IMDSv1 and never runs the SDK's retry chains: a poll
// is one request (plus one fresh token when the old one was refused), so a slow or
// failing metadata service shows up as a failed poll within the poll's own deadline
// instead of a 15-second stall.
package imds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdkimds "github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// Request results passed to Options.OnRequest; they are the values of the result label
// of jenkins_spot_agent_imds_requests_total.
const (
	ResultOK           = "ok"
	ResultNotFound     = "not_found"
	ResultUnauthorized = "unauthorized"
	ResultError        = "error"
)

// Endpoint labels passed to Options.OnRequest. Every path maps to one of these so the
// metric's cardinality stays fixed.
const (
	EndpointToken                = "token"
	EndpointIdentity             = "identity"
	EndpointSpotAction           = "spot/instance-action"
	EndpointRebalance            = "rebalance"
	EndpointTargetLifecycleState = "target-lifecycle-state"
	EndpointScheduledEvents      = "scheduled-events"
	EndpointOther                = "other"
)

// Metadata paths below /latest/meta-data/.
const (
	pathSpotAction           = "spot/instance-action"
	pathRebalance            = "events/recommendations/rebalance"
	pathTargetLifecycleState = "autoscaling/target-lifecycle-state"
	pathScheduledEvents      = "events/maintenance/scheduled"
	pathInstanceID           = "instance-id"
	pathAZ                   = "placement/availability-zone"
	pathAZID                 = "placement/availability-zone-id"
	pathRegion               = "placement/region"
	pathLifecycle            = "instance-life-cycle"
	pathASGTag               = "tags/instance/aws:autoscaling:groupName"
	pathInstanceType         = "instance-type"
)

const (
	defaultEndpoint       = "http://169.254.169.254"
	endpointEnv           = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
	defaultRequestTimeout = 2 * time.Second
	// maxBody bounds what one answer may hold; real answers are a few hundred bytes.
	maxBody = 64 << 10
)

// Options configures a Client.
type Options struct {
	// Endpoint is the metadata service base URL. Empty means the SDK's rule:
	// $AWS_EC2_METADATA_SERVICE_ENDPOINT, else http://169.254.169.254.
	Endpoint string
	// RequestTimeout bounds one request (token included) when the caller's context
	// has no earlier deadline. Default 2s.
	RequestTimeout time.Duration
	// OnRequest, when set, is called once per HTTP request sent to the metadata
	// service, with an Endpoint* label and a Result* value. A 200 whose body does not
	// parse is still "ok" here; the watcher's health shows it.
	OnRequest func(endpoint, result string)
	// Logger receives the client's rare diagnostics. Nil discards them.
	Logger *slog.Logger
}

// Client reads the instance metadata service over IMDSv2. It is safe for concurrent use.
type Client struct {
	sdk      *sdkimds.Client
	endpoint string
	timeout  time.Duration
	log      *slog.Logger
}

// New returns a Client. It sends nothing until asked.
func New(opts Options) *Client {
	endpoint := opts.Endpoint
	if endpoint == "" {
		endpoint = os.Getenv(endpointEnv)
	}
	shown := endpoint
	if shown == "" {
		shown = defaultEndpoint
	}
	timeout := opts.RequestTimeout
	if timeout <= 0 {
		timeout = defaultRequestTimeout
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	transport := &http.Transport{
		// IMDS is link-local: an HTTP proxy from the environment must never see it.
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
	}
	hc := &observedClient{
		inner:     &http.Client{Transport: transport},
		onRequest: opts.OnRequest,
	}
	sdk := sdkimds.New(sdkimds.Options{
		Endpoint:       endpoint,
		HTTPClient:     hc,
		Retryer:        tokenRetryer{},
		EnableFallback: aws.FalseTernary,
		// Every call carries its own deadline; the SDK's 5 s default would only hide a
		// missing one.
		DisableDefaultTimeout:    true,
		DisableDefaultMaxBackoff: true,
		ClientEnableState:        sdkimds.ClientEnabled,
	})
	return &Client{sdk: sdk, endpoint: shown, timeout: timeout, log: logger}
}

// Endpoint is the base URL the client talks to, for messages and status.
func (c *Client) Endpoint() string { return c.endpoint }

// callTrace records what one call's HTTP exchanges answered. The SDK hides the token
// request's failure behind an error that does not unwrap, so the trace, carried in the
// call's context down to the HTTP client, is how a failure is told apart from an
// absent item and explained.
type callTrace struct {
	mu          sync.Mutex
	tokenStatus int   // status of the last token request; 0 when none answered
	tokenErr    error // transport error of the last token request
	itemStatus  int   // status of the last item request
	sendErr     error // transport error of the last request of either kind
}

type traceKey struct{}

func traceFrom(ctx context.Context) *callTrace {
	tr, _ := ctx.Value(traceKey{}).(*callTrace)
	return tr
}

func (tr *callTrace) record(token bool, status int, err error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.sendErr = err
	if token {
		tr.tokenStatus, tr.tokenErr = status, err
		return
	}
	tr.itemStatus = status
}

// tokenFailed reports whether the call failed while getting a session token.
func (tr *callTrace) tokenFailed() bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.tokenErr != nil || (tr.tokenStatus != 0 && tr.tokenStatus != http.StatusOK)
}

// requestError is a failed metadata request, explained for an operator.
type requestError struct {
	msg    string
	status int  // HTTP status of the failed exchange; 0 when none came
	token  bool // the token request failed
	errs   []error
}

func (e *requestError) Error() string   { return e.msg }
func (e *requestError) Unwrap() []error { return e.errs }

// get fetches one metadata item. A 404 is found=false with no error: for the
// interruption items it is the normal "no notice" answer.
func (c *Client) get(ctx context.Context, path string, timeout time.Duration) (body []byte, found bool, err error) {
	if timeout <= 0 || timeout > c.timeout {
		timeout = c.timeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr := &callTrace{}
	out, err := c.sdk.GetMetadata(context.WithValue(ctx, traceKey{}, tr), &sdkimds.GetMetadataInput{Path: path})
	if err != nil {
		// A 404 on the item is "absent"; a 404 on the token request is a service that
		// does not speak IMDSv2, which must never pass for "no notice".
		if !tr.tokenFailed() && tr.itemStatus == http.StatusNotFound {
			return nil, false, nil
		}
		return nil, false, c.explain(ctx, path, tr, err)
	}
	defer out.Content.Close()
	body, err = io.ReadAll(io.LimitReader(out.Content, maxBody+1))
	if err != nil {
		return nil, false, fmt.Errorf("imds %s: read answer: %w", path, err)
	}
	if len(body) > maxBody {
		return nil, false, fmt.Errorf("imds %s: answer larger than %d bytes", path, maxBody)
	}
	return body, true, nil
}

// explain turns a failed call into an error an operator can act on.
func (c *Client) explain(ctx context.Context, path string, tr *callTrace, err error) error {
	e := &requestError{errs: []error{err}, token: tr.tokenFailed()}
	if ctxErr := ctx.Err(); ctxErr != nil {
		e.errs = append(e.errs, ctxErr)
	}
	tr.mu.Lock()
	e.status = tr.itemStatus
	if e.token {
		e.status = tr.tokenStatus
	}
	sendErr := tr.sendErr
	tr.mu.Unlock()

	what := "imds " + path
	if e.token {
		what += ": token request"
	}
	switch {
	case e.token && (e.status == http.StatusNotFound || e.status == http.StatusMethodNotAllowed):
		e.msg = fmt.Sprintf("%s: the metadata service at %s offers no IMDSv2 token (%d on PUT /latest/api/token); this agent never falls back to IMDSv1", what, c.endpoint, e.status)
	case e.status == http.StatusForbidden:
		e.msg = fmt.Sprintf("%s: the metadata service answered 403: IMDS is disabled for this instance; enable it (HttpEndpoint=enabled in the launch template metadata options)", what)
	case e.status == http.StatusUnauthorized:
		e.msg = fmt.Sprintf("%s: token refused twice (401); the metadata service is rejecting IMDSv2 sessions", what)
	case e.status == http.StatusBadRequest:
		e.msg = fmt.Sprintf("%s: the metadata service rejected the request (400)", what)
	case e.status == http.StatusTooManyRequests:
		e.msg = fmt.Sprintf("%s: throttled by the metadata service (429)", what)
	case e.status >= 500:
		e.msg = fmt.Sprintf("%s: metadata service error (%d)", what, e.status)
	case e.status != 0 && e.status != http.StatusOK:
		e.msg = fmt.Sprintf("%s: unexpected status %d", what, e.status)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		e.msg = fmt.Sprintf("%s: no answer from %s in time: is this an EC2 instance? is the metadata endpoint enabled (HttpEndpoint=enabled)? inside a container, the token hop limit (HttpPutResponseHopLimit) must allow it", what, c.endpoint)
	case ctx.Err() != nil:
		e.msg = fmt.Sprintf("%s: %v", what, ctx.Err())
	case sendErr != nil:
		e.msg = fmt.Sprintf("%s: cannot reach the metadata service at %s: is this an EC2 instance? is the metadata endpoint enabled (HttpEndpoint=enabled)?", what, c.endpoint)
		e.errs = append(e.errs, sendErr)
	default:
		e.msg = what
	}
	e.msg += ": " + err.Error()
	return e
}

// isThrottle reports whether err is the metadata service asking us to slow down
// (429) or failing on its side (5xx), the answers after which a poller backs off.
func isThrottle(err error) bool {
	var e *requestError
	if !errors.As(err, &e) {
		return false
	}
	return e.status == http.StatusTooManyRequests || e.status >= 500
}

// quoteShort quotes a value from the wire for an error message, cut so that a page of
// garbage does not flood the log.
func quoteShort(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strconv.Quote(s)
}

// tokenRetryer allows exactly one retry, and only after a 401: the SDK then drops its
// cached token, so the retry fetches a fresh one (a token that expired or was revoked
// costs one round trip, not a poll). Everything else fails at once; the watcher, not the
// SDK, decides when to ask again.
type tokenRetryer struct{}

// IsErrorRetryable recognises the SDK's own verdict on a 401 (it marks only that
// answer retryable, after dropping its cached token); the status check guards against
// any other error that might one day carry the same mark.
func (tokenRetryer) IsErrorRetryable(err error) bool {
	var r interface{ RetryableError() bool }
	return errors.As(err, &r) && r.RetryableError() && strings.Contains(err.Error(), "StatusCode: 401")
}
func (tokenRetryer) MaxAttempts() int                             { return 2 }
func (tokenRetryer) RetryDelay(int, error) (time.Duration, error) { return 0, nil }
func (tokenRetryer) GetRetryToken(context.Context, error) (func(error) error, error) {
	return releaseNothing, nil
}
func (tokenRetryer) GetInitialToken() func(error) error { return releaseNothing }

func releaseNothing(error) error { return nil }

// tokenTTLHeader is the header IMDS echoes the token's lifetime in.
const tokenTTLHeader = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"

// observedClient reports each exchange to OnRequest and makes the SDK renew its token
// before the service expires it rather than just after.
type observedClient struct {
	inner     *http.Client
	onRequest func(endpoint, result string)
}

func (o *observedClient) Do(req *http.Request) (*http.Response, error) {
	label := endpointLabel(req.URL.Path)
	resp, err := o.inner.Do(req)
	if tr := traceFrom(req.Context()); tr != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		tr.record(label == EndpointToken, status, err)
	}
	if err != nil {
		o.report(label, ResultError)
		return nil, err
	}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		o.report(label, ResultOK)
	case resp.StatusCode == http.StatusNotFound:
		o.report(label, ResultNotFound)
	case resp.StatusCode == http.StatusUnauthorized:
		o.report(label, ResultUnauthorized)
	default:
		o.report(label, ResultError)
	}
	if label == EndpointToken && resp.StatusCode == http.StatusOK {
		shortenTokenTTL(resp.Header)
	}
	return resp, nil
}

func (o *observedClient) report(endpoint, result string) {
	if o.onRequest != nil {
		o.onRequest(endpoint, result)
	}
}

// shortenTokenTTL lowers the echoed token lifetime by a tenth (at most 30 s). The SDK
// counts the lifetime from when it read the answer, a little after the service started
// its clock, and would otherwise send an expired token once per lifetime.
func shortenTokenTTL(h http.Header) {
	ttl, err := strconv.Atoi(h.Get(tokenTTLHeader))
	if err != nil || ttl <= 1 {
		return
	}
	margin := min(max(ttl/10, 1), 30)
	h.Set(tokenTTLHeader, strconv.Itoa(ttl-margin))
}

func endpointLabel(p string) string {
	if p == "/latest/api/token" {
		return EndpointToken
	}
	item, ok := strings.CutPrefix(p, "/latest/meta-data/")
	if !ok {
		return EndpointOther
	}
	switch item {
	case pathSpotAction:
		return EndpointSpotAction
	case pathRebalance:
		return EndpointRebalance
	case pathTargetLifecycleState:
		return EndpointTargetLifecycleState
	case pathScheduledEvents:
		return EndpointScheduledEvents
	case pathInstanceID, pathAZ, pathAZID, pathRegion, pathLifecycle, pathASGTag, pathInstanceType:
		return EndpointIdentity
	}
	return EndpointOther
}
