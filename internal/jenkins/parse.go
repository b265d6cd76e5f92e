package jenkins

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
)

// Java classes the agent tells apart, as Jenkins names them in _class.
const (
	classWorkflowRun = "org.jenkinsci.plugins.workflow.job.WorkflowRun"
	// A Pipeline's node block running on a regular executor.
	classPlaceholderExecutable = "org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask$PlaceholderExecutable"
	// A Pipeline's node block waiting in the queue.
	classPlaceholderTask = "org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask"
)

// computerSet is the part of GET /computer/api/json that the agent asks for with
// the tree parameter. Pointers tell "absent" from "empty": an answer without the
// computer list is not a Jenkins computer set, and is rejected rather than read as
// "no builds".
type computerSet struct {
	Computer *[]computer `json:"computer"`
}

type computer struct {
	DisplayName     string     `json:"displayName"`
	Executors       []executor `json:"executors"`
	OneOffExecutors []executor `json:"oneOffExecutors"`
}

type executor struct {
	// Idle is false on a busy executor, also when Jenkins withholds its executable
	// from a user without Job/Read on the build.
	Idle              *bool       `json:"idle"`
	CurrentExecutable *executable `json:"currentExecutable"`
}

type executable struct {
	Class string  `json:"_class"`
	URL   *string `json:"url"`
}

// ParseComputers reads the answer of
// GET /computer/api/json?tree=computer[displayName,executors[idle,currentExecutable[url]],oneOffExecutors[idle,currentExecutable[url]]]
// and returns the builds that occupy an executor, regular or one-off (Pipeline runs
// sit on one-off executors, which busyExecutors does not count), in the order Jenkins
// lists them and once each: a Pipeline inside `node {}` shows on a one-off executor
// (WorkflowRun) and on a regular one (PlaceholderExecutable) under the same URL.
//
// A busy executor without an executable (idle false, executable withheld because the
// user may not read the build) or with an executable without a URL still counts, as
// a Build without URL, so that a busy executor is never read as idle. Anything that
// is not a computer set is an error.
func ParseComputers(body []byte) ([]Build, error) {
	var set computerSet
	if err := decodeStrict(body, &set); err != nil {
		return nil, fmt.Errorf("parse computers: %w", err)
	}
	if set.Computer == nil {
		return nil, errors.New("parse computers: no computer list in the answer")
	}
	builds := []Build{}
	index := map[string]int{}
	for _, c := range *set.Computer {
		for _, executors := range [2][]executor{c.Executors, c.OneOffExecutors} {
			for _, e := range executors {
				x := e.CurrentExecutable
				if x == nil {
					if e.Idle != nil && !*e.Idle {
						builds = append(builds, Build{})
					}
					continue
				}
				pipeline := x.Class == classWorkflowRun || x.Class == classPlaceholderExecutable
				if x.URL == nil || *x.URL == "" {
					builds = append(builds, Build{Pipeline: pipeline})
					continue
				}
				b := Build{URL: *x.URL, Pipeline: pipeline}
				key, job, number, err := ParseBuildURL(b.URL)
				if err != nil {
					key = b.URL
				} else {
					b.Job, b.Number = job, number
				}
				if i, seen := index[key]; seen {
					builds[i].Pipeline = builds[i].Pipeline || pipeline
					continue
				}
				index[key] = len(builds)
				builds = append(builds, b)
			}
		}
	}
	return builds, nil
}

// queueSet is the part of GET /queue/api/json?tree=items[id,task[url]] the agent reads.
type queueSet struct {
	Items *[]struct {
		Task *struct {
			Class string `json:"_class"`
			URL   string `json:"url"`
		} `json:"task"`
	} `json:"items"`
}

// ParseQueue reads the answer of GET /queue/api/json?tree=items[id,task[url]] and
// returns the runs whose node block waits in the queue, by buildKey of the
// PlaceholderTask's url (which is the run's, relative to the root). Anything that is
// not a queue is an error.
func ParseQueue(body []byte) (map[string]bool, error) {
	var q queueSet
	if err := decodeStrict(body, &q); err != nil {
		return nil, fmt.Errorf("parse queue: %w", err)
	}
	if q.Items == nil {
		return nil, errors.New("parse queue: no item list in the answer")
	}
	waiting := map[string]bool{}
	for _, it := range *q.Items {
		if it.Task != nil && it.Task.Class == classPlaceholderTask && it.Task.URL != "" {
			waiting[buildKey(it.Task.URL)] = true
		}
	}
	return waiting, nil
}

// ParseBuildURL splits a build's URL, absolute (http://ci/job/f/job/app/12/) or
// relative to the root (job/f/job/app/12/), into its path from the first job/ on
// (escaped, ending with /), the job's full name (f/app, names unescaped once, as
// Jenkins escapes them) and the build number. A matrix configuration's segment
// (job/m/os=linux/3/) is part of the job's name.
func ParseBuildURL(raw string) (rel, job string, number int, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", 0, fmt.Errorf("build URL %q: %w", raw, err)
	}
	p := u.EscapedPath()
	switch i := strings.Index(p, "/job/"); {
	case strings.HasPrefix(p, "job/"):
	case i >= 0:
		p = p[i+1:]
	default:
		return "", "", 0, fmt.Errorf("build URL %q: no /job/ in its path: want JENKINS/job/NAME/NUMBER/", raw)
	}
	segs := strings.Split(strings.Trim(p, "/"), "/")
	var names []string
	i := 0
	for ; i+1 < len(segs) && segs[i] == "job"; i += 2 {
		names = append(names, segs[i+1])
	}
	rest := segs[i:]
	if len(rest) == 0 || len(rest) > 2 {
		return "", "", 0, fmt.Errorf("build URL %q: want JENKINS/job/NAME/NUMBER/", raw)
	}
	number, err = strconv.Atoi(rest[len(rest)-1])
	if err != nil || number <= 0 {
		return "", "", 0, fmt.Errorf("build URL %q: %q is no build number", raw, rest[len(rest)-1])
	}
	names = append(names, rest[:len(rest)-1]...)
	for k, n := range names {
		if names[k], err = url.PathUnescape(n); err != nil || names[k] == "" {
			return "", "", 0, fmt.Errorf("build URL %q: bad job name %q", raw, n)
		}
	}
	return strings.Join(segs, "/") + "/", strings.Join(names, "/"), number, nil
}

// buildKey is what tells two URLs of one build the same: the path from job/ on, or
// the URL itself when it is no build URL.
func buildKey(raw string) string {
	if rel, _, _, err := ParseBuildURL(raw); err == nil {
		return rel
	}
	return raw
}

// jobPath is the path of a job by its full name: /job/A/job/B/.
func jobPath(fullName string) (string, error) {
	var b strings.Builder
	for _, seg := range strings.Split(fullName, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("job %q: want a full name like deploy or folder/deploy", fullName)
		}
		b.WriteString("/job/")
		b.WriteString(url.PathEscape(seg))
	}
	return b.String() + "/", nil
}

// buildActions is the answer of BUILD/api/json?tree=actions[parameters[...]].
type buildActions struct {
	Actions *[]*struct {
		Parameters []struct {
			Class   string          `json:"_class"`
			Name    string          `json:"name"`
			Value   json.RawMessage `json:"value"`
			JobName *string         `json:"jobName"`
			Number  *string         `json:"number"`
		} `json:"parameters"`
	} `json:"actions"`
}

// parseBuildParameters reads the parameters of a build's ParametersAction.
func parseBuildParameters(body []byte) (map[string]string, error) {
	var b buildActions
	if err := decodeStrict(body, &b); err != nil {
		return nil, fmt.Errorf("parse build: %w", err)
	}
	if b.Actions == nil {
		return nil, errors.New("parse build: no actions in the answer")
	}
	params := map[string]string{}
	for _, a := range *b.Actions {
		if a == nil {
			continue
		}
		for _, p := range a.Parameters {
			if p.Name == "" {
				return nil, errors.New("parse build: a parameter without a name")
			}
			v, ok, err := paramValue(p.Value)
			if err != nil {
				return nil, fmt.Errorf("parse build: parameter %s (%s): %w", p.Name, p.Class, err)
			}
			switch {
			case ok:
				params[p.Name] = v
			case p.JobName != nil && p.Number != nil:
				params[p.Name] = *p.JobName + "#" + *p.Number
			}
		}
	}
	return params, nil
}

// paramValue turns a parameter's exported value into what buildWithParameters
// accepts. ok is false when there is none (not exported, or null).
func paramValue(raw json.RawMessage) (string, bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", false, nil
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return "", false, err
	}
	switch v := v.(type) {
	case string:
		return v, true, nil
	case bool:
		return strconv.FormatBool(v), true, nil
	case json.Number:
		return v.String(), true, nil
	}
	return "", false, errors.New("its value is no string, boolean or number, and cannot be passed to buildWithParameters")
}

// jobInfo is the answer of JOB/api/json?tree=buildable,property[parameterDefinitions[name]].
type jobInfo struct {
	Buildable *bool `json:"buildable"`
	Property  []*struct {
		ParameterDefinitions []struct {
			Name string `json:"name"`
		} `json:"parameterDefinitions"`
	} `json:"property"`
}

// parseJob reads whether a job can be built and the names of its parameters.
func parseJob(body []byte) (buildable bool, params []string, err error) {
	var j jobInfo
	if err := decodeStrict(body, &j); err != nil {
		return false, nil, fmt.Errorf("parse job: %w", err)
	}
	if j.Buildable == nil {
		return false, nil, errors.New("parse job: no buildable field: this item is no job that can be built (a folder?)")
	}
	for _, p := range j.Property {
		if p == nil {
			continue
		}
		for _, d := range p.ParameterDefinitions {
			params = append(params, d.Name)
		}
	}
	return *j.Buildable, params, nil
}

// overview is the part of GET /api/json that the agent reads.
type overview struct {
	QuietingDown    *bool   `json:"quietingDown"`
	QuietDownReason *string `json:"quietDownReason"` // null when not quieting down
	Mode            string  `json:"mode"`
	NumExecutors    int     `json:"numExecutors"`
	UseCrumbs       bool    `json:"useCrumbs"`
}

// parseStatus reads GET /api/json; quietingDown must be there, since the agent
// decides on it.
func parseStatus(body []byte) (overview, error) {
	var s overview
	if err := decodeStrict(body, &s); err != nil {
		return overview{}, fmt.Errorf("parse api/json: %w", err)
	}
	if s.QuietingDown == nil {
		return overview{}, errors.New("parse api/json: no quietingDown field in the answer")
	}
	return s, nil
}

// crumb is the answer of GET /crumbIssuer/api/json.
type crumb struct {
	Crumb             string `json:"crumb"`
	CrumbRequestField string `json:"crumbRequestField"`
}

func parseCrumb(body []byte) (crumb, error) {
	var c crumb
	if err := decodeStrict(body, &c); err != nil {
		return crumb{}, fmt.Errorf("parse crumb: %w", err)
	}
	if c.Crumb == "" || c.CrumbRequestField == "" {
		return crumb{}, errors.New("parse crumb: crumb or crumbRequestField missing")
	}
	return c, nil
}

// whoAmI is the answer of GET /whoAmI/api/json.
type whoAmI struct {
	Name      *string `json:"name"`
	Anonymous bool    `json:"anonymous"`
}

func parseWhoAmI(body []byte) (whoAmI, error) {
	var w whoAmI
	if err := decodeStrict(body, &w); err != nil {
		return whoAmI{}, fmt.Errorf("parse whoAmI: %w", err)
	}
	if w.Name == nil {
		return whoAmI{}, errors.New("parse whoAmI: no name in the answer")
	}
	return w, nil
}

// decodeStrict decodes exactly one JSON object. Unknown fields are fine (Jenkins adds
// _class everywhere and plugins add more), but a bare null, an array, a scalar or
// trailing data are not an answer from Jenkins.
func decodeStrict(body []byte, v any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return errors.New("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}
