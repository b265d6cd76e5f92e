package jenkins

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// jobTree asks whether a job can be built and for the names of its parameters.
const jobTree = "buildable,property[parameterDefinitions[name]]"

// Requeue queues a build of job (a Build.Job: full name, folders separated by /)
// again, with params (from BuildParameters), the way Jenkins' own endpoints expect
// it: it reads GET JOB/api/json?tree=buildable,property[parameterDefinitions[name]],
// then POSTs JOB/buildWithParameters with the parameters the job defines (missing
// ones take the job's default; ones it no longer defines are dropped and logged), or
// JOB/build for a job without parameters, both with delay=0sec.
//
// Jenkins records the cause as Cause$UserIdCause: the build page shows "Started by
// user <jenkins.user>". Core honours a cause text only with the job's remote trigger
// token, which the agent does not use, so cause goes to the agent's log with the
// queue item, not to Jenkins.
//
// It blocks for two requests (three with a crumb), bounded by ctx. It is idempotent
// only while the queued item waits: Jenkins folds an identical request (same job, same
// parameters) into the waiting item; once that build started, another call queues
// another build. Errors: a bad job name; the job is gone (404) or disabled; the
// user lacks Job/Build (403 naming it); no answer, 401, 5xx; Jenkins did not queue it.
func (c *Client) Requeue(ctx context.Context, job string, params map[string]string, cause string) error {
	jp, err := jobPath(job)
	if err != nil {
		return fmt.Errorf("requeue: %w", err)
	}
	body, err := c.getJSON(ctx, jp+"api/json", url.Values{"tree": {jobTree}})
	if errors.Is(err, errNotFound) {
		return fmt.Errorf("requeue %s: no such job on this controller (renamed or deleted, or no Job/Read for user %s): start it by hand if it is still wanted", job, c.user)
	}
	if err != nil {
		return fmt.Errorf("requeue %s: %w", job, err)
	}
	buildable, defined, err := parseJob(body)
	if err != nil {
		return fmt.Errorf("requeue %s: %w", job, err)
	}
	if !buildable {
		return fmt.Errorf("requeue %s: the job is disabled: enable it and start it by hand if it is still wanted", job)
	}

	form := url.Values{}
	path := jp + "build"
	if len(defined) > 0 {
		path = jp + "buildWithParameters"
		for _, name := range defined {
			if v, ok := params[name]; ok {
				form.Set(name, v)
			}
		}
	}
	if !slices.Contains(defined, "delay") {
		form.Set("delay", "0sec")
	}
	var dropped []string
	for _, name := range slices.Sorted(maps.Keys(params)) {
		if !slices.Contains(defined, name) {
			dropped = append(dropped, name)
		}
	}
	if len(dropped) > 0 {
		c.log.Warn("requeue: the job no longer defines these parameters; they are dropped", "job", job, "parameters", strings.Join(dropped, ","))
	}

	status, location, err := c.postExpect(ctx, path, form, http.StatusCreated, http.StatusSeeOther)
	if err != nil {
		return fmt.Errorf("requeue %s: %w", job, err)
	}
	c.log.Info("build queued again", "job", job, "queue_item", location, "cause", cause,
		"merged_into_waiting_item", status == http.StatusSeeOther)
	return nil
}

// postExpect sends a form POST like post does (the API token, else a crumb and its
// session, one retry on a refused crumb) and accepts only the given statuses, which
// it returns with the Location header. Any other 2xx/3xx means Jenkins did not do
// what was asked (e.g. a 302 to the job when the queue refused the build).
func (c *Client) postExpect(ctx context.Context, path string, form url.Values, want ...int) (int, string, error) {
	mode := c.readAuth()
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		hdr := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
		if mode == authPassword {
			cr, ok, cerr := c.crumb(ctx)
			if cerr != nil {
				return 0, "", cerr
			}
			if ok {
				hdr.Set(cr.CrumbRequestField, cr.Crumb)
			}
		}
		resp, derr := c.do(ctx, http.MethodPost, path, strings.NewReader(form.Encode()), mode, hdr)
		if derr != nil {
			return 0, "", derr
		}
		status, location := resp.StatusCode, resp.Header.Get("Location")
		switch {
		case slices.Contains(want, status):
			discardBody(resp)
			return status, location, nil
		case status < 400:
			discardBody(resp)
			return 0, "", fmt.Errorf("POST %s: jenkins answered %s (to %s): it did not queue the build; see the controller's log", path, resp.Status, location)
		}
		err = c.statusError(resp, http.MethodPost, path, mode)
		discardBody(resp)
		if !errors.Is(err, errCrumb) {
			return 0, "", err
		}
		mode = authPassword
	}
	return 0, "", err
}
