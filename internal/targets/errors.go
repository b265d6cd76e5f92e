package targets

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/smithy-go"
)

// Error codes the package reacts to.
const (
	codeAccessDenied          = "AccessDenied"
	codeUnauthorizedOperation = "UnauthorizedOperation" // EC2's name for it
	codeTargetGroupNotFound   = "TargetGroupNotFound"
	codeValidationError       = "ValidationError"
	codeInstanceNotFound      = "InvalidInstanceID.NotFound"
	codeInvalidTarget         = "InvalidTarget"
)

// apiCode is the AWS error code of err, empty when err is no API error.
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// apiMessage is the AWS error message of err, empty when err is no API error.
func apiMessage(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorMessage()
	}
	return ""
}

func isAccessDenied(err error) bool {
	code := apiCode(err)
	return code == codeAccessDenied || code == codeUnauthorizedOperation
}

// grantFix is the sentence that tells the operator which permission is missing.
func grantFix(action, resource string) string {
	return fmt.Sprintf("add %s on %s to the instance role", action, resource)
}

// explain adds what to do next to the errors an operator can fix.
func explain(err error, action, resource string) error {
	switch {
	case isAccessDenied(err):
		return fmt.Errorf("%w; %s", err, grantFix(action, resource))
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w (no answer within the call timeout; check the route to the AWS endpoint)", err)
	}
	return err
}
