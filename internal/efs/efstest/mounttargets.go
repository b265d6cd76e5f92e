package efstest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs"
)

// The test credentials the mount target double accepts unless told otherwise. They are
// not secret: the double exists only on loopback.
const (
	AccessKeyID     = "AKIAEFSMOUNTTARGETS1"
	SecretAccessKey = "efs-test-secret-key-do-not-use-elsewhere"
)

// Facts of the EFS API (REST-JSON, API version 2015-02-01) that the double keeps.
const (
	// SigningName is the SigV4 service name of EFS.
	SigningName = "elasticfilesystem"
	// MountTargetsPath is DescribeMountTargets' path; the method is GET.
	MountTargetsPath = "/2015-02-01/mount-targets"
	// DefaultMaxItems is the page size when MaxItems is not given; 100 is the most.
	DefaultMaxItems = 10
	maxMaxItems     = 100
	// OwnerID is the account the double's mount targets belong to.
	OwnerID = "123456789012"
)

var fileSystemIDParam = regexp.MustCompile(`^(arn:aws[-a-z]*:elasticfilesystem:[0-9a-z-:]+:file-system/fs-[0-9a-f]{8,40}|fs-[0-9a-f]{8,40})$`)

// MountTargetCall is one request the double received.
type MountTargetCall struct {
	At     time.Time
	Method string
	Path   string
	Region string // from the credential scope
	Query  url.Values
	Status int
	Code   string // the error code answered; empty on success
}

// MountTargetServer is an in-process double of the EFS API's DescribeMountTargets, in
// the way net/http/httptest doubles a server: on loopback it checks the SigV4
// signature (signing name elasticfilesystem) against known credentials, reads
// FileSystemId, MountTargetId, AccessPointId, MaxItems and Marker from the query,
// pages, and answers the service's JSON and error shapes (x-amzn-ErrorType with
// {"ErrorCode","Message"}): BadRequest 400, FileSystemNotFound 404,
// MountTargetNotFound 404, AccessPointNotFound 404 (it knows no access points),
// AccessDeniedException 403, ThrottlingException 429. It also implements
// efs.MountTargetLookup from its own state, so that the contract tests hold it to the
// same behaviour as the adapter talking to it. Its methods are safe for concurrent use.
type MountTargetServer struct {
	ts *httptest.Server

	mu       sync.Mutex
	fs       map[string][]efs.MountTarget // file system id → its mount targets, in creation order
	creds    map[string]string            // access key id → secret
	denied   bool
	throttle int
	calls    []MountTargetCall
}

var _ efs.MountTargetLookup = (*MountTargetServer)(nil)

// NewMountTargetServer starts a double that knows no file system and accepts the
// AccessKeyID/SecretAccessKey pair.
func NewMountTargetServer() *MountTargetServer {
	s := &MountTargetServer{
		fs:    map[string][]efs.MountTarget{},
		creds: map[string]string{AccessKeyID: SecretAccessKey},
	}
	s.ts = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// URL is the base URL to give the adapter (Endpoint, or AWS_ENDPOINT_URL_EFS).
func (s *MountTargetServer) URL() string { return s.ts.URL }

// Close stops the server.
func (s *MountTargetServer) Close() { s.ts.Close() }

// Credentials returns a provider of the default test credentials.
func (s *MountTargetServer) Credentials() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, "")
}

// AllowCredentials makes the double accept another key pair too (another double's,
// when one environment points the agent at several).
func (s *MountTargetServer) AllowCredentials(accessKeyID, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creds[accessKeyID] = secret
}

// AddFileSystem makes a file system exist, with no mount target.
func (s *MountTargetServer) AddFileSystem(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.fs[id]; !ok {
		s.fs[id] = nil
	}
}

// AddMountTarget adds a mount target to a file system (created if unknown). An empty
// ID gets one; an empty State is available.
func (s *MountTargetServer) AddMountTarget(fileSystemID string, t efs.MountTarget) efs.MountTarget {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.ID == "" {
		t.ID = "fsmt-" + randomHex(8)
	}
	if t.State == "" {
		t.State = "available"
	}
	s.fs[fileSystemID] = append(s.fs[fileSystemID], t)
	return t
}

// SetState changes a mount target's LifeCycleState.
func (s *MountTargetServer) SetState(mountTargetID, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ts := range s.fs {
		for i := range ts {
			if ts[i].ID == mountTargetID {
				ts[i].State = state
			}
		}
	}
}

// Deny makes every call fail with AccessDeniedException, as a role without
// elasticfilesystem:DescribeMountTargets does.
func (s *MountTargetServer) Deny(denied bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied = denied
}

// Throttle answers the next n calls with ThrottlingException.
func (s *MountTargetServer) Throttle(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle = n
}

// Calls returns the requests received so far.
func (s *MountTargetServer) Calls() []MountTargetCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// fileSystemNotFound is the message of EFS's FileSystemNotFound error for id, the
// same through the API and in process.
func fileSystemNotFound(id string) string {
	return fmt.Sprintf("File system '%s' does not exist.", id)
}

// MountTarget answers from the double's state, as the adapter does through the API:
// the lookup the Mounter makes, without HTTP.
func (s *MountTargetServer) MountTarget(ctx context.Context, fileSystemID, az string) (efs.MountTarget, error) {
	if err := ctx.Err(); err != nil {
		return efs.MountTarget{}, err
	}
	s.mu.Lock()
	denied := s.denied
	targets, ok := s.fs[fileSystemID]
	targets = slices.Clone(targets)
	s.mu.Unlock()
	switch {
	case denied:
		return efs.MountTarget{}, fmt.Errorf("efs DescribeMountTargets %s: %w: not authorized to perform elasticfilesystem:DescribeMountTargets", fileSystemID, efs.ErrAccessDenied)
	case !ok:
		return efs.MountTarget{}, fmt.Errorf("efs DescribeMountTargets %s: %w: %s", fileSystemID, efs.ErrFileSystemNotFound, fileSystemNotFound(fileSystemID))
	}
	return efs.PickMountTarget(fileSystemID, az, targets)
}

// apiError is one error answer.
type apiError struct {
	status        int
	code, message string
}

func (s *MountTargetServer) serve(w http.ResponseWriter, r *http.Request) {
	call := MountTargetCall{At: time.Now(), Method: r.Method, Path: r.URL.Path, Query: r.URL.Query()}
	body, status, aerr := s.answer(r, &call)
	call.Status = status
	if aerr != nil {
		call.Code = aerr.code
	}
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.mu.Unlock()

	w.Header().Set("X-Amzn-RequestId", randomHex(16))
	w.Header().Set("Content-Type", "application/json")
	if aerr != nil {
		w.Header().Set("X-Amzn-ErrorType", aerr.code)
		body, _ = json.Marshal(map[string]string{"ErrorCode": aerr.code, "Message": aerr.message})
	}
	w.WriteHeader(status)
	w.Write(body)
}

// answer decides the response to one request.
func (s *MountTargetServer) answer(r *http.Request, call *MountTargetCall) ([]byte, int, *apiError) {
	fail := func(status int, code, format string, args ...any) ([]byte, int, *apiError) {
		return nil, status, &apiError{status, code, fmt.Sprintf(format, args...)}
	}
	region, authErr := s.verifySignature(r)
	call.Region = region
	if authErr != nil {
		return fail(authErr.status, authErr.code, "%s", authErr.message)
	}
	if r.URL.Path != MountTargetsPath {
		return fail(http.StatusNotFound, "UnknownOperationException", "no operation at %s %s in this double", r.Method, r.URL.Path)
	}
	if r.Method != http.MethodGet {
		return fail(http.StatusMethodNotAllowed, "UnknownOperationException", "%s %s: DescribeMountTargets is GET", r.Method, r.URL.Path)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.throttle > 0 {
		s.throttle--
		return fail(http.StatusTooManyRequests, "ThrottlingException", "Rate exceeded")
	}
	if s.denied {
		return fail(http.StatusForbidden, "AccessDeniedException",
			"User: arn:aws:sts::%s:assumed-role/jenkins-controller/i-0123456789abcdef0 is not authorized to perform: elasticfilesystem:DescribeMountTargets on the specified resource", OwnerID)
	}

	q := r.URL.Query()
	fsID, mtID, apID := q.Get("FileSystemId"), q.Get("MountTargetId"), q.Get("AccessPointId")
	given := 0
	for _, v := range []string{fsID, mtID, apID} {
		if v != "" {
			given++
		}
	}
	if given != 1 {
		return fail(http.StatusBadRequest, "BadRequest", "Specify exactly one of FileSystemId, MountTargetId or AccessPointId.")
	}
	maxItems := DefaultMaxItems
	if v := q.Get("MaxItems"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxMaxItems {
			return fail(http.StatusBadRequest, "BadRequest", "MaxItems must be between 1 and %d.", maxMaxItems)
		}
		maxItems = n
	}

	var targets []efs.MountTarget
	ownerFS := map[string]string{}
	switch {
	case apID != "":
		return fail(http.StatusNotFound, "AccessPointNotFound", "Access point '%s' does not exist.", apID)
	case mtID != "":
		for id, ts := range s.fs {
			for _, t := range ts {
				if t.ID == mtID {
					targets = append(targets, t)
					ownerFS[t.ID] = id
				}
			}
		}
		if len(targets) == 0 {
			return fail(http.StatusNotFound, "MountTargetNotFound", "Mount target '%s' does not exist.", mtID)
		}
	default:
		if !fileSystemIDParam.MatchString(fsID) {
			return fail(http.StatusBadRequest, "BadRequest", "Invalid file system ID: %s", fsID)
		}
		id := fsID[strings.LastIndex(fsID, "/")+1:]
		ts, ok := s.fs[id]
		if !ok {
			return fail(http.StatusNotFound, "FileSystemNotFound", "%s", fileSystemNotFound(id))
		}
		targets = ts
		for _, t := range ts {
			ownerFS[t.ID] = id
		}
	}

	start := 0
	marker := q.Get("Marker")
	if marker != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(marker, "mt-page-"))
		if !strings.HasPrefix(marker, "mt-page-") || err != nil || n < 0 || n > len(targets) {
			return fail(http.StatusBadRequest, "BadRequest", "Invalid marker: %s", marker)
		}
		start = n
	}
	end := min(start+maxItems, len(targets))
	type description struct {
		OwnerID              string `json:"OwnerId"`
		MountTargetID        string `json:"MountTargetId"`
		FileSystemID         string `json:"FileSystemId"`
		SubnetID             string `json:"SubnetId"`
		LifeCycleState       string `json:"LifeCycleState"`
		IPAddress            string `json:"IpAddress,omitempty"`
		IPv6Address          string `json:"Ipv6Address,omitempty"`
		NetworkInterfaceID   string `json:"NetworkInterfaceId"`
		AvailabilityZoneID   string `json:"AvailabilityZoneId"`
		AvailabilityZoneName string `json:"AvailabilityZoneName"`
		VpcID                string `json:"VpcId"`
	}
	out := struct {
		Marker       string        `json:"Marker,omitempty"`
		MountTargets []description `json:"MountTargets"`
		NextMarker   string        `json:"NextMarker,omitempty"`
	}{Marker: marker, MountTargets: []description{}}
	for _, t := range targets[start:end] {
		d := description{
			OwnerID: OwnerID, MountTargetID: t.ID, FileSystemID: ownerFS[t.ID],
			SubnetID: "subnet-" + hexOf(t.AvailabilityZone, 17), LifeCycleState: t.State,
			NetworkInterfaceID: "eni-" + hexOf(t.ID, 17), AvailabilityZoneID: zoneID(t.AvailabilityZone),
			AvailabilityZoneName: t.AvailabilityZone, VpcID: "vpc-" + hexOf("vpc", 17),
		}
		if strings.Contains(t.IP, ":") {
			d.IPv6Address = t.IP
		} else {
			d.IPAddress = t.IP
		}
		out.MountTargets = append(out.MountTargets, d)
	}
	if end < len(targets) {
		out.NextMarker = "mt-page-" + strconv.Itoa(end)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return fail(http.StatusInternalServerError, "InternalServerError", "%v", err)
	}
	return b, http.StatusOK, nil
}

// verifySignature signs a copy of r, holding only the headers r claims to have signed,
// with the secret the double knows for the key id, and compares the signatures: a
// request signed by anyone else, for another service, or altered on the way, fails.
func (s *MountTargetServer) verifySignature(r *http.Request) (region string, _ *apiError) {
	deny := func(code, msg string) (string, *apiError) {
		return region, &apiError{http.StatusForbidden, code, msg}
	}
	h := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 ")
	if !ok {
		return deny("MissingAuthenticationTokenException", "Missing Authentication Token")
	}
	fields := map[string]string{}
	for part := range strings.SplitSeq(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || fields["SignedHeaders"] == "" || fields["Signature"] == "" {
		return deny("IncompleteSignatureException", "Authorization header requires Credential, SignedHeaders and Signature")
	}
	region = scope[2]
	if scope[3] != SigningName {
		return deny("InvalidSignatureException", "Credential should be scoped to correct service: '"+SigningName+"'.")
	}
	s.mu.Lock()
	secret, known := s.creds[scope[0]]
	s.mu.Unlock()
	if !known {
		return deny("UnrecognizedClientException", "The security token included in the request is invalid.")
	}
	at, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil || at.Format("20060102") != scope[1] {
		return deny("IncompleteSignatureException", "X-Amz-Date is missing, malformed or not the credential scope's date")
	}
	if skew := time.Since(at); skew > 15*time.Minute || skew < -15*time.Minute {
		return deny("InvalidSignatureException", "Signature expired")
	}
	replay, err := http.NewRequestWithContext(context.Background(), r.Method, "http://"+r.Host+r.URL.RequestURI(), nil)
	if err != nil {
		return deny("IncompleteSignatureException", err.Error())
	}
	replay.Host = r.Host
	signed := strings.Split(fields["SignedHeaders"], ";")
	for _, name := range signed {
		if name == "host" {
			continue
		}
		vs, ok := r.Header[http.CanonicalHeaderKey(name)]
		if !ok {
			return deny("IncompleteSignatureException", "signed header "+name+" is missing")
		}
		replay.Header[http.CanonicalHeaderKey(name)] = vs
	}
	sum := sha256.Sum256(nil) // GET: no body
	creds := aws.Credentials{AccessKeyID: scope[0], SecretAccessKey: secret, SessionToken: r.Header.Get("X-Amz-Security-Token")}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, replay, hex.EncodeToString(sum[:]), SigningName, region, at); err != nil {
		return deny("IncompleteSignatureException", err.Error())
	}
	_, want, _ := strings.Cut(replay.Header.Get("Authorization"), "Signature=")
	if want == "" || want != fields["Signature"] {
		return deny("InvalidSignatureException", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
	}
	return region, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(errors.New("efstest: no randomness: " + err.Error()))
	}
	return hex.EncodeToString(b)
}

// hexOf derives a stable id suffix of n hex digits from s.
func hexOf(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:n]
}

// zoneID makes a zone id (use1-az4 style) from a zone name, stable per name.
func zoneID(zone string) string {
	if zone == "" {
		return ""
	}
	return "z" + hexOf(zone, 3) + "-az" + strconv.Itoa(int(zone[len(zone)-1]-'a'+1))
}
