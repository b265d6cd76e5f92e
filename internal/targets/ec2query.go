package targets

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/smithy-go"
)

// ec2Version is the EC2 Query API version the calls are made in.
const ec2Version = "2016-11-15"

// ec2Query makes the one EC2 call the agent needs, DescribeInstances for one instance,
// over the EC2 Query API: a form POST signed with the SDK's own SigV4 signer and an
// XML answer. The SDK's EC2 client would do the same, but it weighs about 19 MB of the
// binary for this single call.
type ec2Query struct {
	endpoint string
	region   string
	creds    aws.CredentialsProvider
	http     *http.Client
	signer   *v4.Signer
}

// newEC2Query resolves the endpoint the way the SDK does for EC2: an explicit base
// URL (tests, simulate), else AWS_ENDPOINT_URL_EC2, else AWS_ENDPOINT_URL or the shared
// config's endpoint_url (cfgBase), else https://ec2.REGION.amazonaws.com (.com.cn in
// China). AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true skips the variables.
func newEC2Query(region, explicit string, cfgBase *string, creds aws.CredentialsProvider, hc aws.HTTPClient) *ec2Query {
	endpoint := explicit
	if endpoint == "" && os.Getenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") != "true" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL_EC2")
		if endpoint == "" {
			endpoint = aws.ToString(cfgBase)
		}
	}
	if endpoint == "" {
		suffix := "amazonaws.com"
		if strings.HasPrefix(region, "cn-") {
			suffix = "amazonaws.com.cn"
		}
		endpoint = "https://ec2." + region + "." + suffix
	}
	client, ok := hc.(*http.Client)
	if !ok || client == nil {
		client = &http.Client{}
	}
	return &ec2Query{endpoint: strings.TrimRight(endpoint, "/"), region: region, creds: creds, http: client, signer: v4.NewSigner()}
}

// ec2Instance is what DescribeInstances says about one instance.
type ec2Instance struct {
	ID    string `xml:"instanceId"`
	State string `xml:"instanceState>name"`
}

type describeInstancesXML struct {
	Reservations []struct {
		Instances []ec2Instance `xml:"instancesSet>item"`
	} `xml:"reservationSet>item"`
}

type ec2ErrorXML struct {
	Errors []struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Errors>Error"`
	RequestID string `xml:"RequestID"`
}

// describeInstances lists the named instances. Errors EC2 answers are smithy.APIError
// values with EC2's code (InvalidInstanceID.NotFound, UnauthorizedOperation, ...), as
// the SDK's would be. Throttling and server errors are retried with backoff until
// maxAttempts or the context's deadline.
func (q *ec2Query) describeInstances(ctx context.Context, ids ...string) ([]ec2Instance, error) {
	form := url.Values{"Action": {"DescribeInstances"}, "Version": {ec2Version}}
	for i, id := range ids {
		form.Set("InstanceId."+strconv.Itoa(i+1), id)
	}
	body := form.Encode()
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		out, retry, err := q.call(ctx, body)
		if err == nil || !retry || attempt >= maxAttempts {
			return out, err
		}
		// Full jitter, as the SDK's standard retryer.
		wait := time.Duration(rand.Int64N(int64(backoff) + 1))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("operation error EC2: DescribeInstances: %w (last: %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (q *ec2Query) call(ctx context.Context, body string) ([]ec2Instance, bool, error) {
	creds, err := q.creds.Retrieve(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("operation error EC2: DescribeInstances: get credentials: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, q.endpoint+"/", strings.NewReader(body))
	if err != nil {
		return nil, false, fmt.Errorf("operation error EC2: DescribeInstances: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	sum := sha256.Sum256([]byte(body))
	if err := q.signer.SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "ec2", q.region, time.Now().UTC()); err != nil {
		return nil, false, fmt.Errorf("operation error EC2: DescribeInstances: sign: %w", err)
	}
	resp, err := q.http.Do(req)
	if err != nil {
		return nil, ctx.Err() == nil, fmt.Errorf("operation error EC2: DescribeInstances: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, true, fmt.Errorf("operation error EC2: DescribeInstances: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ec2ErrorXML
		if xml.Unmarshal(data, &e) != nil || len(e.Errors) == 0 {
			return nil, resp.StatusCode >= 500, fmt.Errorf("operation error EC2: DescribeInstances: answered %s", resp.Status)
		}
		code := e.Errors[0].Code
		retry := resp.StatusCode >= 500 || code == "RequestLimitExceeded" || code == "Throttling" || code == "ThrottlingException"
		return nil, retry, fmt.Errorf("operation error EC2: DescribeInstances: https response error StatusCode: %d, RequestID: %s, %w",
			resp.StatusCode, e.RequestID, &smithy.GenericAPIError{Code: code, Message: e.Errors[0].Message})
	}
	var out describeInstancesXML
	if err := xml.Unmarshal(data, &out); err != nil {
		return nil, false, fmt.Errorf("operation error EC2: DescribeInstances: decode answer: %w", err)
	}
	var list []ec2Instance
	for _, r := range out.Reservations {
		list = append(list, r.Instances...)
	}
	return list, false, nil
}
