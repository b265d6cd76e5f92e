// Command jenkins-spot-agent keeps a Jenkins controller's home on EFS and its container
// alive across Spot interruptions. main only parses, wires and exits; every command
// returns an error, and the exit code is chosen in one place.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
)

// Stamped at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = ""
	commit  = ""
)

// Exit codes of the product contract.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitConfig  = 78 // EX_CONFIG: the unit's RestartPreventExitStatus stops a restart loop
	usageHeader = `usage: jenkins-spot-agent COMMAND [flags]

commands:
  run         the service: mount EFS, take the lease, run Jenkins, drain on interruption
  simulate    rehearse boot, a Spot notice and the shutdown plan on this machine (no AWS)
  preflight   check everything run needs and print a pass/fail table
  drill       run the shutdown plan now on the running agent (a game day)
  status      show the running agent's phase, lease, notices and deadline
  migrate     copy an existing JENKINS_HOME onto the mounted EFS home
  version     print version, commit and Go version

flags common to every command: --config PATH, --log-level LEVEL, --log-format text|json
run 'jenkins-spot-agent COMMAND --help' for a command's flags
`
)

func main() {
	os.Exit(Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// command is one subcommand: it registers its flags and runs.
type command interface {
	flags(fs *flag.FlagSet)
	run(ctx context.Context, env *env) error
}

// env is what every command gets: the common flags, the logger and the output streams.
type env struct {
	configPath string
	logLevel   string
	logFormat  string
	stdout     io.Writer
	stderr     io.Writer
	log        *slog.Logger
}

// loadConfig reads and validates the configuration file, and logs what it allows but
// an operator should know is dangerous.
func (e *env) loadConfig() (config.Config, error) {
	cfg, err := config.Load(e.configPath)
	if err != nil {
		return cfg, err
	}
	for _, w := range cfg.Warnings() {
		e.log.Warn("DANGEROUS CONFIGURATION: " + w)
	}
	return cfg, nil
}

type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

// Main runs one command and returns the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usageHeader)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	name := args[0]
	var cmd command
	switch name {
	case "run":
		cmd = &runCommand{}
	case "simulate":
		cmd = &simulateCommand{}
	case "preflight":
		cmd = &preflightCommand{}
	case "drill":
		cmd = &drillCommand{}
	case "status":
		cmd = &statusCommand{}
	case "migrate":
		cmd = &migrateCommand{}
	case "version":
		cmd = &versionCommand{}
	case "jenkins-double":
		// Hidden: the Jenkins test double, run as PID 1 of a FROM scratch image by
		// simulate and the tests.
		return jenkinsDouble(ctx, args[1:], stdout, stderr)
	case "guard":
		// Hidden: the lease guard, the entrypoint of the Jenkins container.
		return guardMain(ctx, args[1:], stderr)
	default:
		fmt.Fprintf(stderr, "jenkins-spot-agent: unknown command %q\n\n%s", name, usageHeader)
		return exitUsage
	}

	e := &env{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("jenkins-spot-agent "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&e.configPath, "config", config.DefaultPath, "configuration file")
	fs.StringVar(&e.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&e.logFormat, "log-format", "text", "text or json")
	cmd.flags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "jenkins-spot-agent %s: unexpected argument %q: commands take flags only (--config PATH)\n", name, fs.Arg(0))
		return exitUsage
	}
	if name == "simulate" && flagSet(fs, "config") {
		fmt.Fprintf(stderr, "jenkins-spot-agent simulate: --config: simulate rehearses on its built-in defaults and reads no configuration file; "+
			"check yours with preflight, and rehearse it on a running agent with drill\n")
		return exitUsage
	}
	logger, err := newLogger(stderr, e.logLevel, e.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "jenkins-spot-agent %s: %v\n", name, err)
		return exitUsage
	}
	e.log = logger

	err = cmd.run(ctx, e)
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "jenkins-spot-agent %s: %v\n", name, err)
		return exitUsage
	case config.IsInvalid(err):
		var ie *config.InvalidError
		if errors.As(err, &ie) && ie.Path == "" {
			ie.Path = e.configPath // an adapter's check: the file is still the one to fix
		}
		logger.Error("configuration refused; nothing was touched", "err", err)
		fmt.Fprintf(stderr, "jenkins-spot-agent %s: %v\n", name, err)
		return exitConfig
	default:
		logger.Error(name+" failed", "err", err)
		return exitFailed
	}
}

// flagSet reports whether the command line set the flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// buildVersion returns the stamped version and commit, or what the Go toolchain recorded.
func buildVersion() (string, string) {
	v, c := version, commit
	if info, ok := debug.ReadBuildInfo(); ok {
		if v == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && c == "" {
				c = s.Value
			}
		}
	}
	if v == "" {
		v = "dev"
	}
	if c == "" {
		c = "unknown"
	}
	return v, c
}
