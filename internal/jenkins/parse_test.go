package jenkins

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// realComputers is shaped like Jenkins 2.5xx's answer to the agent's tree: _class on
// every object, a freestyle build on a regular executor, a Pipeline on a one-off
// executor and again (its node block) on a regular executor as PlaceholderExecutable.
const realComputers = `{"_class":"hudson.model.ComputerSet","computer":[
 {"_class":"hudson.model.Hudson$MasterComputer","displayName":"Built-In Node","executors":[
   {"_class":"hudson.model.Executor","currentExecutable":{"_class":"hudson.model.FreeStyleBuild","url":"http://j:8080/job/a/3/"},"idle":false},
   {"_class":"hudson.model.Executor","currentExecutable":{"_class":"org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask$PlaceholderExecutable","url":"http://j:8080/job/p/7/"},"idle":false},
   {"_class":"hudson.model.Executor","currentExecutable":null,"idle":true}],
  "offline":false,
  "oneOffExecutors":[{"_class":"hudson.model.OneOffExecutor","currentExecutable":{"_class":"org.jenkinsci.plugins.workflow.job.WorkflowRun","url":"http://j:8080/job/p/7/"}}]},
 {"_class":"hudson.slaves.SlaveComputer","displayName":"agent-1","executors":[{"_class":"hudson.model.Executor","currentExecutable":{"_class":"hudson.model.FreeStyleBuild","url":"http://j:8080/job/b/1/"},"idle":false}],"offline":true,"oneOffExecutors":[]}
]}`

func TestParseComputers(t *testing.T) {
	free := func(u, job string, n int) Build { return Build{URL: u, Job: job, Number: n} }
	pipe := func(u, job string, n int) Build { return Build{URL: u, Job: job, Number: n, Pipeline: true} }
	tests := []struct {
		name    string
		body    string
		want    []Build
		wantErr string
	}{
		{name: "real answer", body: realComputers, want: []Build{free("http://j:8080/job/a/3/", "a", 3), pipe("http://j:8080/job/p/7/", "p", 7), free("http://j:8080/job/b/1/", "b", 1)}},
		{name: "idle", body: `{"computer":[{"displayName":"Built-In Node","executors":[{"currentExecutable":null,"idle":true}],"oneOffExecutors":[]}]}`, want: []Build{}},
		{name: "no computers", body: `{"computer":[]}`, want: []Build{}},
		{name: "pipeline only", body: `{"computer":[{"executors":[],"oneOffExecutors":[{"currentExecutable":{"_class":"org.jenkinsci.plugins.workflow.job.WorkflowRun","url":"http://j/job/p/1/"}}]}]}`, want: []Build{pipe("http://j/job/p/1/", "p", 1)}},
		{name: "pipeline node block seen first", body: `{"computer":[{"executors":[{"currentExecutable":{"_class":"org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask$PlaceholderExecutable","url":"http://j/job/p/2/"},"idle":false}],"oneOffExecutors":[{"currentExecutable":{"_class":"org.jenkinsci.plugins.workflow.job.WorkflowRun","url":"http://j/job/p/2/"}}]}]}`, want: []Build{pipe("http://j/job/p/2/", "p", 2)}},
		{name: "folders and escaped names", body: `{"computer":[{"executors":[{"currentExecutable":{"_class":"hudson.model.FreeStyleBuild","url":"https://ci.example.com/jenkins/job/team/job/my%20app/12/"},"idle":false}]}]}`, want: []Build{free("https://ci.example.com/jenkins/job/team/job/my%20app/12/", "team/my app", 12)}},
		{name: "multibranch branch", body: `{"computer":[{"oneOffExecutors":[{"currentExecutable":{"_class":"org.jenkinsci.plugins.workflow.job.WorkflowRun","url":"http://j/job/repo/job/feature%252Fx/4/"}}]}]}`, want: []Build{pipe("http://j/job/repo/job/feature%252Fx/4/", "repo/feature%2Fx", 4)}},
		{name: "matrix parent and configuration", body: `{"computer":[{"executors":[{"currentExecutable":{"_class":"hudson.matrix.MatrixRun","url":"http://j/job/m/os=linux/5/"},"idle":false}],"oneOffExecutors":[{"currentExecutable":{"_class":"hudson.matrix.MatrixBuild","url":"http://j/job/m/5/"}}]}]}`, want: []Build{free("http://j/job/m/os=linux/5/", "m/os=linux", 5), free("http://j/job/m/5/", "m", 5)}},
		// Without the tree parameter executors are empty objects: nothing to read.
		{name: "depth 0 shape", body: `{"busyExecutors":1,"computer":[{"executors":[{},{}],"oneOffExecutors":[{}]}]}`, want: []Build{}},
		{name: "executable without url still counts", body: `{"computer":[{"displayName":"n","executors":[{"currentExecutable":{"_class":"x"}}],"oneOffExecutors":[{"currentExecutable":{"_class":"org.jenkinsci.plugins.workflow.job.WorkflowRun","url":""}}]}]}`, want: []Build{{}, {Pipeline: true}}},
		// Jenkins withholds the executable of a build the user may not read; the
		// executor is still busy.
		{name: "unreadable builds still count", body: `{"computer":[{"executors":[{"currentExecutable":null,"idle":false},{"currentExecutable":null,"idle":false},{"currentExecutable":null,"idle":true}],"oneOffExecutors":[{"currentExecutable":null,"idle":false}]}]}`, want: []Build{{}, {}, {}}},
		{name: "url that is no build url", body: `{"computer":[{"executors":[{"currentExecutable":{"url":"http://j/computer/x/"},"idle":false},{"currentExecutable":{"url":"http://j/computer/x/"},"idle":false}]}]}`, want: []Build{{URL: "http://j/computer/x/"}}},
		{name: "surrounding space", body: " \n" + `{"computer":[]}` + "\n", want: []Build{}},
		{name: "empty", body: ``, wantErr: "not a JSON object"},
		{name: "html login page", body: `<html><body>Sign in</body></html>`, wantErr: "not a JSON object"},
		{name: "null", body: `null`, wantErr: "not a JSON object"},
		{name: "array", body: `[{"computer":[]}]`, wantErr: "not a JSON object"},
		{name: "no computer list", body: `{"_class":"hudson.model.Hudson","jobs":[]}`, wantErr: "no computer list"},
		{name: "computer null", body: `{"computer":null}`, wantErr: "no computer list"},
		{name: "computer wrong type", body: `{"computer":{}}`, wantErr: "cannot unmarshal"},
		{name: "url wrong type", body: `{"computer":[{"executors":[{"currentExecutable":{"url":5}}]}]}`, wantErr: "cannot unmarshal"},
		{name: "truncated", body: `{"computer":[{"executors":[`, wantErr: "unexpected EOF"},
		{name: "trailing data", body: `{"computer":[]} {"computer":[]}`, wantErr: "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseComputers([]byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseComputers() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseComputers() error = %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ParseComputers() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// realQueue is shaped like /queue/api/json?tree=items[id,task[url]] of a Jenkins in
// quiet-down: a freestyle build waiting (its task is the job, absolute url) and the
// node block of Pipeline p #7 (a PlaceholderTask, url of the run relative to the root).
const realQueue = `{"_class":"hudson.model.Queue","items":[
 {"_class":"hudson.model.Queue$BuildableItem","id":41,"task":{"_class":"hudson.model.FreeStyleProject","url":"http://j:8080/job/a/"}},
 {"_class":"hudson.model.Queue$BuildableItem","id":42,"task":{"_class":"org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask","url":"job/p/7/"}},
 {"_class":"hudson.model.Queue$BuildableItem","id":43,"task":{"_class":"org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask","url":""}}
]}`

func TestParseQueue(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    []string
		wantErr string
	}{
		{name: "real answer", body: realQueue, want: []string{"job/p/7/"}},
		{name: "empty queue", body: `{"_class":"hudson.model.Queue","items":[]}`, want: nil},
		{name: "absolute placeholder url", body: `{"items":[{"task":{"_class":"org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask","url":"http://j/job/f/job/p/3/"}}]}`, want: []string{"job/f/job/p/3/"}},
		{name: "item without task", body: `{"items":[{"id":1}]}`, want: nil},
		{name: "no items", body: `{"_class":"hudson.model.Hudson"}`, wantErr: "no item list"},
		{name: "html", body: `<html>`, wantErr: "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseQueue([]byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseQueue() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			keys := slices.Sorted(maps.Keys(got))
			if !slices.Equal(keys, tt.want) {
				t.Errorf("ParseQueue() = %q, want %q", keys, tt.want)
			}
		})
	}
}

func TestParseBuildURL(t *testing.T) {
	tests := []struct {
		in      string
		rel     string
		job     string
		number  int
		wantErr bool
	}{
		{in: "http://j:8080/job/a/3/", rel: "job/a/3/", job: "a", number: 3},
		{in: "http://j:8080/job/a/3", rel: "job/a/3/", job: "a", number: 3},
		{in: "job/p/7/", rel: "job/p/7/", job: "p", number: 7},
		{in: "https://ci/jenkins/job/f/job/g/job/app/120/", rel: "job/f/job/g/job/app/120/", job: "f/g/app", number: 120},
		{in: "http://j/job/my%20app/1/", rel: "job/my%20app/1/", job: "my app", number: 1},
		{in: "http://j/job/repo/job/feature%252Fx/4/", rel: "job/repo/job/feature%252Fx/4/", job: "repo/feature%2Fx", number: 4},
		{in: "http://j/job/m/os=linux/5/", rel: "job/m/os=linux/5/", job: "m/os=linux", number: 5},
		{in: "http://j/job/a/", wantErr: true},
		{in: "http://j/job/a/lastBuild/", wantErr: true},
		{in: "http://j/job/a/0/", wantErr: true},
		{in: "http://j/job/a/-1/", wantErr: true},
		{in: "http://j/computer/x/", wantErr: true},
		{in: "http://j/job//3/", wantErr: true},
		{in: "http://j/job/a/b/c/3/", wantErr: true},
		{in: "", wantErr: true},
		{in: "://", wantErr: true},
	}
	for _, tt := range tests {
		rel, job, n, err := ParseBuildURL(tt.in)
		if (err != nil) != tt.wantErr || rel != tt.rel || job != tt.job || n != tt.number {
			t.Errorf("ParseBuildURL(%q) = %q %q %d %v; want %q %q %d err=%v", tt.in, rel, job, n, err, tt.rel, tt.job, tt.number, tt.wantErr)
		}
	}
}

func TestJobPath(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "a", want: "/job/a/"},
		{in: "team/my app", want: "/job/team/job/my%20app/"},
		{in: "repo/feature%2Fx", want: "/job/repo/job/feature%252Fx/"},
		{in: "", wantErr: true},
		{in: "/a", wantErr: true},
		{in: "a//b", wantErr: true},
		{in: "a/../b", wantErr: true},
	}
	for _, tt := range tests {
		got, err := jobPath(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("jobPath(%q) = %q, %v; want %q err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	// A name survives the round trip through a build URL.
	for _, name := range []string{"a", "team/my app", "repo/feature%2Fx", "ü+&;"} {
		p, err := jobPath(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, job, _, err := ParseBuildURL("http://j" + p + "9/"); err != nil || job != name {
			t.Errorf("round trip of %q: %q, %v", name, job, err)
		}
	}
}

func TestParseBuildParameters(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    map[string]string
		wantErr string
	}{
		{
			name: "real answer", body: `{"_class":"hudson.model.FreeStyleBuild","actions":[
			{"_class":"hudson.model.ParametersAction","parameters":[
				{"_class":"hudson.model.StringParameterValue","name":"TARGET","value":"prod eu"},
				{"_class":"hudson.model.BooleanParameterValue","name":"DRY_RUN","value":false},
				{"_class":"hudson.model.PasswordParameterValue","name":"SECRET"},
				{"_class":"hudson.model.TextParameterValue","name":"NOTES","value":"a\nb"},
				{"_class":"hudson.model.RunParameterValue","name":"UPSTREAM","jobName":"build","number":"12"},
				{"_class":"hudson.model.FileParameterValue","name":"upload.zip"},
				{"_class":"x.NumberValue","name":"N","value":3.5},
				{"_class":"x.NullValue","name":"EMPTY","value":null}]},
			{"_class":"hudson.model.CauseAction"},{},null]}`,
			want: map[string]string{"TARGET": "prod eu", "DRY_RUN": "false", "NOTES": "a\nb", "UPSTREAM": "build#12", "N": "3.5"},
		},
		{name: "no parameters", body: `{"_class":"hudson.model.FreeStyleBuild","actions":[{"_class":"hudson.model.CauseAction"},{}]}`, want: map[string]string{}},
		{name: "no actions", body: `{"_class":"hudson.model.FreeStyleJob"}`, wantErr: "no actions"},
		{name: "value is a list", body: `{"actions":[{"parameters":[{"name":"L","value":["a","b"]}]}]}`, wantErr: "parameter L"},
		{name: "nameless", body: `{"actions":[{"parameters":[{"value":"a"}]}]}`, wantErr: "without a name"},
		{name: "html", body: `<html>`, wantErr: "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseBuildParameters([]byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseBuildParameters() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !maps.Equal(got, tt.want) {
				t.Errorf("parseBuildParameters() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestParseJob(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		buildable bool
		params    []string
		wantErr   string
	}{
		{name: "parameterized", body: `{"_class":"hudson.model.FreeStyleProject","buildable":true,"property":[{"_class":"jenkins.model.BuildDiscarderProperty"},{"_class":"hudson.model.ParametersDefinitionProperty","parameterDefinitions":[{"_class":"hudson.model.StringParameterDefinition","name":"A"},{"_class":"hudson.model.BooleanParameterDefinition","name":"B"}]}]}`, buildable: true, params: []string{"A", "B"}},
		{name: "plain", body: `{"_class":"org.jenkinsci.plugins.workflow.job.WorkflowJob","buildable":true,"property":[]}`, buildable: true},
		{name: "disabled", body: `{"buildable":false,"property":[]}`},
		{name: "folder", body: `{"_class":"com.cloudbees.hudson.plugins.folder.Folder"}`, wantErr: "no job that can be built"},
		{name: "html", body: `<html>`, wantErr: "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, params, err := parseJob([]byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseJob() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || b != tt.buildable || !slices.Equal(params, tt.params) {
				t.Errorf("parseJob() = %v %q %v; want %v %q", b, params, err, tt.buildable, tt.params)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantQuiet  bool
		wantReason string
		wantErr    bool
	}{
		{name: "quieting with reason", body: `{"_class":"hudson.model.Hudson","mode":"NORMAL","numExecutors":2,"quietingDown":true,"quietDownReason":"spot interruption","useCrumbs":true}`, wantQuiet: true, wantReason: "spot interruption"},
		{name: "not quieting, null reason", body: `{"quietingDown":false,"quietDownReason":null}`},
		{name: "no quietingDown", body: `{"mode":"NORMAL"}`, wantErr: true},
		{name: "quietingDown as string", body: `{"quietingDown":"true"}`, wantErr: true},
		{name: "html", body: `<html>`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := parseStatus([]byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStatus() error = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			reason := ""
			if st.QuietDownReason != nil {
				reason = *st.QuietDownReason
			}
			if *st.QuietingDown != tt.wantQuiet || reason != tt.wantReason {
				t.Errorf("parseStatus() = quietingDown %v reason %q, want %v %q", *st.QuietingDown, reason, tt.wantQuiet, tt.wantReason)
			}
		})
	}
}

func TestParseCrumb(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    crumb
		wantErr bool
	}{
		{name: "real", body: `{"_class":"hudson.security.csrf.DefaultCrumbIssuer","crumb":"ab12","crumbRequestField":"Jenkins-Crumb"}`, want: crumb{Crumb: "ab12", CrumbRequestField: "Jenkins-Crumb"}},
		{name: "no field name", body: `{"crumb":"ab12"}`, wantErr: true},
		{name: "empty crumb", body: `{"crumb":"","crumbRequestField":"Jenkins-Crumb"}`, wantErr: true},
		{name: "garbage", body: `crumb=ab12`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCrumb([]byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseCrumb() error = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseCrumb() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseWhoAmI(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		wantName string
		wantAnon bool
		wantErr  bool
	}{
		{name: "user", body: `{"_class":"hudson.security.WhoAmI","anonymous":false,"authenticated":true,"authorities":["authenticated"],"details":null,"name":"agent","toString":"x"}`, wantName: "agent"},
		{name: "anonymous", body: `{"anonymous":true,"authenticated":true,"name":"anonymous"}`, wantName: "anonymous", wantAnon: true},
		{name: "no name", body: `{"anonymous":true}`, wantErr: true},
		{name: "garbage", body: `{"name":`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseWhoAmI([]byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseWhoAmI() error = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if *got.Name != tt.wantName || got.Anonymous != tt.wantAnon {
				t.Errorf("parseWhoAmI() = %q anonymous=%v, want %q %v", *got.Name, got.Anonymous, tt.wantName, tt.wantAnon)
			}
		})
	}
}

func FuzzParseComputers(f *testing.F) {
	f.Add([]byte(realComputers))
	f.Add([]byte(`{"computer":[]}`))
	f.Add([]byte(`{"computer":[{"executors":[{}],"oneOffExecutors":[{"currentExecutable":{}}]}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		builds, err := ParseComputers(body)
		if err != nil {
			if builds != nil {
				t.Fatalf("error %v with builds %+v", err, builds)
			}
			return
		}
		seen := map[string]bool{}
		for _, b := range builds {
			if b.URL == "" {
				if b.Job != "" || b.Number != 0 {
					t.Fatalf("build without URL names a job: %+v", b)
				}
				continue
			}
			if seen[buildKey(b.URL)] {
				t.Fatalf("duplicate build %q in %+v", b.URL, builds)
			}
			seen[buildKey(b.URL)] = true
			if b.Parked {
				t.Fatalf("parked from the executors alone: %+v", b)
			}
		}
	})
}

func FuzzParseBuildURL(f *testing.F) {
	f.Add("http://j:8080/job/a/3/")
	f.Add("job/f/job/my%20app/12/")
	f.Add("http://j/job/m/os=linux/5/")
	f.Fuzz(func(t *testing.T, in string) {
		rel, job, n, err := ParseBuildURL(in)
		if err != nil {
			return
		}
		if n <= 0 || job == "" || !strings.HasPrefix(rel, "job/") || !strings.HasSuffix(rel, "/") {
			t.Fatalf("ParseBuildURL(%q) accepted %q %q %d", in, rel, job, n)
		}
		// What it accepts is stable: the relative path parses to the same build.
		rel2, job2, n2, err := ParseBuildURL(rel)
		if err != nil || rel2 != rel || job2 != job || n2 != n {
			t.Fatalf("ParseBuildURL(%q) = %q %q %d, but its rel gives %q %q %d %v", in, rel, job, n, rel2, job2, n2, err)
		}
	})
}

func FuzzParseQueueAndParameters(f *testing.F) {
	f.Add([]byte(realQueue))
	f.Add([]byte(`{"actions":[{"parameters":[{"name":"A","value":"x"},{"name":"B","value":true}]}]}`))
	f.Add([]byte(`{"buildable":true,"property":[{"parameterDefinitions":[{"name":"A"}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if q, err := ParseQueue(body); err == nil && q == nil {
			t.Fatal("ParseQueue accepted an answer and returned nil")
		}
		if p, err := parseBuildParameters(body); err == nil {
			if p == nil {
				t.Fatal("parseBuildParameters accepted an answer and returned nil")
			}
			if _, empty := p[""]; empty {
				t.Fatal("parseBuildParameters accepted a parameter without a name")
			}
		}
		_, _, _ = parseJob(body)
	})
}

// FuzzParseAnswers feeds the small answers (api/json, crumb, whoAmI) with one input:
// none may panic, and what they accept must hold the fields the client relies on.
func FuzzParseAnswers(f *testing.F) {
	f.Add([]byte(`{"quietingDown":true,"quietDownReason":"x"}`))
	f.Add([]byte(`{"crumb":"a","crumbRequestField":"Jenkins-Crumb"}`))
	f.Add([]byte(`{"name":"anonymous","anonymous":true}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if st, err := parseStatus(body); err == nil && st.QuietingDown == nil {
			t.Fatal("parseStatus accepted an answer without quietingDown")
		}
		if c, err := parseCrumb(body); err == nil && (c.Crumb == "" || c.CrumbRequestField == "") {
			t.Fatal("parseCrumb accepted an answer without a crumb")
		}
		if w, err := parseWhoAmI(body); err == nil && w.Name == nil {
			t.Fatal("parseWhoAmI accepted an answer without a name")
		}
	})
}

func BenchmarkParseComputers(b *testing.B) {
	body := []byte(realComputers)
	for b.Loop() {
		if _, err := ParseComputers(body); err != nil {
			b.Fatal(err)
		}
	}
}
