package jenkins

import (
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
	tests := []struct {
		name    string
		body    string
		want    []string
		wantErr string
	}{
		{name: "real answer", body: realComputers, want: []string{"http://j:8080/job/a/3/", "http://j:8080/job/p/7/", "http://j:8080/job/b/1/"}},
		{name: "idle", body: `{"computer":[{"displayName":"Built-In Node","executors":[{"currentExecutable":null,"idle":true}],"oneOffExecutors":[]}]}`, want: []string{}},
		{name: "no computers", body: `{"computer":[]}`, want: []string{}},
		{name: "pipeline only", body: `{"computer":[{"executors":[],"oneOffExecutors":[{"currentExecutable":{"url":"u/1/"}}]}]}`, want: []string{"u/1/"}},
		// Without the tree parameter executors are empty objects: nothing to read.
		{name: "depth 0 shape", body: `{"busyExecutors":1,"computer":[{"executors":[{},{}],"oneOffExecutors":[{}]}]}`, want: []string{}},
		{name: "executable without url still counts", body: `{"computer":[{"displayName":"n","executors":[{"currentExecutable":{"_class":"x"}}],"oneOffExecutors":[{"currentExecutable":{"url":""}}]}]}`, want: []string{"n executor 0", "n one-off executor 0"}},
		{name: "surrounding space", body: " \n" + `{"computer":[]}` + "\n", want: []string{}},
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
				t.Errorf("ParseComputers() = %q, want %q", got, tt.want)
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
				t.Fatalf("error %v with builds %q", err, builds)
			}
			return
		}
		seen := map[string]bool{}
		for _, b := range builds {
			if b == "" || seen[b] {
				t.Fatalf("empty or duplicate build %q in %q", b, builds)
			}
			seen[b] = true
		}
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
