package secrets

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws/arn"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
)

// SecretsManagerSecret reads the current version (AWSCURRENT) of a Secrets Manager
// secret with GetSecretValue (AWS JSON 1.1, SigV4). The token must be the secret's SecretString, as plain
// text. IAM: secretsmanager:GetSecretValue on the secret's ARN, and kms:Decrypt on its
// key when that is a customer managed key (not for aws/secretsmanager).
type SecretsManagerSecret struct {
	base
	id     string
	client *awsJSON
}

var _ Source = (*SecretsManagerSecret)(nil)

// NewSecretsManagerSecret returns a Source for the secret id: its name or ARN. It
// makes no call.
func NewSecretsManagerSecret(ctx context.Context, id string, opts Options) (*SecretsManagerSecret, error) {
	if id == "" {
		return nil, errors.New("secrets: the Secrets Manager secret id is empty")
	}
	b, err := newBase(ctx, id, opts)
	if err != nil {
		return nil, err
	}
	s := &SecretsManagerSecret{base: b, id: id}
	s.client = newAWSJSON("secretsmanager", "SECRETS_MANAGER", "secretsmanager", opts.Endpoint, b.cfg)
	return s, nil
}

// String names the secret.
func (s *SecretsManagerSecret) String() string { return "secrets manager secret " + s.id }

// Read gets the secret's current SecretString. A binary secret is refused.
func (s *SecretsManagerSecret) Read(ctx context.Context) (config.Secret, error) {
	ctx, cancel := context.WithTimeout(ctx, s.callTimeout)
	defer cancel()
	region, err := s.resolveRegion(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: %w", s, err)
	}
	var out struct {
		SecretString *string
		SecretBinary *string // base64
	}
	if err := s.client.call(ctx, region, "GetSecretValue", map[string]string{"SecretId": s.id}, &out); err != nil {
		return "", s.explain(err, region)
	}
	if out.SecretString == nil {
		if out.SecretBinary != nil {
			return "", fmt.Errorf("%s: %w: it is a binary secret; store the API token as the secret string", s, ErrUnusable)
		}
		return "", fmt.Errorf("%s: %w: %w", s, ErrUnusable, errNoValue)
	}
	return usable(s.String(), *out.SecretString)
}

// resourceARN is the secret's ARN as an IAM policy names it: Secrets Manager adds six
// random characters to the name, hence the wildcard.
func (s *SecretsManagerSecret) resourceARN(region string) string {
	if a, err := arn.Parse(s.id); err == nil {
		return a.String()
	}
	return fmt.Sprintf("arn:aws:secretsmanager:%s:*:secret:%s-??????", region, s.id)
}

func (s *SecretsManagerSecret) explain(err error, region string) error {
	code, msg := apiError(err)
	switch {
	case code == "ResourceNotFoundException":
		return fmt.Errorf("%s: %w in region %s: create it (aws secretsmanager create-secret --secret-string ...) or fix jenkins.api_token_secret_id",
			s, ErrNotFound, region)
	case code == "DecryptionFailure", code == "AccessDeniedException" && mentionsKMS(msg):
		return fmt.Errorf("%s: %w: %s; the secret uses a customer managed key: grant kms:Decrypt on that key to the instance role (the AWS managed key aws/secretsmanager needs no grant)",
			s, ErrDecrypt, msg)
	case code == "AccessDeniedException":
		return fmt.Errorf("%s: %w: %s; add secretsmanager:GetSecretValue on %s to the instance role", s, ErrAccessDenied, msg, s.resourceARN(region))
	case code == "InvalidRequestException":
		return fmt.Errorf("%s: %s (restore the secret, or point jenkins.api_token_secret_id at another)", s, msg)
	case credentialFault(code):
		return fmt.Errorf("%s: AWS refused the credentials (%s): check the instance profile and the clock", s, code)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w (no answer within %s; check the route to the Secrets Manager endpoint of %s)", s, err, s.callTimeout, region)
	}
	return fmt.Errorf("%s: %w", s, err)
}
