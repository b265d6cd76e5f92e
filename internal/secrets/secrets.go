// Package secrets reads the Jenkins API token from AWS: a Systems Manager Parameter
// Store parameter (a SecureString, read with decryption) or a Secrets Manager secret,
// with the AWS SDK's configuration, credential chain and SigV4 signer (one JSON 1.1
// call each; the SDK's service clients would add 1.5 MB of binary and 1.6 MB of heap
// for it), so that the token never sits in the
// launch template, the user data or a file on the instance.
//
// A Source reads the current value each time it is asked; Token caches it for the
// Jenkins client and reads it again when Jenkins refuses it (the token was rotated).
// Values are config.Secret, which never prints itself: nothing here logs a value.
package secrets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
)

// The kinds of failure a caller (preflight, the logs) tells apart; errors wrap them.
var (
	// ErrNotFound: no such parameter or secret in that region (or that version).
	ErrNotFound = errors.New("not found")
	// ErrAccessDenied: IAM refused the read; the error names the action and resource to grant.
	ErrAccessDenied = errors.New("access denied")
	// ErrDecrypt: the value is encrypted with a KMS key the instance role may not use;
	// the error says to grant kms:Decrypt on that customer managed key.
	ErrDecrypt = errors.New("cannot decrypt")
	// ErrUnusable: the value exists but cannot be a token (empty, binary, JSON, a list).
	ErrUnusable = errors.New("unusable value")
)

// Source reads the current value of one secret. Read blocks for at most the call
// timeout (retries included) or until ctx ends, and returns a non-empty value or an
// error that wraps one of ErrNotFound, ErrAccessDenied, ErrDecrypt, ErrUnusable, a
// context error, or a transport error. No error contains the value. Read caches
// nothing: after a rotation it returns the new value.
type Source interface {
	Read(ctx context.Context) (config.Secret, error)
	// String names the source for logs and preflight ("ssm parameter /jenkins/token").
	String() string
}

// DefaultCallTimeout bounds one read, retries included, when Options leaves it zero.
const DefaultCallTimeout = 10 * time.Second

// Options configure the AWS-backed sources.
type Options struct {
	// Region to read from. When empty: the region of an ARN given as the name, else
	// the SDK's (AWS_REGION, the shared config), else RegionFrom.
	Region string
	// RegionFrom finds the region when nothing else names it: the instance
	// identity from IMDS. Called at each read that needs it.
	RegionFrom func(ctx context.Context) (string, error)
	// Endpoint is a base URL for the service (tests, simulate). Empty keeps the SDK's
	// own resolution, AWS_ENDPOINT_URL_SSM and AWS_ENDPOINT_URL_SECRETS_MANAGER included.
	Endpoint string
	// Credentials overrides the SDK's default credential chain (the instance role).
	Credentials aws.CredentialsProvider
	// CallTimeout bounds one read, retries included; DefaultCallTimeout when zero.
	CallTimeout time.Duration
	// Logger gets warnings (a String parameter holding a token); slog.Default() when nil.
	Logger *slog.Logger
}

// FromConfig returns the Source that jenkins.api_token_ssm_parameter or
// jenkins.api_token_secret_id names, or nil when neither is set (config validation
// allows at most one). It makes no call.
func FromConfig(ctx context.Context, j config.Jenkins, opts Options) (Source, error) {
	switch {
	case j.APITokenSSMParameter != "":
		return NewSSMParameter(ctx, j.APITokenSSMParameter, opts)
	case j.APITokenSecretID != "":
		return NewSecretsManagerSecret(ctx, j.APITokenSecretID, opts)
	}
	return nil, nil
}

// base is what both AWS sources share: the SDK configuration, the region rule and
// the error translation.
type base struct {
	cfg         aws.Config
	region      string
	regionFrom  func(ctx context.Context) (string, error)
	callTimeout time.Duration
	log         *slog.Logger
}

func newBase(ctx context.Context, name string, opts Options) (base, error) {
	if opts.CallTimeout < 0 {
		return base{}, fmt.Errorf("secrets: call timeout %s is negative", opts.CallTimeout)
	}
	var loadOpts []func(*awsconfig.LoadOptions) error
	if opts.Credentials != nil {
		loadOpts = append(loadOpts, awsconfig.WithCredentialsProvider(opts.Credentials))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return base{}, fmt.Errorf("secrets: load AWS configuration: %w", err)
	}
	b := base{cfg: cfg, region: opts.Region, regionFrom: opts.RegionFrom, callTimeout: opts.CallTimeout, log: opts.Logger}
	if a, err := arn.Parse(name); err == nil {
		b.region = a.Region
	}
	if b.region == "" {
		b.region = cfg.Region
	}
	if b.callTimeout == 0 {
		b.callTimeout = DefaultCallTimeout
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	return b, nil
}

// resolveRegion returns the region to read from, asking RegionFrom when needed.
func (b *base) resolveRegion(ctx context.Context) (string, error) {
	if b.region != "" {
		return b.region, nil
	}
	if b.regionFrom == nil {
		return "", errors.New("no AWS region: set AWS_REGION, or run on EC2 where the instance identity names it")
	}
	r, err := b.regionFrom(ctx)
	if err != nil {
		return "", fmt.Errorf("find the AWS region: %w (set AWS_REGION to skip instance metadata)", err)
	}
	if r == "" {
		return "", errors.New("the instance identity names no region; set AWS_REGION")
	}
	return r, nil
}

// apiError returns the AWS error code and message of err, empty when it is none.
func apiError(err error) (code, message string) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode(), ae.ErrorMessage()
	}
	return "", ""
}

// mentionsKMS tells a refusal by KMS (the key of a SecureString or secret) from one by
// IAM on the parameter or secret itself; both come back as AccessDeniedException.
func mentionsKMS(message string) bool {
	m := strings.ToLower(message)
	return strings.Contains(m, "kms") || strings.Contains(m, "ciphertext") || strings.Contains(m, "customer master key")
}

// credentialFault explains the codes AWS answers for credentials it does not accept.
func credentialFault(code string) bool {
	switch code {
	case "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
		"MissingAuthenticationTokenException", "IncompleteSignatureException", "InvalidClientTokenId":
		return true
	}
	return false
}

// usable trims the value and refuses what cannot be an API token.
func usable(what, v string) (config.Secret, error) {
	v = strings.TrimSpace(v)
	switch {
	case v == "":
		return "", fmt.Errorf("%s: %w: it is empty; store the Jenkins API token in it", what, ErrUnusable)
	case strings.HasPrefix(v, "{"):
		return "", fmt.Errorf("%s: %w: it holds a JSON object; store the API token alone, as plain text", what, ErrUnusable)
	case strings.ContainsAny(v, " \t\r\n"):
		return "", fmt.Errorf("%s: %w: it holds several words or lines; store the API token alone", what, ErrUnusable)
	}
	return config.Secret(v), nil
}
