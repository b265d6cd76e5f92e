// Package jenkinstest is a stand-in for a Jenkins controller, for tests and for the
// simulator: it answers the few HTTP endpoints the agent uses the way Jenkins 2.5xx
// does (503 while loading, the order authentication → crumb → permission, the 302 of
// quietDown, Pipeline runs on one-off executors), runs fake builds that end after a
// set time, and on stop aborts freestyle builds and saves Pipelines into its home,
// like Jenkins on SIGTERM. It can run inside a test (Start, NewServer) or alone as a
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
	"sort"
	"strconv"
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

// User is one account of the double's security realm.
type User struct {
	// Token is the user's API token: Basic auth with it needs no crumb. Empty: none.
	Token string
	// Password works for Basic auth too, but POSTs made with it need a crumb.
	Password string
	// Manage grants Overall/Manage, which quietDown and cancelQuietDown need. Every
	// known user has Overall/Read and may start builds.
	Manage bool
}

// Job is one job the double can build.
type Job struct {
	// Pipeline runs sit on one-off (flyweight) executors and are saved on stop;
	// other builds need one of the regular executors and are aborted on stop.
	Pipeline bool
	// Duration is how long a build runs; zero runs until the controller stops.
	Duration time.Duration
}

// Config sets up a Server.
type Config struct {
	// StartupDelay is how long every path answers 503, as while Jenkins loads.
	StartupDelay time.Duration
	// Users is the security realm, by user name.
	Users map[string]User
	// AllowAnonymousRead grants Overall/Read to anonymous requests.
	AllowAnonymousRead bool
	// Jobs are the jobs that exist, by name.
	Jobs map[string]Job
	// Executors is the number of regular executors of the built-in node; 0 means 2.
	Executors int
	// Home is the JENKINS_HOME directory; empty means none. Start and Main write a
	// pid file and a state file there, resume the Pipelines a previous stop saved,
	// and save running Pipelines on stop.
	Home string
	// Logger gets a line per request and per build; nil discards.
	Logger *slog.Logger
}

// RequestRecord is one request the double received.
type RequestRecord struct {
	Method string
	Path   string
	Time   time.Time // when it arrived
	Status int       // what the double answered
	User   string    // authenticated user, "" for anonymous or rejected credentials
}

// build is one running build.
type build struct {
	job      string
	number   int
	pipeline bool
	started  time.Time
	duration time.Duration // 0: until the controller stops
	slot     int           // regular executor index; -1 on a one-off executor
	queueID  int           // the queue item it came from; 0 when resumed
}

func (b *build) path() string { return "job/" + b.job + "/" + strconv.Itoa(b.number) + "/" }

// queueItem is a build waiting for an executor or for the end of quiet-down.
type queueItem struct {
	id  int
	job string
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
	queue       []queueItem
	sessions    map[string]*session
	requests    []RequestRecord
	resumed     []string
	stopping    chan struct{}

	httpServer   *http.Server
	serveDone    chan struct{}
	shutdownOnce sync.Once
	shutdownErr  error
}

// NewServer returns a double that answers through Handler. It neither listens nor
// touches Config.Home: Start and Main do.
func NewServer(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	executors := cfg.Executors
	if executors <= 0 {
		executors = 2
	}
	// The double reads these maps without its lock: keep its own copies.
	cfg.Users = maps.Clone(cfg.Users)
	cfg.Jobs = maps.Clone(cfg.Jobs)
	id := randomHex(8)
	s := &Server{
		cfg:        cfg,
		log:        log.With("component", "jenkins-double"),
		executors:  executors,
		instance:   id,
		cookieName: "JSESSIONID." + id[:8],
		readyAt:    time.Now().Add(cfg.StartupDelay),
		nextNumber: map[string]int{},
		sessions:   map[string]*session{},
		stopping:   make(chan struct{}),
	}
	return s
}

// Start creates a double with its home prepared, listening on a random loopback
// port, and returns it with its URL (no trailing slash).
func Start(cfg Config) (*Server, string, error) {
	s := NewServer(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("jenkins double: listen: %w", err)
	}
	url := "http://" + ln.Addr().String()
	s.SetRootURL(url + "/")
	if err := s.openHome(); err != nil {
		_ = ln.Close()
		return nil, "", err
	}
	s.serve(ln)
	return s, url, nil
}

// serve answers on ln until Shutdown.
func (s *Server) serve(ln net.Listener) {
	s.httpServer = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.serveDone = make(chan struct{})
	go func() {
		defer close(s.serveDone)
		if err := s.httpServer.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve", "err", err)
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
// into the home (they resume when a double starts on the same home). Later calls
// return the first call's result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		close(s.stopping)
		var errs []error
		if s.httpServer != nil {
			if err := s.httpServer.Shutdown(ctx); err != nil {
				_ = s.httpServer.Close()
				errs = append(errs, fmt.Errorf("jenkins double: stop serving: %w", err))
			}
			<-s.serveDone
		}
		s.mu.Lock()
		s.advance(time.Now())
		var aborted, saved []*build
		for _, b := range s.running {
			if b.pipeline {
				saved = append(saved, b)
			} else {
				aborted = append(aborted, b)
			}
		}
		s.running = nil
		s.mu.Unlock()
		for _, b := range aborted {
			s.log.Info("build aborted by shutdown", "build", b.path())
		}
		if err := s.saveHome(aborted, saved); err != nil {
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

// StartBuild schedules a build of job as POST /job/NAME/build would. It returns the
// build's URL when it started at once, or the queue item's URL when it waits (no free
// executor, or quiet-down).
func (s *Server) StartBuild(job string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	path, id, err := s.schedule(job, time.Now())
	if err != nil {
		return "", err
	}
	if path == "" {
		path = "queue/item/" + strconv.Itoa(id) + "/"
	}
	return s.controlRoot() + path, nil
}

// RunningBuilds lists the URLs of the builds running now, oldest first.
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

// Queued is the number of builds waiting in the queue.
func (s *Server) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(time.Now())
	return len(s.queue)
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

// controlRoot is the root URL for answers given outside a request.
func (s *Server) controlRoot() string {
	if s.rootURL != "" {
		return s.rootURL
	}
	return "http://localhost/"
}

// schedule queues a build of job and lets advance start it if it can. It returns the
// path of the build when it started, "" when it waits, and the queue item's id.
// Callers hold mu.
func (s *Server) schedule(job string, now time.Time) (buildPath string, queueID int, err error) {
	if _, ok := s.cfg.Jobs[job]; !ok {
		return "", 0, fmt.Errorf("jenkins double: no job %q", job)
	}
	s.nextQueueID++
	id := s.nextQueueID
	s.queue = append(s.queue, queueItem{id: id, job: job})
	s.advance(now)
	for _, q := range s.queue {
		if q.id == id {
			return "", id, nil
		}
	}
	for _, b := range s.running {
		if b.queueID == id {
			return b.path(), id, nil
		}
	}
	return "", id, nil
}

// advance ends the builds whose time is up and starts queued builds that can run:
// none in quiet-down, Pipelines at once, others on a free regular executor. Builds
// are evaluated lazily, on each look, so the double needs no timers. Callers hold mu.
func (s *Server) advance(now time.Time) {
	kept := s.running[:0]
	for _, b := range s.running {
		if b.duration > 0 && !now.Before(b.started.Add(b.duration)) {
			s.log.Info("build finished", "build", b.path())
			continue
		}
		kept = append(kept, b)
	}
	s.running = kept
	if s.quieting {
		return
	}
	busy := map[int]bool{}
	for _, b := range s.running {
		if b.slot >= 0 {
			busy[b.slot] = true
		}
	}
	waiting := s.queue[:0]
	for _, q := range s.queue {
		job := s.cfg.Jobs[q.job]
		slot := -1
		if !job.Pipeline {
			for i := 0; i < s.executors; i++ {
				if !busy[i] {
					slot = i
					break
				}
			}
			if slot < 0 {
				waiting = append(waiting, q)
				continue
			}
			busy[slot] = true
		}
		s.nextNumber[q.job]++
		b := &build{job: q.job, number: s.nextNumber[q.job], pipeline: job.Pipeline, started: now, duration: job.Duration, slot: slot, queueID: q.id}
		s.running = append(s.running, b)
		s.log.Info("build started", "build", b.path(), "pipeline", b.pipeline)
	}
	s.queue = waiting
	sort.SliceStable(s.running, func(i, j int) bool { return s.running[i].started.Before(s.running[j].started) })
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand does not fail on Linux; a fixed id still works for a double.
		return fmt.Sprintf("%0*x", 2*n, os.Getpid())
	}
	return hex.EncodeToString(b)
}
