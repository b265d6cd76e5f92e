package awstest

import (
	"net/http"
	"time"
)

// SigV4Scope is what a verified signature's credential scope names.
type SigV4Scope struct {
	Region  string
	Service string // signing name, e.g. ssm, secretsmanager
}

// SigV4Fault says why a signature was refused, with the query-protocol error code AWS
// answers (MissingAuthenticationToken, IncompleteSignature, InvalidClientTokenId,
// SignatureDoesNotMatch); doubles of JSON-protocol services map it to their own names.
type SigV4Fault struct {
	Code    string
	Message string
}

// VerifySigV4 checks the SigV4 Authorization header of r, whose body is body, against
// the test credentials (AccessKeyID, SecretAccessKey) the way AWS does: shape, key id,
// date and its skew against now, and the signature itself, recomputed over the headers r
// claims to have signed. Other doubles on loopback use it so that every AWS double
// checks signatures alike.
func VerifySigV4(r *http.Request, body []byte, now time.Time) (SigV4Scope, *SigV4Fault) {
	a, f := verifySignature(r, body, now)
	scope := SigV4Scope{Region: a.Region, Service: a.Service}
	if f != nil {
		return scope, &SigV4Fault{Code: f.code, Message: f.message}
	}
	return scope, nil
}
