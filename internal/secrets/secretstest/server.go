// Package secretstest is an in-process double of the two AWS APIs package secrets
// calls, Systems Manager GetParameter and Secrets Manager GetSecretValue, in the way
// net/http/httptest doubles a server: one loopback HTTP server that speaks the AWS
// JSON 1.1 protocol (POST /, X-Amz-Target AmazonSSM.GetParameter or
// secretsmanager.GetSecretValue, Content-Type application/x-amz-json-1.1), checks
// the SigV4 signature with the same checker as the ELBv2/Auto Scaling double, keeps
// parameters and secrets per region, and answers like the services: a SecureString
// read without WithDecryption comes back encrypted, unknown names are
// ParameterNotFound / ResourceNotFoundException, a refused action is
// AccessDeniedException, a customer managed key the caller may not use refuses the
// decryption, a secret scheduled for deletion is InvalidRequestException.
package secretstest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"
)

// Region is where the double keeps what Put* store; a request signed for another
// region finds nothing there, as on AWS.
const Region = "us-east-1"

// AccountID owns every parameter and secret of the double.
const AccountID = "123456789012"

// The X-Amz-Target values the double serves.
const (
	TargetGetParameter   = "AmazonSSM.GetParameter"
	TargetGetSecretValue = "secretsmanager.GetSecretValue"
)

// contentType is the AWS JSON 1.1 protocol's media type, for requests and answers.
const contentType = "application/x-amz-json-1.1"

// Parameter types of Parameter Store.
const (
	TypeString       = "String"
	TypeStringList   = "StringList"
	TypeSecureString = "SecureString"
)

// Keys of the double: the AWS managed keys, which the role may always use through the
// service, and customer managed keys, which need kms:Decrypt (see DenyKey).
const (
	KeyAWSManagedSSM            = "alias/aws/ssm"
	KeyAWSManagedSecretsManager = "alias/aws/secretsmanager"
)

// Call is one request the server received.
type Call struct {
	At     time.Time
	Target string         // X-Amz-Target
	Region string         // from the credential scope
	Input  map[string]any // the decoded JSON body
	Code   string         // the error code answered; empty on success
}

type parameter struct {
	name     string
	typ      string
	key      string
	versions []string // value of version i+1
	labels   map[string]int
	modified time.Time
}

type secretVersion struct {
	id     string
	str    *string
	binary []byte
	stages []string
}

type secret struct {
	name     string
	arn      string
	key      string
	versions []*secretVersion
	created  time.Time
	deleted  bool
}

// Server is the double. Its methods are safe for concurrent use.
type Server struct {
	ts   *httptest.Server
	done chan struct{}

	mu         sync.Mutex
	now        func() time.Time
	parameters map[string]*parameter // by region + "\x00" + name
	secrets    map[string]*secret    // by region + "\x00" + name
	denied     map[string]bool       // by target
	deniedKeys map[string]bool
	failures   map[string][]string
	holds      map[string]chan struct{}
	calls      []Call
	closeOnce  sync.Once
}

// NewServer starts the double on 127.0.0.1 at a random port. Close it when done.
func NewServer() *Server {
	s := &Server{
		done:       make(chan struct{}),
		now:        time.Now,
		parameters: map[string]*parameter{},
		secrets:    map[string]*secret{},
		denied:     map[string]bool{},
		deniedKeys: map[string]bool{},
		failures:   map[string][]string{},
		holds:      map[string]chan struct{}{},
	}
	s.ts = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	return s
}

// URL is the base URL to give the SDK clients (or AWS_ENDPOINT_URL_SSM,
// AWS_ENDPOINT_URL_SECRETS_MANAGER).
func (s *Server) URL() string { return s.ts.URL }

// Close stops the server; held requests are answered ServiceUnavailable.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.done) })
	s.ts.Close()
}

// Credentials returns static credentials the server accepts (those of awstest).
func (s *Server) Credentials() aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: awstest.AccessKeyID, SecretAccessKey: awstest.SecretAccessKey, Source: "secretstest"}, nil
	})
}

func regionKey(name string) string { return Region + "\x00" + name }

// PutParameter creates the parameter in Region, or adds a version to it (as
// put-parameter --overwrite does), with the AWS managed key for a SecureString. It
// returns the new version number.
func (s *Server) PutParameter(name, typ, value string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.parameters[regionKey(name)]
	if !ok {
		p = &parameter{name: name, key: KeyAWSManagedSSM, labels: map[string]int{}}
		s.parameters[regionKey(name)] = p
	}
	p.typ = typ
	p.versions = append(p.versions, value)
	p.modified = s.now()
	return len(p.versions)
}

// LabelParameterVersion attaches label to a version of the parameter, as
// label-parameter-version does.
func (s *Server) LabelParameterVersion(name, label string, version int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.parameters[regionKey(name)]; ok {
		p.labels[label] = version
	}
}

// SetParameterKey encrypts the parameter with another KMS key (a customer managed
// key id or alias).
func (s *Server) SetParameterKey(name, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.parameters[regionKey(name)]; ok {
		p.key = key
	}
}

// PutSecret creates the secret in Region with a string value, or adds a version that
// becomes AWSCURRENT (the previous one AWSPREVIOUS), as put-secret-value and a rotation
// do. It returns the secret's ARN, which ends in six random characters as on AWS.
func (s *Server) PutSecret(name, value string) string {
	return s.putSecret(name, &value, nil)
}

// PutSecretBinary stores a binary value (SecretBinary) instead of a string.
func (s *Server) PutSecretBinary(name string, value []byte) string {
	return s.putSecret(name, nil, value)
}

func (s *Server) putSecret(name string, str *string, bin []byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, ok := s.secrets[regionKey(name)]
	if !ok {
		sec = &secret{
			name:    name,
			arn:     fmt.Sprintf("arn:aws:secretsmanager:%s:%s:secret:%s-%s", Region, AccountID, name, randomSuffix()),
			key:     KeyAWSManagedSecretsManager,
			created: s.now(),
		}
		s.secrets[regionKey(name)] = sec
	}
	for _, v := range sec.versions {
		v.stages = without(v.stages, "AWSPREVIOUS")
		if slices.Contains(v.stages, "AWSCURRENT") {
			v.stages = append(without(v.stages, "AWSCURRENT"), "AWSPREVIOUS")
		}
	}
	sec.versions = append(sec.versions, &secretVersion{id: newUUID(), str: str, binary: bin, stages: []string{"AWSCURRENT"}})
	return sec.arn
}

// SetSecretKey encrypts the secret with another KMS key.
func (s *Server) SetSecretKey(name, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec, ok := s.secrets[regionKey(name)]; ok {
		sec.key = key
	}
}

// DeleteSecret schedules the secret for deletion: reads fail until it is restored.
func (s *Server) DeleteSecret(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec, ok := s.secrets[regionKey(name)]; ok {
		sec.deleted = true
	}
}

// Deny makes every call of target (TargetGetParameter, TargetGetSecretValue) fail as
// IAM refuses it.
func (s *Server) Deny(target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied[target] = true
}

// DenyKey makes KMS refuse decryption with key: the role lacks kms:Decrypt on that
// customer managed key. The AWS managed keys cannot be denied this way.
func (s *Server) DenyKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deniedKeys[key] = true
}

// FailNext makes the next n calls of target fail with code (ThrottlingException,
// InternalServerError, ...) after their signature was checked.
func (s *Server) FailNext(target, code string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failures[target] = append(s.failures[target], code)
	}
}

// Hold keeps every call of target waiting until release is called, the client gives
// up or the server closes.
func (s *Server) Hold(target string) (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.holds[target] = ch
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.holds[target] == ch {
				delete(s.holds, target)
			}
			s.mu.Unlock()
			close(ch)
		})
	}
}

// Calls returns the requests received so far, in arrival order.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// apiError is an answer in the JSON protocol's error shape.
type apiError struct {
	status  int
	code    string
	message string
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "request body unreadable", http.StatusBadRequest)
		return
	}
	target := r.Header.Get("X-Amz-Target")
	var input map[string]any
	decodeErr := json.Unmarshal(body, &input)
	idx := s.record(Call{At: arrived, Target: target, Input: input})

	scope, fault := awstest.VerifySigV4(r, body, time.Now())
	s.setRegion(idx, scope.Region)
	var resp any
	var ae *apiError
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/":
		ae = &apiError{http.StatusNotFound, "UnknownOperationException", "only POST / is served"}
	case fault != nil:
		ae = authError(fault)
	case target != TargetGetParameter && target != TargetGetSecretValue:
		ae = &apiError{http.StatusBadRequest, "UnknownOperationException", ""}
	case !strings.HasPrefix(r.Header.Get("Content-Type"), contentType):
		ae = &apiError{http.StatusBadRequest, "SerializationException", "Content-Type must be " + contentType}
	case scope.Service != signingName(target):
		ae = &apiError{http.StatusBadRequest, "InvalidSignatureException", fmt.Sprintf("Credential should be scoped to correct service: '%s'. ", signingName(target))}
	case decodeErr != nil:
		ae = &apiError{http.StatusBadRequest, "SerializationException", "Start of structure or map found where not expected."}
	case !s.wait(r.Context(), target):
		ae = &apiError{http.StatusServiceUnavailable, "ServiceUnavailable", "the server is shutting down"}
	default:
		resp, ae = s.answer(target, scope.Region, body)
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("X-Amzn-Requestid", newUUID())
	if ae != nil {
		s.setCode(idx, ae.code)
		w.WriteHeader(ae.status)
		out := map[string]string{"__type": ae.code}
		if ae.message != "" {
			out["message"] = ae.message
		}
		_ = json.NewEncoder(w).Encode(out)
		return
	}
	_ = json.NewEncoder(w).Encode(resp)
}

func signingName(target string) string {
	if target == TargetGetParameter {
		return "ssm"
	}
	return "secretsmanager"
}

// authError maps the query-protocol codes of the shared checker to the JSON
// protocol's names.
func authError(f *awstest.SigV4Fault) *apiError {
	code := map[string]string{
		"MissingAuthenticationToken": "MissingAuthenticationTokenException",
		"IncompleteSignature":        "IncompleteSignatureException",
		"InvalidClientTokenId":       "UnrecognizedClientException",
		"SignatureDoesNotMatch":      "InvalidSignatureException",
	}[f.Code]
	msg := f.Message
	switch code {
	case "":
		code = "InvalidSignatureException"
	case "MissingAuthenticationTokenException":
		msg = "Missing Authentication Token"
	}
	return &apiError{http.StatusBadRequest, code, msg}
}

func (s *Server) answer(target, region string, body []byte) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.denied[target] {
		return nil, s.deniedLocked(target, region, body)
	}
	if q := s.failures[target]; len(q) > 0 {
		s.failures[target] = q[1:]
		return nil, injected(q[0])
	}
	if target == TargetGetParameter {
		return s.getParameterLocked(region, body)
	}
	return s.getSecretValueLocked(region, body)
}

func (s *Server) deniedLocked(target, region string, body []byte) *apiError {
	action, resource := "ssm:GetParameter", ""
	var in struct{ Name, SecretId string }
	_ = json.Unmarshal(body, &in)
	if target == TargetGetParameter {
		name, _, _ := strings.Cut(in.Name, ":")
		if strings.HasPrefix(in.Name, "arn:") {
			resource = in.Name
		} else {
			resource = fmt.Sprintf("arn:aws:ssm:%s:%s:parameter/%s", region, AccountID, strings.TrimPrefix(name, "/"))
		}
	} else {
		action = "secretsmanager:GetSecretValue"
		resource = in.SecretId
		if sec := s.findSecretLocked(region, in.SecretId); sec != nil {
			resource = sec.arn
		}
	}
	return &apiError{http.StatusBadRequest, "AccessDeniedException", fmt.Sprintf(
		"User: arn:aws:sts::%s:assumed-role/jenkins-controller/i-0123456789abcdef0 is not authorized to perform: %s on resource: %s because no identity-based policy allows the %s action",
		AccountID, action, resource, action)}
}

func injected(code string) *apiError {
	switch code {
	case "ThrottlingException":
		return &apiError{http.StatusBadRequest, code, "Rate exceeded"}
	case "InternalServerError", "InternalServiceError", "InternalFailure":
		return &apiError{http.StatusInternalServerError, code, "An internal error has occurred"}
	case "ServiceUnavailable":
		return &apiError{http.StatusServiceUnavailable, code, "Service is unavailable, try again later"}
	}
	return &apiError{http.StatusBadRequest, code, "injected fault " + code}
}

func (s *Server) keyUsableLocked(key string) bool {
	return key == KeyAWSManagedSSM || key == KeyAWSManagedSecretsManager || !s.deniedKeys[key]
}

type getParameterInput struct {
	Name           *string
	WithDecryption *bool
}

type parameterJSON struct {
	ARN              string
	DataType         string
	LastModifiedDate float64
	Name             string
	Selector         string `json:",omitempty"`
	Type             string
	Value            string
	Version          int
}

// getParameterLocked answers GetParameter: by name or ARN, with an optional :version
// or :label selector; a SecureString is decrypted only WithDecryption.
func (s *Server) getParameterLocked(region string, body []byte) (any, *apiError) {
	var in getParameterInput
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, &apiError{http.StatusBadRequest, "SerializationException", err.Error()}
	}
	if in.Name == nil || *in.Name == "" {
		return nil, validation("1 validation error detected: Value null at 'name' failed to satisfy constraint: Member must not be null")
	}
	raw := *in.Name
	name, selector := raw, ""
	a, isARN := strings.CutPrefix(raw, "arn:aws:ssm:")
	if isARN {
		// arn:aws:ssm:REGION:ACCOUNT:parameter/NAME
		parts := strings.SplitN(a, ":", 3)
		if len(parts) != 3 || !strings.HasPrefix(parts[2], "parameter/") {
			return nil, validation("Parameter ARN %s is not valid.", raw)
		}
		if parts[0] != region {
			return nil, &apiError{http.StatusBadRequest, "ParameterNotFound", ""}
		}
		// parameter/jenkins/token is the ARN of /jenkins/token; parameter/token that of token.
		name, selector, _ = strings.Cut(strings.TrimPrefix(parts[2], "parameter"), ":")
		if _, ok := s.parameters[region+"\x00"+name]; !ok {
			name = strings.TrimPrefix(name, "/")
		}
	} else if n, sel, ok := strings.Cut(raw, ":"); ok {
		name, selector = n, sel
	}
	if !isARN && strings.Contains(name, "/") && !strings.HasPrefix(name, "/") {
		return nil, validation("Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). If formed as a path, it can consist of sub-paths divided by slash symbol; each sub-path can be formed as a mix of letters, numbers and the following 3 symbols .-_")
	}
	p, ok := s.parameters[region+"\x00"+name]
	if !ok {
		return nil, &apiError{http.StatusBadRequest, "ParameterNotFound", ""}
	}
	version := len(p.versions)
	if selector != "" {
		if n, err := strconv.Atoi(selector); err == nil {
			if n < 1 || n > len(p.versions) {
				return nil, &apiError{http.StatusBadRequest, "ParameterVersionNotFound", fmt.Sprintf("Systems Manager could not find version %d of %s. Verify the version and try again.", n, name)}
			}
			version = n
		} else if v, ok := p.labels[selector]; ok {
			version = v
		} else {
			return nil, &apiError{http.StatusBadRequest, "ParameterVersionLabelNotFound", fmt.Sprintf("Systems Manager could not find label %s of %s.", selector, name)}
		}
	}
	value := p.versions[version-1]
	if p.typ == TypeSecureString {
		if in.WithDecryption != nil && *in.WithDecryption {
			if !s.keyUsableLocked(p.key) {
				return nil, &apiError{
					http.StatusBadRequest, "AccessDeniedException",
					"The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access.",
				}
			}
		} else {
			value = ciphertext(p.key, value)
		}
	}
	out := parameterJSON{
		ARN:              fmt.Sprintf("arn:aws:ssm:%s:%s:parameter/%s", region, AccountID, strings.TrimPrefix(p.name, "/")),
		DataType:         "text",
		LastModifiedDate: float64(p.modified.UnixMilli()) / 1000,
		Name:             p.name,
		Type:             p.typ,
		Value:            value,
		Version:          version,
	}
	if selector != "" {
		out.Selector = ":" + selector
	}
	return map[string]any{"Parameter": out}, nil
}

// ciphertext stands in for the KMS blob SSM returns for an undecrypted SecureString:
// base64 of an envelope that does not contain the value.
func ciphertext(key, value string) string {
	sum := sha256.Sum256([]byte(key + "\x00" + value))
	blob := append([]byte{0x01, 0x02, 0x02, 0x00, 0x78}, sum[:]...)
	return base64.StdEncoding.EncodeToString(blob)
}

type getSecretValueInput struct {
	SecretID     *string `json:"SecretId"`
	VersionID    *string `json:"VersionId"`
	VersionStage *string `json:"VersionStage"`
}

// findSecretLocked finds a secret by name, full ARN or partial ARN (without the six
// random characters).
func (s *Server) findSecretLocked(region, id string) *secret {
	if sec, ok := s.secrets[region+"\x00"+id]; ok {
		return sec
	}
	for k, sec := range s.secrets {
		if !strings.HasPrefix(k, region+"\x00") {
			continue
		}
		if id == sec.arn || id+sec.arn[len(sec.arn)-7:] == sec.arn {
			return sec
		}
	}
	return nil
}

func (s *Server) getSecretValueLocked(region string, body []byte) (any, *apiError) {
	var in getSecretValueInput
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, &apiError{http.StatusBadRequest, "SerializationException", err.Error()}
	}
	if in.SecretID == nil || *in.SecretID == "" {
		return nil, validation("1 validation error detected: Value null at 'secretId' failed to satisfy constraint: Member must not be null")
	}
	sec := s.findSecretLocked(region, *in.SecretID)
	if sec == nil {
		return nil, &apiError{http.StatusBadRequest, "ResourceNotFoundException", "Secrets Manager can't find the specified secret."}
	}
	if sec.deleted {
		return nil, &apiError{http.StatusBadRequest, "InvalidRequestException", "You can't perform this operation on the secret because it was marked for deletion."}
	}
	stage := "AWSCURRENT"
	if in.VersionStage != nil {
		stage = *in.VersionStage
	}
	var v *secretVersion
	for _, c := range sec.versions {
		if (in.VersionID != nil && c.id == *in.VersionID) || (in.VersionID == nil && slices.Contains(c.stages, stage)) {
			v = c
		}
	}
	if v == nil {
		return nil, &apiError{http.StatusBadRequest, "ResourceNotFoundException", "Secrets Manager can't find the specified secret value for staging label: " + stage}
	}
	if !s.keyUsableLocked(sec.key) {
		return nil, &apiError{http.StatusBadRequest, "AccessDeniedException", "Access to KMS is not allowed"}
	}
	out := map[string]any{
		"ARN":           sec.arn,
		"CreatedDate":   float64(sec.created.UnixMilli()) / 1000,
		"Name":          sec.name,
		"VersionId":     v.id,
		"VersionStages": v.stages,
	}
	if v.str != nil {
		out["SecretString"] = *v.str
	} else {
		out["SecretBinary"] = base64.StdEncoding.EncodeToString(v.binary)
	}
	return out, nil
}

func validation(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "ValidationException", fmt.Sprintf(format, args...)}
}

func (s *Server) wait(ctx context.Context, target string) bool {
	s.mu.Lock()
	held := s.holds[target]
	s.mu.Unlock()
	if held == nil {
		return true
	}
	select {
	case <-held:
		return true
	case <-ctx.Done():
	case <-s.done:
	}
	return false
}

func (s *Server) record(c Call) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, c)
	return len(s.calls) - 1
}

func (s *Server) setRegion(i int, region string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[i].Region = region
}

func (s *Server) setCode(i int, code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[i].Code = code
}

func without(list []string, v string) []string {
	out := list[:0:0]
	for _, x := range list {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

func randomSuffix() string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var b [6]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b[:])
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
