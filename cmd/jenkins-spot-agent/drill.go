package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/control"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// drillCommand asks the running agent to run the shutdown plan now, as if a notice had
// arrived, and prints the timeline as it happens.
type drillCommand struct {
	budget time.Duration
	socket string
}

func (c *drillCommand) flags(fs *flag.FlagSet) {
	fs.DurationVar(&c.budget, "budget", agent.DefaultBudget, "time to the pretend termination")
	fs.StringVar(&c.socket, "socket", "", "control socket (default: control_socket from the configuration)")
}

func (c *drillCommand) run(ctx context.Context, e *env) error {
	if c.budget <= 0 {
		return usageError{"--budget must be positive"}
	}
	path, err := socketPath(e, c.socket)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.budget+time.Minute)
	defer cancel()
	start := time.Now()
	fmt.Fprintf(e.stdout, "drill: running the shutdown plan with a %s budget\n", c.budget)
	err = control.RunDrill(ctx, path, c.budget, func(ev status.Event) {
		fmt.Fprintln(e.stdout, timelineLine(start, "", ev))
	})
	if err != nil {
		return fmt.Errorf("drill: %w", err)
	}
	fmt.Fprintln(e.stdout, "drill: done")
	return nil
}

// timelineLine renders one event: time since start, who, what, outcome.
func timelineLine(start time.Time, who string, ev status.Event) string {
	at := fmt.Sprintf("%+8.3fs", ev.At.Sub(start).Seconds())
	if who != "" {
		who = "[" + who + "] "
	}
	switch {
	case ev.Notice != nil:
		return fmt.Sprintf("%s  %snotice       %s %s", at, who, ev.Notice.Kind, ev.Notice.Detail)
	case ev.Phase != "":
		return fmt.Sprintf("%s  %sphase        %s", at, who, ev.Message)
	case ev.Step != "" && !ev.Done:
		if ev.Message != "" {
			return fmt.Sprintf("%s  %s%-12s %s", at, who, ev.Step, ev.Message)
		}
		return fmt.Sprintf("%s  %s%-12s started", at, who, ev.Step)
	case ev.Step != "":
		outcome := "ok"
		if ev.Err != "" {
			outcome = "FAILED: " + ev.Err
		}
		return fmt.Sprintf("%s  %s%-12s %s (%s)", at, who, ev.Step, outcome, ev.Duration.Round(time.Millisecond))
	}
	return fmt.Sprintf("%s  %s%s", at, who, ev.Message)
}
