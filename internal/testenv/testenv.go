// Package testenv holds the one rule for tests that need something this machine may
// lack (Docker, root, promtool, a mount namespace): skip with the reason on a
// workstation, fail under CI=true, where a skip would let CI pass without the test.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// CI reports whether the tests run in CI, where every peer must be present.
func CI() bool { return os.Getenv("CI") == "true" }

// Require skips (or, in CI, fails) the test unless ok.
func Require(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("%s (required under CI=true)", msg)
		return
	}
	t.Skip(msg)
}

// Missing skips (or, in CI, fails) the test: something it needs is absent.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	Require(t, false, format, args...)
}

// Root requires root, for mounts and namespaces.
func Root(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "needs root")
}

// Tool returns the path of a program, requiring it; pkg names the Debian package.
func Tool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, err == nil, "%s not found (Debian package %s)", name, pkg)
	return p
}
