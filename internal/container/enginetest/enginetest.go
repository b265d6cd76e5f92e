// Package enginetest reaches a real Docker Engine for tests: a client for the shared
// daemon (skipping on a workstation without one, failing under CI=true), a private
// dockerd a test may kill and restart, and small images FROM scratch built from a
// static Go binary, so that no registry is needed. It imports nothing of the agent's
// own container package, so that package's tests can use it; tests elsewhere use the
// same helpers through containertest.
package enginetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/scratch"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// NewClient returns a client for DOCKER_HOST (or the default socket) that
// negotiates the API version, as the agent's own client does.
func NewClient() (*client.Client, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return cli, nil
}

// Reachable reports whether the Docker daemon answers a ping before ctx ends.
func Reachable(ctx context.Context) bool {
	cli, err := NewClient()
	if err != nil {
		return false
	}
	defer cli.Close()
	_, err = cli.Ping(ctx)
	return err == nil
}

// RequireDocker returns a client for a daemon that answers, or skips the test
// when there is none. Under CI=true a missing daemon fails the test instead,
// so that CI cannot pass by skipping.
func RequireDocker(t testing.TB) *client.Client {
	t.Helper()
	testenv.SkipShort(t, "needs Docker")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := NewClient()
	if err == nil {
		_, err = cli.Ping(ctx)
		if err != nil {
			cli.Close()
		}
	}
	if err != nil {
		testenv.Missing(t, "docker daemon unreachable: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// StaticBinary builds the Go main package pkg (an import path, or a path
// relative to the test's directory such as ./testdata/server) with
// CGO_ENABLED=0, so that it runs in an image with no libc, and returns the
// binary's path in a temporary directory.
func StaticBinary(t testing.TB, pkg string) string {
	t.Helper()
	name := filepath.Base(strings.TrimSuffix(pkg, "/"))
	if abs, err := filepath.Abs(pkg); err == nil && (name == "." || name == "..") {
		name = filepath.Base(abs)
	}
	out := filepath.Join(t.TempDir(), name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := BuildStatic(ctx, pkg, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// AgentBinary is the agent's static binary: the file $JENKINS_SPOT_AGENT_BIN names
// (`make build` writes one, and the Makefile's test targets set it), or else a static
// build of pkg (the path of cmd/jenkins-spot-agent relative to the test's directory)
// made for the test. A JENKINS_SPOT_AGENT_BIN that names no file fails the test.
func AgentBinary(t testing.TB, pkg string) string {
	t.Helper()
	if p := os.Getenv("JENKINS_SPOT_AGENT_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatalf("JENKINS_SPOT_AGENT_BIN: %v", err)
		}
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("JENKINS_SPOT_AGENT_BIN: %v (run make build, or unset it to build here)", err)
		}
		return abs
	}
	return StaticBinary(t, pkg)
}

// BuildStatic builds the Go main package pkg into the file out with
// CGO_ENABLED=0, using the go command on PATH (go test puts the bin directory of
// its own toolchain first on the PATH of the tests it runs). Relative package
// paths are relative to the working directory. Without a go command on PATH it
// returns an error saying so.
func BuildStatic(ctx context.Context, pkg, out string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("build %s: %w: put the go command on PATH", pkg, err)
	}
	cmd := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// BuildImage builds tag as an image FROM scratch holding only binaryPath,
// copied to /<base name of binaryPath>; entrypoint defaults to that path.
func BuildImage(ctx context.Context, cli client.APIClient, tag, binaryPath string, entrypoint []string) error {
	return scratch.Build(ctx, cli, tag, binaryPath, entrypoint)
}
