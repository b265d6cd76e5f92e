package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"
)

// versionCommand prints version, commit and Go version.
type versionCommand struct{}

func (c *versionCommand) flags(*flag.FlagSet) {}

func (c *versionCommand) run(_ context.Context, e *env) error {
	v, rev := buildVersion()
	fmt.Fprintf(e.stdout, "jenkins-spot-agent %s (commit %s, %s %s/%s)\n", v, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
