package contract

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins"
)

// Jenkins is the method set the agent uses on the Jenkins controller it runs: to wait
// until it answers, to put it in quiet-down and take it out, to watch the builds that
// still run while it drains, and to queue again on the successor the builds that a
// stop aborts. Every method may be called concurrently with the others and takes a
// context that bounds it: none blocks past ctx (a controller that accepts and never
// answers included), and each returns an error when ctx ends first.
type Jenkins interface {
	// Ready asks the controller whether it has loaded. It blocks for one request.
	// (true, nil): it answers. (false, nil): it answered that it is loading or
	// restarting (503); a large JENKINS_HOME on a throttled EFS answers so for minutes,
	// and that is no failure. (false, err): no answer at all (refused, reset, timed
	// out: err wraps the implementation's no-answer error and the context's error), or
	// an answer no loading Jenkins gives (err names it). It changes nothing and may be
	// repeated; the agent's ready timeout bounds silence, not loading.
	Ready(ctx context.Context) (bool, error)

	// QuietDown puts the controller in quiet-down with reason as the banner every user
	// sees: no new build starts, running ones go on, and it confirms the state before
	// returning. It blocks for two requests. Idempotent: quieting down a quiet
	// controller succeeds and keeps it quiet. Errors: no answer, the user lacks
	// Overall/Manage (named), or the state did not change.
	QuietDown(ctx context.Context, reason string) error

	// CancelQuietDown takes the controller out of quiet-down (after a drill, or when an
	// adopted controller was left quiet by an earlier plan) and confirms it. It blocks
	// for two requests. Idempotent: cancelling on a controller that is not quiet
	// succeeds. Errors as QuietDown's.
	CancelQuietDown(ctx context.Context) error

	// QuietingDown tells whether the controller is in quiet-down. It blocks for one
	// request, changes nothing and may be repeated. An error means unknown.
	QuietingDown(ctx context.Context) (bool, error)

	// RunningBuilds lists every build that occupies an executor (regular or one-off),
	// once each: its URL, job, number, whether it is a Pipeline (saved at the stop and
	// resumed on the successor) and whether it is parked (a Pipeline whose node block
	// waits in the queue during quiet-down: it cannot finish before the end of
	// quiet-down, so a drain does not wait for it). A build the user may not read
	// still counts, without URL. It blocks for up to three requests, changes nothing
	// and may be repeated. An error (no answer, 401, 5xx, an answer that is not the
	// one asked for) means the builds are unknown, never that there are none; the
	// result is then nil.
	RunningBuilds(ctx context.Context) ([]jenkins.Build, error)

	// BuildParameters returns the parameter values of the build at buildURL (a
	// Build.URL; running or past, on this controller or its successor on the same
	// home), by name, as buildWithParameters takes them back; a value the controller
	// does not export (password, file) is left out. No parameters: an empty map. It
	// blocks for one request, changes nothing and may be repeated. Errors: the URL is
	// no build's, the build is gone, no answer, 401, 5xx, garbage.
	BuildParameters(ctx context.Context, buildURL string) (map[string]string, error)

	// Requeue queues a build of job (a Build.Job) with params (parameters the job
	// defines; the others take its default, unknown ones are dropped); cause says why,
	// for the agent's log. It returns once the controller accepted the queue item; in
	// quiet-down the item waits for its end. It blocks for two requests. Idempotent
	// while the item waits (an identical request folds into it); once the build
	// started, another call queues another build. Errors: the job is gone or
	// disabled, the user lacks Job/Build (named), no answer, 401, 5xx.
	Requeue(ctx context.Context, job string, params map[string]string, cause string) error
}

// The jobs every JenkinsWorld has. Their builds run until the controller stops.
const (
	// JobFreestyle has no parameters; its builds take a regular executor and are
	// aborted by a stop.
	JobFreestyle = "freestyle"
	// JobPipeline is a Pipeline without node block: only a one-off executor.
	JobPipeline = "pipeline"
	// JobNode is a Pipeline that enters a node block at once: it then needs a regular
	// executor, and in quiet-down it waits for one in the queue (parked).
	JobNode = "nodes"
	// JobParams is a freestyle job with the parameters TARGET (string, default
	// "staging"), DRY_RUN (boolean, default "true") and SECRET (password).
	JobParams = "deploy"
	// JobDisabled is disabled: build requests are refused.
	JobDisabled = "disabled"
)

// JenkinsBuild is a build a JenkinsSetup starts.
type JenkinsBuild struct {
	Job    string
	Params map[string]string
}

// JenkinsFault makes some answers of the controller fail.
type JenkinsFault struct {
	// Method names the method whose requests fail: "Ready", "RunningBuilds" (the
	// executors), "QuietingDown", or "" for every request.
	Method string
	// Kind is how: "500", "401", "garbage" (200 with an HTML page) or "hang" (the
	// request is accepted and never answered).
	Kind string
	// Times is how many requests fail; 0 is every one.
	Times int
}

// JenkinsSetup is the world one case of the suite needs.
type JenkinsSetup struct {
	// Loading makes the controller answer 503 for the whole case, as while it loads
	// a large home.
	Loading bool
	// Builds start before the case, in order, then QuietingDown applies.
	Builds []JenkinsBuild
	// QuietingDown leaves the controller in quiet-down, as an earlier plan may.
	QuietingDown bool
	// Viewer makes the implementation authenticate as a user with Overall/Read and
	// Job/Build but not Overall/Manage.
	Viewer bool
	// Faults are in force from the start.
	Faults []JenkinsFault
}

// JenkinsWorld is the controller behind an implementation.
type JenkinsWorld interface {
	// Stop stops the controller as `docker stop` does (SIGTERM): it stops answering,
	// aborts freestyle builds and saves Pipelines into its home.
	Stop(ctx context.Context) error
	// Successor starts a controller on the same home, as the next instance does, and
	// returns an implementation talking to it.
	Successor(t *testing.T) Jenkins
}

// JenkinsHarness makes implementations for the suite.
type JenkinsHarness struct {
	// New returns a fresh implementation in a fresh world for one case.
	New func(t *testing.T, s JenkinsSetup) (Jenkins, JenkinsWorld)
	// NoAnswer is the error that Ready wraps when nothing answered.
	NoAnswer error
}

// jenkinsCallTimeout bounds the calls of a case; it only keeps a broken implementation
// from hanging the suite.
const jenkinsCallTimeout = 30 * time.Second

// TestJenkins runs the suite against the implementations h makes.
func TestJenkins(t *testing.T, h JenkinsHarness) {
	start := func(t *testing.T, s JenkinsSetup) (Jenkins, JenkinsWorld, context.Context) {
		t.Helper()
		j, w := h.New(t, s)
		ctx, cancel := context.WithTimeout(t.Context(), jenkinsCallTimeout)
		t.Cleanup(cancel)
		return j, w, ctx
	}
	short := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	// builds waits until RunningBuilds gives n builds that satisfy ok, bounded by ctx.
	builds := func(t *testing.T, ctx context.Context, j Jenkins, n int, ok func([]jenkins.Build) bool) []jenkins.Build {
		t.Helper()
		for {
			got, err := j.RunningBuilds(ctx)
			if err == nil && len(got) == n && (ok == nil || ok(got)) {
				return got
			}
			if ctx.Err() != nil {
				t.Fatalf("RunningBuilds = %+v, %v; want %d builds as expected", got, err, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	byJob := func(bs []jenkins.Build) map[string]jenkins.Build {
		m := map[string]jenkins.Build{}
		for _, b := range bs {
			m[b.Job] = b
		}
		return m
	}

	t.Run("Ready answers", func(t *testing.T) {
		j, _, ctx := start(t, JenkinsSetup{})
		if ready, err := j.Ready(ctx); !ready || err != nil {
			t.Fatalf("Ready = %v, %v; want true, nil", ready, err)
		}
	})

	t.Run("Ready while loading is no error", func(t *testing.T) {
		j, _, ctx := start(t, JenkinsSetup{Loading: true})
		for i := range 3 {
			if ready, err := j.Ready(ctx); ready || err != nil {
				t.Fatalf("Ready #%d while loading = %v, %v; want false, nil", i+1, ready, err)
			}
		}
	})

	t.Run("Ready without any answer", func(t *testing.T) {
		j, w, ctx := start(t, JenkinsSetup{})
		if err := w.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if ready, err := j.Ready(ctx); ready || !errors.Is(err, h.NoAnswer) {
			t.Fatalf("Ready of a stopped controller = %v, %v; want false and the no-answer error", ready, err)
		}
	})

	t.Run("Ready of a hung controller ends with its context", func(t *testing.T) {
		j, _, _ := start(t, JenkinsSetup{Faults: []JenkinsFault{{Kind: "hang"}}})
		ready, err := j.Ready(short(t))
		if ready || !errors.Is(err, h.NoAnswer) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Ready = %v, %v; want false, the no-answer error and the deadline", ready, err)
		}
	})

	t.Run("Ready on an answer no loading Jenkins gives", func(t *testing.T) {
		j, _, ctx := start(t, JenkinsSetup{Faults: []JenkinsFault{{Method: "Ready", Kind: "500"}}})
		ready, err := j.Ready(ctx)
		if ready || err == nil || errors.Is(err, h.NoAnswer) || !strings.Contains(err.Error(), "500") {
			t.Fatalf("Ready = %v, %v; want false and an error naming 500", ready, err)
		}
	})

	t.Run("quiet-down and its cancel are idempotent", func(t *testing.T) {
		j, _, ctx := start(t, JenkinsSetup{})
		if q, err := j.QuietingDown(ctx); q || err != nil {
			t.Fatalf("QuietingDown at start = %v, %v", q, err)
		}
		for i := range 2 {
			if err := j.QuietDown(ctx, "spot interruption of i-0abc"); err != nil {
				t.Fatalf("QuietDown #%d: %v", i+1, err)
			}
			if q, err := j.QuietingDown(ctx); !q || err != nil {
				t.Fatalf("QuietingDown after QuietDown #%d = %v, %v", i+1, q, err)
			}
		}
		for i := range 2 {
			if err := j.CancelQuietDown(ctx); err != nil {
				t.Fatalf("CancelQuietDown #%d: %v", i+1, err)
			}
			if q, err := j.QuietingDown(ctx); q || err != nil {
				t.Fatalf("QuietingDown after CancelQuietDown #%d = %v, %v", i+1, q, err)
			}
		}
	})

	t.Run("a controller left in quiet-down is taken out", func(t *testing.T) {
		j, _, ctx := start(t, JenkinsSetup{QuietingDown: true, Builds: []JenkinsBuild{{Job: JobFreestyle}}})
		if q, err := j.QuietingDown(ctx); !q || err != nil {
			t.Fatalf("QuietingDown = %v, %v; want true", q, err)
		}
		if err := j.Requeue(ctx, JobFreestyle, nil, "contract"); err != nil {
			t.Fatal(err)
		}
		builds(t, ctx, j, 1, nil) // the queued one waits
		if err := j.CancelQuietDown(ctx); err != nil {
			t.Fatal(err)
		}
		builds(t, ctx, j, 2, nil) // and starts once out of quiet-down
	})

	t.Run("quiet-down needs Manage", func(t *testing.T) {
		j, _, ctx := start(t, JenkinsSetup{Viewer: true})
		if err := j.QuietDown(ctx, "x"); err == nil || !strings.Contains(err.Error(), "Manage") {
			t.Errorf("QuietDown as a viewer = %v; want an error naming Overall/Manage", err)
		}
		if err := j.CancelQuietDown(ctx); err == nil || !strings.Contains(err.Error(), "Manage") {
			t.Errorf("CancelQuietDown as a viewer = %v; want an error naming Overall/Manage", err)
		}
		if q, err := j.QuietingDown(ctx); q || err != nil {
			t.Errorf("QuietingDown as a viewer = %v, %v; want false, nil", q, err)
		}
	})

	t.Run("QuietingDown that fails is unknown", func(t *testing.T) {
		for _, kind := range []string{"500", "401", "garbage"} {
			j, _, ctx := start(t, JenkinsSetup{Faults: []JenkinsFault{{Method: "QuietingDown", Kind: kind, Times: 1}}})
			if _, err := j.QuietingDown(ctx); err == nil {
				t.Errorf("QuietingDown with a %s answer succeeded", kind)
			}
			if q, err := j.QuietingDown(ctx); q || err != nil {
				t.Errorf("QuietingDown after the fault = %v, %v", q, err)
			}
		}
	})

	t.Run("RunningBuilds of an idle controller", func(t *testing.T) {
		j, _, ctx := start(t, JenkinsSetup{})
		if got, err := j.RunningBuilds(ctx); err != nil || len(got) != 0 {
			t.Fatalf("RunningBuilds = %+v, %v; want none", got, err)
		}
	})

	t.Run("RunningBuilds tells Pipelines from other builds", func(t *testing.T) {
		j, _, ctx := start(t, JenkinsSetup{Builds: []JenkinsBuild{{Job: JobFreestyle}, {Job: JobPipeline}, {Job: JobNode}}})
		got := byJob(builds(t, ctx, j, 3, nil))
		for job, pipeline := range map[string]bool{JobFreestyle: false, JobPipeline: true, JobNode: true} {
			b, ok := got[job]
			if !ok || b.Number != 1 || b.Pipeline != pipeline || b.Parked || !strings.Contains(b.URL, "/job/"+job+"/1/") {
				t.Errorf("%s: %+v, want #1 Pipeline=%v not parked", job, b, pipeline)
			}
		}
	})

	t.Run("a Pipeline waiting for a node in quiet-down is parked", func(t *testing.T) {
		j, _, ctx := start(t, JenkinsSetup{Builds: []JenkinsBuild{{Job: JobFreestyle}, {Job: JobPipeline}, {Job: JobNode}}, QuietingDown: true})
		got := byJob(builds(t, ctx, j, 3, func(bs []jenkins.Build) bool { return byJob(bs)[JobNode].Parked }))
		if got[JobFreestyle].Parked || got[JobPipeline].Parked || !got[JobNode].Pipeline {
			t.Errorf("builds = %+v; want only %s parked", got, JobNode)
		}
		// Out of quiet-down it gets its node: nothing is parked.
		if err := j.CancelQuietDown(ctx); err != nil {
			t.Fatal(err)
		}
		builds(t, ctx, j, 3, func(bs []jenkins.Build) bool {
			return !slices.ContainsFunc(bs, func(b jenkins.Build) bool { return b.Parked })
		})
	})

	t.Run("RunningBuilds that fails is unknown, never none", func(t *testing.T) {
		for _, kind := range []string{"500", "401", "garbage", "hang"} {
			j, _, ctx := start(t, JenkinsSetup{Builds: []JenkinsBuild{{Job: JobFreestyle}}, Faults: []JenkinsFault{{Method: "RunningBuilds", Kind: kind, Times: 1}}})
			if got, err := j.RunningBuilds(short(t)); err == nil || got != nil {
				t.Errorf("RunningBuilds with a %s answer = %+v, %v; want nil and an error", kind, got, err)
			}
			if got, err := j.RunningBuilds(ctx); err != nil || len(got) != 1 {
				t.Errorf("RunningBuilds after the %s fault = %+v, %v; want the build", kind, got, err)
			}
		}
	})

	t.Run("BuildParameters of running builds", func(t *testing.T) {
		want := map[string]string{"TARGET": "prod eu", "DRY_RUN": "false"}
		j, _, ctx := start(t, JenkinsSetup{Builds: []JenkinsBuild{{Job: JobParams, Params: want}, {Job: JobFreestyle}}})
		got := byJob(builds(t, ctx, j, 2, nil))
		params, err := j.BuildParameters(ctx, got[JobParams].URL)
		if err != nil || !maps.Equal(params, want) {
			t.Errorf("BuildParameters(%s) = %q, %v; want %q (the password left out)", got[JobParams].URL, params, err, want)
		}
		if params, err := j.BuildParameters(ctx, got[JobFreestyle].URL); err != nil || params == nil || len(params) != 0 {
			t.Errorf("BuildParameters of a build without parameters = %q, %v; want an empty map", params, err)
		}
		gone := strings.Replace(got[JobFreestyle].URL, "/1/", "/99/", 1)
		if _, err := j.BuildParameters(ctx, gone); err == nil {
			t.Errorf("BuildParameters(%s) of no build succeeded", gone)
		}
		if _, err := j.BuildParameters(ctx, "not a build"); err == nil {
			t.Error("BuildParameters of no build URL succeeded")
		}
	})

	t.Run("Requeue queues a build with its parameters", func(t *testing.T) {
		j, _, ctx := start(t, JenkinsSetup{})
		if err := j.Requeue(ctx, JobParams, map[string]string{"TARGET": "prod", "GONE": "x"}, "contract"); err != nil {
			t.Fatal(err)
		}
		if err := j.Requeue(ctx, JobFreestyle, nil, "contract"); err != nil {
			t.Fatal(err)
		}
		got := byJob(builds(t, ctx, j, 2, nil))
		params, err := j.BuildParameters(ctx, got[JobParams].URL)
		if want := map[string]string{"TARGET": "prod", "DRY_RUN": "true"}; err != nil || !maps.Equal(params, want) {
			t.Errorf("parameters of the requeued build = %q, %v; want %q (the rest by default)", params, err, want)
		}
	})

	t.Run("Requeue refuses what it cannot queue", func(t *testing.T) {
		j, _, ctx := start(t, JenkinsSetup{})
		for _, job := range []string{"no-such-job", JobDisabled, ""} {
			if err := j.Requeue(ctx, job, nil, "contract"); err == nil {
				t.Errorf("Requeue(%q) succeeded", job)
			}
		}
		if got, err := j.RunningBuilds(ctx); err != nil || len(got) != 0 {
			t.Errorf("RunningBuilds = %+v, %v; want none", got, err)
		}
	})

	t.Run("Requeue in quiet-down waits and folds identical requests", func(t *testing.T) {
		j, _, ctx := start(t, JenkinsSetup{QuietingDown: true})
		for range 2 {
			if err := j.Requeue(ctx, JobParams, map[string]string{"TARGET": "prod"}, "contract"); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := j.RunningBuilds(ctx); err != nil || len(got) != 0 {
			t.Fatalf("RunningBuilds in quiet-down = %+v, %v; want none yet", got, err)
		}
		if err := j.CancelQuietDown(ctx); err != nil {
			t.Fatal(err)
		}
		builds(t, ctx, j, 1, nil)
	})

	t.Run("the successor resumes Pipelines and runs what a stop aborted, queued again", func(t *testing.T) {
		want := map[string]string{"TARGET": "prod", "DRY_RUN": "false"}
		j, w, ctx := start(t, JenkinsSetup{Builds: []JenkinsBuild{{Job: JobParams, Params: want}, {Job: JobPipeline}}})
		before := builds(t, ctx, j, 2, nil)
		type aborted struct {
			job    string
			url    string
			params map[string]string
		}
		var toRequeue []aborted
		for _, b := range before {
			if b.Pipeline {
				continue
			}
			params, err := j.BuildParameters(ctx, b.URL)
			if err != nil {
				t.Fatal(err)
			}
			toRequeue = append(toRequeue, aborted{b.Job, b.URL, params})
		}
		if len(toRequeue) != 1 {
			t.Fatalf("builds %+v; want one that a stop aborts", before)
		}
		if err := w.Stop(ctx); err != nil {
			t.Fatal(err)
		}

		next := w.Successor(t)
		for ready := false; !ready; time.Sleep(10 * time.Millisecond) {
			var err error
			if ready, err = next.Ready(ctx); err != nil {
				t.Fatalf("successor Ready: %v", err)
			}
		}
		resumed := builds(t, ctx, next, 1, nil)
		if b := resumed[0]; b.Job != JobPipeline || b.Number != 1 || !b.Pipeline {
			t.Fatalf("successor runs %+v; want %s #1 resumed", resumed, JobPipeline)
		}
		for _, a := range toRequeue {
			// What was aborted is still there to read on the successor.
			if params, err := next.BuildParameters(ctx, a.url); err != nil || !maps.Equal(params, a.params) {
				t.Errorf("BuildParameters(%s) on the successor = %q, %v; want %q", a.url, params, err, a.params)
			}
			if err := next.Requeue(ctx, a.job, a.params, "aborted by the stop"); err != nil {
				t.Fatal(err)
			}
		}
		got := byJob(builds(t, ctx, next, 2, nil))
		b := got[JobParams]
		if b.Number != 2 {
			t.Errorf("requeued %s = %+v; want number 2", JobParams, b)
		}
		if params, err := next.BuildParameters(ctx, b.URL); err != nil || !maps.Equal(params, want) {
			t.Errorf("requeued parameters = %q, %v; want %q", params, err, want)
		}
	})
}
