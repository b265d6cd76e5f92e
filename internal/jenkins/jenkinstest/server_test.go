package jenkinstest

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

func testConfig() Config {
	return Config{
		Users: map[string]User{
			"admin":  {Token: "admin-token", Password: "admin-pw", Manage: true},
			"viewer": {Token: "viewer-token", Password: "viewer-pw"},
		},
		Jobs: map[string]Job{
			"free": {},
			"pipe": {Pipeline: true},
		},
	}
}

func start(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	s, u, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, u
}

// call sends one request without following redirects and returns the answer with its body read.
func call(t *testing.T, method, u string, mutate func(*http.Request)) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(req)
	}
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func basic(user, secret string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, secret) }
}

func TestEveryPath503WhileStarting(t *testing.T) {
	s, u := start(t, Config{StartupDelay: time.Hour, Users: testConfig().Users})
	for _, r := range []struct{ method, path string }{{"GET", "/login"}, {"GET", "/api/json"}, {"POST", "/quietDown"}, {"GET", "/nope"}} {
		resp, _ := call(t, r.method, u+r.path, basic("admin", "wrong"))
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s %s while starting = %d, want 503", r.method, r.path, resp.StatusCode)
		}
	}
	s.SetStartupDelay(0)
	resp, _ := call(t, "GET", u+"/login", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Jenkins") != Version {
		t.Errorf("GET /login when ready = %d X-Jenkins %q", resp.StatusCode, resp.Header.Get("X-Jenkins"))
	}
}

func TestCheckOrder(t *testing.T) {
	s, u := start(t, testConfig())
	tests := []struct {
		name       string
		method     string
		path       string
		auth       func(*http.Request)
		wantStatus int
		wantHeader map[string]string
		wantBody   string
	}{
		{name: "bad credentials before crumb", method: "POST", path: "/quietDown", auth: basic("admin", "wrong"), wantStatus: 401, wantHeader: map[string]string{"WWW-Authenticate": `Basic realm="Jenkins"`}},
		{name: "crumb before permission", method: "POST", path: "/quietDown", auth: basic("viewer", "viewer-pw"), wantStatus: 403, wantBody: "No valid crumb was included in the request"},
		{name: "anonymous POST needs a crumb", method: "POST", path: "/quietDown", wantStatus: 403, wantBody: "No valid crumb"},
		{
			name: "token needs no crumb, then permission", method: "POST", path: "/quietDown", auth: basic("viewer", "viewer-token"), wantStatus: 403,
			wantHeader: map[string]string{"X-You-Are-Authenticated-As": "viewer", "X-Required-Permission": PermissionManage},
		},
		{name: "GET quietDown", method: "GET", path: "/quietDown", auth: basic("admin", "admin-token"), wantStatus: 405},
		{
			name: "anonymous read refused", method: "GET", path: "/api/json", wantStatus: 403,
			wantHeader: map[string]string{"X-You-Are-Authenticated-As": "anonymous", "X-Required-Permission": PermissionRead},
		},
		{name: "whoAmI open to anonymous", method: "GET", path: "/whoAmI/api/json", wantStatus: 200, wantBody: `"anonymous":true`},
		{name: "unknown path", method: "GET", path: "/nope", auth: basic("admin", "admin-token"), wantStatus: 404},
		{name: "quietDown with token", method: "POST", path: "/quietDown?message=bye", auth: basic("admin", "admin-token"), wantStatus: 302, wantHeader: map[string]string{"Location": "/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := call(t, tt.method, u+tt.path, tt.auth)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, tt.wantStatus, body)
			}
			for k, v := range tt.wantHeader {
				got := resp.Header.Get(k)
				if k == "Location" {
					got = strings.TrimPrefix(got, u)
				}
				if got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if !strings.Contains(body, tt.wantBody) {
				t.Errorf("body %q lacks %q", body, tt.wantBody)
			}
		})
	}
	if !s.QuietingDown() || s.QuietDownReason() != "bye" {
		t.Errorf("quietingDown=%v reason=%q after the accepted POST", s.QuietingDown(), s.QuietDownReason())
	}
}

// crumbFor fetches a crumb as user (password auth) and returns it with the cookie.
func crumbFor(t *testing.T, u, user, pw string) (string, *http.Cookie) {
	t.Helper()
	resp, body := call(t, "GET", u+"/crumbIssuer/api/json", basic(user, pw))
	var c struct{ Crumb, CrumbRequestField string }
	if err := json.Unmarshal([]byte(body), &c); err != nil || c.Crumb == "" || c.CrumbRequestField != "Jenkins-Crumb" {
		t.Fatalf("crumb answer %d %q: %v", resp.StatusCode, body, err)
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 || !strings.HasPrefix(cookies[0].Name, "JSESSIONID.") {
		t.Fatalf("crumb answer cookies = %v, want one JSESSIONID.*", cookies)
	}
	return c.Crumb, cookies[0]
}

func TestCrumbBoundToSession(t *testing.T) {
	s, u := start(t, testConfig())
	crumbA, cookieA := crumbFor(t, u, "admin", "admin-pw")
	_, cookieB := crumbFor(t, u, "admin", "admin-pw")
	post := func(crumb string, cookie *http.Cookie) int {
		resp, _ := call(t, "POST", u+"/quietDown", func(r *http.Request) {
			r.SetBasicAuth("admin", "admin-pw")
			r.Header.Set("Jenkins-Crumb", crumb)
			if cookie != nil {
				r.AddCookie(cookie)
			}
		})
		return resp.StatusCode
	}
	if got := post(crumbA, nil); got != 403 {
		t.Errorf("crumb without its cookie = %d, want 403", got)
	}
	if got := post(crumbA, cookieB); got != 403 {
		t.Errorf("crumb with another session's cookie = %d, want 403", got)
	}
	if s.QuietingDown() {
		t.Fatal("quiet-down accepted with a foreign crumb")
	}
	if got := post(crumbA, cookieA); got != 302 {
		t.Errorf("crumb with its cookie = %d, want 302", got)
	}
}

func TestComputersShape(t *testing.T) {
	s, u := start(t, testConfig())
	for _, j := range []string{"free", "free", "free", "pipe"} {
		if _, err := s.StartBuild(j); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(s.RunningBuilds()); got != 3 || s.Queued() != 1 {
		t.Fatalf("running %d queued %d, want 3 (2 executors + 1 one-off) and 1", got, s.Queued())
	}
	tree := url.Values{"tree": {"computer[displayName,offline,executors[idle,currentExecutable[url]],oneOffExecutors[currentExecutable[url]]]"}}
	_, body := call(t, "GET", u+"/computer/api/json?"+tree.Encode(), basic("admin", "admin-token"))
	var set struct {
		Computer []struct {
			Executors []struct {
				Idle              bool
				CurrentExecutable *struct{ URL string }
			}
			OneOffExecutors []struct{ CurrentExecutable *struct{ URL string } }
		}
	}
	if err := json.Unmarshal([]byte(body), &set); err != nil || len(set.Computer) != 1 {
		t.Fatalf("tree answer %s: %v", body, err)
	}
	c := set.Computer[0]
	if len(c.Executors) != 2 || c.Executors[0].CurrentExecutable == nil || c.Executors[0].Idle {
		t.Errorf("executors = %+v, want 2 busy", c.Executors)
	}
	if len(c.OneOffExecutors) != 1 || c.OneOffExecutors[0].CurrentExecutable.URL != u+"/job/pipe/1/" {
		t.Errorf("oneOffExecutors = %+v, want the Pipeline run", c.OneOffExecutors)
	}

	// Without the tree: executors are empty objects and busyExecutors ignores Pipelines.
	_, body = call(t, "GET", u+"/computer/api/json", basic("admin", "admin-token"))
	if !strings.Contains(body, `"busyExecutors":2`) || !strings.Contains(body, `"executors":[{},{}]`) {
		t.Errorf("depth-0 answer = %s", body)
	}
}

func TestBuildEndpoint(t *testing.T) {
	s, u := start(t, testConfig())
	resp, _ := call(t, "POST", u+"/job/free/build", basic("admin", "admin-token"))
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != u+"/queue/item/1/" {
		t.Errorf("POST /job/free/build = %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := call(t, "POST", u+"/job/missing/build", basic("admin", "admin-token")); resp.StatusCode != 404 {
		t.Errorf("unknown job = %d, want 404", resp.StatusCode)
	}
	if got := s.RunningBuilds(); !slices.Equal(got, []string{u + "/job/free/1/"}) {
		t.Errorf("RunningBuilds() = %q", got)
	}
}

func TestBlockingQuietDownWaitsForRegularBuildsOnly(t *testing.T) {
	cfg := testConfig()
	cfg.Jobs["short"] = Job{Duration: 100 * time.Millisecond}
	s, u := start(t, cfg)
	for _, j := range []string{"short", "pipe"} {
		if _, err := s.StartBuild(j); err != nil {
			t.Fatal(err)
		}
	}
	resp, _ := call(t, "POST", u+"/quietDown?block=true&timeout=20000", basic("admin", "admin-token"))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("blocking quietDown = %d, want 302", resp.StatusCode)
	}
	if got := s.RunningBuilds(); !slices.Equal(got, []string{u + "/job/pipe/1/"}) {
		t.Errorf("after a blocking quietDown running = %q, want only the Pipeline", got)
	}
}

func TestShutdownSavesPipelinesAndResumes(t *testing.T) {
	home := t.TempDir()
	cfg := testConfig()
	cfg.Home = home
	first, u1 := start(t, cfg)
	st, err := ReadHomeState(home)
	if err != nil || st.Instance != first.Instance() || st.PID != os.Getpid() {
		t.Fatalf("home state at start = %+v, %v", st, err)
	}
	for _, j := range []string{"free", "pipe"} {
		if _, err := first.StartBuild(j); err != nil {
			t.Fatal(err)
		}
	}
	if err := first.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(u1 + "/login"); err == nil {
		t.Error("stopped double still accepts connections")
	}
	st, err = ReadHomeState(home)
	if err != nil || st.Stopped.IsZero() || !slices.Equal(st.Aborted, []string{u1 + "/job/free/1/"}) || !slices.Equal(st.Saved, []string{u1 + "/job/pipe/1/"}) {
		t.Fatalf("home state after stop = %+v, %v", st, err)
	}

	second, u2 := start(t, cfg)
	if got := second.RunningBuilds(); !slices.Equal(got, []string{u2 + "/job/pipe/1/"}) {
		t.Errorf("resumed builds = %q, want the saved Pipeline", got)
	}
	if st, _ := ReadHomeState(home); st.Instance != second.Instance() {
		t.Errorf("home state names instance %s, want the second one %s", st.Instance, second.Instance())
	}
	next, err := second.StartBuild("pipe")
	if err != nil || next != u2+"/job/pipe/2/" {
		t.Errorf("next Pipeline build = %q, %v; want number 2", next, err)
	}
}

func TestParseJobFlag(t *testing.T) {
	tests := []struct {
		in      string
		name    string
		job     Job
		wantErr bool
	}{
		{in: "build=30s", name: "build", job: Job{Duration: 30 * time.Second}},
		{in: "deploy=pipeline:45s", name: "deploy", job: Job{Pipeline: true, Duration: 45 * time.Second}},
		{in: "forever=0s", name: "forever", job: Job{}},
		{in: "nodur", wantErr: true},
		{in: "=30s", wantErr: true},
		{in: "a/b=30s", wantErr: true},
		{in: "x=pipeline:", wantErr: true},
		{in: "x=-1s", wantErr: true},
	}
	for _, tt := range tests {
		name, job, err := parseJobFlag(tt.in)
		if (err != nil) != tt.wantErr || name != tt.name || !reflect.DeepEqual(job, tt.job) {
			t.Errorf("parseJobFlag(%q) = %q %+v %v", tt.in, name, job, err)
		}
	}
}

func FuzzParseJobFlag(f *testing.F) {
	f.Add("build=30s")
	f.Add("deploy=pipeline:45s")
	f.Fuzz(func(t *testing.T, in string) {
		name, job, err := parseJobFlag(in)
		if err == nil && (name == "" || strings.ContainsAny(name, "/ ") || job.Duration < 0) {
			t.Fatalf("parseJobFlag(%q) accepted %q %+v", in, name, job)
		}
	})
}

func TestMainStopsLikeJenkins(t *testing.T) {
	home := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr testenv.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{
			"--listen", "127.0.0.1:0", "--home", home, "--user", "admin", "--token-file", tokenFile,
			"--job", "build=0s", "--job", "deploy=pipeline:1h", "--start-build", "build", "--start-build", "deploy",
		}, &stdout, &stderr)
	}()

	// The state file names the URL once the double listens.
	deadline := time.Now().Add(20 * time.Second)
	var st HomeState
	for {
		var err error
		if st, err = ReadHomeState(home); err == nil && st.URL != "" {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("Main returned %d early: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no state file: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	pid, err := os.ReadFile(filepath.Join(home, PIDFile))
	if err != nil || strings.TrimSpace(string(pid)) == "" {
		t.Errorf("pid file = %q, %v", pid, err)
	}
	resp, body := call(t, "GET", st.URL+"computer/api/json?tree=computer[executors[currentExecutable[url]],oneOffExecutors[currentExecutable[url]]]", basic("admin", "tok"))
	if resp.StatusCode != 200 || !strings.Contains(body, "job/build/1/") || !strings.Contains(body, "job/deploy/1/") {
		t.Fatalf("computers = %d %s", resp.StatusCode, body)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("Main() = %d, want 0; stderr: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Main did not return after cancel")
	}
	saved, err := ReadSavedPipelines(home)
	if err != nil || len(saved) != 1 || saved[0].Job != "deploy" || saved[0].Number != 1 || saved[0].Remaining <= 0 {
		t.Errorf("saved pipelines = %+v, %v", saved, err)
	}
	if st, _ := ReadHomeState(home); len(st.Aborted) != 1 || st.Stopped.IsZero() {
		t.Errorf("state after stop = %+v, want one aborted build", st)
	}
	if !strings.Contains(stdout.String(), "listening on http://127.0.0.1:") {
		t.Errorf("stdout = %q", stdout.String())
	}
}

func TestMainBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--job", "nodur"},
		{"--user", "admin"},
		{"--token", "t"},
		{"--start-build", "missing"},
		{"extra"},
		{"--fault", "computer=500"},
		{"--job-param", "missing:A=1"},
		{"--job", "free=1s", "--job-param", "free:A:list=1"},
		{"--job", "free=1s", "--job-node", "free=1s"},
		{"--job", "p=pipeline:1s", "--job-node", "p=0s"},
		{"--viewer", "nobody"},
		{"--job-disabled", "missing"},
	} {
		var out, errOut testenv.Buffer
		if code := Main(t.Context(), append([]string{"--home", ""}, args...), &out, &errOut); code != 2 {
			t.Errorf("Main(%q) = %d, want 2", args, code)
		}
	}
}

// An HTTP client may dial a connection it then never uses (a spare dial that lost the
// race to an idle connection), and a load balancer's health checker may connect without
// sending yet. Jenkins drops such connections at once when it stops; a stop that waited
// for them would outlast the stop grace and end in SIGKILL, with nothing saved.
func TestShutdownDoesNotWaitForConnectionsWithoutARequest(t *testing.T) {
	home := t.TempDir()
	cfg := testConfig()
	cfg.Home = home
	s, u := start(t, cfg)
	resp, err := http.Get(u + "/login")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	addr := strings.TrimPrefix(u, "http://")
	var silent []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		silent = append(silent, c)
	}
	// Shutdown waits for requests in flight, never for these: a second is plenty.
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("stop with %d connections that sent no request: %v", len(silent), err)
	}
	if st, err := ReadHomeState(home); err != nil || st.Stopped.IsZero() {
		t.Fatalf("home state after stop = %+v, %v; want a clean stop recorded", st, err)
	}
	for _, c := range silent {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("a connection without a request was left open by the stop")
		}
	}
}
