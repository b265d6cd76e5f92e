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
		fmt.Fprintf(e.stdout, "%+8.3fs  %s\n", ev.At.Sub(start).Seconds(), ev.Line())
	})
	if err != nil {
		return fmt.Errorf("drill: %w", err)
	}
	fmt.Fprintln(e.stdout, "drill: done")
	return nil
}
