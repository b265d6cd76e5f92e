package testenv

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"
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

func TestSkipShortSkipsOnlyUnderShort(t *testing.T) {
	r := &recorder{TB: t}
	SkipShort(r, "needs Docker")
	if r.skipped != testing.Short() || r.failed {
		t.Fatalf("under -short=%v: skipped %v failed %v", testing.Short(), r.skipped, r.failed)
	}
}

func TestContextOutlivesTheTestBodyUntilCleanup(t *testing.T) {
	var ctx context.Context
	t.Run("inner", func(t *testing.T) {
		ctx = Context(t, time.Hour)
		t.Cleanup(func() {
			if ctx.Err() != nil {
				t.Error("the context ended before the cleanups ran")
			}
		})
	})
	if ctx.Err() == nil {
		t.Error("the context outlived its test")
	}
}

func TestRandomSuffix(t *testing.T) {
	a, b := RandomSuffix(t), RandomSuffix(t)
	if len(a) != 12 || a == b {
		t.Errorf("RandomSuffix gave %q and %q", a, b)
	}
}

func TestFreePort(t *testing.T) {
	port := FreePort(t)
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("port %d is not free: %v", port, err)
	}
	ln.Close()
}
