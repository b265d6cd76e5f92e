package secrets_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/secrets"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/secrets/secretstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

const customerKey = "alias/jenkins-cmk"

func options(srv *secretstest.Server) secrets.Options {
	return secrets.Options{
		Region:      secretstest.Region,
		Endpoint:    srv.URL(),
		Credentials: srv.Credentials(),
		Logger:      slog.New(slog.DiscardHandler),
	}
}

func ssmSource(t *testing.T, name string, opts secrets.Options) secrets.Source {
	t.Helper()
	src, err := secrets.NewSSMParameter(t.Context(), name, opts)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func smSource(t *testing.T, id string, opts secrets.Options) secrets.Source {
	t.Helper()
	src, err := secrets.NewSecretsManagerSecret(t.Context(), id, opts)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// TestSSMParameterContract runs the contract through the SDK's SSM client against the
// double: SigV4, JSON 1.1, GetParameter WithDecryption.
func TestSSMParameterContract(t *testing.T) {
	srv := secretstest.NewServer()
	defer srv.Close()
	srv.DenyKey(customerKey)
	secretstest.RunContract(t, srv, secretstest.Store{
		Name:   "ssm",
		Target: secretstest.TargetGetParameter,
		Put: func(name, value string) {
			srv.PutParameter("/"+name, secretstest.TypeSecureString, value)
		},
		UseCustomerKey: func(name string) { srv.SetParameterKey("/"+name, customerKey) },
		Source: func(t *testing.T, name string) secrets.Source {
			return ssmSource(t, "/"+name, options(srv))
		},
	})
	for _, c := range srv.Calls() {
		if c.Target == secretstest.TargetGetParameter && c.Input["WithDecryption"] != true {
			t.Errorf("GetParameter without WithDecryption: %v", c.Input)
		}
	}
}

// TestSecretsManagerContract runs the same contract through the SDK's Secrets Manager
// client against the double.
func TestSecretsManagerContract(t *testing.T) {
	srv := secretstest.NewServer()
	defer srv.Close()
	srv.DenyKey(customerKey)
	secretstest.RunContract(t, srv, secretstest.Store{
		Name:           "secretsmanager",
		Target:         secretstest.TargetGetSecretValue,
		Put:            func(name, value string) { srv.PutSecret(name, value) },
		UseCustomerKey: func(name string) { srv.SetSecretKey(name, customerKey) },
		Source: func(t *testing.T, name string) secrets.Source {
			return smSource(t, name, options(srv))
		},
	})
}

// TestEndpointsFromEnvironment: with no endpoint in the options, the SDK's own
// variables lead each client to the double, and the region comes from RegionFrom (the
// instance identity) when nothing else names it.
func TestEndpointsFromEnvironment(t *testing.T) {
	srv := secretstest.NewServer()
	defer srv.Close()
	srv.PutParameter("/jenkins/api-token", secretstest.TypeSecureString, "tok-ssm")
	srv.PutSecret("jenkins/api-token", "tok-sm")
	t.Setenv("AWS_ENDPOINT_URL_SSM", srv.URL())
	t.Setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", srv.URL())
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	var asked atomic.Int32
	opts := secrets.Options{
		Credentials: srv.Credentials(),
		RegionFrom: func(context.Context) (string, error) {
			asked.Add(1)
			return secretstest.Region, nil
		},
	}
	if v, err := ssmSource(t, "/jenkins/api-token", opts).Read(t.Context()); err != nil || v.Reveal() != "tok-ssm" {
		t.Fatalf("ssm via AWS_ENDPOINT_URL_SSM: %q %v", v.Reveal(), err)
	}
	if v, err := smSource(t, "jenkins/api-token", opts).Read(t.Context()); err != nil || v.Reveal() != "tok-sm" {
		t.Fatalf("secrets manager via AWS_ENDPOINT_URL_SECRETS_MANAGER: %q %v", v.Reveal(), err)
	}
	if asked.Load() != 2 {
		t.Errorf("RegionFrom asked %d times, want once per read", asked.Load())
	}
	for _, c := range srv.Calls() {
		if c.Region != secretstest.Region {
			t.Errorf("call %s signed for region %q", c.Target, c.Region)
		}
	}

	// AWS_REGION wins over the instance identity.
	t.Setenv("AWS_REGION", "eu-west-1")
	_, err := ssmSource(t, "/jenkins/api-token", opts).Read(t.Context())
	if !errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "eu-west-1") {
		t.Errorf("read in eu-west-1 = %v, want not found there", err)
	}
	if asked.Load() != 2 {
		t.Errorf("RegionFrom asked although AWS_REGION is set")
	}
}

// TestRegionOfAnARN: a parameter or secret named by ARN is read in the ARN's region.
func TestRegionOfAnARN(t *testing.T) {
	srv := secretstest.NewServer()
	defer srv.Close()
	srv.PutParameter("/jenkins/api-token", secretstest.TypeSecureString, "tok")
	arn := srv.PutSecret("jenkins-token", "tok-sm")
	opts := options(srv)
	opts.Region = ""
	opts.RegionFrom = func(context.Context) (string, error) { return "", errors.New("must not be asked") }

	v, err := ssmSource(t, "arn:aws:ssm:us-east-1:123456789012:parameter/jenkins/api-token", opts).Read(t.Context())
	if err != nil || v.Reveal() != "tok" {
		t.Fatalf("by ARN: %q %v", v.Reveal(), err)
	}
	_, err = ssmSource(t, "arn:aws:ssm:eu-west-1:123456789012:parameter/jenkins/api-token", opts).Read(t.Context())
	if !errors.Is(err, secrets.ErrNotFound) {
		t.Errorf("by an ARN of another region: %v, want not found", err)
	}
	if got := srv.Calls()[len(srv.Calls())-1].Region; got != "eu-west-1" {
		t.Errorf("signed for %q, want the ARN's region eu-west-1", got)
	}
	for _, id := range []string{arn, strings.TrimSuffix(arn, arn[len(arn)-7:])} {
		if v, err := smSource(t, id, opts).Read(t.Context()); err != nil || v.Reveal() != "tok-sm" {
			t.Errorf("secret by ARN %s: %q %v", id, v.Reveal(), err)
		}
	}
}

func TestNoRegion(t *testing.T) {
	srv := secretstest.NewServer()
	defer srv.Close()
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	opts := options(srv)
	opts.Region = ""
	_, err := ssmSource(t, "/x", opts).Read(t.Context())
	if err == nil || !strings.Contains(err.Error(), "AWS_REGION") {
		t.Errorf("no region = %v, want an error naming AWS_REGION", err)
	}
	if len(srv.Calls()) != 0 {
		t.Errorf("called AWS without a region")
	}
}

func TestSSMParameterKinds(t *testing.T) {
	srv := secretstest.NewServer()
	defer srv.Close()
	var logs testenv.Buffer
	opts := options(srv)
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))

	srv.PutParameter("/plain", secretstest.TypeString, "plain-token")
	if v, err := ssmSource(t, "/plain", opts).Read(t.Context()); err != nil || v.Reveal() != "plain-token" {
		t.Fatalf("String parameter: %q %v", v.Reveal(), err)
	}
	if !strings.Contains(logs.String(), "SecureString") || strings.Contains(logs.String(), "plain-token") {
		t.Errorf("want a warning to use a SecureString, without the value: %s", logs.String())
	}
	srv.PutParameter("/list", secretstest.TypeStringList, "a,b")
	if _, err := ssmSource(t, "/list", opts).Read(t.Context()); !errors.Is(err, secrets.ErrUnusable) {
		t.Errorf("StringList = %v, want ErrUnusable", err)
	}
	srv.PutParameter("/versioned", secretstest.TypeSecureString, "v1-token")
	srv.PutParameter("/versioned", secretstest.TypeSecureString, "v2-token")
	if v, err := ssmSource(t, "/versioned:1", opts).Read(t.Context()); err != nil || v.Reveal() != "v1-token" {
		t.Errorf("selector :1 = %q %v", v.Reveal(), err)
	}
	if _, err := ssmSource(t, "/versioned:9", opts).Read(t.Context()); !errors.Is(err, secrets.ErrNotFound) {
		t.Errorf("selector :9 = %v, want ErrNotFound", err)
	}
}

func TestSecretsManagerKinds(t *testing.T) {
	srv := secretstest.NewServer()
	defer srv.Close()
	srv.PutSecretBinary("bin", []byte("tok"))
	if _, err := smSource(t, "bin", options(srv)).Read(t.Context()); !errors.Is(err, secrets.ErrUnusable) || !strings.Contains(err.Error(), "binary") {
		t.Errorf("binary secret = %v, want ErrUnusable naming binary", err)
	}
	srv.PutSecret("gone", "tok")
	srv.DeleteSecret("gone")
	if _, err := smSource(t, "gone", options(srv)).Read(t.Context()); err == nil || !strings.Contains(err.Error(), "marked for deletion") {
		t.Errorf("deleted secret = %v", err)
	}
}

func TestRetriesThrottling(t *testing.T) {
	srv := secretstest.NewServer()
	defer srv.Close()
	srv.PutParameter("/t", secretstest.TypeSecureString, "tok")
	srv.FailNext(secretstest.TargetGetParameter, "ThrottlingException", 2)
	if v, err := ssmSource(t, "/t", options(srv)).Read(t.Context()); err != nil || v.Reveal() != "tok" {
		t.Fatalf("after two throttles: %q %v", v.Reveal(), err)
	}
	if n := len(srv.Calls()); n != 3 {
		t.Errorf("%d calls, want 3 (two throttled, one answered)", n)
	}
}

func TestFromConfig(t *testing.T) {
	srv := secretstest.NewServer()
	defer srv.Close()
	if src, err := secrets.FromConfig(t.Context(), config.Jenkins{}, options(srv)); src != nil || err != nil {
		t.Errorf("no key set: %v %v, want nothing", src, err)
	}
	src, err := secrets.FromConfig(t.Context(), config.Jenkins{APITokenSSMParameter: "/a"}, options(srv))
	if err != nil || src.String() != "ssm parameter /a" {
		t.Errorf("ssm: %v %v", src, err)
	}
	src, err = secrets.FromConfig(t.Context(), config.Jenkins{APITokenSecretID: "b"}, options(srv))
	if err != nil || src.String() != "secrets manager secret b" {
		t.Errorf("secrets manager: %v %v", src, err)
	}
}

// countingSource counts reads and returns the current value.
type countingSource struct {
	mu    sync.Mutex
	value string
	err   error
	reads int
	gate  chan struct{}
}

func (s *countingSource) Read(ctx context.Context) (config.Secret, error) {
	if s.gate != nil {
		<-s.gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	return config.Secret(s.value), s.err
}

func (s *countingSource) String() string { return "counting source" }

func (s *countingSource) set(v string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.value, s.err = v, err
}

func (s *countingSource) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

func TestTokenCachesAndRefreshes(t *testing.T) {
	src := &countingSource{value: "first"}
	var logs testenv.Buffer
	tok := secrets.NewToken(src, slog.New(slog.NewTextHandler(&logs, nil)))
	for range 3 {
		if v, err := tok.Get(t.Context(), false); err != nil || v != "first" {
			t.Fatalf("Get = %q %v", v, err)
		}
	}
	if src.count() != 1 {
		t.Fatalf("%d reads for three Gets, want 1", src.count())
	}
	// A refresh right after the read is held back: a token Jenkins refuses for another
	// reason must not turn every request into a read.
	src.set("second", nil)
	if v, _ := tok.Get(t.Context(), true); v != "first" || src.count() != 1 {
		t.Fatalf("refresh within MinRefreshInterval read again: %q, %d reads", v, src.count())
	}
	secrets.SetTokenClock(tok, func() time.Time { return time.Now().Add(secrets.MinRefreshInterval) })
	if v, err := tok.Get(t.Context(), true); err != nil || v != "second" || src.count() != 2 {
		t.Fatalf("refresh = %q %v after %d reads, want the rotated token", v, err, src.count())
	}
	// A failed refresh reports the error; the cached token stays for later calls.
	src.set("", errors.New("throttled"))
	secrets.SetTokenClock(tok, func() time.Time { return time.Now().Add(3 * secrets.MinRefreshInterval) })
	if _, err := tok.Get(t.Context(), true); err == nil {
		t.Fatal("failed refresh returned no error")
	}
	if v, err := tok.Get(t.Context(), false); err != nil || v != "second" {
		t.Fatalf("after a failed refresh: %q %v, want the cached token", v, err)
	}
	for _, secret := range []string{"first", "second"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the token shows in the log: %s", logs.String())
		}
	}
}

func TestTokenConcurrentGetsShareOneRead(t *testing.T) {
	src := &countingSource{value: "tok", gate: make(chan struct{})}
	tok := secrets.NewToken(src, slog.New(slog.DiscardHandler))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if v, err := tok.Get(t.Context(), false); err != nil || v != "tok" {
				t.Errorf("Get = %q %v", v, err)
			}
		})
	}
	close(src.gate)
	wg.Wait()
	if src.count() != 1 {
		t.Errorf("%d reads for eight concurrent Gets, want 1", src.count())
	}
}

func TestTokenPrefetchRetriesUntilRead(t *testing.T) {
	srv := secretstest.NewServer()
	defer srv.Close()
	srv.PutParameter("/t", secretstest.TypeSecureString, "tok")
	srv.FailNext(secretstest.TargetGetParameter, "InternalServerError", 4) // outlasts the SDK's 3 attempts
	tok := secrets.NewToken(ssmSource(t, "/t", options(srv)), slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(t.Context(), testenv.WaitLimit)
	defer cancel()
	if err := tok.Prefetch(ctx); err != nil {
		t.Fatalf("Prefetch = %v", err)
	}
	if v, err := tok.Get(t.Context(), false); err != nil || v != "tok" {
		t.Fatalf("after Prefetch: %q %v", v, err)
	}
}
