package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/simulate"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// simulateCommand rehearses the whole architecture on this machine: the same agent code
// as run, against emulators of IMDS, ELBv2/Auto Scaling and Jenkins, with a local
// directory as EFS. It needs no AWS account, no root and no network.
type simulateCommand struct {
	noticeAfter time.Duration
	budget      time.Duration
	failover    bool
	docker      string
	poll        time.Duration
	verbose     bool
}

func (c *simulateCommand) flags(fs *flag.FlagSet) {
	fs.DurationVar(&c.noticeAfter, "notice-after", 5*time.Second, "how long instance A serves before its Spot notice")
	fs.DurationVar(&c.budget, "budget", 40*time.Second, "time from the notice to the termination it names (compressed from 2m)")
	fs.BoolVar(&c.failover, "failover", false, "run a second instance that waits on the lease and takes JENKINS_HOME over")
	fs.StringVar(&c.docker, "docker", "auto", "run Jenkins in Docker containers: auto, always or never")
	fs.DurationVar(&c.poll, "poll-interval", time.Second, "the watchers' IMDS poll interval")
	fs.BoolVar(&c.verbose, "verbose", false, "also print the agents' own logs")
}

func (c *simulateCommand) run(ctx context.Context, e *env) error {
	switch c.docker {
	case "auto", "always", "never":
	default:
		return usageError{"--docker must be auto, always or never"}
	}
	if c.budget < 20*time.Second {
		return usageError{"--budget must be at least 20s: the rehearsal keeps a 3s safety margin and a 5s stop grace"}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, c.noticeAfter+c.budget+6*time.Minute)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	if c.verbose {
		logger = e.log
	}
	sum, err := simulate.Run(ctx, simulate.Options{
		NoticeAfter:  c.noticeAfter,
		Budget:       c.budget,
		Failover:     c.failover,
		Docker:       c.docker,
		PollInterval: c.poll,
		Out:          e.stdout,
		Logger:       logger,
	})
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	printSummary(e, sum, c.budget)
	switch {
	case len(sum.FailedSteps) > 0:
		return fmt.Errorf("simulate: %d plan step(s) failed", len(sum.FailedSteps))
	case sum.Margin <= 0:
		return errors.New("simulate: the plan overran the termination time")
	case sum.BothRanAtOnce:
		return errors.New("simulate: both instances ran Jenkins at the same time")
	}
	return nil
}

func printSummary(e *env, s *simulate.Summary, budget time.Duration) {
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	fmt.Fprintln(e.stdout)
	fmt.Fprintf(e.stdout, "summary (budget %s from the notice; Jenkins in %s)\n", budget, map[bool]string{true: "Docker", false: "the in-process stand-in"}[s.Docker])
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) }
	row("detection delay (notice visible → plan started)", ms(s.Detection))
	row("DeregisterTargets sent (after plan start)", ms(s.DeregisterSent))
	row("time to deregister (call done)", ms(s.Deregister))
	row("quiet-down done", ms(s.QuietDown))
	row("drain (builds running at the notice: "+fmt.Sprint(s.BuildsAtNotice)+")", ms(s.Drain))
	row("container stop", ms(s.ContainerStop))
	row("whole plan", ms(s.PlanTotal))
	row("margin left before termination", ms(s.Margin))
	row("target state afterwards", s.TargetState)
	row("lifecycle action", status.OrNone(s.Lifecycle))
	if s.Handover > 0 || s.Downtime > 0 {
		row("handover (A released lease → B container start)", ms(s.Handover))
		row("Jenkins downtime (A stop began → B answers)", ms(s.Downtime))
		row("Pipelines resumed on B", fmt.Sprint(s.ResumedOnB))
		row("both Jenkins ever running at once", fmt.Sprint(s.BothRanAtOnce))
	}
	if len(s.FailedSteps) == 0 {
		row("failed steps", "none")
	} else {
		for _, f := range s.FailedSteps {
			row("FAILED", f)
		}
	}
	tw.Flush()
}
