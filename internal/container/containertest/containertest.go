// Package containertest holds what tests and simulations need around the Jenkins
// container: a Runtime double that behaves like container.Runtime (see runtime.go), a
// stand-in Jenkins program (the webserver package), and the helpers of enginetest for
// a real Docker Engine: a client, a private dockerd, images FROM scratch.
package containertest

import (
	"context"
	"testing"

	"github.com/docker/docker/client"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/enginetest"
)

// WebserverPackage is the import path of the stand-in Jenkins program, for
// BuildStatic: it answers HTTP, records its starts and stops in a mounted directory,
// reacts to SIGTERM as asked, and exits 3 on SIGUSR1 (a crash).
const WebserverPackage = "github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/containertest/webserver"

// NewClient returns a client for DOCKER_HOST (or the default socket) that
// negotiates the API version, as the agent's own client does.
func NewClient() (*client.Client, error) { return enginetest.NewClient() }

// Reachable reports whether the Docker daemon answers a ping before ctx ends.
func Reachable(ctx context.Context) bool { return enginetest.Reachable(ctx) }

// RequireDocker returns a client for a daemon that answers, or skips the test
// when there is none. Under CI=true a missing daemon fails the test instead,
// so that CI cannot pass by skipping.
func RequireDocker(t testing.TB) *client.Client { return enginetest.RequireDocker(t) }

// StaticBinary builds the Go main package pkg with CGO_ENABLED=0 into a temporary
// directory and returns the binary's path.
func StaticBinary(t testing.TB, pkg string) string { return enginetest.StaticBinary(t, pkg) }

// AgentBinary is $JENKINS_SPOT_AGENT_BIN or a static build of pkg; see enginetest.AgentBinary.
func AgentBinary(t testing.TB, pkg string) string { return enginetest.AgentBinary(t, pkg) }

// BuildStatic builds the Go main package pkg into the file out with CGO_ENABLED=0.
func BuildStatic(ctx context.Context, pkg, out string) error {
	return enginetest.BuildStatic(ctx, pkg, out)
}

// BuildImage builds tag as an image FROM scratch holding only binaryPath,
// copied to /<base name of binaryPath>; entrypoint defaults to that path.
func BuildImage(ctx context.Context, cli client.APIClient, tag, binaryPath string, entrypoint []string) error {
	return enginetest.BuildImage(ctx, cli, tag, binaryPath, entrypoint)
}

// Daemon is a private dockerd (see enginetest.Daemon).
type Daemon = enginetest.Daemon

// StartDaemon starts a private dockerd that a test may kill and restart (see
// enginetest.StartDaemon).
func StartDaemon(t testing.TB) *Daemon { return enginetest.StartDaemon(t) }
