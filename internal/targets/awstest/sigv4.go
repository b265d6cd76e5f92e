package awstest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// The test credentials the server accepts. They are not secret: the server exists only
// on loopback, for tests and the simulator.
const (
	AccessKeyID     = "AKIATARGETSTEST00001"
	SecretAccessKey = "targets-test-secret-key-do-not-use-elsewhere"
)

const (
	sigv4Algorithm = "AWS4-HMAC-SHA256"
	amzDateLayout  = "20060102T150405Z"
	// maxSkew is how far X-Amz-Date may be from the server's clock, as on AWS.
	maxSkew = 15 * time.Minute
)

// authorization is a parsed SigV4 Authorization header.
type authorization struct {
	AccessKeyID   string
	Date          string // yyyymmdd of the credential scope
	Region        string
	Service       string
	SignedHeaders []string
	Signature     string
}

// parseAuthorization reads "AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request,
// SignedHeaders=a;b, Signature=hex". It checks the shape only, not the signature.
func parseAuthorization(h string) (authorization, error) {
	var a authorization
	rest, ok := strings.CutPrefix(h, sigv4Algorithm+" ")
	if !ok {
		return a, errors.New("authorization header does not start with " + sigv4Algorithm)
	}
	fields := map[string]string{}
	for part := range strings.SplitSeq(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || k == "" {
			return a, fmt.Errorf("authorization component %q is not key=value", part)
		}
		if _, dup := fields[k]; dup {
			return a, fmt.Errorf("authorization component %s appears twice", k)
		}
		fields[k] = v
	}
	cred, signed, sig := fields["Credential"], fields["SignedHeaders"], fields["Signature"]
	if cred == "" || signed == "" || sig == "" || len(fields) != 3 {
		return a, errors.New("authorization header needs exactly Credential, SignedHeaders and Signature")
	}

	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return a, fmt.Errorf("credential %q is not AKID/date/region/service/aws4_request", cred)
	}
	for _, s := range scope[:4] {
		if s == "" {
			return a, fmt.Errorf("credential %q has an empty component", cred)
		}
	}
	if _, err := time.Parse("20060102", scope[1]); err != nil {
		return a, fmt.Errorf("credential date %q is not yyyymmdd", scope[1])
	}
	a.AccessKeyID, a.Date, a.Region, a.Service = scope[0], scope[1], scope[2], scope[3]

	a.SignedHeaders = strings.Split(signed, ";")
	for _, name := range a.SignedHeaders {
		if name == "" || name != strings.ToLower(name) {
			return a, fmt.Errorf("signed header %q must be non-empty lowercase", name)
		}
	}
	if !slices.IsSorted(a.SignedHeaders) {
		return a, errors.New("signed headers are not sorted")
	}
	for _, must := range []string{"host", "x-amz-date"} {
		if !slices.Contains(a.SignedHeaders, must) {
			return a, fmt.Errorf("signed headers lack %s", must)
		}
	}

	if len(sig) != 64 {
		return a, errors.New("signature is not 64 hex digits")
	}
	if _, err := hex.DecodeString(sig); err != nil || sig != strings.ToLower(sig) {
		return a, errors.New("signature is not lowercase hex")
	}
	a.Signature = sig
	return a, nil
}

// authFault says why a request's signature was refused.
type authFault struct {
	code, message string
}

// verifySignature signs a copy of r, holding only the headers r claims to have signed,
// with the secret the server knows for the key id, and compares the result: a request
// signed by anyone else, or altered on the way, does not match.
func verifySignature(r *http.Request, body []byte, now time.Time) (authorization, *authFault) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return authorization{}, &authFault{"MissingAuthenticationToken", "Request is missing Authentication Token"}
	}
	a, err := parseAuthorization(h)
	if err != nil {
		return a, &authFault{"IncompleteSignature", err.Error()}
	}
	if a.AccessKeyID != AccessKeyID {
		return a, &authFault{"InvalidClientTokenId", "The security token included in the request is invalid."}
	}
	amzDate := r.Header.Get("X-Amz-Date")
	at, err := time.Parse(amzDateLayout, amzDate)
	if err != nil {
		return a, &authFault{"IncompleteSignature", "X-Amz-Date header is missing or malformed"}
	}
	if at.Format("20060102") != a.Date {
		return a, &authFault{"SignatureDoesNotMatch", "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP"}
	}
	if skew := now.Sub(at); skew > maxSkew || skew < -maxSkew {
		return a, &authFault{"SignatureDoesNotMatch", fmt.Sprintf("Signature expired: %s is now earlier than %s", amzDate, now.Add(-maxSkew).UTC().Format(amzDateLayout))}
	}

	replay, err := http.NewRequestWithContext(context.Background(), r.Method, "http://"+r.Host+r.URL.RequestURI(), nil)
	if err != nil {
		return a, &authFault{"IncompleteSignature", "request URL cannot be rebuilt: " + err.Error()}
	}
	replay.Host = r.Host
	for _, name := range a.SignedHeaders {
		switch name {
		case "host":
		case "content-length":
			replay.ContentLength = int64(len(body))
		default:
			vs, ok := r.Header[http.CanonicalHeaderKey(name)]
			if !ok {
				return a, &authFault{"SignatureDoesNotMatch", "signed header " + name + " is missing from the request"}
			}
			replay.Header[http.CanonicalHeaderKey(name)] = vs
		}
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: AccessKeyID, SecretAccessKey: SecretAccessKey, SessionToken: r.Header.Get("X-Amz-Security-Token")}
	err = v4.NewSigner().SignHTTP(context.Background(), creds, replay, hex.EncodeToString(sum[:]), a.Service, a.Region, at)
	if err != nil {
		return a, &authFault{"IncompleteSignature", "cannot recompute the signature: " + err.Error()}
	}
	want, err := parseAuthorization(replay.Header.Get("Authorization"))
	if err != nil || want.Signature != a.Signature || !slices.Equal(want.SignedHeaders, a.SignedHeaders) {
		return a, &authFault{"SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."}
	}
	return a, nil
}
