package jenkins_test

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins/jenkinstest"
)

// agentClient is a client as the agent makes it: user agent with its API token.
func agentClient(t *testing.T, url string) *jenkins.Client {
	return newClient(t, jenkins.Options{URL: url, User: "agent", Token: token})
}

func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

func TestReadyTellsLoadingFromSilence(t *testing.T) {
	ctx := testContext(t)
	for _, mutate := range []func(*jenkinstest.Config){
		func(c *jenkinstest.Config) { c.StartupDelay = time.Hour },
		func(c *jenkinstest.Config) { c.SlowHome = time.Hour },
	} {
		s, url := startDouble(t, mutate)
		c := agentClient(t, url)
		for range 3 {
			if ready, err := c.Ready(ctx); ready || err != nil {
				t.Fatalf("Ready() while loading = %v, %v; want false, nil", ready, err)
			}
		}
		if c.Version() != "" {
			t.Errorf("Version() = %q while loading", c.Version())
		}
		s.SetStartupDelay(0)
		if ready, err := c.Ready(ctx); !ready || err != nil {
			t.Fatalf("Ready() once loaded = %v, %v", ready, err)
		}
		if c.Version() != jenkinstest.Version {
			t.Errorf("Version() = %q, want %q", c.Version(), jenkinstest.Version)
		}
	}
}

func TestReadyWithoutAnswer(t *testing.T) {
	dropping, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dropping.Close()
	go func() {
		for {
			conn, err := dropping.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	hung, hungURL := startDouble(t, nil)
	hung.InjectFault(jenkinstest.Fault{Path: "*", Kind: jenkinstest.FaultHang})

	tests := []struct {
		name    string
		url     string
		timeout time.Duration
		also    error
	}{
		{name: "refused", url: closedPort(t), timeout: 10 * time.Second},
		{name: "dropped", url: "http://" + dropping.Addr().String(), timeout: 10 * time.Second},
		{name: "hung", url: hungURL, timeout: 100 * time.Millisecond, also: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), tt.timeout)
			defer cancel()
			ready, err := agentClient(t, tt.url).Ready(ctx)
			if ready || !errors.Is(err, jenkins.ErrNoAnswer) || (tt.also != nil && !errors.Is(err, tt.also)) {
				t.Fatalf("Ready() = %v, %v; want false and ErrNoAnswer (and %v)", ready, err, tt.also)
			}
		})
	}
}

func TestReadyUnexpectedAnswer(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{name: "404", handler: http.NotFound, want: "404"},
		{name: "200 without X-Jenkins", handler: func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>nginx</html>")) }, want: "without an X-Jenkins header"},
		{name: "500", handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }, want: "500 Internal Server Error"},
		{name: "502 from a proxy", handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(502) }, want: "502 Bad Gateway"},
		{name: "SSO redirect", handler: func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "https://idp/", http.StatusFound) }, want: "302 Found to https://idp/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			ready, err := agentClient(t, srv.URL).Ready(testContext(t))
			if ready || err == nil || errors.Is(err, jenkins.ErrNoAnswer) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Ready() = %v, %v; want an error naming %q, not ErrNoAnswer", ready, err, tt.want)
			}
		})
	}
}

func TestQuietingDownAndCancel(t *testing.T) {
	ctx := testContext(t)
	// A controller left in quiet-down by an earlier plan, as the agent adopts it.
	s, url := startDouble(t, func(c *jenkinstest.Config) { c.QuietingDown, c.QuietDownReason = true, "spot interruption" })
	c := agentClient(t, url)
	if q, err := c.QuietingDown(ctx); !q || err != nil {
		t.Fatalf("QuietingDown() = %v, %v; want true", q, err)
	}
	for range 2 {
		if err := c.CancelQuietDown(ctx); err != nil {
			t.Fatalf("CancelQuietDown() = %v", err)
		}
	}
	if q, err := c.QuietingDown(ctx); q || err != nil || s.QuietingDown() {
		t.Fatalf("QuietingDown() after cancel = %v, %v (double %v)", q, err, s.QuietingDown())
	}
	if err := newClient(t, jenkins.Options{URL: url, User: "viewer", Token: "viewer-token"}).CancelQuietDown(ctx); err == nil || !strings.Contains(err.Error(), "Overall/Manage") {
		t.Errorf("CancelQuietDown() without Manage = %v", err)
	}
	for _, kind := range []jenkinstest.FaultKind{jenkinstest.Fault500, jenkinstest.Fault401, jenkinstest.FaultGarbage} {
		s.InjectFault(jenkinstest.Fault{Path: "/api/json", Kind: kind, Times: 1})
		if q, err := c.QuietingDown(ctx); err == nil {
			t.Errorf("QuietingDown() with a %s answer = %v, nil; want an error", kind, q)
		}
	}
}

// parkConfig: a Pipeline that enters its node block at once, started at boot and
// then parked by quiet-down; a Pipeline without node block; a freestyle build.
func parkConfig(c *jenkinstest.Config) {
	c.Jobs["nodes"] = jenkinstest.Job{Pipeline: true, NodeAfter: time.Nanosecond}
	c.Boot = []jenkinstest.Boot{{Job: "nodes"}, {Job: "pipeline"}, {Job: "freestyle"}}
	c.QuietingDown = true
}

func TestRunningBuildsParkedPipelines(t *testing.T) {
	ctx := testContext(t)
	s, url := startDouble(t, parkConfig)
	c := agentClient(t, url)
	var builds []jenkins.Build
	for {
		var err error
		if builds, err = c.RunningBuilds(ctx); err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(builds, func(b jenkins.Build) bool { return b.Parked }) || ctx.Err() != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := []jenkins.Build{
		{URL: url + "/job/nodes/1/", Job: "nodes", Number: 1, Pipeline: true, Parked: true},
		{URL: url + "/job/pipeline/1/", Job: "pipeline", Number: 1, Pipeline: true},
		{URL: url + "/job/freestyle/1/", Job: "freestyle", Number: 1},
	}
	slices.SortFunc(builds, func(a, b jenkins.Build) int { return strings.Compare(a.Job, b.Job) })
	slices.SortFunc(want, func(a, b jenkins.Build) int { return strings.Compare(a.Job, b.Job) })
	if !slices.Equal(builds, want) {
		t.Fatalf("RunningBuilds() = %+v\nwant %+v", builds, want)
	}

	// Out of quiet-down the node block gets an executor: nothing is parked.
	if err := c.CancelQuietDown(ctx); err != nil {
		t.Fatal(err)
	}
	builds, err := c.RunningBuilds(ctx)
	if err != nil || slices.ContainsFunc(builds, func(b jenkins.Build) bool { return b.Parked }) || len(builds) != 3 {
		t.Fatalf("after cancel: %+v, %v; want 3 builds, none parked", builds, err)
	}
	if q := s.Queue(); len(q) != 0 {
		t.Errorf("queue after cancel = %+v", q)
	}
}

// Outside quiet-down, a node block waiting for a free executor will get one.
func TestRunningBuildsWaitingForExecutorIsNotParked(t *testing.T) {
	ctx := testContext(t)
	s, url := startDouble(t, func(c *jenkinstest.Config) {
		c.Executors = 1
		c.Jobs["nodes"] = jenkinstest.Job{Pipeline: true, NodeAfter: time.Nanosecond}
		c.Boot = []jenkinstest.Boot{{Job: "freestyle"}, {Job: "nodes"}}
	})
	c := agentClient(t, url)
	for len(s.Queue()) == 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	builds, err := c.RunningBuilds(ctx)
	if err != nil || len(builds) != 2 || slices.ContainsFunc(builds, func(b jenkins.Build) bool { return b.Parked }) {
		t.Fatalf("RunningBuilds() = %+v, %v; want 2, none parked", builds, err)
	}
	if got := requestsTo(s); !slices.Equal(got, []string{"GET /computer/api/json", "GET /queue/api/json", "GET /api/json"}) {
		t.Errorf("requests = %q", got)
	}
}

// Without a Pipeline running, the queue is not read: one request per look.
func TestRunningBuildsOneRequestWithoutPipelines(t *testing.T) {
	s, url := startDouble(t, func(c *jenkinstest.Config) { c.Boot = []jenkinstest.Boot{{Job: "freestyle"}} })
	if builds, err := agentClient(t, url).RunningBuilds(testContext(t)); err != nil || len(builds) != 1 {
		t.Fatalf("RunningBuilds() = %+v, %v", builds, err)
	}
	if got := requestsTo(s); !slices.Equal(got, []string{"GET /computer/api/json"}) {
		t.Errorf("requests = %q, want the computer set only", got)
	}
}

// Every failure is an error, never "no builds", whichever of the three reads fails.
func TestRunningBuildsFailuresAreUnknown(t *testing.T) {
	tests := []struct {
		path string
		kind jenkinstest.FaultKind
	}{
		{"/computer/api/json", jenkinstest.Fault500},
		{"/computer/api/json", jenkinstest.Fault401},
		{"/computer/api/json", jenkinstest.Fault503},
		{"/computer/api/json", jenkinstest.FaultGarbage},
		{"/computer/api/json", jenkinstest.FaultHang},
		{"/queue/api/json", jenkinstest.Fault500},
		{"/queue/api/json", jenkinstest.FaultGarbage},
		{"/api/json", jenkinstest.Fault500},
		{"/api/json", jenkinstest.FaultHang},
	}
	for _, tt := range tests {
		t.Run(strings.Trim(tt.path, "/")+"="+string(tt.kind), func(t *testing.T) {
			s, url := startDouble(t, parkConfig)
			c := agentClient(t, url)
			for s.Queued() == 0 {
				time.Sleep(10 * time.Millisecond)
			}
			s.InjectFault(jenkinstest.Fault{Path: tt.path, Kind: tt.kind, Times: 1})
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			builds, err := c.RunningBuilds(ctx)
			if err == nil || builds != nil {
				t.Fatalf("RunningBuilds() = %+v, %v; want no builds and an error", builds, err)
			}
			if tt.kind == jenkinstest.Fault401 && !strings.Contains(err.Error(), "rejected the credentials") {
				t.Errorf("401 error = %v", err)
			}
			// The fault was for one call: the next look works.
			if builds, err := c.RunningBuilds(testContext(t)); err != nil || len(builds) != 3 {
				t.Errorf("next RunningBuilds() = %+v, %v", builds, err)
			}
		})
	}
}

func TestRunningBuildsCountsUnreadableBuilds(t *testing.T) {
	_, url := startDouble(t, func(c *jenkinstest.Config) {
		c.Jobs["secret"] = jenkinstest.Job{Unreadable: true}
		c.Jobs["secret-pipe"] = jenkinstest.Job{Unreadable: true, Pipeline: true}
		c.Boot = []jenkinstest.Boot{{Job: "secret"}, {Job: "secret-pipe"}}
	})
	builds, err := agentClient(t, url).RunningBuilds(testContext(t))
	if err != nil || !slices.Equal(builds, []jenkins.Build{{}, {}}) {
		t.Fatalf("RunningBuilds() = %+v, %v; want two builds without URL", builds, err)
	}
}

func paramJobs(c *jenkinstest.Config) {
	c.Jobs["deploy"] = jenkinstest.Job{Params: []jenkinstest.Param{
		{Name: "TARGET", Default: "staging"},
		{Name: "DRY_RUN", Default: "true", Kind: jenkinstest.ParamBoolean},
		{Name: "SECRET", Default: "hunter2", Kind: jenkinstest.ParamPassword},
	}}
	c.Jobs["team/my app"] = jenkinstest.Job{}
	c.Jobs["off"] = jenkinstest.Job{Disabled: true}
	c.Users["reader"] = jenkinstest.User{Token: "reader-token", ReadOnly: true}
}

func TestBuildParameters(t *testing.T) {
	ctx := testContext(t)
	s, u := startDouble(t, func(c *jenkinstest.Config) {
		paramJobs(c)
		c.Boot = []jenkinstest.Boot{{Job: "deploy", Params: map[string]string{"TARGET": "prod eu", "DRY_RUN": "false"}}, {Job: "freestyle"}}
	})
	c := agentClient(t, u)
	want := map[string]string{"TARGET": "prod eu", "DRY_RUN": "false"}
	for _, buildURL := range []string{u + "/job/deploy/1/", "https://ci.example.com/job/deploy/1/", "job/deploy/1/"} {
		got, err := c.BuildParameters(ctx, buildURL)
		if err != nil || !maps.Equal(got, want) {
			t.Errorf("BuildParameters(%s) = %q, %v; want %q (the password left out)", buildURL, got, err, want)
		}
	}
	if got, err := c.BuildParameters(ctx, u+"/job/freestyle/1/"); err != nil || got == nil || len(got) != 0 {
		t.Errorf("BuildParameters() of a build without parameters = %q, %v; want an empty map", got, err)
	}
	for _, tt := range []struct{ url, want string }{
		{u + "/job/deploy/9/", "not found"},
		{u + "/job/gone/1/", "not found"},
		{u + "/job/deploy/", "want JENKINS/job/NAME/NUMBER/"},
		{u + "/computer/", "no /job/"},
	} {
		if _, err := c.BuildParameters(ctx, tt.url); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("BuildParameters(%s) = %v, want an error containing %q", tt.url, err, tt.want)
		}
	}
	s.InjectFault(jenkinstest.Fault{Path: "/job/deploy/1/api/json", Kind: jenkinstest.FaultGarbage, Times: 1})
	if _, err := c.BuildParameters(ctx, u+"/job/deploy/1/"); err == nil {
		t.Error("BuildParameters() of garbage succeeded")
	}
}

func TestRequeue(t *testing.T) {
	ctx := testContext(t)
	s, u := startDouble(t, paramJobs)
	c := agentClient(t, u)

	if err := c.Requeue(ctx, "deploy", map[string]string{"TARGET": "prod", "GONE": "x"}, "aborted by the stop of i-0abc"); err != nil {
		t.Fatalf("Requeue(deploy) = %v", err)
	}
	b, ok := s.Build("deploy", 1)
	wantParams := []jenkinstest.ParamValue{{Name: "TARGET", Value: "prod"}, {Name: "DRY_RUN", Value: "true", Kind: jenkinstest.ParamBoolean}, {Name: "SECRET", Value: "hunter2", Kind: jenkinstest.ParamPassword}}
	if !ok || !slices.Equal(b.Params, wantParams) || len(b.Causes) != 1 || b.Causes[0].ShortDescription != "Started by user agent" {
		t.Fatalf("requeued deploy #1 = %+v, %v; want params %+v started by user agent", b, ok, wantParams)
	}
	if err := c.Requeue(ctx, "team/my app", nil, "x"); err != nil {
		t.Fatalf("Requeue(team/my app) = %v", err)
	}
	if _, ok := s.Build("team/my app", 1); !ok {
		t.Fatalf("no build of team/my app: %+v", s.Builds())
	}
	var posts []jenkinstest.RequestRecord
	for _, r := range s.Requests() {
		if r.Method == "POST" {
			posts = append(posts, r)
		}
	}
	if len(posts) != 2 || posts[0].Path != "/job/deploy/buildWithParameters" || posts[1].Path != "/job/team/job/my app/build" {
		t.Fatalf("POSTs = %+v", posts)
	}
	if form, _ := url.ParseQuery(posts[0].Form); form.Get("TARGET") != "prod" || form.Get("delay") != "0sec" || form.Has("GONE") || form.Has("DRY_RUN") {
		t.Errorf("buildWithParameters form = %q; want TARGET and delay only", posts[0].Form)
	}

	for _, tt := range []struct {
		name, job string
		opts      jenkins.Options
		want      string
	}{
		{name: "unknown job", job: "gone", want: "no such job"},
		{name: "disabled", job: "off", want: "disabled"},
		{name: "folder", job: "team", want: "no such job"},
		{name: "bad name", job: "a//b", want: "want a full name"},
		{name: "no Job/Build", job: "freestyle", opts: jenkins.Options{User: "reader", Token: "reader-token"}, want: "lacks permission hudson.model.Item.Build: grant Job/Build"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cl := c
			if tt.opts.User != "" {
				tt.opts.URL = u
				cl = newClient(t, tt.opts)
			}
			if err := cl.Requeue(ctx, tt.job, nil, "x"); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Requeue(%s) = %v, want an error containing %q", tt.job, err, tt.want)
			}
		})
	}
}

// In quiet-down the requeued build waits; asking again while it waits queues nothing
// more, as Jenkins folds identical requests into the waiting item.
func TestRequeueWhileQuietingDownFoldsIntoWaitingItem(t *testing.T) {
	ctx := testContext(t)
	s, u := startDouble(t, func(c *jenkinstest.Config) { paramJobs(c); c.QuietingDown = true })
	c := agentClient(t, u)
	for range 2 {
		if err := c.Requeue(ctx, "deploy", map[string]string{"TARGET": "prod"}, "x"); err != nil {
			t.Fatal(err)
		}
		if err := c.Requeue(ctx, "freestyle", nil, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if q := s.Queue(); len(q) != 2 {
		t.Fatalf("queue = %+v, want one item per job", q)
	}
	if err := c.CancelQuietDown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.RunningBuilds(); len(got) != 2 {
		t.Errorf("running after cancel = %q, want the two requeued builds", got)
	}
}

func TestRequeueWithPasswordUsesCrumb(t *testing.T) {
	s, u := startDouble(t, nil)
	c := newClient(t, jenkins.Options{URL: u, User: "agent", Password: password})
	if err := c.Requeue(testContext(t), "freestyle", nil, "x"); err != nil {
		t.Fatalf("Requeue() = %v", err)
	}
	if got := requestsTo(s); !slices.Equal(got, []string{"GET /job/freestyle/api/json", "GET /crumbIssuer/api/json", "POST /job/freestyle/build"}) {
		t.Errorf("requests = %q", got)
	}
}

// A queue decision handler that refuses the build makes Jenkins redirect to the job
// (302) instead of answering 201.
func TestRequeueRefusedByJenkins(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Write([]byte(`{"_class":"hudson.model.FreeStyleProject","buildable":true,"property":[]}`))
			return
		}
		http.Redirect(w, r, ".", http.StatusFound)
	}))
	defer srv.Close()
	err := agentClient(t, srv.URL).Requeue(testContext(t), "a", nil, "x")
	if err == nil || !strings.Contains(err.Error(), "did not queue the build") {
		t.Fatalf("Requeue() = %v, want a refusal", err)
	}
}

func TestRequeueLogsCauseAndDroppedParameters(t *testing.T) {
	var mu sync.Mutex
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	_, u := startDouble(t, paramJobs)
	c := newClient(t, jenkins.Options{URL: u, User: "agent", Token: token, Logger: log})
	if err := c.Requeue(testContext(t), "deploy", map[string]string{"GONE": "x"}, "aborted by the stop of i-0abc"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{`cause="aborted by the stop of i-0abc"`, "queue_item=" + u + "/queue/item/1/", "parameters=GONE"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}
}

// BenchmarkRunningBuilds measures one look of the drain against the double on
// loopback: with freestyle builds only (one request), with a Pipeline running (the
// queue read too) and with a parked Pipeline (the state read as well).
func BenchmarkRunningBuilds(b *testing.B) {
	for _, bc := range []struct {
		name   string
		mutate func(*jenkinstest.Config)
		reqs   int
	}{
		{name: "freestyle", mutate: func(c *jenkinstest.Config) { c.Boot = []jenkinstest.Boot{{Job: "freestyle"}} }, reqs: 1},
		{name: "pipeline", mutate: func(c *jenkinstest.Config) { c.Boot = []jenkinstest.Boot{{Job: "freestyle"}, {Job: "pipeline"}} }, reqs: 2},
		{name: "parked", mutate: parkConfig, reqs: 3},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := jenkinstest.Config{
				Users: map[string]jenkinstest.User{"agent": {Token: token, Manage: true}},
				Jobs:  map[string]jenkinstest.Job{"freestyle": {}, "pipeline": {Pipeline: true}},
			}
			bc.mutate(&cfg)
			s, url, err := jenkinstest.Start(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			c, err := jenkins.New(jenkins.Options{URL: url, User: "agent", Token: token})
			if err != nil {
				b.Fatal(err)
			}
			for s.Queued() == 0 && bc.name == "parked" {
				time.Sleep(time.Millisecond)
			}
			before := len(s.Requests())
			for b.Loop() {
				if _, err := c.RunningBuilds(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(s.Requests())-before)/float64(b.N), "requests/op")
		})
	}
}
