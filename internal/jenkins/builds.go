package jenkins

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// Build is one running build (status.Build): its URL, job, number, whether it is a
// Pipeline (saved at shutdown and resumed on the next start of the same JENKINS_HOME)
// and whether it is Parked (a Pipeline whose node block waits in the queue while Jenkins
// quiets down: it cannot finish before the quiet-down ends). URL is "" for a busy
// executor whose build the agent's user may not read; such a build still counts.
type Build = status.Build

// computerTree asks for exactly the executors and what they run; without it the
// executors come back as empty objects and only busyExecutors, which ignores
// Pipeline runs, would tell anything. _class comes with every object.
const computerTree = "computer[displayName,executors[idle,currentExecutable[url]],oneOffExecutors[idle,currentExecutable[url]]]"

// queueTree asks for the queue items' tasks: a Pipeline's node block waits there as
// a PlaceholderTask whose url is its run's.
const queueTree = "items[id,task[url]]"

// paramsTree asks for a build's parameter values; a run parameter exports its job
// and number instead of a value.
const paramsTree = "actions[parameters[name,value,jobName,number]]"

// RunningBuilds lists every build on a regular or one-off (flyweight) executor of
// every computer, once each, in the order Jenkins lists them: GET
// /computer/api/json. When a Pipeline runs it also reads GET /queue/api/json, and
// when a Pipeline's node block waits there, GET /api/json: in quiet-down such a run
// is Parked.
//
// It blocks for up to three requests, bounded by ctx; it changes nothing and may be
// repeated. An error (no answer, 401/403, 5xx, an answer that is not what was asked
// for) means the builds are unknown, never that there are none.
func (c *Client) RunningBuilds(ctx context.Context) ([]Build, error) {
	body, err := c.getJSON(ctx, "/computer/api/json", url.Values{"tree": {computerTree}})
	if err != nil {
		return nil, fmt.Errorf("running builds: %w", err)
	}
	builds, err := ParseComputers(body)
	if err != nil {
		return nil, fmt.Errorf("running builds: %w", err)
	}
	if !slices.ContainsFunc(builds, func(b Build) bool { return b.Pipeline && b.URL != "" }) {
		return builds, nil
	}
	body, err = c.getJSON(ctx, "/queue/api/json", url.Values{"tree": {queueTree}})
	if err != nil {
		return nil, fmt.Errorf("running builds: queue: %w", err)
	}
	waiting, err := ParseQueue(body)
	if err != nil {
		return nil, fmt.Errorf("running builds: %w", err)
	}
	var parked []int
	for i, b := range builds {
		if b.Pipeline && b.URL != "" && waiting[buildKey(b.URL)] {
			parked = append(parked, i)
		}
	}
	if len(parked) == 0 {
		return builds, nil
	}
	// Outside quiet-down a node block waits for a free executor, and gets one.
	quieting, err := c.QuietingDown(ctx)
	if err != nil {
		return nil, fmt.Errorf("running builds: %w", err)
	}
	if quieting {
		for _, i := range parked {
			builds[i].Parked = true
		}
	}
	return builds, nil
}

// BuildParameters returns the parameters of the build at buildURL (a Build.URL; only
// its path from job/ on counts, so a root URL that differs from jenkins.url is fine):
// GET BUILD/api/json?tree=actions[parameters[name,value,jobName,number]]. Strings and
// booleans ("true", "false") come as Jenkins shows them, a run parameter as
// "JOB#NUMBER". A parameter whose value Jenkins does not export (password, file) is
// left out: a build queued again with the rest gets the job's default for it. A build
// without parameters gives an empty map.
//
// It blocks for one request, bounded by ctx; it changes nothing and may be repeated.
// Errors: a URL that is not a build's; the build is gone (404: deleted or discarded);
// no answer, 401/403, 5xx, or an answer that is not a build.
func (c *Client) BuildParameters(ctx context.Context, buildURL string) (map[string]string, error) {
	rel, _, _, err := ParseBuildURL(buildURL)
	if err != nil {
		return nil, fmt.Errorf("build parameters: %w", err)
	}
	body, err := c.getJSON(ctx, "/"+rel+"api/json", url.Values{"tree": {paramsTree}})
	if errors.Is(err, errNotFound) {
		return nil, fmt.Errorf("build parameters: build %s not found: deleted, or discarded by the job's build discarder", buildURL)
	}
	if err != nil {
		return nil, fmt.Errorf("build parameters: %w", err)
	}
	params, err := parseBuildParameters(body)
	if err != nil {
		return nil, fmt.Errorf("build parameters of %s: %w", buildURL, err)
	}
	return params, nil
}
