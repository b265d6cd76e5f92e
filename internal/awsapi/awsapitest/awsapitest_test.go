package awsapitest

import (
	"errors"
	"net/http"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

func TestProblems(t *testing.T) {
	want := Want{Service: "EFS", Operation: "DescribeMountTargets", Status: 404, RequestID: "r-1", Code: "FileSystemNotFound", Message: "gone"}
	resp := &http.Response{StatusCode: 404, Header: http.Header{}}
	good := &smithy.OperationError{ServiceID: "EFS", OperationName: "DescribeMountTargets", Err: &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: resp},
			Err:      &smithy.GenericAPIError{Code: "FileSystemNotFound", Message: "gone"},
		},
		RequestID: "r-1",
	}}
	if p := Problems(good, want); len(p) != 0 {
		t.Errorf("the error wanted: %q", p)
	}
	for name, err := range map[string]error{
		"nil":           nil,
		"plain":         errors.New("FileSystemNotFound: gone"),
		"other service": &smithy.OperationError{ServiceID: "EC2", OperationName: "DescribeMountTargets", Err: good.Err},
		"other code":    &smithy.OperationError{ServiceID: "EFS", OperationName: "DescribeMountTargets", Err: &smithy.GenericAPIError{Code: "X"}},
	} {
		if len(Problems(err, want)) == 0 {
			t.Errorf("%s: no problem found in %v", name, err)
		}
	}
}
