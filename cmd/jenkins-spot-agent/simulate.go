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
	compare     bool
	launchDelay time.Duration
	docker      string
	poll        time.Duration
	verbose     bool
}

func (c *simulateCommand) flags(fs *flag.FlagSet) {
	fs.DurationVar(&c.noticeAfter, "notice-after", 5*time.Second, "how long instance A serves before its Spot notice")
	fs.DurationVar(&c.budget, "budget", 40*time.Second, "time from the notice to the termination it names (compressed from 2m)")
	fs.BoolVar(&c.failover, "failover", false, "let the Auto Scaling group launch a replacement that waits on the lease and takes JENKINS_HOME over")
	fs.BoolVar(&c.compare, "compare", false, "run the failover twice, replacement at the notice and after termination, and compare the downtime (implies --failover)")
	fs.DurationVar(&c.launchDelay, "launch-delay", 8*time.Second, "the group's launch of the replacement to its agent starting (EC2 launch and boot, compressed)")
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
	if c.launchDelay <= 0 {
		return usageError{"--launch-delay must be positive"}
	}
	// SIGPIPE too: `simulate | head` closes the pipe, and the rehearsal must still
	// remove its containers, images and directories rather than die at the next write.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGPIPE)
	defer stop()
	limit := c.noticeAfter + c.budget + c.launchDelay + 6*time.Minute
	if c.compare {
		limit *= 2
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	if c.verbose {
		logger = e.log
	}
	sum, err := simulate.Run(ctx, simulate.Options{
		NoticeAfter:  c.noticeAfter,
		Budget:       c.budget,
		Failover:     c.failover || c.compare,
		Compare:      c.compare,
		LaunchDelay:  c.launchDelay,
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
	case sum.BothRanAtOnce || (sum.Compared != nil && sum.Compared.BothRanAtOnce):
		return errors.New("simulate: both instances ran Jenkins at the same time")
	case sum.Compared != nil && len(sum.Compared.FailedSteps) > 0:
		return fmt.Errorf("simulate: %d plan step(s) failed in the run with the %s", len(sum.Compared.FailedSteps), sum.Compared.Order)
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
	if s.Order != "" {
		row("replacement", fmt.Sprintf("%s; the group launches it, which takes %s", s.Order, s.LaunchDelay))
		row("replacement asked for (notice → DetachInstances)", orNever(s.ReplacementAsked, ms))
		row("replacement InService (notice → its agent starts)", orNever(s.ReplacementUp, ms))
		row("successor announced (as A saw it)", announcement(s, ms))
		row("handover began (notice → A deregisters)", ms(s.HandoverBegan))
		row("handover (A released lease → B container start)", ms(s.Handover))
		row("Jenkins downtime (A stop began → B answers)", ms(s.Downtime))
		row("successor's own start (container start → Jenkins answers)", ms(s.SuccessorStart))
		row("Jenkins unreachable via the load balancer (notice → B answers)", fmt.Sprintf("%s, longest gap %s (%d rounds of %s)", ms(s.Unreachable), ms(s.LongestGap), s.ReachRounds, "50ms"))
		row("goal: unreachable ≤ successor's start + 2s", goal(s, ms))
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
	if s.Compared != nil {
		printComparison(e, s, s.Compared)
	}
}

// printComparison puts the failover's figures in both orders side by side.
func printComparison(e *env, at, after *simulate.Summary) {
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	fmt.Fprintln(e.stdout)
	fmt.Fprintf(e.stdout, "downtime through the load balancer, side by side (launch delay %s)\n", at.LaunchDelay)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	row := func(k string, f func(*simulate.Summary) string) {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", k, f(at), f(after))
	}
	fmt.Fprintf(tw, "  \t%s\t%s\n", at.Order, after.Order)
	row("replacement asked for (notice → DetachInstances)", func(s *simulate.Summary) string { return orNever(s.ReplacementAsked, ms) })
	row("replacement InService (notice → its agent starts)", func(s *simulate.Summary) string { return orNever(s.ReplacementUp, ms) })
	row("successor ready on the lease (notice → A saw it)", func(s *simulate.Summary) string { return orNever(s.SuccessorReady, ms) })
	row("handover began (notice → A deregisters)", func(s *simulate.Summary) string { return ms(s.HandoverBegan) })
	row("Jenkins unreachable, total (notice → successor answers)", func(s *simulate.Summary) string { return ms(s.Unreachable) })
	row("longest unreachable gap", func(s *simulate.Summary) string { return ms(s.LongestGap) })
	row("successor's own start (container start → answers)", func(s *simulate.Summary) string { return ms(s.SuccessorStart) })
	row("goal: unreachable ≤ successor's start + 2s", func(s *simulate.Summary) string { return goal(s, ms) })
	row("both Jenkins ever running at once", func(s *simulate.Summary) string { return fmt.Sprint(s.BothRanAtOnce) })
	tw.Flush()
}

// orNever shows a duration from the notice, or that it did not happen.
func orNever(d time.Duration, ms func(time.Duration) string) string {
	if d <= 0 {
		return "never"
	}
	return ms(d)
}

// announcement shows the successor's announcement as the holder saw it last.
func announcement(s *simulate.Summary, ms func(time.Duration) string) string {
	if s.Successor == nil {
		return "none (no successor waited on the lease while A held it)"
	}
	a := s.Successor
	txt := fmt.Sprintf("%s waiting since %s, ready: %t", a.InstanceID, a.Since.UTC().Format("15:04:05.000"), a.Ready)
	if s.SuccessorReady > 0 {
		txt += fmt.Sprintf("; seen ready %s after the notice", ms(s.SuccessorReady))
	}
	return txt
}

// goal says whether Jenkins was unreachable no longer than the successor's own start
// plus 2 s, and whether the successor was ready in time for that to be expected.
func goal(s *simulate.Summary, ms func(time.Duration) string) string {
	verdict := "met"
	if !s.GoalMet() {
		verdict = "not met"
	}
	txt := fmt.Sprintf("%s (%s vs %s + 2s)", verdict, ms(s.Unreachable), ms(s.SuccessorStart))
	if !s.SuccessorInWindow() {
		txt += "; the successor was not ready before the handover"
	}
	return txt
}
