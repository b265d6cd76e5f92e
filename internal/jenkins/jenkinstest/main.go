package jenkinstest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// stopGrace bounds how long a stop waits for requests in flight.
const stopGrace = 10 * time.Second

// Main runs the double as a program, e.g. as PID 1 of a FROM scratch container:
//
//	--listen :8080 --home /var/jenkins_home --startup-delay 2s
//	--user NAME (--token T | --token-file F | --password P) [--executors 2] [--anonymous-read]
//	--job name=30s --job name=pipeline:45s --start-build name (repeatable)
//
// It stops on SIGTERM or SIGINT (it listens for them itself) or when ctx ends, the
// way Jenkins does: no new connections, freestyle builds aborted, Pipelines saved into
// the home; then it returns 0. Bad flags return 2, a failed start or stop 1.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("jenkins-double", flag.ContinueOnError)
	fl.SetOutput(stderr)
	listen := fl.String("listen", ":8080", "address to listen on")
	home := fl.String("home", "/var/jenkins_home", "JENKINS_HOME: state file, pid file, saved Pipelines (empty: none)")
	delay := fl.Duration("startup-delay", 0, "answer 503 on every path for this long after start")
	user := fl.String("user", "", "the one user, with Overall/Manage")
	token := fl.String("token", "", "the user's API token")
	tokenFile := fl.String("token-file", "", "file holding the user's API token")
	password := fl.String("password", "", "the user's password (POSTs with it need a crumb)")
	executors := fl.Int("executors", 2, "regular executors of the built-in node")
	anonRead := fl.Bool("anonymous-read", false, "grant Overall/Read to anonymous")
	debug := fl.Bool("debug", false, "log every request")
	jobs := map[string]Job{}
	fl.Func("job", "a job: name=DURATION or name=pipeline:DURATION; 0s runs until stop (repeatable)", func(v string) error {
		name, job, err := parseJobFlag(v)
		if err != nil {
			return err
		}
		jobs[name] = job
		return nil
	})
	var boot []string
	fl.Func("start-build", "start a build of this job at boot (repeatable)", func(v string) error {
		boot = append(boot, v)
		return nil
	})
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "jenkins-double: "+format+"\n", a...)
		return 2
	}
	if fl.NArg() > 0 {
		return usage("unexpected argument %q", fl.Arg(0))
	}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return usage("--token-file: %v", err)
		}
		*token = strings.TrimSpace(string(b))
	}
	users := map[string]User{}
	if *user != "" {
		if *token == "" && *password == "" {
			return usage("--user %s needs --token, --token-file or --password", *user)
		}
		users[*user] = User{Token: *token, Password: *password, Manage: true}
	} else if *token != "" || *password != "" {
		return usage("--token and --password need --user")
	}
	for _, j := range boot {
		if _, ok := jobs[j]; !ok {
			return usage("--start-build %s: no such --job", j)
		}
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	s := NewServer(Config{
		StartupDelay:       *delay,
		Users:              users,
		AllowAnonymousRead: *anonRead,
		Jobs:               jobs,
		Executors:          *executors,
		Home:               *home,
		Logger:             log,
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("listen", "err", err)
		return 1
	}
	// Behind a port mapping only the request knows the host the client used, so an
	// address on all interfaces leaves the root URL to each request, as Jenkins does
	// without a configured root URL.
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsUnspecified() {
		s.SetRootURL("http://" + ln.Addr().String() + "/")
	}
	if err := s.openHome(); err != nil {
		_ = ln.Close()
		log.Error("open home", "err", err)
		return 1
	}
	for _, j := range boot {
		u, err := s.StartBuild(j)
		if err != nil {
			log.Error("start build", "job", j, "err", err)
			continue
		}
		log.Info("build scheduled at boot", "url", u)
	}
	s.serve(ln)
	fmt.Fprintf(stdout, "jenkins double %s listening on http://%s (instance %s, pid %d)\n", Version, ln.Addr(), s.instance, os.Getpid())

	<-ctx.Done()
	log.Info("stopping", "cause", context.Cause(ctx))
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopGrace)
	defer cancel()
	if err := s.Shutdown(stopCtx); err != nil {
		log.Error("stop", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// parseJobFlag reads name=DURATION or name=pipeline:DURATION.
func parseJobFlag(v string) (string, Job, error) {
	name, spec, ok := strings.Cut(v, "=")
	if !ok || name == "" || strings.ContainsAny(name, "/ ") {
		return "", Job{}, fmt.Errorf("want name=DURATION or name=pipeline:DURATION, got %q", v)
	}
	var job Job
	if rest, isPipeline := strings.CutPrefix(spec, "pipeline:"); isPipeline {
		job.Pipeline, spec = true, rest
	}
	d, err := time.ParseDuration(spec)
	if err != nil || d < 0 {
		return "", Job{}, fmt.Errorf("job %s: want a duration like 30s, got %q", name, spec)
	}
	job.Duration = d
	return name, job, nil
}
