// Package jenkinstest is a stand-in for a Jenkins controller, for tests and for the
// simulator: it answers the HTTP endpoints the agent uses the way Jenkins 2.5xx does
// (503 while loading, the order authentication → crumb → permission, the 302 of
// quietDown, Pipeline runs on one-off executors and their `node` blocks on regular
// ones, the queue with the placeholder tasks of Pipelines parked by quiet-down, build
// parameters and causes, build and buildWithParameters), runs fake builds that end
// after a set time, and on stop aborts freestyle builds and saves Pipelines into its
// home, like Jenkins on SIGTERM. Faults (500, 401, garbage, a hanging answer) can be
// injected per path. It runs inside a test (Start, NewServer) or alone as a
// container's PID 1 (Main).
package jenkinstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Version is what the double announces in the X-Jenkins header.
const Version = "2.516.3"

// Permission ids as Jenkins names them in X-Required-Permission.
const (
	PermissionRead   = "hudson.model.Hudson.Read"
	PermissionManage = "hudson.model.Hudson.Manage"
	PermissionBuild  = "hudson.model.Item.Build"
)

// Build results, as Jenkins reports them in a build's result field.
const (
	ResultSuccess = "SUCCESS"
	ResultAborted = "ABORTED"
)

// User is one account of the double's security realm.
type User struct {
	// Token is the user's API token: Basic auth with it needs no crumb. Empty: none.
	Token string
	// Password works for Basic auth too, but POSTs made with it need a crumb.
	Password string
	// Manage grants Overall/Manage, which quietDown and cancelQuietDown need. Every
	// known user has Overall/Read and Job/Read.
	Manage bool
	// ReadOnly withholds Job/Build: build and buildWithParameters answer 403.
	ReadOnly bool
}

// ParamKind is the type of a job parameter.
type ParamKind string

// Parameter kinds. Jenkins exports the value of string and boolean parameters in a
// build's API, but not that of a password parameter.
const (
	ParamString   ParamKind = ""
	ParamBoolean  ParamKind = "boolean"
	ParamPassword ParamKind = "password"
)

// Param is one parameter definition of a job.
type Param struct {
	Name    string
	Default string // "true" or "false" for a boolean parameter
	Kind    ParamKind
}

// Job is one job the double can build.
type Job struct {
	// Pipeline runs sit on one-off (flyweight) executors and are saved on stop;
	// other builds need one of the regular executors and are aborted on stop.
	Pipeline bool
	// Duration is how long a build runs; zero runs until the controller stops. The
	// time a Pipeline's node block waits in the queue does not count.
	Duration time.Duration
	// NodeAfter makes a Pipeline enter a `node` block after this much running time:
	// from then on it also needs a regular executor. Until it gets one (none free,
	// or quiet-down: then it waits for the end of quiet-down) its placeholder task
	// waits in the queue and the run makes no progress. Zero: no node block.
	NodeAfter time.Duration
	// Params are the job's parameter definitions; none means not parameterized.
	Params []Param
	// Disabled jobs answer 409 to build requests, and report buildable=false.
	Disabled bool
	// Unreadable hides the job from every user, as a user without Job/Read sees it:
	// its builds show as busy executors without an executable, and its URLs are 404.
	Unreadable bool
}

// Boot is a build the double schedules when it starts, before it applies
// Config.QuietingDown.
type Boot struct {
	Job    string
	Params map[string]string // by parameter name; missing ones take the default
}

// Config sets up a Server.
type Config struct {
	// StartupDelay is how long every path answers 503, as while Jenkins starts.
	StartupDelay time.Duration
	// SlowHome adds to StartupDelay the time Jenkins spends loading a large
	// JENKINS_HOME from a throttled EFS: minutes of 503 that mean "loading", not "dead".
	SlowHome time.Duration
	// ListenDelay is how long Main waits before it listens: connections are refused
	// meanwhile, as while the JVM starts. Start ignores it.
	ListenDelay time.Duration
	// Users is the security realm, by user name.
	Users map[string]User
	// AllowAnonymousRead grants Overall/Read to anonymous requests.
	AllowAnonymousRead bool
	// Jobs are the jobs that exist, by full name ("folder/job" for a job in a folder).
	Jobs map[string]Job
	// Executors is the number of regular executors of the built-in node; 0 means 2.
	Executors int
	// Home is the JENKINS_HOME directory; empty means none. Start and Main write a
	// pid file and a state file there, resume the Pipelines a previous stop saved,
	// keep build numbers and history, and save running Pipelines on stop.
	Home string
	// Boot lists builds scheduled at start, in order.
	Boot []Boot
	// QuietingDown starts the double in quiet-down (after the Boot builds started),
	// as a controller left in quiet-down by an earlier plan, with QuietDownReason.
	QuietingDown    bool
	QuietDownReason string
	// Faults are injected from the start; see Server.InjectFault.
	Faults []Fault
	// Logger gets a line per request and per build; nil discards.
	Logger *slog.Logger
}

// RequestRecord is one request the double received.
type RequestRecord struct {
	Method string
	Path   string
	Query  string    // raw query
	Form   string    // the url-encoded form of a POST body, if any
	Time   time.Time // when it arrived
	Status int       // what the double answered
	User   string    // authenticated user, "" for anonymous or rejected credentials
}

// Cause is why a build started, as Jenkins lists it in the build's CauseAction.
type Cause struct {
	// Class is the Java class, e.g. hudson.model.Cause$UserIdCause.
	Class string `json:"class"`
	// ShortDescription is what Jenkins shows on the build page, e.g. "Started by user admin".
	ShortDescription string `json:"shortDescription"`
	// UserID is the user of a UserIdCause, "" for anonymous or another cause.
	UserID string `json:"userId,omitempty"`
}

// ParamValue is one parameter of a build.
type ParamValue struct {
	Name  string    `json:"name"`
	Value string    `json:"value"`
	Kind  ParamKind `json:"kind,omitempty"`
}

// BuildRecord is a build as a test sees it.
type BuildRecord struct {
	URL      string
	Job      string
	Number   int
	Pipeline bool
	Params   []ParamValue
	Causes   []Cause
	Result   string // "" while it runs
	// Parked is true while the Pipeline's node block waits in the queue.
	Parked bool
}

// QueueRecord is a queue item as a test sees it.
type QueueRecord struct {
	ID     int
	Job    string
	Params []ParamValue
	Causes []Cause
	// Placeholder names the Pipeline run (its URL) whose node block waits; "" for
	// an item that is a build of Job.
	Placeholder string
}

// session holds the crumb issued with its cookie: a crumb is valid only with the
// session it was issued for, and only for the same user.
type session struct {
	user  string
	crumb string
}

// Server is the double. Its methods are safe for concurrent use.
type Server struct {
	cfg        Config
	log        *slog.Logger
	executors  int
	instance   string
	cookieName string

	mu          sync.Mutex
	readyAt     time.Time
	rootURL     string
	quieting    bool
	reason      string
	nextNumber  map[string]int
	nextQueueID int
	running     []*build
	queue       []*queueItem
	history     map[string]*build // finished and aborted builds, by path
	aborted     []string          // URLs of the builds the stop aborted
	faults      []*Fault
	sessions    map[string]*session
	requests    []RequestRecord
	resumed     []string
	stopping    chan struct{}

	httpServer   *http.Server
	fresh        freshConns // connections that have not sent a request yet
	serveDone    chan struct{}
	tickDone     chan struct{}
	shutdownOnce sync.Once
	shutdownErr  error
}

// NewServer returns a double that answers through Handler. It neither listens nor
// touches Config.Home, nor schedules the Boot builds: Start and Main do.
func NewServer(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	executors := cfg.Executors
	if executors <= 0 {
		executors = 2
	}
	// The double reads these without its lock: keep its own copies.
	cfg.Users = maps.Clone(cfg.Users)
	cfg.Jobs = maps.Clone(cfg.Jobs)
	for name, j := range cfg.Jobs {
		j.Params = slices.Clone(j.Params)
		cfg.Jobs[name] = j
	}
	id := randomHex(8)
	s := &Server{
		cfg:        cfg,
		log:        log.With("component", "jenkins-double"),
		executors:  executors,
		instance:   id,
		cookieName: "JSESSIONID." + id[:8],
		readyAt:    time.Now().Add(cfg.StartupDelay + cfg.SlowHome),
		nextNumber: map[string]int{},
		history:    map[string]*build{},
		sessions:   map[string]*session{},
		stopping:   make(chan struct{}),
	}
	for _, f := range cfg.Faults {
		s.InjectFault(f)
	}
	return s
}

// Start creates a double with its home prepared and its Boot builds scheduled,
// listening on a random loopback port, and returns it with its URL (no trailing
// slash).
func Start(cfg Config) (*Server, string, error) {
	s := NewServer(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("jenkins double: listen: %w", err)
	}
	url := "http://" + ln.Addr().String()
	s.SetRootURL(url + "/")
	if err := s.open(); err != nil {
		_ = ln.Close()
		return nil, "", err
	}
	s.serve(ln)
	return s, url, nil
}

// open resumes the home and schedules the Boot builds, then applies quiet-down.
func (s *Server) open() error {
	if err := s.openHome(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// One instant for the whole boot, so a Pipeline's node block cannot be reached
	// between its start and the quiet-down that parks it.
	now := time.Now()
	for _, b := range s.cfg.Boot {
		if _, _, _, err := s.schedule(b.Job, b.Params, []Cause{timerCause()}, now); err != nil {
			return err
		}
	}
	if s.cfg.QuietingDown {
		s.quieting, s.reason = true, s.cfg.QuietDownReason
	}
	return nil
}

// serve answers on ln until Shutdown, and moves the builds on every 10 ms so that
// they end and take executors near the time they should.
func (s *Server) serve(ln net.Listener) {
	s.httpServer = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, ConnState: s.fresh.track}
	s.serveDone = make(chan struct{})
	s.tickDone = make(chan struct{})
	go func() {
		defer close(s.serveDone)
		if err := s.httpServer.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve", "err", err)
		}
	}()
	go func() {
		defer close(s.tickDone)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stopping:
				return
			case <-t.C:
				s.mu.Lock()
				s.advance(time.Now())
				s.mu.Unlock()
			}
		}
	}()
}

// Close stops the double like Shutdown, waiting at most 5 s for requests in flight.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		s.log.Error("close", "err", err)
	}
}

// Shutdown stops the double the way Jenkins stops on SIGTERM: it stops accepting
// connections first, then aborts the freestyle builds and saves the running Pipelines
// into the home (they resume when a double starts on the same home). Requests that
// hang by a fault end. Later calls return the first call's result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		close(s.stopping)
		var errs []error
		if s.httpServer != nil {
			// Jenkins' Jetty drops connections without a request at once on stop; Go's
			// Shutdown would wait up to 5 s for one (an HTTP client's spare dial).
			s.httpServer.SetKeepAlivesEnabled(false)
			s.fresh.closeAll()
			if err := s.httpServer.Shutdown(ctx); err != nil {
				_ = s.httpServer.Close()
				errs = append(errs, fmt.Errorf("jenkins double: stop serving: %w", err))
			}
			<-s.serveDone
			<-s.tickDone
		}
		s.mu.Lock()
		now := time.Now()
		s.advance(now)
		var aborted, saved []*build
		for _, b := range s.running {
			if b.pipeline {
				saved = append(saved, b)
				continue
			}
			b.result, b.slot = ResultAborted, -1
			s.history[b.path()] = b
			s.aborted = append(s.aborted, s.controlRoot()+b.path())
			aborted = append(aborted, b)
		}
		s.running = nil
		s.mu.Unlock()
		for _, b := range aborted {
			s.log.Info("build aborted by shutdown", "build", b.path())
		}
		if err := s.saveHome(now, aborted, saved); err != nil {
			errs = append(errs, err)
		}
		s.shutdownErr = errors.Join(errs...)
	})
	return s.shutdownErr
}

// SetRootURL sets the root URL that build and queue URLs start with (Jenkins'
// configured root URL; it ends with a slash). Empty means the request's Host.
func (s *Server) SetRootURL(root string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rootURL = root
}

// SetStartupDelay makes every path answer 503 for d from now, as a restarting
// Jenkins does; 0 makes it ready at once.
func (s *Server) SetStartupDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.readyAt = time.Now().Add(d)
}

// StartBuild schedules a build of job as POST /job/NAME/build would, with the
// default parameters. It returns the build's URL when it started at once, or the
// queue item's URL when it waits (no free executor, or quiet-down).
func (s *Server) StartBuild(job string) (string, error) {
	return s.StartBuildWithParameters(job, nil)
}

// StartBuildWithParameters is StartBuild with parameters by name; missing ones take
// their default, unknown ones are ignored, as buildWithParameters does.
func (s *Server) StartBuildWithParameters(job string, params map[string]string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	path, id, _, err := s.schedule(job, params, []Cause{timerCause()}, time.Now())
	if err != nil {
		return "", err
	}
	if path == "" {
		path = "queue/item/" + strconv.Itoa(id) + "/"
	}
	return s.controlRoot() + path, nil
}

// QuietDown puts the double in quiet-down as POST /quietDown would.
func (s *Server) QuietDown(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(time.Now())
	s.quieting, s.reason = true, reason
}

// RunningBuilds lists the URLs of the builds running now (parked Pipelines
// included), oldest first.
func (s *Server) RunningBuilds() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(time.Now())
	urls := make([]string, 0, len(s.running))
	for _, b := range s.running {
		urls = append(urls, s.controlRoot()+b.path())
	}
	return urls
}

// Build returns the running or past build of job with number n.
func (s *Server) Build(job string, n int) (BuildRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(time.Now())
	b := s.findBuild(job, n)
	if b == nil {
		return BuildRecord{}, false
	}
	return s.record(b), true
}

// Builds returns every build the double knows (history and running), by job then number.
func (s *Server) Builds() []BuildRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(time.Now())
	var out []BuildRecord
	for _, b := range s.history {
		out = append(out, s.record(b))
	}
	for _, b := range s.running {
		out = append(out, s.record(b))
	}
	slices.SortFunc(out, func(a, b BuildRecord) int {
		if c := strings.Compare(a.Job, b.Job); c != 0 {
			return c
		}
		return a.Number - b.Number
	})
	return out
}

// Queue returns the items waiting in the queue, oldest first.
func (s *Server) Queue() []QueueRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(time.Now())
	out := make([]QueueRecord, 0, len(s.queue))
	for _, q := range s.queue {
		r := QueueRecord{ID: q.id, Job: q.job, Params: slices.Clone(q.params), Causes: slices.Clone(q.causes)}
		if q.node != nil {
			r.Placeholder = s.controlRoot() + q.node.path()
		}
		out = append(out, r)
	}
	return out
}

// Queued is the number of items waiting in the queue.
func (s *Server) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(time.Now())
	return len(s.queue)
}

// Aborted lists the URLs of the builds that the stop aborted.
func (s *Server) Aborted() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.aborted)
}

// QuietingDown tells whether the double is in quiet-down.
func (s *Server) QuietingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.quieting
}

// QuietDownReason is the message of the last POST /quietDown, "" when not quieting.
func (s *Server) QuietDownReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// Resumed lists the URLs of the Pipelines this double resumed from its home.
func (s *Server) Resumed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.resumed...)
}

// Requests returns every request received so far, in order of arrival.
func (s *Server) Requests() []RequestRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RequestRecord(nil), s.requests...)
}

// Instance is a random id of this double, written into its home's state file.
func (s *Server) Instance() string { return s.instance }

// controlRoot is the root URL for answers given outside a request. Callers hold mu.
func (s *Server) controlRoot() string {
	if s.rootURL != "" {
		return s.rootURL
	}
	return "http://localhost/"
}

func (s *Server) record(b *build) BuildRecord {
	return BuildRecord{
		URL: s.controlRoot() + b.path(), Job: b.job, Number: b.number, Pipeline: b.pipeline,
		Params: slices.Clone(b.params), Causes: slices.Clone(b.causes), Result: b.result,
		Parked: !b.parkedSince.IsZero(),
	}
}

func timerCause() Cause {
	return Cause{Class: "hudson.triggers.TimerTrigger$TimerTriggerCause", ShortDescription: "Started by timer"}
}

func userCause(user string) Cause {
	if user == "" {
		return Cause{Class: "hudson.model.Cause$UserIdCause", ShortDescription: "Started by anonymous user"}
	}
	return Cause{Class: "hudson.model.Cause$UserIdCause", ShortDescription: "Started by user " + user, UserID: user}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand does not fail on Linux; a fixed id still works for a double.
		return fmt.Sprintf("%0*x", 2*n, os.Getpid())
	}
	return hex.EncodeToString(b)
}

// freshConns tracks the server's connections that have not sent a request yet
// (http.StateNew), so that a stop can close them at once.
type freshConns struct {
	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

// track is the server's ConnState hook.
func (f *freshConns) track(c net.Conn, state http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if state != http.StateNew {
		delete(f.conns, c)
		return
	}
	if f.closed {
		_ = c.Close()
		return
	}
	if f.conns == nil {
		f.conns = map[net.Conn]bool{}
	}
	f.conns[c] = true
}

// closeAll closes every connection that has not sent a request, and every one that
// is accepted from now on.
func (f *freshConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for c := range f.conns {
		_ = c.Close()
	}
	f.conns = nil
}
