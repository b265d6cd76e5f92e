package migrate

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs/efstest/latencyfs"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// TestCopyOntoLatencyFS copies a 2,000-entry home onto a target that answers every
// request after 1 ms, as EFS does, beside `cp -a`: both copies must be exact, and
// Copy must have measured the latency and chosen many workers for it. Times are
// logged, not asserted (make bench-migrate measures them).
func TestCopyOntoLatencyFS(t *testing.T) {
	home := latencyfs.New(t, time.Millisecond)
	testenv.Root(t, "mounts a FUSE file system")
	cp := testenv.Tool(t, "cp", "coreutils")
	src := filepath.Join(t.TempDir(), "old-home")
	must(t, os.Mkdir(src, 0o755))
	shape := makeJenkinsHome(t, src, 2000, 3)

	to := filepath.Join(home.Dir, "migrate")
	must(t, os.Mkdir(to, 0o755))
	home.ResetCounts()
	start := time.Now()
	rep, err := Copy(context.Background(), Options{From: src, To: to, Verify: true})
	if err != nil {
		t.Fatalf("Copy() = %v\ndifferences: %v", err, rep.Differences)
	}
	t.Logf("migrate: %s, %d workers, latency %s, %d requests: %s", time.Since(start), rep.Workers, rep.Latency, home.Requests(), home.Counts())
	if rep.Files+rep.Symlinks+rep.Hardlinks != shape.Files || rep.Hardlinks != shape.Hardlinks {
		t.Fatalf("report %+v, home %+v", rep, shape)
	}
	if rep.Latency < time.Millisecond || rep.Workers != WorkersFor(rep.Latency) || rep.Workers < 10 {
		t.Fatalf("measured latency %s and chose %d workers; want at least the 1 ms delay, and many workers", rep.Latency, rep.Workers)
	}
	if home.MaxInFlight() < 10 {
		t.Fatalf("at most %d requests were in flight at once", home.MaxInFlight())
	}

	cpTo := filepath.Join(home.Dir, "cp")
	must(t, os.Mkdir(cpTo, 0o755))
	home.ResetCounts()
	start = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cp, "-a", src+"/.", cpTo+"/").CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	t.Logf("cp -a: %s, %d requests: %s", time.Since(start), home.Requests(), home.Counts())
	for _, dst := range []string{filepath.Join(home.Backing, "migrate"), filepath.Join(home.Backing, "cp")} {
		if diffs, err := VerifyTree(context.Background(), src, dst, nil); err != nil || len(diffs) > 0 {
			t.Errorf("%s differs from the source: %v %v", dst, diffs, err)
		}
	}
}
