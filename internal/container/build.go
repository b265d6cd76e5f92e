package container

import (
	"context"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/scratch"
)

// BuildImage builds the configured image FROM scratch with binaryPath as its
// only file, at /<base name>; entrypoint defaults to that path. It is for
// simulate and tests, where a static stand-in program plays Jenkins and no
// registry is reachable.
func (r *Runtime) BuildImage(ctx context.Context, binaryPath string, entrypoint []string) error {
	return scratch.Build(ctx, r.cli, r.spec.Image, binaryPath, entrypoint)
}
