package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/guard"
)

// guardMain runs the lease guard in the foreground: hidden, it is the entrypoint of the
// Jenkins container, bind-mounted read-only from the agent's own executable, and runs
// the image's command as its child:
//
//	jenkins-spot-agent guard --record HOME/.jenkins-spot-agent/lease.json --holder i-0123... -- CMD...
//
// It stops the child when the lease record names another holder, is released or is not
// renewed in time, so Jenkins stops before the lease can lapse even when the agent is
// gone. The exit code is the child's (128+signal when killed), 75 when the child was not
// started for want of the lease, 127 when it cannot be started, 2 for bad usage.
func guardMain(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("jenkins-spot-agent guard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts guard.Options
	fs.StringVar(&opts.Record, "record", "", "the lease record's path inside the container")
	fs.StringVar(&opts.Holder, "holder", "", "the instance id that must hold the lease")
	fs.DurationVar(&opts.ClockSkew, "skew", guard.DefaultClockSkew, "the lease's allowance for clock error")
	fs.DurationVar(&opts.StopGrace, "grace", guard.DefaultStopGrace, "SIGTERM-to-SIGKILL grace of a fence stop (never past expires - skew)")
	fs.DurationVar(&opts.PollInterval, "poll", guard.DefaultPollInterval, "how often the record is read")
	fs.DurationVar(&opts.StartTimeout, "start-timeout", guard.DefaultStartTimeout, "bound on the first read, before the command starts")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "jenkins-spot-agent guard: no command: give it after --")
		return exitUsage
	}
	opts.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	return guard.Run(ctx, opts, fs.Args())
}
