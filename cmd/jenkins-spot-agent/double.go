package main

import (
	"context"
	"io"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins/jenkinstest"
)

// jenkinsDouble runs the Jenkins test double in the foreground. simulate runs it as
// PID 1 of a FROM scratch image built from this very binary, so no registry is needed.
func jenkinsDouble(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return jenkinstest.Main(ctx, args, stdout, stderr)
}
