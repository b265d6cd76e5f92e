package awsapi

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// JitterRetryer is an aws.Retryer lighter than the SDK's standard one, for calls that
// must not wait long between attempts (the EC2 call of a lease takeover, the token
// read): up to Attempts attempts, waiting a random time up to 100 ms, 200 ms, 400 ms,
// ... (full jitter, as the standard retryer's) but never more than MaxBackoff, and no
// retry quota. It retries connection errors (not a canceled context), answers with
// a 5xx status and the throttling codes RequestLimitExceeded, Throttling and
// ThrottlingException; nothing else.
type JitterRetryer struct {
	Attempts   int
	MaxBackoff time.Duration
}

var _ aws.Retryer = JitterRetryer{}

// firstBackoff bounds the wait before the second attempt.
const firstBackoff = 100 * time.Millisecond

// IsErrorRetryable says whether err is worth another attempt.
func (r JitterRetryer) IsErrorRetryable(err error) bool {
	var canceled *aws.RequestCanceledError
	if errors.As(err, &canceled) {
		return false
	}
	var send *smithyhttp.RequestSendError
	if errors.As(err, &send) {
		return true
	}
	var status interface{ HTTPStatusCode() int }
	if errors.As(err, &status) && status.HTTPStatusCode() >= 500 {
		return true
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "RequestLimitExceeded", "Throttling", "ThrottlingException":
			return true
		}
	}
	return false
}

// MaxAttempts is Attempts.
func (r JitterRetryer) MaxAttempts() int { return r.Attempts }

// RetryDelay is the wait after the attempt-th attempt failed.
func (r JitterRetryer) RetryDelay(attempt int, _ error) (time.Duration, error) {
	backoff := firstBackoff
	for i := 1; i < attempt && backoff < r.MaxBackoff; i++ {
		backoff *= 2
	}
	backoff = min(backoff, r.MaxBackoff)
	return time.Duration(rand.Int64N(int64(backoff) + 1)), nil
}

// GetRetryToken always grants a retry: there is no quota.
func (r JitterRetryer) GetRetryToken(context.Context, error) (func(error) error, error) {
	return noRelease, nil
}

// GetInitialToken grants the first attempt.
func (r JitterRetryer) GetInitialToken() func(error) error { return noRelease }

func noRelease(error) error { return nil }
