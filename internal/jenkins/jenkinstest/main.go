package jenkinstest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopGrace bounds how long a stop waits for requests in flight.
const stopGrace = 10 * time.Second

// Main runs the double as a program, e.g. as PID 1 of a FROM scratch container:
//
//	--listen :8080 --home /var/jenkins_home --startup-delay 2s [--slow-home 5m] [--listen-delay 1s]
//	--user NAME (--token T | --token-file F | --password P) [--viewer NAME=TOKEN] [--executors 2] [--anonymous-read]
//	--job name=30s --job name=pipeline:45s (repeatable)
//	--job-param JOB:PARAM[:boolean|:password]=DEFAULT --job-node JOB=DURATION --job-disabled JOB (repeatable)
//	--start-build NAME[?PARAM=VALUE&...] (repeatable) [--quiet-down REASON]
//	--fault PATH=KIND[xTIMES] (repeatable; KIND 500, 401, 503, garbage, hang; PATH * for all)
//
// It stops on SIGTERM or SIGINT (it listens for them itself) or when ctx ends, the
// way Jenkins does: no new connections, freestyle builds aborted, Pipelines saved into
// the home; then it returns 0. Bad flags return 2, a failed start or stop 1.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, listen, code := parseFlags(args, stderr)
	if code >= 0 {
		return code
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := cfg.Logger
	if cfg.ListenDelay > 0 {
		log.Info("starting: not listening yet", "for", cfg.ListenDelay)
		select {
		case <-time.After(cfg.ListenDelay):
		case <-ctx.Done():
			return 0
		}
	}
	s := NewServer(cfg)
	ln, err := net.Listen("tcp", listen)
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
	if err := s.open(); err != nil {
		_ = ln.Close()
		log.Error("open home", "err", err)
		return 1
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

// parseFlags reads Main's flags into a Config and the listen address. code is -1 to
// go on, else what Main returns.
func parseFlags(args []string, stderr io.Writer) (cfg Config, listen string, code int) {
	fl := flag.NewFlagSet("jenkins-double", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.StringVar(&listen, "listen", ":8080", "address to listen on")
	fl.StringVar(&cfg.Home, "home", "/var/jenkins_home", "JENKINS_HOME: state file, pid file, saved Pipelines, build history (empty: none)")
	fl.DurationVar(&cfg.StartupDelay, "startup-delay", 0, "answer 503 on every path for this long after start")
	fl.DurationVar(&cfg.SlowHome, "slow-home", 0, "answer 503 for this much longer, as while loading a large home from a throttled EFS")
	fl.DurationVar(&cfg.ListenDelay, "listen-delay", 0, "refuse connections for this long before listening, as while the JVM starts")
	user := fl.String("user", "", "the one user with Overall/Manage")
	token := fl.String("token", "", "the user's API token")
	tokenFile := fl.String("token-file", "", "file holding the user's API token")
	password := fl.String("password", "", "the user's password (POSTs with it need a crumb)")
	viewers := map[string]string{}
	fl.Func("viewer", "a user with an API token and Overall/Read only: NAME=TOKEN (repeatable)", func(v string) error {
		name, tok, ok := strings.Cut(v, "=")
		if !ok || name == "" || tok == "" {
			return fmt.Errorf("want NAME=TOKEN, got %q", v)
		}
		viewers[name] = tok
		return nil
	})
	fl.IntVar(&cfg.Executors, "executors", 2, "regular executors of the built-in node")
	fl.BoolVar(&cfg.AllowAnonymousRead, "anonymous-read", false, "grant Overall/Read to anonymous")
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
	// Options of jobs apply once every --job is read, whatever the order.
	var jobOpts []func() error
	fl.Func("job-param", "a parameter of a job: JOB:PARAM[:boolean|:password]=DEFAULT (repeatable)", func(v string) error {
		job, p, err := parseParamFlag(v)
		if err != nil {
			return err
		}
		jobOpts = append(jobOpts, func() error { return updateJob(jobs, job, func(j *Job) { j.Params = append(j.Params, p) }) })
		return nil
	})
	fl.Func("job-node", "a Pipeline enters a node block after this running time: JOB=DURATION (repeatable)", func(v string) error {
		job, d, ok := strings.Cut(v, "=")
		after, err := time.ParseDuration(d)
		if !ok || err != nil || after <= 0 {
			return fmt.Errorf("want JOB=DURATION with a positive duration, got %q", v)
		}
		jobOpts = append(jobOpts, func() error {
			if !jobs[job].Pipeline {
				return fmt.Errorf("--job-node %s: only a Pipeline job has node blocks", job)
			}
			return updateJob(jobs, job, func(j *Job) { j.NodeAfter = after })
		})
		return nil
	})
	fl.Func("job-disabled", "a disabled job: build requests answer 409 (repeatable)", func(v string) error {
		jobOpts = append(jobOpts, func() error { return updateJob(jobs, v, func(j *Job) { j.Disabled = true }) })
		return nil
	})
	fl.Func("job-unreadable", "a job no user may read: its builds hide behind busy executors (repeatable)", func(v string) error {
		jobOpts = append(jobOpts, func() error { return updateJob(jobs, v, func(j *Job) { j.Unreadable = true }) })
		return nil
	})
	fl.Func("start-build", "start a build of this job at boot, NAME[?PARAM=VALUE&...] (repeatable)", func(v string) error {
		b, err := parseBootFlag(v)
		if err != nil {
			return err
		}
		cfg.Boot = append(cfg.Boot, b)
		return nil
	})
	fl.Func("quiet-down", "start in quiet-down with this reason, after the boot builds started", func(v string) error {
		cfg.QuietingDown, cfg.QuietDownReason = true, v
		return nil
	})
	fl.Func("fault", "answer PATH like KIND for TIMES requests (all without x): PATH=KIND[xTIMES], KIND 500, 401, 503, garbage or hang, PATH * for every path (repeatable)", func(v string) error {
		f, err := ParseFault(v)
		if err != nil {
			return err
		}
		cfg.Faults = append(cfg.Faults, f)
		return nil
	})
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, "", 0
		}
		return cfg, "", 2
	}
	usage := func(format string, a ...any) (Config, string, int) {
		fmt.Fprintf(stderr, "jenkins-double: "+format+"\n", a...)
		return cfg, "", 2
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
	cfg.Users = map[string]User{}
	if *user != "" {
		if *token == "" && *password == "" {
			return usage("--user %s needs --token, --token-file or --password", *user)
		}
		cfg.Users[*user] = User{Token: *token, Password: *password, Manage: true}
	} else if *token != "" || *password != "" {
		return usage("--token and --password need --user")
	}
	for name, tok := range viewers {
		if _, dup := cfg.Users[name]; dup {
			return usage("--viewer %s: already --user", name)
		}
		cfg.Users[name] = User{Token: tok}
	}
	for _, opt := range jobOpts {
		if err := opt(); err != nil {
			return usage("%v", err)
		}
	}
	cfg.Jobs = jobs
	for _, b := range cfg.Boot {
		if _, ok := jobs[b.Job]; !ok {
			return usage("--start-build %s: no such --job", b.Job)
		}
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	return cfg, listen, -1
}

func updateJob(jobs map[string]Job, name string, f func(*Job)) error {
	j, ok := jobs[name]
	if !ok {
		return fmt.Errorf("no --job %s", name)
	}
	f(&j)
	jobs[name] = j
	return nil
}

// parseParamFlag reads JOB:PARAM[:KIND]=DEFAULT.
func parseParamFlag(v string) (string, Param, error) {
	spec, def, ok := strings.Cut(v, "=")
	parts := strings.Split(spec, ":")
	if !ok || len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return "", Param{}, fmt.Errorf("want JOB:PARAM[:boolean|:password]=DEFAULT, got %q", v)
	}
	p := Param{Name: parts[1], Default: def}
	if len(parts) == 3 {
		switch k := ParamKind(parts[2]); k {
		case ParamBoolean, ParamPassword:
			p.Kind = k
		default:
			return "", Param{}, fmt.Errorf("parameter %s: kind %q is neither boolean nor password", p.Name, parts[2])
		}
	}
	return parts[0], p, nil
}

// parseBootFlag reads NAME[?PARAM=VALUE&...].
func parseBootFlag(v string) (Boot, error) {
	name, query, _ := strings.Cut(v, "?")
	if name == "" {
		return Boot{}, fmt.Errorf("want NAME[?PARAM=VALUE&...], got %q", v)
	}
	b := Boot{Job: name}
	if query != "" {
		q, err := url.ParseQuery(query)
		if err != nil {
			return Boot{}, fmt.Errorf("--start-build %s: %w", v, err)
		}
		b.Params = map[string]string{}
		for k, vs := range q {
			b.Params[k] = vs[0]
		}
	}
	return b, nil
}

// Args gives the flags of Main that make a double like cfg (all but --listen), so
// a test can run as a process the double it would run in-process. Logger is not
// carried; what the flags cannot say (more than one user with Manage, a password for
// a viewer, read-only users, job names with / or spaces) is an error.
func (c Config) Args() ([]string, error) {
	args := []string{"--home", c.Home}
	dur := func(flag string, d time.Duration) {
		if d > 0 {
			args = append(args, flag, d.String())
		}
	}
	dur("--startup-delay", c.StartupDelay)
	dur("--slow-home", c.SlowHome)
	dur("--listen-delay", c.ListenDelay)
	var managers []string
	for _, name := range slices.Sorted(maps.Keys(c.Users)) {
		u := c.Users[name]
		switch {
		case u.ReadOnly:
			return nil, fmt.Errorf("jenkins double: user %s: no flag for a read-only user", name)
		case u.Manage:
			managers = append(managers, name)
			args = append(args, "--user", name)
			if u.Token != "" {
				args = append(args, "--token", u.Token)
			}
			if u.Password != "" {
				args = append(args, "--password", u.Password)
			}
		case u.Password != "" || u.Token == "" || strings.Contains(name, "="):
			return nil, fmt.Errorf("jenkins double: user %s: a --viewer has a token and no password", name)
		default:
			args = append(args, "--viewer", name+"="+u.Token)
		}
	}
	if len(managers) > 1 {
		return nil, fmt.Errorf("jenkins double: users %v: the flags allow one user with Manage", managers)
	}
	if c.Executors > 0 {
		args = append(args, "--executors", strconv.Itoa(c.Executors))
	}
	if c.AllowAnonymousRead {
		args = append(args, "--anonymous-read")
	}
	for _, name := range slices.Sorted(maps.Keys(c.Jobs)) {
		j := c.Jobs[name]
		if strings.ContainsAny(name, "/ ?:=") {
			return nil, fmt.Errorf("jenkins double: job %q: the flags allow no / space ? : = in a job name", name)
		}
		spec := j.Duration.String()
		if j.Pipeline {
			spec = "pipeline:" + spec
		}
		args = append(args, "--job", name+"="+spec)
		for _, p := range j.Params {
			kind := ""
			if p.Kind != ParamString {
				kind = ":" + string(p.Kind)
			}
			args = append(args, "--job-param", name+":"+p.Name+kind+"="+p.Default)
		}
		if j.NodeAfter > 0 {
			args = append(args, "--job-node", name+"="+j.NodeAfter.String())
		}
		if j.Disabled {
			args = append(args, "--job-disabled", name)
		}
		if j.Unreadable {
			args = append(args, "--job-unreadable", name)
		}
	}
	for _, b := range c.Boot {
		v := b.Job
		if len(b.Params) > 0 {
			q := url.Values{}
			for k, val := range b.Params {
				q.Set(k, val)
			}
			v += "?" + q.Encode()
		}
		args = append(args, "--start-build", v)
	}
	if c.QuietingDown {
		args = append(args, "--quiet-down", c.QuietDownReason)
	}
	for _, f := range c.Faults {
		args = append(args, "--fault", f.String())
	}
	return args, nil
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
