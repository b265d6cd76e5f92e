package efs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/awsapi"
)

// efsAPIVersion is the EFS API version, the first segment of its REST paths.
const efsAPIVersion = "2015-02-01"

var efsService = awsapi.Service{ID: "EFS", Signing: "elasticfilesystem", Host: "elasticfilesystem", EnvName: "EFS"}

// efsREST makes the one EFS call the agent needs, DescribeMountTargets, over the EFS
// REST-JSON API through awsapi: a GET with a query and a JSON answer. The SDK's EFS
// client would do the same, but it weighs about 0.8 MB of the binary for this single
// call.
type efsREST struct{ api *awsapi.Client }

// newEFSREST calls EFS in region at the endpoint awsapi resolves from explicit and cfg,
// with cfg's retryer (the SDK's standard one when cfg has none).
func newEFSREST(region, explicit string, cfg aws.Config) *efsREST {
	return &efsREST{awsapi.New(efsService, region, explicit, cfg)}
}

// mountTargetDescription is what DescribeMountTargets says about one mount target.
type mountTargetDescription struct {
	MountTargetID        string `json:"MountTargetId"`
	IPAddress            string `json:"IpAddress"`
	IPv6Address          string `json:"Ipv6Address"`
	AvailabilityZoneName string `json:"AvailabilityZoneName"`
	LifeCycleState       string `json:"LifeCycleState"`
}

type describeMountTargetsOutput struct {
	MountTargets []mountTargetDescription `json:"MountTargets"`
	NextMarker   string                   `json:"NextMarker"`
}

// describeMountTargets pages through the mount targets of a file system (query
// FileSystemId) or of an access point (AccessPointId), following NextMarker. Errors
// EFS answers are smithy.APIError values with EFS's code (FileSystemNotFound,
// AccessDeniedException, ...) and the HTTP status, inside a smithy.OperationError, as
// the SDK's would be. Each page is retried as the retryer says (throttling, server and
// connection errors) until its attempts or the context's deadline run out.
func (c *efsREST) describeMountTargets(ctx context.Context, param, id string) ([]mountTargetDescription, error) {
	var all []mountTargetDescription
	marker := ""
	for seen := map[string]bool{}; ; {
		q := url.Values{param: {id}}
		if marker != "" {
			q.Set("Marker", marker)
		}
		var page describeMountTargetsOutput
		if err := c.get(ctx, "DescribeMountTargets", "/"+efsAPIVersion+"/mount-targets", q, &page); err != nil {
			return nil, err
		}
		all = append(all, page.MountTargets...)
		if page.NextMarker == "" {
			return all, nil
		}
		if seen[page.NextMarker] {
			err := fmt.Errorf("the service answered marker %q twice", page.NextMarker)
			return nil, &smithy.OperationError{ServiceID: efsService.ID, OperationName: "DescribeMountTargets", Err: err}
		}
		seen[page.NextMarker] = true
		marker = page.NextMarker
	}
}

// get makes one operation (a GET of path with query q), retried, and decodes the JSON
// answer into out.
func (c *efsREST) get(ctx context.Context, operation, path string, q url.Values, out any) error {
	req := awsapi.Request{
		Operation: operation, Method: http.MethodGet, Path: path + "?" + q.Encode(),
		Header: http.Header{"Accept": {"application/json"}},
	}
	return c.api.Do(ctx, req, func(resp *http.Response, data []byte) error {
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			code, msg := restJSONError(resp.Header.Get("X-Amzn-Errortype"), data)
			var apiErr error = &smithy.GenericAPIError{Code: code, Message: msg}
			if code == "" {
				apiErr = fmt.Errorf("answered %s", resp.Status)
			}
			return awsapi.ResponseError(resp, "", apiErr)
		}
		if err := json.Unmarshal(data, out); err != nil {
			return awsapi.Deserialization(err)
		}
		return nil
	})
}

// restJSONError reads a REST-JSON protocol error: the code from the X-Amzn-ErrorType
// header ("Code:url"), else the body's ErrorCode, code or __type (possibly
// "namespace#Code"); the message from the body's Message or message.
func restJSONError(header string, body []byte) (code, message string) {
	var e struct {
		ErrorCode string `json:"ErrorCode"`
		Code      string `json:"code"`
		Type      string `json:"__type"`
		Message   string `json:"Message"`
		Lower     string `json:"message"`
	}
	_ = json.Unmarshal(body, &e)
	code, _, _ = strings.Cut(header, ":")
	for _, c := range []string{e.ErrorCode, e.Code, e.Type} {
		if code == "" {
			code = c
		}
	}
	if i := strings.LastIndex(code, "#"); i >= 0 {
		code = code[i+1:]
	}
	message = e.Message
	if message == "" {
		message = e.Lower
	}
	return strings.TrimSpace(code), message
}
