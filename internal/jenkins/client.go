// Package jenkins is the agent's client of the Jenkins controller's HTTP API: it
// tells when Jenkins answers, puts it in quiet-down and takes it out, lists the builds
// that still run (regular and one-off executors, Pipelines parked by quiet-down), and
// queues again on the successor the builds a stop aborted.
package jenkins

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"time"
)

// maxBody bounds what the client reads from one answer; the JSON it asks for is small.
const maxBody = 8 << 20

// Options configure a Client.
type Options struct {
	// URL is how the agent reaches Jenkins, e.g. http://127.0.0.1:8080 (with the
	// --prefix path, if Jenkins has one).
	URL string
	// User owns the API token (or the password).
	User string
	// Token is the user's API token. Empty means no token: POSTs then fetch a crumb
	// and keep the session cookie that came with it.
	Token string
	// Password is used, without a token, for the crumb flow.
	Password string
	// HTTPClient is copied, never modified; nil means a client with a 30 s backstop
	// timeout. Redirects are never followed and cookies go to a jar of this Client.
	HTTPClient *http.Client
	// Logger gets debug lines per request; nil discards them.
	Logger *slog.Logger
	// TokenSource, when set, supplies the API token instead of Token (read from SSM
	// or Secrets Manager): it is asked before each request that carries the token,
	// and once more with refresh=true when Jenkins answers 401 to it (the token was
	// rotated), after which the request is sent again once.
	TokenSource func(ctx context.Context, refresh bool) (string, error)
}

// Client talks to one Jenkins controller. It is safe for concurrent use.
type Client struct {
	base     *url.URL
	user     string
	token    string
	password string
	http     *http.Client
	log      *slog.Logger
	source   func(ctx context.Context, refresh bool) (string, error)

	mu      sync.Mutex
	version string
}

// New checks the options and returns a Client. It does not contact Jenkins.
func New(opts Options) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(opts.URL))
	if err != nil {
		return nil, fmt.Errorf("jenkins.url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("jenkins.url %q: want http://host:port or https://host:port", opts.URL)
	}
	if u.User != nil {
		return nil, errors.New("jenkins.url: put no credentials in the URL: set jenkins.user and jenkins.api_token_file")
	}
	if (opts.Token != "" || opts.TokenSource != nil) && opts.User == "" {
		return nil, errors.New("jenkins: an API token needs its user: set jenkins.user")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""

	hc := &http.Client{Timeout: 30 * time.Second}
	if opts.HTTPClient != nil {
		copied := *opts.HTTPClient
		hc = &copied
	}
	// A 302 from quietDown must not turn into a GET of the whole dashboard.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, fmt.Errorf("jenkins: cookie jar: %w", err)
	}
	hc.Jar = jar

	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{
		base:     u,
		user:     opts.User,
		token:    opts.Token,
		password: opts.Password,
		http:     hc,
		log:      log.With("component", "jenkins"),
		source:   opts.TokenSource,
	}, nil
}

// Version is the X-Jenkins header of the last successful Ready, or "".
func (c *Client) Version() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version
}

// QuietDown puts Jenkins in quiet-down with reason as the message shown on every
// page: no new build starts, running ones go on. It then reads GET /api/json and
// fails unless Jenkins says it is quieting down. It blocks for two requests (three
// with a crumb), bounded by ctx. Calling it again is harmless. Errors: no answer,
// rejected credentials, a missing Overall/Manage (named), or a state that did not
// change.
func (c *Client) QuietDown(ctx context.Context, reason string) error {
	form := url.Values{"message": {reason}}
	if err := c.post(ctx, "/quietDown", form); err != nil {
		return fmt.Errorf("quiet down: %w", err)
	}
	st, err := c.status(ctx)
	if err != nil {
		return fmt.Errorf("quiet down: confirm: %w", err)
	}
	if !*st.QuietingDown {
		return errors.New("quiet down: jenkins accepted POST /quietDown but GET /api/json says quietingDown=false: check the controller's log")
	}
	return nil
}

// CancelQuietDown takes Jenkins out of quiet-down (after a drill, when the instance
// turns out to stay, or when an adopted Jenkins was left quiet by an earlier plan):
// POST /cancelQuietDown (302), then it confirms through GET /api/json. It blocks for
// two requests, bounded by ctx, and is idempotent. Errors as QuietDown's.
func (c *Client) CancelQuietDown(ctx context.Context) error {
	if err := c.post(ctx, "/cancelQuietDown", nil); err != nil {
		return fmt.Errorf("cancel quiet down: %w", err)
	}
	st, err := c.status(ctx)
	if err != nil {
		return fmt.Errorf("cancel quiet down: confirm: %w", err)
	}
	if *st.QuietingDown {
		return errors.New("cancel quiet down: jenkins accepted POST /cancelQuietDown but still says quietingDown=true")
	}
	return nil
}

// WhoAmI tells as whom Jenkins sees the agent's credentials: wrong credentials are
// an error (401), and anonymous is true when no credentials were given.
func (c *Client) WhoAmI(ctx context.Context) (name string, anonymous bool, err error) {
	body, err := c.getJSON(ctx, "/whoAmI/api/json", nil)
	if err != nil {
		return "", false, fmt.Errorf("who am i: %w", err)
	}
	w, err := parseWhoAmI(body)
	if err != nil {
		return "", false, err
	}
	return *w.Name, w.Anonymous, nil
}

func (c *Client) status(ctx context.Context) (overview, error) {
	// Without a tree the root lists every job, which is large on a big controller.
	body, err := c.getJSON(ctx, "/api/json", url.Values{"tree": {statusTree}})
	if err != nil {
		return overview{}, err
	}
	return parseStatus(body)
}

// authMode says which credentials a request carries.
type authMode int

const (
	authNone     authMode = iota // no Authorization header
	authToken                    // user:token, which needs no crumb
	authPassword                 // user:password (or anonymous), which needs a crumb on POST
)

// readAuth is how GETs authenticate: the token if there is one, else the password.
func (c *Client) readAuth() authMode {
	if c.token != "" || c.source != nil {
		return authToken
	}
	return authPassword
}

// errCrumb marks a 403 for a missing or stale crumb, which one retry with a fresh
// crumb cures.
var errCrumb = errors.New("jenkins refused the CSRF crumb")

// post sends a form POST the way Jenkins accepts it: with the API token and no
// crumb, or else with a crumb and the session cookie it is bound to. It accepts 302
// (the redirect to the root, never followed) and 200.
func (c *Client) post(ctx context.Context, path string, form url.Values) error {
	mode := c.readAuth()
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var hdr http.Header
		if mode == authPassword {
			cr, ok, cerr := c.crumb(ctx)
			if cerr != nil {
				return cerr
			}
			if ok {
				hdr = http.Header{cr.CrumbRequestField: {cr.Crumb}}
			}
		}
		err = c.postOnce(ctx, path, form, mode, hdr)
		if !errors.Is(err, errCrumb) {
			return err
		}
		// A token that Jenkins wants a crumb for is no API token (a password put in
		// the token file): the crumb flow still works with it.
		c.log.Debug("crumb refused, retrying with a fresh crumb", "path", path)
		mode = authPassword
	}
	if c.token != "" {
		return fmt.Errorf("%w: jenkins.api_token_file seems to hold a password, not an API token: create a token under the user's Security settings", err)
	}
	return err
}

func (c *Client) postOnce(ctx context.Context, path string, form url.Values, mode authMode, hdr http.Header) error {
	if hdr == nil {
		hdr = http.Header{}
	}
	hdr.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.do(ctx, http.MethodPost, path, strings.NewReader(form.Encode()), mode, hdr)
	if err != nil {
		return err
	}
	defer discardBody(resp)
	if resp.StatusCode == http.StatusFound || resp.StatusCode == http.StatusOK {
		return nil
	}
	return c.statusError(resp, http.MethodPost, path, mode)
}

// crumb fetches a crumb; the cookie jar keeps the session cookie of the answer, to
// which the crumb is bound. ok is false when Jenkins has no crumb issuer (404).
func (c *Client) crumb(ctx context.Context) (crumb, bool, error) {
	const path = "/crumbIssuer/api/json"
	resp, err := c.do(ctx, http.MethodGet, path, nil, authPassword, nil)
	if err != nil {
		return crumb{}, false, err
	}
	defer discardBody(resp)
	if resp.StatusCode == http.StatusNotFound {
		return crumb{}, false, nil
	}
	if resp.StatusCode != http.StatusOK {
		return crumb{}, false, c.statusError(resp, http.MethodGet, path, authPassword)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return crumb{}, false, fmt.Errorf("read %s: %w", path, err)
	}
	cr, err := parseCrumb(body)
	if err != nil {
		return crumb{}, false, err
	}
	return cr, true, nil
}

func (c *Client) getJSON(ctx context.Context, path string, query url.Values) ([]byte, error) {
	p := path
	if query != nil {
		p += "?" + query.Encode()
	}
	mode := c.readAuth()
	resp, err := c.do(ctx, http.MethodGet, p, nil, mode, nil)
	if err != nil {
		return nil, err
	}
	defer discardBody(resp)
	if resp.StatusCode != http.StatusOK {
		return nil, c.statusError(resp, http.MethodGet, path, mode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return body, nil
}

// do sends one request. pathAndQuery is relative to the base URL, so that a
// --prefix path in jenkins.url is kept.
func (c *Client) do(ctx context.Context, method, pathAndQuery string, body io.Reader, mode authMode, hdr http.Header) (*http.Response, error) {
	ref, err := url.Parse(pathAndQuery)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, pathAndQuery, err)
	}
	u := *c.base
	u.Path = c.base.Path + ref.Path
	u.RawQuery = ref.RawQuery
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, ref.Path, err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	token := c.token
	if c.source != nil && (mode == authToken || (mode == authPassword && c.password == "")) {
		if token, err = c.source(ctx, false); err != nil {
			return nil, fmt.Errorf("%s %s: jenkins api token: %w", method, ref.Path, err)
		}
	}
	switch {
	case mode == authToken:
		req.SetBasicAuth(c.user, token)
	case mode == authPassword && c.user != "":
		// Without a password, the token stands in: that is the retry for a token
		// file that holds a password.
		secret := c.password
		if secret == "" {
			secret = token
		}
		req.SetBasicAuth(c.user, secret)
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	if err == nil && resp.StatusCode == http.StatusUnauthorized && mode == authToken && c.source != nil {
		resp, err = c.retryWithFreshToken(ctx, req, resp)
	}
	if err != nil {
		c.log.Debug("request failed", "method", method, "path", ref.Path, "err", err)
		return nil, err
	}
	c.log.Debug("request", "method", method, "path", ref.Path, "status", resp.StatusCode, "took", time.Since(start))
	return resp, nil
}

// statusError turns an unwanted answer into a message that says what to fix.
func (c *Client) statusError(resp *http.Response, method, path string, mode authMode) error {
	who := c.user
	if who == "" {
		who = "anonymous"
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		fix := "check jenkins.api_token_file"
		if c.source != nil {
			fix = "check the token in jenkins.api_token_ssm_parameter or jenkins.api_token_secret_id"
		}
		if mode != authToken {
			fix = "check the password"
		}
		return fmt.Errorf("%s %s: jenkins rejected the credentials of user %s: %s", method, path, who, fix)
	case http.StatusForbidden:
		if perm := resp.Header.Get("X-Required-Permission"); perm != "" {
			as := resp.Header.Get("X-You-Are-Authenticated-As")
			if as == "" {
				as = who
			}
			return fmt.Errorf("%s %s: user %s (authenticated as %s) lacks permission %s: grant %s", method, path, who, as, perm, permissionName(perm))
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if strings.Contains(string(body), "No valid crumb") {
			return fmt.Errorf("%s %s: %w (No valid crumb was included in the request)", method, path, errCrumb)
		}
		return fmt.Errorf("%s %s: jenkins answered %s: check the permissions of user %s", method, path, resp.Status, who)
	case http.StatusNotFound:
		return fmt.Errorf("%s %s: %w", method, path, errNotFound)
	default:
		return fmt.Errorf("%s %s: jenkins answered %s", method, path, resp.Status)
	}
}

// permissionName turns a permission id into the name the security matrix shows.
func permissionName(id string) string {
	switch id {
	case "hudson.model.Hudson.Manage":
		return "Overall/Manage"
	case "hudson.model.Hudson.Administer":
		return "Overall/Administer"
	case "hudson.model.Hudson.Read":
		return "Overall/Read"
	case "hudson.model.Item.Build":
		return "Job/Build"
	case "hudson.model.Item.Read":
		return "Job/Read"
	}
	return id
}

// discardBody reads a little of what is left so the connection can be reused, then closes.
func discardBody(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}
