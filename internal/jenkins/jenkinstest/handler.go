package jenkinstest

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// crumbField is the header (or form field) that carries the crumb.
const crumbField = "Jenkins-Crumb"

// caller is who a request is, once its credentials were checked.
type caller struct {
	user     string // "" for anonymous
	viaToken bool   // Basic auth with an API token: no crumb needed
}

func (c caller) name() string {
	if c.user == "" {
		return "anonymous"
	}
	return c.user
}

// statusRecorder keeps the status a handler wrote, for Requests.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Handler answers like a Jenkins controller. The checks run in Jenkins' order:
// injected faults first, loading (503 on every path), authentication (401), crumb on
// POST (403), the method (405), then permission (403 naming it).
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived := time.Now()
		var form string
		if r.Method == http.MethodPost {
			// Read the body once here, so the record has it and handlers see it parsed.
			_ = r.ParseForm()
			form = r.PostForm.Encode()
		}
		rec := &statusRecorder{ResponseWriter: w}
		who := s.serve1(rec, r)
		s.mu.Lock()
		s.requests = append(s.requests, RequestRecord{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Form: form, Time: arrived, Status: rec.status, User: who})
		s.mu.Unlock()
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", rec.status, "user", who)
	})
}

// serve1 answers one request and returns the authenticated user name.
func (s *Server) serve1(w http.ResponseWriter, r *http.Request) string {
	if f, ok := s.takeFault(r.URL.Path); ok {
		s.answerFault(w, r, f)
		return ""
	}
	s.mu.Lock()
	loading := time.Now().Before(s.readyAt)
	s.mu.Unlock()
	if loading {
		w.Header().Set("Content-Type", "text/html;charset=utf-8")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "<html><body><h1>Please wait while Jenkins is getting ready to work...</h1></body></html>")
		return ""
	}
	w.Header().Set("X-Jenkins", Version)

	c, ok := s.authenticate(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="Jenkins"`)
		httpError(w, http.StatusUnauthorized, "Invalid password/token for user")
		return ""
	}
	if r.Method == http.MethodPost && !c.viaToken && !s.validCrumb(r, c) {
		httpError(w, http.StatusForbidden, "No valid crumb was included in the request")
		return c.user
	}

	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case path == "/login":
		w.Header().Set("Content-Type", "text/html;charset=utf-8")
		fmt.Fprint(w, "<html><head><title>Sign in [Jenkins]</title></head><body>Sign in to Jenkins</body></html>")
	case path == "/whoAmI/api/json":
		s.whoAmI(w, c)
	case path == "/api/json":
		if s.permitted(w, c, PermissionRead) {
			s.status(w, r)
		}
	case path == "/crumbIssuer/api/json":
		if s.permitted(w, c, PermissionRead) {
			s.issueCrumb(w, r, c)
		}
	case path == "/computer/api/json":
		if s.permitted(w, c, PermissionRead) {
			s.computers(w, r)
		}
	case path == "/queue/api/json":
		if s.permitted(w, c, PermissionRead) {
			s.queueAPI(w, r)
		}
	case path == "/quietDown":
		if requirePOST(w, r) && s.permitted(w, c, PermissionManage) {
			s.quietDown(w, r)
		}
	case path == "/cancelQuietDown":
		if requirePOST(w, r) && s.permitted(w, c, PermissionManage) {
			s.mu.Lock()
			s.quieting, s.reason = false, ""
			s.advance(time.Now())
			s.mu.Unlock()
			s.log.Info("quiet-down cancelled", "user", c.name())
			http.Redirect(w, r, s.root(r), http.StatusFound)
		}
	case strings.HasPrefix(path, "/job/"):
		s.jobRequest(w, r, c)
	default:
		httpError(w, http.StatusNotFound, "Not Found")
	}
	return c.user
}

// authenticate reads Basic credentials (token or password) or the session cookie.
// Wrong credentials are refused, never downgraded to anonymous.
func (s *Server) authenticate(r *http.Request) (caller, bool) {
	if name, secret, ok := r.BasicAuth(); ok {
		u, known := s.cfg.Users[name]
		switch {
		case !known:
			return caller{}, false
		case u.Token != "" && secret == u.Token:
			return caller{user: name, viaToken: true}, true
		case u.Password != "" && secret == u.Password:
			return caller{user: name}, true
		}
		return caller{}, false
	}
	if sess := s.session(r); sess != nil {
		return caller{user: sess.user}, true
	}
	return caller{}, true
}

func (s *Server) session(r *http.Request) *session {
	ck, err := r.Cookie(s.cookieName)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[ck.Value]
}

// validCrumb checks the crumb against the session of the request's cookie.
func (s *Server) validCrumb(r *http.Request, c caller) bool {
	got := r.Header.Get(crumbField)
	if got == "" {
		got = r.FormValue(crumbField)
	}
	sess := s.session(r)
	return got != "" && sess != nil && sess.user == c.user && sess.crumb == got
}

// permitted answers 403 the way Jenkins' access-denied handler does when c lacks perm.
func (s *Server) permitted(w http.ResponseWriter, c caller, perm string) bool {
	var ok bool
	switch perm {
	case PermissionRead:
		ok = c.user != "" || s.cfg.AllowAnonymousRead
	case PermissionBuild:
		ok = c.user != "" && !s.cfg.Users[c.user].ReadOnly
	case PermissionManage:
		ok = c.user != "" && s.cfg.Users[c.user].Manage
	}
	if ok {
		return true
	}
	w.Header().Set("X-You-Are-Authenticated-As", c.name())
	w.Header().Set("X-You-Are-In-Group-Disabled", "JENKINS-39402: use -Dhudson.security.AccessDeniedException2.REPORT_GROUP_HEADERS=true or use /whoAmI to diagnose")
	w.Header().Set("X-Required-Permission", perm)
	w.Header().Set("X-Permission-Implied-By", "hudson.model.Hudson.Administer")
	httpError(w, http.StatusForbidden, c.name()+" is missing the "+perm+" permission")
	return false
}

func requirePOST(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodPost {
		return true
	}
	w.Header().Set("Allow", "POST")
	httpError(w, http.StatusMethodNotAllowed, "This URL requires POST")
	return false
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/html;charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintf(w, "<html><head><title>Error %d %s</title></head><body><h2>HTTP ERROR %d %s</h2></body></html>", code, msg, code, msg)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

// root is the root URL for answers to r: the configured one, else the request's host.
func (s *Server) root(r *http.Request) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rootURL != "" {
		return s.rootURL
	}
	return "http://" + r.Host + "/"
}

func (s *Server) whoAmI(w http.ResponseWriter, c caller) {
	authorities := []string{"anonymous"}
	if c.user != "" {
		authorities = []string{"authenticated"}
	}
	writeJSON(w, map[string]any{
		"_class":        "hudson.security.WhoAmI",
		"anonymous":     c.user == "",
		"authenticated": true,
		"authorities":   authorities,
		"details":       nil,
		"name":          c.name(),
		"toString":      "Username: " + c.name(),
	})
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	root := s.root(r)
	s.mu.Lock()
	s.advance(time.Now())
	var reason any
	if s.quieting && s.reason != "" {
		reason = s.reason
	}
	jobs := []map[string]any{}
	for _, name := range sortedJobs(s.cfg.Jobs) {
		class := "hudson.model.FreeStyleProject"
		if s.cfg.Jobs[name].Pipeline {
			class = "org.jenkinsci.plugins.workflow.job.WorkflowJob"
		}
		jobs = append(jobs, map[string]any{"_class": class, "name": name, "url": root + "job/" + name + "/", "color": "blue"})
	}
	body := map[string]any{
		"_class":          "hudson.model.Hudson",
		"assignedLabels":  []map[string]any{{"name": "built-in"}},
		"mode":            "NORMAL",
		"nodeDescription": "the Jenkins controller's built-in node",
		"nodeName":        "",
		"numExecutors":    s.executors,
		"jobs":            jobs,
		"quietingDown":    s.quieting,
		"quietDownReason": reason,
		"useCrumbs":       true,
		"useSecurity":     true,
	}
	s.mu.Unlock()
	writeJSON(w, body)
}

// issueCrumb binds a crumb to the caller's session, opening one (and setting its
// cookie) when the request brings none for this user.
func (s *Server) issueCrumb(w http.ResponseWriter, r *http.Request, c caller) {
	sess := s.session(r)
	if sess == nil || sess.user != c.user {
		id := randomHex(16)
		sess = &session{user: c.user, crumb: randomHex(32)}
		s.mu.Lock()
		s.sessions[id] = sess
		s.mu.Unlock()
		http.SetCookie(w, &http.Cookie{Name: s.cookieName, Value: id, Path: "/", HttpOnly: true})
	}
	writeJSON(w, map[string]any{
		"_class":            "hudson.security.csrf.DefaultCrumbIssuer",
		"crumb":             sess.crumb,
		"crumbRequestField": crumbField,
	})
}

// Java classes of the executables, as Jenkins reports them in _class.
const (
	classFreeStyleBuild = "hudson.model.FreeStyleBuild"
	classWorkflowRun    = "org.jenkinsci.plugins.workflow.job.WorkflowRun"
	// A Pipeline's node block on a regular executor.
	classPlaceholderExecutable = "org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask$PlaceholderExecutable"
	// A Pipeline's node block waiting in the queue.
	classPlaceholderTask = "org.jenkinsci.plugins.workflow.support.steps.ExecutorStepExecution$PlaceholderTask"
)

// computers answers GET /computer/api/json. With a tree parameter it gives what the
// agent's tree asks for; without one, the depth-0 shape in which executors are empty
// objects and only busyExecutors (which ignores one-off executors) counts. A
// freestyle build sits on a regular executor; a Pipeline run on a one-off executor,
// and its node block on a regular executor too, under the same URL. An executor busy
// with a build the user may not read shows no executable, and is not idle.
func (s *Server) computers(w http.ResponseWriter, r *http.Request) {
	root := s.root(r)
	s.mu.Lock()
	s.advance(time.Now())
	slots := make([]*build, s.executors)
	var oneOff []*build
	for _, b := range s.running {
		if b.slot >= 0 {
			slots[b.slot] = b
		}
		if b.pipeline {
			oneOff = append(oneOff, b)
		}
	}
	s.mu.Unlock()

	busy := 0
	for _, b := range slots {
		if b != nil {
			busy++
		}
	}
	if r.URL.Query().Get("tree") == "" {
		empty := func(n int) []map[string]any {
			out := make([]map[string]any, n)
			for i := range out {
				out[i] = map[string]any{}
			}
			return out
		}
		writeJSON(w, map[string]any{
			"_class":        "hudson.model.ComputerSet",
			"busyExecutors": busy,
			"computer": []map[string]any{{
				"_class":          "hudson.model.Hudson$MasterComputer",
				"displayName":     "Built-In Node",
				"executors":       empty(len(slots)),
				"idle":            busy == 0 && len(oneOff) == 0,
				"numExecutors":    len(slots),
				"offline":         false,
				"offlineCause":    nil,
				"oneOffExecutors": empty(len(oneOff)),
			}},
			"displayName":    "Nodes",
			"totalExecutors": len(slots),
		})
		return
	}
	executable := func(b *build, oneOff bool) any {
		if b == nil || s.cfg.Jobs[b.job].Unreadable {
			return nil
		}
		class := classFreeStyleBuild
		switch {
		case b.pipeline && oneOff:
			class = classWorkflowRun
		case b.pipeline:
			class = classPlaceholderExecutable
		}
		return map[string]any{"_class": class, "url": root + b.path()}
	}
	executors := []map[string]any{}
	for _, b := range slots {
		executors = append(executors, map[string]any{"_class": "hudson.model.Executor", "currentExecutable": executable(b, false), "idle": b == nil})
	}
	oneOffs := []map[string]any{}
	for _, b := range oneOff {
		oneOffs = append(oneOffs, map[string]any{"_class": "hudson.model.OneOffExecutor", "currentExecutable": executable(b, true), "idle": false})
	}
	writeJSON(w, map[string]any{
		"_class": "hudson.model.ComputerSet",
		"computer": []map[string]any{{
			"_class":          "hudson.model.Hudson$MasterComputer",
			"displayName":     "Built-In Node",
			"executors":       executors,
			"offline":         false,
			"oneOffExecutors": oneOffs,
		}},
	})
}

// quietDown handles POST /quietDown with message, block and timeout (ms). A blocking
// call waits for the non-Pipeline builds only, and answers 302 also when it timed out.
func (s *Server) quietDown(w http.ResponseWriter, r *http.Request) {
	message := r.FormValue("message") // query or form, like Stapler parameters
	s.mu.Lock()
	// The builds move on up to now under the old state: a node block reached before
	// the quiet-down got its executor.
	s.advance(time.Now())
	s.quieting, s.reason = true, message
	s.mu.Unlock()
	s.log.Info("quiet-down", "reason", message)
	if block, _ := strconv.ParseBool(r.FormValue("block")); block {
		ms, _ := strconv.Atoi(r.FormValue("timeout"))
		s.waitRegularBuilds(r, time.Duration(ms)*time.Millisecond)
	}
	http.Redirect(w, r, s.root(r), http.StatusFound)
}

// waitRegularBuilds waits until no non-Pipeline build runs, timeout passes (0: no
// limit), the client goes away or the double stops.
func (s *Server) waitRegularBuilds(r *http.Request, timeout time.Duration) {
	var limit <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		limit = t.C
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		s.advance(time.Now())
		regular := 0
		for _, b := range s.running {
			if !b.pipeline {
				regular++
			}
		}
		s.mu.Unlock()
		if regular == 0 {
			return
		}
		select {
		case <-tick.C:
		case <-limit:
			return
		case <-r.Context().Done():
			return
		case <-s.stopping:
			return
		}
	}
}

func sortedJobs(jobs map[string]Job) []string {
	return slices.Sorted(maps.Keys(jobs))
}
