package testenv

import (
	"testing"
)

// recorder catches what Require does to a test.
type recorder struct {
	testing.TB
	skipped, failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Skip(...any)           { r.skipped = true }
func (r *recorder) Fatalf(string, ...any) { r.failed = true }
func (r *recorder) Skipf(string, ...any)  { r.skipped = true }
func (r *recorder) Fatal(...any)          { r.failed = true }

func TestRequireSkipsOutsideCIAndFailsInCI(t *testing.T) {
	t.Setenv("CI", "")
	r := &recorder{TB: t}
	Require(r, false, "no %s", "docker")
	if !r.skipped || r.failed {
		t.Fatalf("outside CI: skipped %v failed %v", r.skipped, r.failed)
	}
	t.Setenv("CI", "true")
	r = &recorder{TB: t}
	Require(r, false, "no docker")
	if r.skipped || !r.failed {
		t.Fatalf("in CI: skipped %v failed %v", r.skipped, r.failed)
	}
	r = &recorder{TB: t}
	Require(r, true, "present")
	if r.skipped || r.failed {
		t.Fatal("acted on a present requirement")
	}
}
