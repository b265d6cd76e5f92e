package jenkins

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// ErrNoAnswer marks a call that got no HTTP answer at all: the connection was refused
// or reset, the name did not resolve, or the context ended before Jenkins answered.
// A Jenkins that answers, even 503, is not silent.
var ErrNoAnswer = errors.New("jenkins gave no answer")

// errNotFound marks a 404 answer.
var errNotFound = errors.New("jenkins answered 404 Not Found")

// statusTree is what the agent reads of GET /api/json.
const statusTree = "quietingDown,quietDownReason,mode,numExecutors,useCrumbs"

// Ready asks GET /login, which Jenkins serves to anyone once it has loaded, without
// credentials.
//
//   - 200 with an X-Jenkins header: (true, nil); Version then returns the header.
//   - 503: (false, nil). Jenkins is loading or restarting; a large JENKINS_HOME on a
//     throttled EFS answers 503 for minutes, and that is loading, not dead.
//   - no HTTP answer (refused, reset, timeout, context ended): (false, err) with err
//     wrapping ErrNoAnswer and the transport's error (context.DeadlineExceeded...).
//   - any other answer: (false, err) naming the status; the URL does not lead to a
//     Jenkins controller (404, 200 without X-Jenkins) or it failed to start (500).
//
// It blocks for one request, bounded by ctx. It changes nothing and may be repeated.
func (c *Client) Ready(ctx context.Context) (bool, error) {
	resp, err := c.do(ctx, http.MethodGet, "/login", nil, authNone, nil)
	if err != nil {
		return false, fmt.Errorf("jenkins ready: GET /login: %w: %w", ErrNoAnswer, err)
	}
	discardBody(resp)
	switch {
	case resp.StatusCode == http.StatusServiceUnavailable:
		return false, nil
	case resp.StatusCode == http.StatusOK && resp.Header.Get("X-Jenkins") != "":
		c.mu.Lock()
		c.version = resp.Header.Get("X-Jenkins")
		c.mu.Unlock()
		return true, nil
	case resp.StatusCode == http.StatusOK:
		return false, fmt.Errorf("jenkins ready: GET /login answered 200 without an X-Jenkins header: jenkins.url %s does not point at a Jenkins controller", c.base)
	case resp.StatusCode == http.StatusNotFound:
		return false, fmt.Errorf("jenkins ready: GET /login answered 404: jenkins.url %s does not point at a Jenkins controller (check host, port and any --prefix path)", c.base)
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return false, fmt.Errorf("jenkins ready: GET /login answered %s to %s: a security realm that redirects /login is not supported; point jenkins.url at the controller itself", resp.Status, resp.Header.Get("Location"))
	default:
		return false, fmt.Errorf("jenkins ready: GET /login answered %s: see the controller's log (docker logs) and check that jenkins.url %s points at it", resp.Status, c.base)
	}
}

// QuietingDown reads quietingDown from GET /api/json: true when Jenkins is in
// quiet-down, e.g. left there by an earlier plan or a drill. It blocks for one
// request, bounded by ctx, changes nothing and may be repeated. An error (no answer,
// 401/403, 5xx, an answer without quietingDown) means unknown.
func (c *Client) QuietingDown(ctx context.Context) (bool, error) {
	body, err := c.getJSON(ctx, "/api/json", url.Values{"tree": {"quietingDown"}})
	if err != nil {
		return false, fmt.Errorf("quieting down: %w", err)
	}
	st, err := parseStatus(body)
	if err != nil {
		return false, fmt.Errorf("quieting down: %w", err)
	}
	return *st.QuietingDown, nil
}
