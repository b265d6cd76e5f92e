package imds_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// testLogger returns a debug logger writing to a buffer that the test reads and that is
// printed if the test fails.
func testLogger(t testing.TB) (*slog.Logger, *testenv.Buffer) {
	buf := testenv.NewLog(t, "watcher logs")
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// requestCounts records OnRequest calls.
type requestCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *requestCounts) record(endpoint, result string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[endpoint+" "+result]++
}

func (c *requestCounts) get(endpoint, result string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[endpoint+" "+result]
}

// running is a watcher started in the background; stop ends it and waits.
type running struct {
	t       testing.TB
	w       *imds.Watcher
	notices chan instance.Notice
	cancel  context.CancelFunc
	done    chan error
}

func startWatcher(t testing.TB, c *imds.Client, opts imds.WatchOptions, buffered int) *running {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*testenv.WaitLimit)
	r := &running{t: t, w: imds.NewWatcher(c, opts), notices: make(chan instance.Notice, buffered), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- r.w.Run(ctx, r.notices) }()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.cancel()
	if err := <-r.done; err != nil && !errors.Is(err, context.Canceled) {
		r.t.Errorf("watcher ended with %v, want context.Canceled", err)
	}
	r.done <- nil // later stops return at once
}

// next waits for a notice of the given kind, skipping others into skipped.
func (r *running) next(t testing.TB, kind instance.Kind) instance.Notice {
	t.Helper()
	timer := time.NewTimer(testenv.WaitLimit)
	defer timer.Stop()
	for {
		select {
		case n := <-r.notices:
			if n.Kind == kind {
				return n
			}
		case <-timer.C:
			t.Fatalf("no %s notice arrived", kind)
		}
	}
}

// drain returns the notices waiting in the channel.
func (r *running) drain() []instance.Notice {
	var out []instance.Notice
	for {
		select {
		case n := <-r.notices:
			out = append(out, n)
		default:
			return out
		}
	}
}

func countKind(ns []instance.Notice, kind instance.Kind) int {
	c := 0
	for _, n := range ns {
		if n.Kind == kind {
			c++
		}
	}
	return c
}

var aemmBuild struct {
	once sync.Once
	path string
	err  error
}

// aemmBinary builds amazon-ec2-metadata-mock once per test binary.
func aemmBinary(t testing.TB) string {
	t.Helper()
	aemmBuild.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			aemmBuild.err = fmt.Errorf("go toolchain not on PATH: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "aemm-")
		if err != nil {
			aemmBuild.err = err
			return
		}
		bin := filepath.Join(dir, "ec2-metadata-mock")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, goTool, "build", "-o", bin, "github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock").CombinedOutput()
		if err != nil {
			aemmBuild.err = fmt.Errorf("build ec2-metadata-mock: %v: %s", err, out)
			return
		}
		aemmBuild.path = bin
	})
	if aemmBuild.err != nil {
		testenv.Missing(t, "%s", aemmBuild.err.Error())
	}
	return aemmBuild.path
}

// startAEMM runs amazon-ec2-metadata-mock in IMDSv2-only mode on a free loopback port
// with the given extra arguments and returns its base URL once it answers.
func startAEMM(t testing.TB, args ...string) string {
	t.Helper()
	testenv.SkipShort(t, "runs amazon-ec2-metadata-mock, built for the test")
	bin := aemmBinary(t)
	port := fmt.Sprint(testenv.FreePort(t))
	full := append([]string{"-n", "127.0.0.1", "-p", port, "-I"}, args...)
	cmd := exec.Command(bin, full...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var out testenv.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // it may have exited already
		_ = cmd.Wait()         // "signal: killed" is how it ends
	})
	url := "http://127.0.0.1:" + port
	deadline := time.Now().Add(testenv.WaitLimit)
	for {
		req, _ := http.NewRequest(http.MethodPut, url+"/latest/api/token", nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ec2-metadata-mock %s did not answer: %v\n%s", strings.Join(full, " "), err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
