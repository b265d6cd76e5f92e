package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs/efstest/latencyfs"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

func migrateSource(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "old-home")
	for name, body := range map[string]string{
		"config.xml":                      "<hudson/>",
		"jobs/nightly/config.xml":         "<project/>",
		"jobs/nightly/builds/7/build.xml": "<build/>",
		"jobs/nightly/builds/7/log":       strings.Repeat("line\n", 1000),
	} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("builds/7", filepath.Join(src, "jobs/nightly/lastSuccessfulBuild")); err != nil {
		t.Fatal(err)
	}
	return src
}

func TestMigrateCopiesUnderTheLeaseAndRefusesANonEmptyHome(t *testing.T) {
	src := migrateSource(t)
	dst := filepath.Join(t.TempDir(), "efs-home")
	out := runMain(t, 0, "migrate", "--from", src, "--to", dst, "--holder", "i-0123456789abcdef0", "--config", filepath.Join(t.TempDir(), "absent.yaml"))
	if !strings.Contains(out, "migrated 4 files") {
		t.Fatalf("report: %s", out)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "jobs/nightly/builds/7/build.xml")); err != nil || string(b) != "<build/>" {
		t.Fatalf("copy: %q %v", b, err)
	}
	if target, err := os.Readlink(filepath.Join(dst, "jobs/nightly/lastSuccessfulBuild")); err != nil || target != "builds/7" {
		t.Fatalf("symlink: %q %v", target, err)
	}
	// The lease was taken for the copy and released after it.
	l, err := lease.New(lease.Options{Dir: dst, HolderID: "peek"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := l.Peek(ctx)
	if err != nil || st.Held || st.Holder != "i-0123456789abcdef0/migrate" {
		t.Fatalf("lease after migrate: %+v %v", st, err)
	}

	// A second copy into the now non-empty home is refused without --resume...
	runMain(t, 1, "migrate", "--from", src, "--to", dst, "--holder", "i-0123456789abcdef0")
	// ...and with --resume it skips what is already identical.
	out = runMain(t, 0, "migrate", "--from", src, "--to", dst, "--holder", "i-0123456789abcdef0", "--resume")
	if !strings.Contains(out, "already identical") || strings.Contains(out, "(0 already identical)") {
		t.Fatalf("resume did not skip identical files: %s", out)
	}
}

func TestMigrateRefusesWhileAnotherControllerHoldsTheHome(t *testing.T) {
	src := migrateSource(t)
	dst := t.TempDir()
	holder, err := lease.New(lease.Options{Dir: dst, HolderID: "i-0fffffffffffffff0", TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := holder.Acquire(ctx, func(status.LeaseState) {}); err != nil {
		t.Fatal(err)
	}
	runMain(t, 1, "migrate", "--from", src, "--to", dst, "--holder", "i-0123456789abcdef0", "--resume")
	if _, err := os.Stat(filepath.Join(dst, "config.xml")); !os.IsNotExist(err) {
		t.Fatalf("copied under a running controller: %v", err)
	}
	runMain(t, 2, "migrate", "--to", dst)
}

// TestMigrateStopsWhenTheLeaseIsTaken: another holder takes the lease record over in
// the middle of a copy onto an EFS-like (slow) home; migrate stops copying at once,
// fails naming the lost lease, and leaves the new holder's record alone.
func TestMigrateStopsWhenTheLeaseIsTaken(t *testing.T) {
	home := latencyfs.New(t, 5*time.Millisecond)
	src := migrateSource(t)
	const extra = 1500 // at 2 workers and 5 ms a request, well over 10 s of copying
	for i := range extra {
		p := filepath.Join(src, "jobs/nightly/builds", fmt.Sprint(100+i/50), fmt.Sprintf("log-%d", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("line\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr testenv.Buffer
	code := make(chan int, 1)
	go func() {
		code <- Main(ctx, []string{
			"migrate", "--from", src, "--to", home.Dir, "--holder", "i-0123456789abcdef0",
			"--workers", "2", "--config", filepath.Join(t.TempDir(), "absent.yaml"),
		}, &stdout, &stderr)
	}()
	copied := func() int {
		n := 0
		_ = filepath.WalkDir(filepath.Join(home.Backing, "jobs"), func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				n++
			}
			return nil
		})
		return n
	}
	testenv.Eventually(t, "the copy to be under way", func() bool { return copied() >= 20 })

	record := filepath.Join(home.Dir, lease.DirName, lease.RecordName)
	data, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := lease.ParseRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	thief := lease.Record{Holder: "i-0fffffffffffffff0", Epoch: ours.Epoch + 1, Expires: time.Now().Add(time.Minute), RenewedAt: time.Now()}
	if err := os.WriteFile(record, thief.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	var got int
	select {
	case got = <-code:
	case <-ctx.Done():
		t.Fatal("migrate kept copying after its lease was taken")
	}
	atEnd := copied()
	if got != 1 || !strings.Contains(stderr.String(), "lease on JENKINS_HOME was lost") {
		t.Fatalf("exit %d; stderr: %s", got, stderr.String())
	}
	if atEnd >= extra {
		t.Fatalf("all %d files were copied: the copy did not stop", atEnd)
	}
	if data, err := os.ReadFile(record); err != nil || !strings.Contains(string(data), thief.Holder) {
		t.Fatalf("the new holder's record was changed: %s %v", data, err)
	}
	t.Logf("stopped after %d of %d files: %s", atEnd, extra+3, lastLine(stderr.String()))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
