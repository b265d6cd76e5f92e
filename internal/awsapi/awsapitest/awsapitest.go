// Package awsapitest holds the checks that every caller of package awsapi makes of the
// errors it returns, so that each protocol's tests hold its errors to the same shape
// as the SDK's clients give.
package awsapitest

import (
	"errors"
	"fmt"
	"strings"

	"github.com/aws/smithy-go"
)

// Want is the error a failed call must be: a *smithy.OperationError of Service and
// Operation; around it the HTTP Status and, when RequestID is set, "RequestID: <id>"
// in the text; and, when Code is set, a smithy.APIError with Code and Message.
type Want struct {
	Service, Operation string
	Status             int
	RequestID          string
	Code, Message      string
}

// Problems lists how err differs from want; none means it is that error.
func Problems(err error, want Want) []string {
	var out []string
	var op *smithy.OperationError
	if !errors.As(err, &op) || op.Service() != want.Service || op.Operation() != want.Operation {
		out = append(out, fmt.Sprintf("%v is no %s %s operation error", err, want.Service, want.Operation))
	}
	var ae smithy.APIError
	if want.Code != "" && (!errors.As(err, &ae) || ae.ErrorCode() != want.Code || ae.ErrorMessage() != want.Message) {
		out = append(out, fmt.Sprintf("%v lacks the API error %s: %s", err, want.Code, want.Message))
	}
	var sc interface{ HTTPStatusCode() int }
	if !errors.As(err, &sc) || sc.HTTPStatusCode() != want.Status {
		out = append(out, fmt.Sprintf("%v lacks the status %d", err, want.Status))
	}
	if want.RequestID != "" && (err == nil || !strings.Contains(err.Error(), "RequestID: "+want.RequestID)) {
		out = append(out, fmt.Sprintf("%v lacks the request id %s", err, want.RequestID))
	}
	return out
}
