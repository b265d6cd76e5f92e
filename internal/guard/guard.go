// Package guard keeps the lease's fence standing when the agent is gone.
//
// The agent stops Jenkins before its lease can lapse, but only while the agent runs. The
// guard is the same static binary, run as the Jenkins container's first process: it
// starts the image's own command as its child, forwards signals to it, reaps orphans
// (it is PID 1) and exits with the child's code; and it reads the lease record on its
// own timers and stops the child when the record names another holder, is released or
// vanishes, or when no renewal has been seen by the fence point, the same point the
// agent's own fence uses. A read that hangs (a hung NFS mount) cannot hold the fence
// back: reads run in their own goroutine and the fence point has its own timer. An agent
// restarted within the lease renews the same record, so its Jenkins keeps running.
package guard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Exit codes of Run besides the child's own (its exit status, or 128+signal).
const (
	// ExitUsage: the options or the command line are wrong.
	ExitUsage = 2
	// ExitNoLease: the child was not started, because the record did not name this
	// holder as live, or could not be read, before StartTimeout.
	ExitNoLease = 75
	// ExitCannotStart: the child could not be started (not found, not executable).
	ExitCannotStart = 127
)

// Defaults for Options.
const (
	DefaultClockSkew    = 2 * time.Second
	DefaultStopGrace    = 30 * time.Second
	DefaultPollInterval = time.Second
	DefaultStartTimeout = 10 * time.Second
)

// maxRecord bounds one read of the record; a real one is a few hundred bytes.
const maxRecord = 64 << 10

// Options configure Run.
type Options struct {
	// Record is the lease record's path as the guard sees it (inside the container).
	Record string
	// Holder is the instance id that must hold the lease for the child to run.
	Holder string
	// ClockSkew is the lease's allowance for clock error (default 2s).
	ClockSkew time.Duration
	// StopGrace is the SIGTERM-to-SIGKILL grace of a fence stop (default 30s); it never
	// runs past expires - skew.
	StopGrace time.Duration
	// PollInterval is how often the record is read (default 1s). Only one read is in
	// flight at a time.
	PollInterval time.Duration
	// StartTimeout bounds the first read, made before the child starts (default 10s).
	StartTimeout time.Duration
	// Parse decodes the record; nil means ParseLeaseRecord.
	Parse func([]byte) (Lease, error)
	// Logger receives the guard's decisions; nil writes text to stderr.
	Logger *slog.Logger
}

// forwarded are the signals passed on to the child: stop requests, and the ones Java
// and shells give meaning to (SIGQUIT prints a thread dump).
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// Run reads the record, starts argv as its child if the record names opts.Holder as a
// live holder, and supervises it until it exits; it returns the child's exit code (or
// one of the Exit* codes). It blocks until the child has exited. Cancelling ctx stops
// the child as SIGTERM would. Run reaps every child process of this process, so it must
// run alone in its process (the guard command, PID 1 of the container).
func Run(ctx context.Context, opts Options, argv []string) int {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	log = log.With("component", "guard")
	opts, err := withDefaults(opts, argv)
	if err != nil {
		log.Error("guard: " + err.Error())
		return ExitUsage
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		log.Error("guard: cannot find the command to run", "command", argv[0], "err", err)
		return ExitCannotStart
	}

	f := NewFence(opts.Holder, opts.ClockSkew)
	reads := make(chan readResult, 1)
	go func() { reads <- readRecord(opts.Record, opts.Parse) }()
	first := time.NewTimer(opts.StartTimeout)
	select {
	case r := <-reads:
		first.Stop()
		f.Observe(time.Now(), r.rec, r.err)
		if r.err != nil && !errors.Is(r.err, errGone) {
			log.Error("guard: Jenkins not started: cannot read the lease record", "record", opts.Record, "err", r.err)
			return ExitNoLease
		}
	case <-first.C:
		log.Error("guard: Jenkins not started: reading the lease record hangs", "record", opts.Record, "waited", opts.StartTimeout)
		return ExitNoLease
	}
	if why, detail := f.Check(time.Now()); why != WhyNone {
		log.Error("guard: Jenkins not started: this instance does not hold the lease", "reason", string(why), "detail", detail, "record", opts.Record)
		return ExitNoLease
	}

	// As PID 1 the guard inherits every orphan of the container; elsewhere (tests, a
	// guard run by hand) becoming a subreaper gives it the same duty.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		log.Warn("guard: cannot become a child subreaper; orphans may be left unreaped", "err", err)
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGCHLD}, forwarded...)...)
	defer signal.Stop(sigs)
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}})
	if err != nil {
		log.Error("guard: cannot start the command", "command", path, "err", err)
		return ExitCannotStart
	}
	last, _ := f.Last()
	log.Info("guard: started Jenkins under the lease fence", "pid", pid, "holder", opts.Holder, "record", opts.Record,
		"fence_at", f.FenceAt().Format(time.RFC3339Nano), "expires", last.Expires.Format(time.RFC3339Nano))

	s := &supervisor{opts: opts, log: log, fence: f, pid: pid}
	return s.loop(ctx, sigs, reads)
}

// supervisor is Run once the child runs.
type supervisor struct {
	opts  Options
	log   *slog.Logger
	fence *Fence
	pid   int

	stopping bool
	killed   bool
}

type readResult struct {
	rec Lease
	err error
}

func (s *supervisor) loop(ctx context.Context, sigs <-chan os.Signal, reads chan readResult) int {
	poll := time.NewTicker(s.opts.PollInterval)
	defer poll.Stop()
	fenceTimer := time.NewTimer(time.Until(s.fence.FenceAt()))
	defer fenceTimer.Stop()
	killTimer := time.NewTimer(time.Hour)
	killTimer.Stop()
	defer killTimer.Stop()
	inFlight := false
	var hungSince time.Time
	done := ctx.Done()

	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGCHLD {
				if code, exited := s.reap(); exited {
					return code
				}
				continue
			}
			s.log.Info("guard: passing a signal on to Jenkins", "signal", sig.String())
			s.signal(sig.(syscall.Signal))
		case <-done:
			done = nil
			s.log.Info("guard: asked to stop; passing SIGTERM on to Jenkins")
			s.signal(syscall.SIGTERM)
		case <-poll.C:
			if inFlight {
				if hungSince.IsZero() {
					hungSince = time.Now()
					s.log.Warn("guard: a read of the lease record hangs; the fence point still holds", "record", s.opts.Record,
						"fence_at", s.fence.FenceAt().Format(time.RFC3339Nano))
				}
				continue
			}
			inFlight = true
			go func() { reads <- readRecord(s.opts.Record, s.opts.Parse) }()
		case r := <-reads:
			inFlight = false
			if !hungSince.IsZero() {
				s.log.Info("guard: the lease record answers again", "hung_for", time.Since(hungSince).Round(time.Millisecond))
				hungSince = time.Time{}
			}
			if r.err != nil && !errors.Is(r.err, errGone) {
				s.log.Warn("guard: cannot read the lease record; the fence point of the last good read stands", "err", r.err,
					"fence_at", s.fence.FenceAt().Format(time.RFC3339Nano))
			}
			s.fence.Observe(time.Now(), r.rec, r.err)
			s.act(killTimer)
			if !s.stopping {
				fenceTimer.Reset(time.Until(s.fence.FenceAt()))
			}
		case <-fenceTimer.C:
			s.fence.Check(time.Now())
			s.act(killTimer)
		case <-killTimer.C:
			s.kill()
		}
	}
}

// act starts the stop once the fence has decided on it.
func (s *supervisor) act(killTimer *time.Timer) {
	why, detail := s.fence.Stopping()
	if why == WhyNone || s.stopping {
		return
	}
	s.stopping = true
	now := time.Now()
	killAt := s.fence.KillAt(now, s.opts.StopGrace)
	if !killAt.After(now) {
		s.log.Error("guard: killing Jenkins now: another controller may already write JENKINS_HOME", "reason", string(why), "detail", detail)
		s.kill()
		return
	}
	s.log.Error("guard: stopping Jenkins before the lease can lapse (SIGTERM, then SIGKILL)", "reason", string(why), "detail", detail,
		"kill_at", killAt.Format(time.RFC3339Nano))
	s.signal(syscall.SIGTERM)
	killTimer.Reset(time.Until(killAt))
}

func (s *supervisor) kill() {
	if s.killed {
		return
	}
	s.killed = true
	s.signal(syscall.SIGKILL)
}

func (s *supervisor) signal(sig syscall.Signal) {
	if err := syscall.Kill(s.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		s.log.Warn("guard: cannot signal Jenkins", "signal", sig.String(), "err", err)
	}
}

// reap collects every exited child (orphans end up with PID 1) and reports the main
// child's exit code once it has exited.
func (s *supervisor) reap() (code int, exited bool) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return code, exited
		}
		if pid != s.pid {
			continue
		}
		exited = true
		switch {
		case ws.Exited():
			code = ws.ExitStatus()
		case ws.Signaled():
			code = 128 + int(ws.Signal())
		default:
			exited = false
		}
		if exited {
			s.log.Info("guard: Jenkins exited", "code", code, "fenced", s.stopping)
		}
	}
}

func withDefaults(o Options, argv []string) (Options, error) {
	if o.ClockSkew == 0 {
		o.ClockSkew = DefaultClockSkew
	}
	if o.StopGrace == 0 {
		o.StopGrace = DefaultStopGrace
	}
	if o.PollInterval == 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	if o.Parse == nil {
		o.Parse = ParseLeaseRecord
	}
	switch {
	case o.Record == "":
		return o, errors.New("--record is required: the lease record's path inside the container")
	case o.Holder == "":
		return o, errors.New("--holder is required: the instance id that holds the lease")
	case o.ClockSkew < 0 || o.StopGrace < 0 || o.PollInterval < 0 || o.StartTimeout < 0:
		return o, errors.New("--skew, --grace, --poll and --start-timeout must not be negative")
	case len(argv) == 0 || argv[0] == "":
		return o, errors.New("no command to run: give it after --")
	}
	return o, nil
}

// readRecord reads and parses the record once; errGone when it does not exist.
func readRecord(path string, parse func([]byte) (Lease, error)) readResult {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return readResult{err: errGone}
	}
	if err != nil {
		return readResult{err: fmt.Errorf("read lease record: %w", err)}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err != nil {
		return readResult{err: fmt.Errorf("read lease record: %w", err)}
	}
	if len(data) > maxRecord {
		return readResult{err: fmt.Errorf("read lease record: larger than %d bytes", maxRecord)}
	}
	rec, err := parse(data)
	if err != nil {
		return readResult{err: err}
	}
	return readResult{rec: rec}
}
