package container_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dcontainer "github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent/contract"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/containertest"
)

var (
	_ contract.Runtime = (*container.Runtime)(nil)
	_ contract.Runtime = (*containertest.Runtime)(nil)
)

func TestRuntimeDouble(t *testing.T) {
	contract.TestRuntime(t, contract.RuntimeHarness{New: func(t *testing.T, ignoreTerm bool) contract.RuntimeWorld {
		rt := containertest.NewRuntime(containertest.RuntimeOptions{ImagePresent: true, Pull: container.PullNever, IgnoreTerm: ignoreTerm})
		return contract.RuntimeWorld{
			Runtime:    rt,
			Reopen:     func() contract.Runtime { return rt },
			Starts:     rt.Starts,
			Crash:      func() { rt.Crash(3) },
			CrashCode:  3,
			DaemonDown: rt.DaemonDown,
			DaemonUp:   rt.DaemonUp,
		}
	}})
}

// TestRuntimeDocker runs the contract on the machine's shared Docker Engine, with the
// stand-in Jenkins (the webserver program) in an image FROM scratch.
func TestRuntimeDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and stops containers")
	}
	cli := containertest.RequireDocker(t)
	contract.TestRuntime(t, dockerHarness(t, cli, "", nil))
}

// TestRuntimeDockerDaemonRestart runs the contract on a private dockerd, which the
// suite kills (SIGKILL) and starts again.
func TestRuntimeDockerDaemonRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts, kills and restarts a dockerd")
	}
	d := containertest.StartDaemon(t)
	contract.TestRuntime(t, dockerHarness(t, d.Client(), d.Host(), d))
}

var (
	webserverOnce sync.Once
	webserverBin  string
	webserverErr  error
)

func webserver(t *testing.T) string {
	t.Helper()
	webserverOnce.Do(func() {
		dir, err := os.MkdirTemp("", "contract-")
		if err != nil {
			webserverErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		webserverBin = filepath.Join(dir, "webserver")
		webserverErr = containertest.BuildStatic(ctx, containertest.WebserverPackage, webserverBin)
	})
	if webserverErr != nil {
		t.Fatalf("build the stand-in Jenkins: %v", webserverErr)
	}
	return webserverBin
}

func suffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// dockerHarness builds worlds on the daemon cli talks to; the image is removed when
// parent, the test that runs the suite, ends.
// It builds worlds on the daemon cli talks to (host names it for the
// Runtime; empty means the default). With d, the suite may kill and restart it.
func dockerHarness(parent *testing.T, cli *client.Client, host string, d *containertest.Daemon) contract.RuntimeHarness {
	var (
		once sync.Once
		tag  string
		err  error
	)
	return contract.RuntimeHarness{New: func(t *testing.T, ignoreTerm bool) contract.RuntimeWorld {
		once.Do(func() {
			tag = "jenkins-spot-agent-contract/webserver:" + suffix()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			err = containertest.BuildImage(ctx, cli, tag, webserver(t), nil)
			if err == nil {
				// Removed once the whole suite is done: the parent test's cleanup.
				parent.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					_, _ = cli.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true})
				})
			}
		})
		if err != nil {
			t.Fatalf("build the image: %v", err)
		}
		home := t.TempDir()
		cmd := []string{"-addr", ":8080", "-dir", "/data"}
		if ignoreTerm {
			cmd = append(cmd, "-ignore-term")
		}
		opts := container.Options{
			Image: tag, Pull: container.PullNever, Name: "jsa-contract-" + suffix(),
			HomeHost: home, HomeContainer: "/data", StopGrace: 10 * time.Second, Cmd: cmd, Host: host,
		}
		open := func() contract.Runtime {
			r, err := container.New(opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			return r
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if t.Failed() {
				if rc, err := cli.ContainerLogs(ctx, opts.Name, dcontainer.LogsOptions{ShowStdout: true, ShowStderr: true}); err == nil {
					b, _ := io.ReadAll(rc)
					rc.Close()
					t.Logf("container log:\n%s", b)
				}
			}
			_ = cli.ContainerRemove(ctx, opts.Name, dcontainer.RemoveOptions{Force: true})
		})
		w := contract.RuntimeWorld{
			Runtime: open(),
			Reopen:  open,
			Starts: func() int {
				b, _ := os.ReadFile(filepath.Join(home, "starts"))
				return strings.Count(string(b), "\n")
			},
			// SIGUSR1 makes the stand-in exit 3, as a crash ends Jenkins (the suite
			// waits for its start, so its handler is in place).
			Crash: func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := cli.ContainerKill(ctx, opts.Name, "SIGUSR1"); err != nil {
					t.Fatalf("crash: %v", err)
				}
			},
			CrashCode: 3,
		}
		if d != nil {
			w.DaemonDown, w.DaemonUp = d.Kill, d.Start
		}
		return w
	}}
}
