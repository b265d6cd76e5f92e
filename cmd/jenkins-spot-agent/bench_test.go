package main

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/wiring"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
)

// BenchmarkProcessStart is the cost of starting the static binary up to main and back
// out (the `version` command): the fixed part of the agent's boot before any work.
func BenchmarkProcessStart(b *testing.B) {
	bin := os.Getenv("JENKINS_SPOT_AGENT_BIN")
	if bin == "" {
		b.Skip("set JENKINS_SPOT_AGENT_BIN (make bench does)")
	}
	for i := 0; i < b.N; i++ {
		if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}

// BenchmarkConfigAndWire is the cost of reading and validating the configuration and
// building every adapter (nothing is contacted): the rest of the agent's own work
// before the orchestrator starts.
func BenchmarkConfigAndWire(b *testing.B) {
	path := filepath.Join(b.TempDir(), "config.yaml")
	data, err := os.ReadFile("../../packaging/config.example.yaml")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cfg, err := config.Load(path)
		if err != nil {
			b.Fatal(err)
		}
		w, err := wiring.New(cfg, "", nil, wiring.Endpoints{IMDS: "http://127.0.0.1:1"}, log)
		if err != nil {
			b.Fatal(err)
		}
		_ = w.Docker.Close()
	}
}
