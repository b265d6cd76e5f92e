package secrets

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/arn"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
)

// SSMParameter reads a Systems Manager Parameter Store parameter with GetParameter
// (AWS JSON 1.1, SigV4), WithDecryption set (a SecureString comes back decrypted; KMS decrypts it with the
// parameter's key on the role's behalf). IAM: ssm:GetParameter on the parameter's ARN,
// and kms:Decrypt on its key when that is a customer managed key (not for aws/ssm).
type SSMParameter struct {
	base
	name   string
	client *awsJSON
}

var _ Source = (*SSMParameter)(nil)

// NewSSMParameter returns a Source for the parameter name: a name (/jenkins/api-token),
// optionally with a version or label selector (/jenkins/api-token:3), or a full ARN.
// It makes no call.
func NewSSMParameter(ctx context.Context, name string, opts Options) (*SSMParameter, error) {
	if name == "" {
		return nil, errors.New("secrets: the SSM parameter name is empty")
	}
	b, err := newBase(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	p := &SSMParameter{base: b, name: name}
	p.client = newAWSJSON("ssm", "SSM", "AmazonSSM", opts.Endpoint, b.cfg)
	return p, nil
}

// String names the parameter.
func (p *SSMParameter) String() string { return "ssm parameter " + p.name }

// Read gets the parameter's current value, decrypted. A String parameter is accepted
// with a warning (its value is not encrypted at rest); a StringList is refused.
func (p *SSMParameter) Read(ctx context.Context) (config.Secret, error) {
	ctx, cancel := context.WithTimeout(ctx, p.callTimeout)
	defer cancel()
	region, err := p.resolveRegion(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	var out struct {
		Parameter *struct {
			Type  string
			Value *string
		}
	}
	in := map[string]any{"Name": p.name, "WithDecryption": true}
	if err := p.client.call(ctx, region, "GetParameter", in, &out); err != nil {
		return "", p.explain(err, region)
	}
	if out.Parameter == nil || out.Parameter.Value == nil {
		return "", fmt.Errorf("%s: %w: %w", p, ErrUnusable, errNoValue)
	}
	switch out.Parameter.Type {
	case "SecureString":
	case "String":
		p.log.Warn("the Jenkins API token is a String parameter, stored unencrypted; recreate it as a SecureString",
			"parameter", p.name)
	default:
		return "", fmt.Errorf("%s: %w: it is a %s; store the token in a SecureString", p, ErrUnusable, out.Parameter.Type)
	}
	return usable(p.String(), *out.Parameter.Value)
}

// resourceARN is the parameter's ARN as an IAM policy names it; the account is a
// wildcard unless the name was an ARN.
func (p *SSMParameter) resourceARN(region string) string {
	if a, err := arn.Parse(p.name); err == nil {
		return a.String()
	}
	name, _, _ := strings.Cut(p.name, ":") // drop a version or label selector
	return fmt.Sprintf("arn:aws:ssm:%s:*:parameter/%s", region, strings.TrimPrefix(name, "/"))
}

func (p *SSMParameter) explain(err error, region string) error {
	code, msg := apiError(err)
	switch {
	case code == "ParameterNotFound" || code == "ParameterVersionNotFound":
		return fmt.Errorf("%s: %w in region %s (%s): create it as a SecureString (aws ssm put-parameter --type SecureString) or fix jenkins.api_token_ssm_parameter",
			p, ErrNotFound, region, code)
	case code == "AccessDeniedException" && mentionsKMS(msg), code == "InvalidKeyId":
		return fmt.Errorf("%s: %w: KMS refused to decrypt it: %s; the parameter uses a customer managed key: grant kms:Decrypt on that key to the instance role (the AWS managed key aws/ssm needs no grant)",
			p, ErrDecrypt, msg)
	case code == "AccessDeniedException":
		return fmt.Errorf("%s: %w: %s; add ssm:GetParameter on %s to the instance role", p, ErrAccessDenied, msg, p.resourceARN(region))
	case credentialFault(code):
		return fmt.Errorf("%s: AWS refused the credentials (%s): check the instance profile and the clock", p, code)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w (no answer within %s; check the route to the SSM endpoint of %s)", p, err, p.callTimeout, region)
	}
	return fmt.Errorf("%s: %w", p, err)
}
