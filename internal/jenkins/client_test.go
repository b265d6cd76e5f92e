package jenkins_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins/jenkinstest"
)

const (
	token    = "11aa22bb33cc44dd55ee66ff77889900aa"
	password = "s3cret"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startDouble runs a double with a user "agent" (token and password, Manage), a user
// "viewer" (token, no Manage), and a freestyle and a Pipeline job that run until stop.
func startDouble(t *testing.T, mutate func(*jenkinstest.Config)) (*jenkinstest.Server, string) {
	t.Helper()
	cfg := jenkinstest.Config{
		Users: map[string]jenkinstest.User{
			"agent":  {Token: token, Password: password, Manage: true},
			"viewer": {Token: "viewer-token", Password: "viewer-password"},
		},
		Jobs: map[string]jenkinstest.Job{
			"freestyle": {},
			"pipeline":  {Pipeline: true},
			"short":     {Duration: 50 * time.Millisecond},
		},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, url, err := jenkinstest.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, url
}

func newClient(t *testing.T, opts jenkins.Options) *jenkins.Client {
	t.Helper()
	c, err := jenkins.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// requestsTo lists "METHOD PATH" of what the double received.
func requestsTo(s *jenkinstest.Server) []string {
	var out []string
	for _, r := range s.Requests() {
		out = append(out, r.Method+" "+r.Path)
	}
	return out
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, opts := range []jenkins.Options{
		{URL: ""},
		{URL: "127.0.0.1:8080"},
		{URL: "ftp://jenkins:21"},
		{URL: "http://user:pw@jenkins:8080"},
		{URL: "http://jenkins:8080", Token: "t"},
	} {
		if _, err := jenkins.New(opts); err == nil {
			t.Errorf("New(%+v) succeeded, want an error", opts)
		}
	}
}

func TestQuietDownWithTokenNeedsNoCrumb(t *testing.T) {
	ctx := testContext(t)
	s, url := startDouble(t, nil)
	c := newClient(t, jenkins.Options{URL: url, User: "agent", Token: token})

	if err := c.QuietDown(ctx, "spot interruption: i-0abc"); err != nil {
		t.Fatalf("QuietDown() = %v", err)
	}
	if !s.QuietingDown() || s.QuietDownReason() != "spot interruption: i-0abc" {
		t.Errorf("double quietingDown=%v reason=%q", s.QuietingDown(), s.QuietDownReason())
	}
	got := requestsTo(s)
	want := []string{"POST /quietDown", "GET /api/json"}
	if !slices.Equal(got, want) {
		t.Errorf("requests = %q, want %q (no crumb, no redirect followed)", got, want)
	}
	if r := s.Requests()[0]; r.Status != http.StatusFound || r.User != "agent" {
		t.Errorf("POST /quietDown answered %d as %q, want 302 as agent", r.Status, r.User)
	}
}

func TestQuietDownWithPasswordUsesCrumbAndSession(t *testing.T) {
	ctx := testContext(t)
	s, url := startDouble(t, nil)
	c := newClient(t, jenkins.Options{URL: url, User: "agent", Password: password})

	if err := c.QuietDown(ctx, "rebalance"); err != nil {
		t.Fatalf("QuietDown() = %v", err)
	}
	if !s.QuietingDown() {
		t.Error("double is not quieting down")
	}
	got := requestsTo(s)
	want := []string{"GET /crumbIssuer/api/json", "POST /quietDown", "GET /api/json"}
	if !slices.Equal(got, want) {
		t.Errorf("requests = %q, want %q", got, want)
	}
	if err := c.CancelQuietDown(ctx); err != nil {
		t.Fatalf("CancelQuietDown() = %v", err)
	}
	if s.QuietingDown() {
		t.Error("double still quieting down after CancelQuietDown")
	}
}

// A password put in the token file: Jenkins wants a crumb for it, and the client
// falls back to the crumb flow with it.
func TestQuietDownWithPasswordInTokenFile(t *testing.T) {
	s, url := startDouble(t, nil)
	c := newClient(t, jenkins.Options{URL: url, User: "agent", Token: password})
	if err := c.QuietDown(testContext(t), "x"); err != nil {
		t.Fatalf("QuietDown() = %v", err)
	}
	if !s.QuietingDown() {
		t.Error("double is not quieting down")
	}
}

func TestQuietDownErrors(t *testing.T) {
	tests := []struct {
		name string
		opts jenkins.Options
		want string
	}{
		{name: "wrong token", opts: jenkins.Options{User: "agent", Token: "wrong"}, want: "jenkins rejected the credentials of user agent: check jenkins.api_token_file"},
		{name: "unknown user", opts: jenkins.Options{User: "nobody", Token: token}, want: "rejected the credentials of user nobody"},
		{name: "wrong password", opts: jenkins.Options{User: "agent", Password: "wrong"}, want: "rejected the credentials of user agent: check the password"},
		{name: "no Manage", opts: jenkins.Options{User: "viewer", Token: "viewer-token"}, want: "user viewer (authenticated as viewer) lacks permission hudson.model.Hudson.Manage: grant Overall/Manage"},
		{name: "no Manage, crumb flow", opts: jenkins.Options{User: "viewer", Password: "viewer-password"}, want: "lacks permission hudson.model.Hudson.Manage"},
		{name: "anonymous", opts: jenkins.Options{}, want: "user anonymous (authenticated as anonymous) lacks permission hudson.model.Hudson.Read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, url := startDouble(t, nil)
			tt.opts.URL = url
			err := newClient(t, tt.opts).QuietDown(testContext(t), "x")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("QuietDown() = %v, want an error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), password) {
				t.Errorf("error shows a secret: %v", err)
			}
			if s.QuietingDown() {
				t.Error("double went into quiet-down despite the error")
			}
		})
	}
}

// crumbDropper removes the crumb header from the first drop POSTs, as a proxy or a
// restarted Jenkins (new session) would make the crumb fail.
type crumbDropper struct {
	drop  int32
	posts atomic.Int32
}

func (d *crumbDropper) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && d.posts.Add(1) <= d.drop {
		r = r.Clone(r.Context())
		r.Header.Del("Jenkins-Crumb")
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestQuietDownRetriesOnceWithFreshCrumb(t *testing.T) {
	s, url := startDouble(t, nil)
	hc := &http.Client{Transport: &crumbDropper{drop: 1}}
	c := newClient(t, jenkins.Options{URL: url, User: "agent", Password: password, HTTPClient: hc})
	if err := c.QuietDown(testContext(t), "x"); err != nil {
		t.Fatalf("QuietDown() = %v", err)
	}
	got := requestsTo(s)
	want := []string{"GET /crumbIssuer/api/json", "POST /quietDown", "GET /crumbIssuer/api/json", "POST /quietDown", "GET /api/json"}
	if !slices.Equal(got, want) {
		t.Errorf("requests = %q, want %q", got, want)
	}
	if hc.CheckRedirect != nil || hc.Jar != nil {
		t.Error("New modified the caller's http.Client")
	}
}

func TestQuietDownCrumbAlwaysMissing(t *testing.T) {
	s, url := startDouble(t, nil)
	hc := &http.Client{Transport: &crumbDropper{drop: 100}}
	c := newClient(t, jenkins.Options{URL: url, User: "agent", Password: password, HTTPClient: hc})
	err := c.QuietDown(testContext(t), "x")
	if err == nil || !strings.Contains(err.Error(), "No valid crumb") {
		t.Fatalf("QuietDown() = %v, want a crumb error", err)
	}
	if n := strings.Count(strings.Join(requestsTo(s), ","), "POST /quietDown"); n != 2 {
		t.Errorf("%d POSTs, want 2 (one retry)", n)
	}
}

func TestRunningBuildsRegularAndPipeline(t *testing.T) {
	ctx := testContext(t)
	s, url := startDouble(t, nil)
	var want []string
	for _, job := range []string{"freestyle", "pipeline", "pipeline"} {
		u, err := s.StartBuild(job)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, u)
	}
	c := newClient(t, jenkins.Options{URL: url, User: "agent", Token: token})
	builds, err := c.RunningBuilds(ctx)
	if err != nil {
		t.Fatalf("RunningBuilds() = %v", err)
	}
	got := buildURLs(builds)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("RunningBuilds() = %q, want %q", got, want)
	}
	wantBuilds := map[string]jenkins.Build{
		url + "/job/freestyle/1/": {URL: url + "/job/freestyle/1/", Job: "freestyle", Number: 1},
		url + "/job/pipeline/2/":  {URL: url + "/job/pipeline/2/", Job: "pipeline", Number: 2, Pipeline: true},
	}
	for _, b := range builds {
		if w, ok := wantBuilds[b.URL]; ok && b != w {
			t.Errorf("build %+v, want %+v", b, w)
		}
	}
}

func buildURLs(builds []jenkins.Build) []string {
	var urls []string
	for _, b := range builds {
		urls = append(urls, b.URL)
	}
	return urls
}

func TestRunningBuildsFinish(t *testing.T) {
	ctx := testContext(t)
	s, url := startDouble(t, nil)
	if _, err := s.StartBuild("short"); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, jenkins.Options{URL: url, User: "agent", Token: token})
	builds, err := c.RunningBuilds(ctx)
	for err == nil && len(builds) > 0 && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		builds, err = c.RunningBuilds(ctx)
	}
	if err != nil || len(builds) != 0 {
		t.Fatalf("RunningBuilds() = %+v, %v; want none once the build ended", builds, err)
	}
}

func TestQuietDownHoldsNewBuilds(t *testing.T) {
	ctx := testContext(t)
	s, url := startDouble(t, nil)
	c := newClient(t, jenkins.Options{URL: url, User: "agent", Token: token})
	if err := c.QuietDown(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartBuild("pipeline"); err != nil {
		t.Fatal(err)
	}
	if builds, err := c.RunningBuilds(ctx); err != nil || len(builds) != 0 || s.Queued() != 1 {
		t.Fatalf("in quiet-down: running %+v (%v), queued %d; want none running, 1 queued", builds, err, s.Queued())
	}
	if err := c.CancelQuietDown(ctx); err != nil {
		t.Fatal(err)
	}
	if builds, err := c.RunningBuilds(ctx); err != nil || len(builds) != 1 {
		t.Fatalf("after cancel: running %+v (%v), want the queued build", builds, err)
	}
}

func TestWhoAmI(t *testing.T) {
	ctx := testContext(t)
	_, url := startDouble(t, nil)
	tests := []struct {
		name     string
		opts     jenkins.Options
		wantName string
		wantAnon bool
		wantErr  string
	}{
		{name: "token", opts: jenkins.Options{User: "agent", Token: token}, wantName: "agent"},
		{name: "password", opts: jenkins.Options{User: "agent", Password: password}, wantName: "agent"},
		{name: "anonymous", opts: jenkins.Options{}, wantName: "anonymous", wantAnon: true},
		{name: "wrong token", opts: jenkins.Options{User: "agent", Token: "nope"}, wantErr: "rejected the credentials of user agent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.URL = url
			name, anon, err := newClient(t, tt.opts).WhoAmI(ctx)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("WhoAmI() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || name != tt.wantName || anon != tt.wantAnon {
				t.Fatalf("WhoAmI() = %q, %v, %v; want %q, %v", name, anon, err, tt.wantName, tt.wantAnon)
			}
		})
	}
}

// A Jenkins with a --prefix path keeps it in every request.
func TestURLPrefixKept(t *testing.T) {
	s, _ := startDouble(t, nil)
	mux := http.NewServeMux()
	mux.Handle("/jenkins/", http.StripPrefix("/jenkins", s.Handler()))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := newClient(t, jenkins.Options{URL: srv.URL + "/jenkins/", User: "agent", Token: token})
	if ready, err := c.Ready(testContext(t)); err != nil || !ready {
		t.Fatalf("Ready() through /jenkins = %v, %v", ready, err)
	}
}

func BenchmarkQuietDownAndRunningBuilds(b *testing.B) {
	s, url, err := jenkinstest.Start(jenkinstest.Config{
		Users: map[string]jenkinstest.User{"agent": {Token: token, Manage: true}},
		Jobs:  map[string]jenkinstest.Job{"p": {Pipeline: true}},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for range 5 {
		if _, err := s.StartBuild("p"); err != nil {
			b.Fatal(err)
		}
	}
	c, err := jenkins.New(jenkins.Options{URL: url, User: "agent", Token: token})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	for b.Loop() {
		if err := c.QuietDown(ctx, "bench"); err != nil {
			b.Fatal(err)
		}
		if _, err := c.RunningBuilds(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, url := startDouble(t, nil)
	ctx := testContext(t)
	for _, opts := range []jenkins.Options{
		{URL: url, User: "agent", Token: token, Logger: log},
		{URL: url, User: "agent", Password: password, Logger: log},
		{URL: url, User: "agent", Token: "wrong-" + token, Logger: log},
	} {
		c := newClient(t, opts)
		_ = c.QuietDown(ctx, "x")
		_, _ = c.RunningBuilds(ctx)
	}
	mu.Lock()
	defer mu.Unlock()
	if logs.Len() == 0 {
		t.Fatal("no debug lines logged")
	}
	if strings.Contains(logs.String(), token) || strings.Contains(logs.String(), password) {
		t.Errorf("a secret was logged:\n%s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
