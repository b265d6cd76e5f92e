package main

import (
	"context"
	"encoding/json"
	"flag"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/control"
)

// statusCommand asks the running agent for its phase, lease, last IMDS poll, notices and
// deadline over the control socket.
type statusCommand struct {
	json   bool
	socket string
}

func (c *statusCommand) flags(fs *flag.FlagSet) {
	fs.BoolVar(&c.json, "json", false, "print JSON")
	fs.StringVar(&c.socket, "socket", "", "control socket (default: control_socket from the configuration)")
}

func (c *statusCommand) run(ctx context.Context, e *env) error {
	path, err := socketPath(e, c.socket)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := control.QueryStatus(ctx, path)
	if err != nil {
		return err
	}
	if c.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return control.WriteStatus(e.stdout, st)
}

// socketPath is --socket, else the configuration's control_socket, else the default.
func socketPath(e *env, flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	cfg, err := config.Load(e.configPath)
	if err == nil {
		return cfg.ControlSocket, nil
	}
	if e.configPath == config.DefaultPath {
		// No configuration readable here (not root?): the packaged default still applies.
		return config.Default().ControlSocket, nil
	}
	return "", err
}
