package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// Fakes of the services the agent talks to: Jenkins, the AWS target groups and Auto
// Scaling, systemd.

// fakeJenkinsURL is the fake controller's root URL.
const fakeJenkinsURL = "http://127.0.0.1:8080/"

// errFakeNoAnswer marks a call the fake Jenkins gave no answer to.
var errFakeNoAnswer = errors.New("jenkins gave no answer")

// fakeJob is a job of the fake controller.
type fakeJob struct {
	pipeline bool
	node     bool // a Pipeline whose node block asks for a regular executor just after it starts
	disabled bool
	params   []fakeParam
}

// fakeParam is a parameter definition: a string, a boolean or a password (never
// exported).
type fakeParam struct {
	name, def         string
	boolean, password bool
}

// fakeFault makes the controller's answers to a method fail.
type fakeFault struct {
	method string // "Ready", "RunningBuilds", "QuietingDown"...; "" for every method
	kind   string // "500", "401", "garbage" (200 with an HTML page) or "hang" (never answered)
	left   int    // how many more calls fail; below 0, every one
}

type queuedBuild struct {
	job    string
	params map[string]string
}

// fakeJenkins is a Jenkins controller: its jobs, the builds on its executors, its queue
// (which waits in quiet-down) and the builds its home keeps.
type fakeJenkins struct {
	j            *journal
	mu           sync.Mutex
	jobs         map[string]fakeJob // nil: every job exists, a freestyle job that takes any parameter
	builds       []status.Build     // running builds
	nodeWait     map[string]bool    // running Pipelines (by URL) whose node block waits for an executor
	until        time.Time          // running builds finish then
	loadingUntil time.Time          // Ready answers 503 (false) and the rest fails until then
	silent       bool               // no answer at all (stopped, or the port is closed)
	quieting     bool
	banner       string
	viewer       bool // the user lacks Overall/Manage
	faults       []fakeFault
	queue        []queuedBuild
	params       map[string]map[string]string // parameters of the builds the home keeps, by URL
	next         map[string]int               // the last build number of each job
	saved        []status.Build               // Pipelines saved by a stop, resumed by the successor
	requeued     []string                     // "job cause" of every Requeue accepted
}

func (f *fakeJenkins) set(fn func(*fakeJenkins)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// buildURL is the URL of a build on the fake controller.
func buildURL(job string, n int) string {
	return fakeJenkinsURL + "job/" + job + "/" + strconv.Itoa(n) + "/"
}

// build is a running build on the fake Jenkins.
func build(job string, n int, pipeline bool) status.Build {
	return status.Build{URL: buildURL(job, n), Job: job, Number: n, Pipeline: pipeline}
}

// answer says how the controller answers a call of method: nil when it serves it, or
// the error of a stopped, faulty or loading controller. f.mu is not held.
func (f *fakeJenkins) answer(ctx context.Context, method string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w: %w", method, errFakeNoAnswer, err)
	}
	f.mu.Lock()
	kind := ""
	for i := range f.faults {
		if ft := &f.faults[i]; ft.left != 0 && (ft.method == "" || ft.method == method) {
			kind = ft.kind
			if ft.left > 0 {
				ft.left--
			}
			break
		}
	}
	silent, loading := f.silent, time.Now().Before(f.loadingUntil)
	f.mu.Unlock()
	switch {
	case silent:
		return fmt.Errorf("%s: %w: dial tcp 127.0.0.1:8080: connect: connection refused", method, errFakeNoAnswer)
	case kind == "hang":
		<-ctx.Done()
		return fmt.Errorf("%s: %w: %w", method, errFakeNoAnswer, ctx.Err())
	case kind == "500":
		return fmt.Errorf("%s: Jenkins answered 500 Internal Server Error", method)
	case kind == "401":
		return fmt.Errorf("%s: Jenkins answered 401 Unauthorized: check jenkins.user and its API token", method)
	case kind == "garbage":
		return fmt.Errorf("%s: Jenkins answered 200 with an HTML page, not JSON", method)
	case kind != "":
		return fmt.Errorf("%s: fault %q", method, kind)
	case loading && method != "Ready":
		return fmt.Errorf("%s: Jenkins answered 503 Service Unavailable: it is loading", method)
	}
	return nil
}

// advanceLocked is the controller's own progress up to now: builds whose time is up
// finish, and Pipelines that asked for a node get one unless it is in quiet-down, when
// they stay parked. Every build it runs is kept in its home. f.mu is held.
func (f *fakeJenkins) advanceLocked() {
	if f.params == nil {
		f.params = map[string]map[string]string{}
	}
	for _, b := range f.builds {
		if _, ok := f.params[b.URL]; !ok {
			f.params[b.URL] = map[string]string{}
		}
	}
	if !f.until.IsZero() && time.Now().After(f.until) {
		f.builds = nil
	}
	for i := range f.builds {
		if b := &f.builds[i]; f.nodeWait[b.URL] {
			b.Parked = f.quieting
			if !f.quieting {
				delete(f.nodeWait, b.URL)
			}
		}
	}
}

// resolveLocked gives the parameters a build of job gets from params: each definition
// its value or its default (passwords are not exported); a job of a world without a
// job table takes params as they are. f.mu is held.
func (f *fakeJenkins) resolveLocked(job string, params map[string]string) map[string]string {
	out := map[string]string{}
	if f.jobs == nil {
		maps.Copy(out, params)
		return out
	}
	for _, d := range f.jobs[job].params {
		if d.password {
			continue
		}
		v, ok := params[d.name]
		if !ok {
			v = d.def
		}
		if d.boolean {
			b, _ := strconv.ParseBool(v)
			v = strconv.FormatBool(b)
		}
		out[d.name] = v
	}
	return out
}

// startLocked starts a build of job with its resolved parameters. f.mu is held.
func (f *fakeJenkins) startLocked(job string, params map[string]string) {
	if f.next == nil {
		f.next = map[string]int{}
	}
	n := f.next[job]
	for _, b := range f.builds {
		if b.Job == job {
			n = max(n, b.Number)
		}
	}
	n++
	f.next[job] = n
	j := f.jobs[job]
	b := status.Build{URL: buildURL(job, n), Job: job, Number: n, Pipeline: j.pipeline}
	if j.node {
		if f.nodeWait == nil {
			f.nodeWait = map[string]bool{}
		}
		f.nodeWait[b.URL] = true
	}
	f.builds = append(f.builds, b)
	if f.params == nil {
		f.params = map[string]map[string]string{}
	}
	f.params[b.URL] = params
}

func (f *fakeJenkins) Ready(ctx context.Context) (bool, error) {
	if err := f.answer(ctx, "Ready"); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return !time.Now().Before(f.loadingUntil), nil
}

func (f *fakeJenkins) QuietDown(ctx context.Context, reason string) error {
	f.j.add("quiet-down")
	if err := f.answer(ctx, "QuietDown"); err != nil {
		return fmt.Errorf("quiet down: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.viewer {
		return errors.New("quiet down: Jenkins answered 403: the agent's user lacks Overall/Manage")
	}
	f.quieting, f.banner = true, reason
	return nil
}

func (f *fakeJenkins) CancelQuietDown(ctx context.Context) error {
	f.j.add("cancel-quiet-down")
	if err := f.answer(ctx, "CancelQuietDown"); err != nil {
		return fmt.Errorf("cancel quiet-down: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.viewer {
		return errors.New("cancel quiet-down: Jenkins answered 403: the agent's user lacks Overall/Manage")
	}
	f.quieting, f.banner = false, ""
	// Out of quiet-down, parked Pipelines get their node and the queue starts.
	for i := range f.builds {
		f.builds[i].Parked = false
	}
	f.advanceLocked()
	for _, q := range f.queue {
		f.startLocked(q.job, q.params)
	}
	f.queue = nil
	return nil
}

func (f *fakeJenkins) QuietingDown(ctx context.Context) (bool, error) {
	if err := f.answer(ctx, "QuietingDown"); err != nil {
		return false, fmt.Errorf("quieting down: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.quieting, nil
}

func (f *fakeJenkins) RunningBuilds(ctx context.Context) ([]status.Build, error) {
	if err := f.answer(ctx, "RunningBuilds"); err != nil {
		return nil, fmt.Errorf("running builds: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advanceLocked()
	return slices.Clone(f.builds), nil
}

func (f *fakeJenkins) BuildParameters(ctx context.Context, url string) (map[string]string, error) {
	if err := f.answer(ctx, "BuildParameters"); err != nil {
		return nil, fmt.Errorf("build parameters: %w", err)
	}
	_, job, n, err := jenkins.ParseBuildURL(url)
	if err != nil {
		return nil, fmt.Errorf("build parameters: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advanceLocked()
	p, ok := f.params[buildURL(job, n)]
	if !ok {
		return nil, fmt.Errorf("build parameters: build %s not found: deleted, or discarded by the job's build discarder", url)
	}
	out := map[string]string{}
	maps.Copy(out, p)
	return out, nil
}

func (f *fakeJenkins) Requeue(ctx context.Context, job string, params map[string]string, cause string) error {
	if err := f.answer(ctx, "Requeue"); err != nil {
		return fmt.Errorf("requeue %s: %w", job, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	j, known := f.jobs[job]
	switch {
	case job == "":
		return errors.New("requeue: no job named")
	case f.jobs != nil && !known:
		return fmt.Errorf("requeue %s: Jenkins answered 404: no such job (deleted or renamed?)", job)
	case j.disabled:
		return fmt.Errorf("requeue %s: Jenkins answered 409: the job is disabled", job)
	}
	f.advanceLocked()
	values := f.resolveLocked(job, params)
	f.requeued = append(f.requeued, job+" "+cause)
	for _, q := range f.queue {
		if q.job == job && maps.Equal(q.params, values) {
			return nil // folded into the item that waits
		}
	}
	if f.quieting {
		f.queue = append(f.queue, queuedBuild{job, values})
		return nil
	}
	f.startLocked(job, values)
	return nil
}

// stop is `docker stop`: the controller stops answering, aborts its other builds and
// saves its Pipelines into its home.
func (f *fakeJenkins) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advanceLocked()
	f.silent = true
	for _, b := range f.builds {
		if b.Pipeline {
			b.Parked = false
			f.saved = append(f.saved, b)
		}
	}
	f.builds = nil
}

// successor is the controller the next instance starts on the same home: the saved
// Pipelines resume, the builds the home keeps stay readable.
func (f *fakeJenkins) successor() *fakeJenkins {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := &fakeJenkins{
		j: &journal{}, jobs: f.jobs, viewer: f.viewer,
		params: maps.Clone(f.params), next: maps.Clone(f.next), builds: slices.Clone(f.saved),
	}
	for _, b := range next.builds {
		if f.jobs[b.Job].node {
			if next.nodeWait == nil {
				next.nodeWait = map[string]bool{}
			}
			next.nodeWait[b.URL] = true
		}
	}
	return next
}
