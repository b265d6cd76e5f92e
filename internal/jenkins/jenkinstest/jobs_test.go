package jenkinstest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const admin, adminToken = "admin", "admin-token"

func asAdmin(r *http.Request) { r.SetBasicAuth(admin, adminToken) }

// postForm POSTs form to u as admin (API token: no crumb).
func postForm(t *testing.T, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	return call(t, "POST", u, func(r *http.Request) {
		asAdmin(r)
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Body = http.NoBody
		if form != nil {
			r.Body = io.NopCloser(strings.NewReader(form.Encode()))
			r.ContentLength = int64(len(form.Encode()))
		}
	})
}

// waitFor polls cond every 10 ms until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func paramConfig() Config {
	cfg := testConfig()
	cfg.Jobs["deploy"] = Job{Params: []Param{
		{Name: "TARGET", Default: "staging"},
		{Name: "DRY_RUN", Default: "true", Kind: ParamBoolean},
		{Name: "SECRET", Default: "hunter2", Kind: ParamPassword},
	}}
	cfg.Jobs["off"] = Job{Disabled: true}
	cfg.Users["builder-less"] = User{Token: "ro-token", ReadOnly: true}
	return cfg
}

func TestBuildWithParametersCarriesParamsAndUserCause(t *testing.T) {
	s, u := start(t, paramConfig())
	// cause counts only with a job's trigger token: the build is the user's.
	resp, _ := postForm(t, u+"/job/deploy/buildWithParameters", url.Values{"TARGET": {"prod"}, "cause": {"spot interruption"}, "UNKNOWN": {"x"}})
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != u+"/queue/item/1/" {
		t.Fatalf("buildWithParameters = %d Location %q, want 201 and the queue item", resp.StatusCode, resp.Header.Get("Location"))
	}
	b, ok := s.Build("deploy", 1)
	if !ok {
		t.Fatalf("no build deploy #1; builds %+v", s.Builds())
	}
	wantParams := []ParamValue{{Name: "TARGET", Value: "prod"}, {Name: "DRY_RUN", Value: "true", Kind: ParamBoolean}, {Name: "SECRET", Value: "hunter2", Kind: ParamPassword}}
	if !reflect.DeepEqual(b.Params, wantParams) {
		t.Errorf("params = %+v, want %+v (given, then defaults; unknown dropped)", b.Params, wantParams)
	}
	if want := []Cause{userCause(admin)}; !reflect.DeepEqual(b.Causes, want) || want[0].ShortDescription != "Started by user admin" {
		t.Errorf("causes = %+v, want %+v", b.Causes, want)
	}

	// The build's API: a password parameter shows its name only, a boolean is a JSON bool.
	_, body := call(t, "GET", u+"/job/deploy/1/api/json?tree=actions[parameters[name,value]]", asAdmin)
	for _, want := range []string{
		`{"_class":"hudson.model.StringParameterValue","name":"TARGET","value":"prod"}`,
		`{"_class":"hudson.model.BooleanParameterValue","name":"DRY_RUN","value":true}`,
		`{"_class":"hudson.model.PasswordParameterValue","name":"SECRET"}`,
		`"shortDescription":"Started by user admin"`, `"building":true`, `"result":null`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("build api lacks %s:\n%s", want, body)
		}
	}
	if strings.Contains(body, "hunter2") {
		t.Error("build api shows the password")
	}
}

func TestBuildEndpointsRefuseLikeJenkins(t *testing.T) {
	s, u := start(t, paramConfig())
	tests := []struct {
		name, path string
		auth       func(*http.Request)
		form       url.Values
		want       int
		header     string
	}{
		{name: "build on a parameterized job without the form", path: "/job/deploy/build", auth: asAdmin, want: 400},
		{name: "buildWithParameters on a job without parameters", path: "/job/free/buildWithParameters", auth: asAdmin, want: 400},
		{name: "disabled job", path: "/job/off/build", auth: asAdmin, want: 409},
		{name: "no Job/Build", path: "/job/free/build", auth: basic("builder-less", "ro-token"), want: 403, header: PermissionBuild},
		{name: "unknown job", path: "/job/nope/build", auth: asAdmin, want: 404},
		{name: "GET", path: "/job/free/build", auth: asAdmin, want: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := "POST"
			if tt.name == "GET" {
				method = "GET"
			}
			resp, body := call(t, method, u+tt.path, tt.auth)
			if resp.StatusCode != tt.want {
				t.Fatalf("%s %s = %d, want %d: %s", method, tt.path, resp.StatusCode, tt.want, body)
			}
			if tt.header != "" && resp.Header.Get("X-Required-Permission") != tt.header {
				t.Errorf("X-Required-Permission = %q, want %q", resp.Header.Get("X-Required-Permission"), tt.header)
			}
		})
	}
	if got := s.Builds(); len(got) != 0 {
		t.Errorf("refused requests started builds: %+v", got)
	}
}

// Jenkins folds a request into an identical waiting item (same job, same
// parameters): buildWithParameters answers 303 to it, build 201 with the same item.
func TestIdenticalRequestsFoldIntoTheWaitingItem(t *testing.T) {
	cfg := paramConfig()
	cfg.QuietingDown = true
	s, u := start(t, cfg)
	first, _ := postForm(t, u+"/job/deploy/buildWithParameters", url.Values{"TARGET": {"prod"}})
	again, _ := postForm(t, u+"/job/deploy/buildWithParameters", url.Values{"TARGET": {"prod"}})
	other, _ := postForm(t, u+"/job/deploy/buildWithParameters", url.Values{"TARGET": {"qa"}})
	if first.StatusCode != 201 || again.StatusCode != 303 || again.Header.Get("Location") != first.Header.Get("Location") {
		t.Errorf("same parameters: %d %q then %d %q; want 201, then 303 to the same item",
			first.StatusCode, first.Header.Get("Location"), again.StatusCode, again.Header.Get("Location"))
	}
	if other.StatusCode != 201 || other.Header.Get("Location") == first.Header.Get("Location") {
		t.Errorf("other parameters: %d %q; want 201 and a new item", other.StatusCode, other.Header.Get("Location"))
	}
	f1, _ := postForm(t, u+"/job/free/build", nil)
	f2, _ := postForm(t, u+"/job/free/build", nil)
	if f1.StatusCode != 201 || f2.StatusCode != 201 || f1.Header.Get("Location") != f2.Header.Get("Location") {
		t.Errorf("build twice: %d %q, %d %q; want 201 twice, same item", f1.StatusCode, f1.Header.Get("Location"), f2.StatusCode, f2.Header.Get("Location"))
	}
	q := s.Queue()
	if len(q) != 3 || len(q[0].Causes) != 2 {
		t.Fatalf("queue = %+v; want 3 items, the first with the causes of both requests", q)
	}
}

func TestJobAPIShape(t *testing.T) {
	_, u := start(t, paramConfig())
	_, body := call(t, "GET", u+"/job/deploy/api/json?tree=buildable,property[parameterDefinitions[name]]", asAdmin)
	var job struct {
		Class     string `json:"_class"`
		Buildable *bool
		Property  []struct {
			Class                string `json:"_class"`
			ParameterDefinitions []struct{ Name string }
		}
	}
	if err := json.Unmarshal([]byte(body), &job); err != nil || job.Buildable == nil || !*job.Buildable || len(job.Property) != 1 ||
		job.Property[0].Class != "hudson.model.ParametersDefinitionProperty" || len(job.Property[0].ParameterDefinitions) != 3 {
		t.Fatalf("job api = %s (%v)", body, err)
	}
	_, body = call(t, "GET", u+"/job/off/api/json", asAdmin)
	if !strings.Contains(body, `"buildable":false`) || !strings.Contains(body, `"property":[]`) {
		t.Errorf("disabled job api = %s", body)
	}
	if resp, _ := call(t, "GET", u+"/job/free/9/api/json", asAdmin); resp.StatusCode != 404 {
		t.Errorf("unknown build = %d, want 404", resp.StatusCode)
	}
}

func TestFolderAndEscapedNames(t *testing.T) {
	cfg := testConfig()
	cfg.Jobs["team/my app"] = Job{}
	cfg.Boot = []Boot{{Job: "team/my app"}}
	s, u := start(t, cfg)
	if got := s.RunningBuilds(); !slices.Equal(got, []string{u + "/job/team/job/my%20app/1/"}) {
		t.Fatalf("running = %q", got)
	}
	resp, body := call(t, "GET", u+"/job/team/job/my%20app/1/api/json", asAdmin)
	if resp.StatusCode != 200 || !strings.Contains(body, `"fullDisplayName":"team/my app #1"`) {
		t.Errorf("build in a folder = %d %s", resp.StatusCode, body)
	}
	if resp, _ := postForm(t, u+"/job/team/job/my%20app/build", nil); resp.StatusCode != 201 {
		t.Errorf("build in a folder = %d, want 201", resp.StatusCode)
	}
}

// A user without Job/Read sees the executor busy but not the build.
func TestUnreadableJobHidesItsBuilds(t *testing.T) {
	cfg := testConfig()
	cfg.Jobs["secret"] = Job{Unreadable: true}
	cfg.Boot = []Boot{{Job: "secret"}}
	_, u := start(t, cfg)
	_, body := call(t, "GET", u+"/computer/api/json?tree=computer[executors[idle,currentExecutable[url]]]", asAdmin)
	if !strings.Contains(body, `"currentExecutable":null,"idle":false`) || strings.Contains(body, "secret") {
		t.Errorf("computers = %s; want a busy executor without executable", body)
	}
	if resp, _ := call(t, "GET", u+"/job/secret/1/api/json", asAdmin); resp.StatusCode != 404 {
		t.Errorf("unreadable build = %d, want 404", resp.StatusCode)
	}
}

func TestNodeBlockParkedByQuietDown(t *testing.T) {
	cfg := testConfig()
	cfg.Jobs["pipe"] = Job{Pipeline: true, NodeAfter: time.Nanosecond, Duration: 20 * time.Millisecond}
	cfg.Boot = []Boot{{Job: "pipe"}}
	cfg.QuietingDown, cfg.QuietDownReason = true, "spot interruption"
	s, u := start(t, cfg)

	waitFor(t, "the node block in the queue", func() bool { return len(s.Queue()) == 1 })
	if q := s.Queue()[0]; q.Placeholder != u+"/job/pipe/1/" {
		t.Fatalf("queue = %+v, want the placeholder of pipe #1", q)
	}
	_, body := call(t, "GET", u+"/queue/api/json", asAdmin)
	for _, want := range []string{
		`"task":{"_class":"org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask","name":"part of pipe #1","url":"job/pipe/1/"}`,
		`"why":"Jenkins is about to shut down"`, `"url":"queue/item/2/"`,
	} { // item 1 was the build itself
		if !strings.Contains(body, want) {
			t.Errorf("queue api lacks %s:\n%s", want, body)
		}
	}
	// Parked, it cannot finish: well past its 20 ms it still runs, on its one-off
	// executor only.
	time.Sleep(100 * time.Millisecond)
	if b, _ := s.Build("pipe", 1); b.Result != "" || !b.Parked {
		t.Fatalf("parked Pipeline = %+v, want still running and parked", b)
	}
	_, body = call(t, "GET", u+"/computer/api/json?tree=computer[executors[idle,currentExecutable[url]],oneOffExecutors[currentExecutable[url]]]", asAdmin)
	if strings.Count(body, "job/pipe/1/") != 1 || !strings.Contains(body, classWorkflowRun) {
		t.Errorf("computers while parked = %s; want the run on its one-off executor only", body)
	}

	// The end of quiet-down gives it an executor; then it finishes.
	if resp, _ := postForm(t, u+"/cancelQuietDown", nil); resp.StatusCode != 302 {
		t.Fatalf("cancelQuietDown = %d", resp.StatusCode)
	}
	waitFor(t, "pipe #1 to finish", func() bool { b, _ := s.Build("pipe", 1); return b.Result == ResultSuccess })
	if q := s.Queue(); len(q) != 0 {
		t.Errorf("queue after the end = %+v", q)
	}
}

func TestNodeBlockOnRegularExecutor(t *testing.T) {
	cfg := testConfig()
	cfg.Executors = 1
	cfg.Jobs["pipe"] = Job{Pipeline: true, NodeAfter: time.Nanosecond}
	cfg.Jobs["pipe2"] = Job{Pipeline: true, NodeAfter: time.Nanosecond}
	cfg.Boot = []Boot{{Job: "pipe"}}
	s, u := start(t, cfg)
	waitFor(t, "the node block on the executor", func() bool {
		_, body := call(t, "GET", u+"/computer/api/json?tree=computer[executors[idle,currentExecutable[url]]]", asAdmin)
		return strings.Contains(body, classPlaceholderExecutable)
	})
	// A second one waits for the executor: not because of quiet-down.
	if _, err := s.StartBuild("pipe2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second node block in the queue", func() bool { return len(s.Queue()) == 1 })
	_, body := call(t, "GET", u+"/queue/api/json", asAdmin)
	if !strings.Contains(body, `"why":"Waiting for next available executor"`) || !strings.Contains(body, `"url":"job/pipe2/1/"`) {
		t.Errorf("queue = %s", body)
	}
}

func TestSlowHomeAnswers503(t *testing.T) {
	s, u := start(t, Config{SlowHome: time.Hour, Users: testConfig().Users})
	for range 3 {
		if resp, _ := call(t, "GET", u+"/login", nil); resp.StatusCode != 503 {
			t.Fatalf("GET /login with a slow home = %d, want 503", resp.StatusCode)
		}
	}
	s.SetStartupDelay(0)
	if resp, _ := call(t, "GET", u+"/login", nil); resp.StatusCode != 200 {
		t.Fatalf("GET /login once loaded = %d", resp.StatusCode)
	}
}

func TestFaults(t *testing.T) {
	s, u := start(t, testConfig())
	s.InjectFault(Fault{Path: "/computer/api/json", Kind: Fault500, Times: 2})
	s.InjectFault(Fault{Path: "/api/json", Kind: Fault401, Times: 1})
	s.InjectFault(Fault{Path: "/queue/api/json", Kind: FaultGarbage})
	got := func(path string) int { resp, _ := call(t, "GET", u+path, asAdmin); return resp.StatusCode }
	if a, b, c := got("/computer/api/json"), got("/computer/api/json"), got("/computer/api/json"); a != 500 || b != 500 || c != 200 {
		t.Errorf("computer api = %d %d %d, want 500 500 200", a, b, c)
	}
	if a, b := got("/api/json"), got("/api/json"); a != 401 || b != 200 {
		t.Errorf("api = %d %d, want 401 200", a, b)
	}
	for range 2 {
		resp, body := call(t, "GET", u+"/queue/api/json", asAdmin)
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "<html>") {
			t.Errorf("queue with garbage = %d %q", resp.StatusCode, body)
		}
	}
	s.ClearFaults()
	if got("/queue/api/json") != 200 {
		t.Error("queue after ClearFaults")
	}

	// A hanging answer ends when the client gives up.
	s.InjectFault(Fault{Path: "*", Kind: FaultHang})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", u+"/login", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("hung double answered %d", resp.StatusCode)
	}
}

func TestParseFault(t *testing.T) {
	tests := []struct {
		in      string
		want    Fault
		wantErr bool
	}{
		{in: "/computer/api/json=500x3", want: Fault{Path: "/computer/api/json", Kind: Fault500, Times: 3}},
		{in: "*=hang", want: Fault{Path: "*", Kind: FaultHang}},
		{in: "/api/json=garbage", want: Fault{Path: "/api/json", Kind: FaultGarbage}},
		{in: "/login=401x1", want: Fault{Path: "/login", Kind: Fault401, Times: 1}},
		{in: "computer=500", wantErr: true},
		{in: "/x=418", wantErr: true},
		{in: "/x=500x0", wantErr: true},
		{in: "/x=500xx", wantErr: true},
		{in: "/x", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseFault(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseFault(%q) = %+v, %v", tt.in, got, err)
		}
		if err == nil && got.String() != tt.in {
			t.Errorf("Fault.String() = %q, want %q", got.String(), tt.in)
		}
	}
}

// What a stop leaves in the home: the aborted build with its parameters and result,
// the next build numbers, and a parked Pipeline that asks for its node again.
func TestHomeKeepsHistoryNumbersAndNodeBlocks(t *testing.T) {
	cfg := paramConfig()
	cfg.Home = t.TempDir()
	cfg.Jobs["pipe"] = Job{Pipeline: true, NodeAfter: time.Nanosecond}
	cfg.Boot = []Boot{{Job: "deploy", Params: map[string]string{"TARGET": "prod"}}, {Job: "pipe"}}
	cfg.QuietingDown = true
	first, u1 := start(t, cfg)
	waitFor(t, "pipe parked", func() bool { b, _ := first.Build("pipe", 1); return b.Parked })
	if err := first.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := first.Aborted(); !slices.Equal(got, []string{u1 + "/job/deploy/1/"}) {
		t.Errorf("Aborted() = %q", got)
	}

	cfg.Boot, cfg.QuietingDown = nil, false
	second, u2 := start(t, cfg)
	b, ok := second.Build("deploy", 1)
	if !ok || b.Result != ResultAborted || b.Params[0] != (ParamValue{Name: "TARGET", Value: "prod"}) {
		t.Errorf("deploy #1 on the successor = %+v, %v; want aborted with its parameters", b, ok)
	}
	if _, body := call(t, "GET", u2+"/job/deploy/1/api/json", asAdmin); !strings.Contains(body, `"result":"ABORTED"`) {
		t.Errorf("deploy #1 api = %s", body)
	}
	if next, err := second.StartBuild("deploy"); err != nil || next != u2+"/job/deploy/2/" {
		t.Errorf("next deploy = %q, %v; want number 2", next, err)
	}
	waitFor(t, "pipe #1 back on a node", func() bool {
		b, _ := second.Build("pipe", 1)
		return b.Result == "" && !b.Parked && len(second.Queue()) == 0
	})
}

func TestConfigArgsRoundTrip(t *testing.T) {
	cfg := Config{
		StartupDelay: time.Second, SlowHome: time.Minute, ListenDelay: 2 * time.Second,
		Users:              map[string]User{"admin": {Token: "t", Password: "p", Manage: true}, "viewer": {Token: "v"}},
		AllowAnonymousRead: true,
		Jobs: map[string]Job{
			"free":  {Duration: time.Second, Params: []Param{{Name: "A", Default: "x=y"}, {Name: "B", Default: "true", Kind: ParamBoolean}, {Name: "S", Kind: ParamPassword}}},
			"pipe":  {Pipeline: true, NodeAfter: 5 * time.Millisecond},
			"off":   {Disabled: true},
			"dark":  {Unreadable: true},
			"empty": {},
		},
		Executors:       3,
		Home:            "/h",
		Boot:            []Boot{{Job: "free", Params: map[string]string{"A": "a b&c"}}, {Job: "pipe"}},
		QuietingDown:    true,
		QuietDownReason: "",
		Faults:          []Fault{{Path: "*", Kind: FaultHang, Times: 2}, {Path: "/api/json", Kind: Fault500}},
	}
	args, err := cfg.Args()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	got, listen, code := parseFlags(append(args, "--listen", "127.0.0.1:0"), &stderr)
	if code != -1 || listen != "127.0.0.1:0" {
		t.Fatalf("parseFlags(%q) = code %d listen %q: %s", args, code, listen, stderr.String())
	}
	got.Logger = nil
	if !reflect.DeepEqual(got, cfg) {
		t.Errorf("round trip through %q:\n got %+v\nwant %+v", args, got, cfg)
	}

	for _, bad := range []Config{
		{Users: map[string]User{"a": {Token: "t", Manage: true}, "b": {Token: "u", Manage: true}}},
		{Users: map[string]User{"r": {Token: "t", ReadOnly: true}}},
		{Users: map[string]User{"v": {Password: "p"}}},
		{Jobs: map[string]Job{"f/x": {}}},
	} {
		if args, err := bad.Args(); err == nil {
			t.Errorf("Args() of %+v = %q, want an error", bad, args)
		}
	}
}

// With --listen-delay nothing listens for a while, as while the JVM starts; a stop
// meanwhile ends Main cleanly without touching the home.
func TestMainListenDelay(t *testing.T) {
	home := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	var stdout, stderr strings.Builder
	go func() {
		done <- Main(ctx, []string{"--listen", "127.0.0.1:0", "--home", home, "--listen-delay", "1h"}, &stdout, &stderr)
	}()
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("Main() = %d: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Main did not return while waiting to listen")
	}
	if _, err := ReadHomeState(home); err == nil || strings.Contains(stdout.String(), "listening") {
		t.Errorf("the home was opened or the double listened before its delay: %q", stdout.String())
	}
}
