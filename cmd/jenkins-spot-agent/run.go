package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/wiring"

	"golang.org/x/sync/errgroup"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/control"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/metrics"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/notify"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/webhook"
)

// aliveWindow is how long the agent's loops may go without progress before systemd's
// watchdog is no longer fed (WatchdogSec=30s in the unit).
const aliveWindow = 20 * time.Second

// tokenPrefetchTimeout bounds the retries of the first read of a token kept in AWS.
const tokenPrefetchTimeout = 5 * time.Minute

// runCommand is the service itself (systemd Type=notify).
type runCommand struct{}

func (c *runCommand) flags(*flag.FlagSet) {}

func (c *runCommand) run(ctx context.Context, e *env) error {
	// Stop signals are caught from the first moment: a SIGTERM (systemctl stop, a
	// shutdown) that comes while the agent starts is kept for it, and it runs the plan
	// (an agent restarted next to a running Jenkins stops it), instead of killing the
	// process with the signal's default action.
	sigs := stopSignals()
	defer signal.Stop(sigs)
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	token, _, err := cfg.JenkinsToken()
	if err != nil {
		return &config.InvalidError{Path: e.configPath, Problems: []string{err.Error()}}
	}
	v, rev := buildVersion()
	m := metrics.New(v, rev)
	w, err := wiring.New(cfg, token, m, wiring.Endpoints{
		IMDS: os.Getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT"),
	}, e.log)
	if err != nil {
		return err
	}
	n := notify.New(e.log)
	w.Deps.Notifier = n
	if w.Token != nil {
		// Read the token now, not in the middle of a shutdown plan.
		go func() {
			pctx, cancel := context.WithTimeout(ctx, tokenPrefetchTimeout)
			defer cancel()
			if err := w.Token.Prefetch(pctx); err != nil {
				e.log.Error("jenkins api token not read; quiet-down and the build list will try again", "source", w.Token.Source().String(), "err", err)
			}
		}()
	}
	hook, err := newWebhook(cfg, m, e)
	if err != nil {
		return err
	}
	opts := agent.Options{Config: cfg, Deps: w.Deps, Logger: e.log}
	if hook != nil {
		opts.OnEvent = hook.Event
		hctx, hcancel := context.WithCancel(ctx)
		hdone := make(chan struct{})
		go func() { _ = hook.Run(hctx); close(hdone) }()
		// The end of the plan is announced after the agent returns: flush it.
		defer func() { hcancel(); <-hdone }()
	}
	a, err := agent.New(opts)
	if err != nil {
		return err
	}
	e.log.Info("jenkins-spot-agent starting", "version", v, "commit", rev, "config", e.configPath)
	return serveAgent(ctx, e, cfg, a, m, n, sigs)
}

// stopSignals relays SIGTERM and SIGINT; it keeps two until they are read.
func stopSignals() chan os.Signal {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	return sigs
}

// newWebhook builds the webhook notifier when a URL is configured; nil otherwise.
func newWebhook(cfg config.Config, m *metrics.Metrics, e *env) (*webhook.Notifier, error) {
	u, _, err := cfg.WebhookURL()
	if err != nil || u == "" {
		if err != nil {
			return nil, &config.InvalidError{Path: e.configPath, Problems: []string{err.Error()}}
		}
		return nil, nil
	}
	n, err := webhook.New(webhook.Options{
		URL:      u,
		Format:   cfg.Webhook.Format,
		Timeout:  cfg.Webhook.Timeout.D(),
		Attempts: cfg.Webhook.Attempts,
		OnResult: m.WebhookNotification,
		Logger:   e.log,
	})
	if err != nil {
		return nil, &config.InvalidError{Path: e.configPath, Problems: []string{err.Error()}}
	}
	return n, nil
}

// serveAgent runs an agent with its control socket, metrics endpoint, watchdog and
// signal handling, until the agent returns. The first SIGTERM/SIGINT starts the stop
// policy; a second one forces a fast stop. sigs relays the signals (from stopSignals,
// caught before the agent was built); nil catches them from now on.
func serveAgent(ctx context.Context, e *env, cfg config.Config, a *agent.Agent, m *metrics.Metrics, n *notify.Notifier, sigs chan os.Signal) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	srv, err := control.Listen(cfg.ControlSocket, a, e.log)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx) })
	if cfg.Metrics.ListenAddress != "" {
		g.Go(func() error {
			if err := m.Serve(gctx, cfg.Metrics.ListenAddress, cfg.Metrics.WebConfigFile, e.log); err != nil && gctx.Err() == nil {
				e.log.Error("metrics endpoint stopped", "err", err)
			}
			return nil
		})
	}
	if n != nil {
		// Fed while the agent's own loops make progress (each beats every second); IMDS
		// blindness shows in metrics and status, and a restart would not cure it.
		g.Go(func() error { n.RunWatchdog(gctx, func() bool { return a.Alive(aliveWindow) }); return nil })
	}

	if sigs == nil {
		sigs = stopSignals()
		defer signal.Stop(sigs)
	}
	go func() {
		count := 0
		for {
			select {
			case s := <-sigs:
				count++
				if count == 1 {
					a.Stop(s.String())
				} else {
					a.StopNow()
				}
			case <-ctx.Done():
				return
			}
		}
	}()

	runErr := a.Run(ctx)
	cancel()
	_ = g.Wait()
	return runErr
}
