package container

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/enginetest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// TestDaemonKilledAndBack runs Jenkins (the test program) on a private dockerd, kills
// that dockerd with SIGKILL as the OOM killer would, and starts it again: at each
// point the Runtime must say what is true, and once the daemon answers again Start
// must bring the same container back. The machine's shared daemon is never touched.
func TestDaemonKilledAndBack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts, kills and restarts a dockerd")
	}
	d := enginetest.StartDaemon(t)
	cli := d.Client()
	tag := "jenkins-spot-agent-test/webserver:" + testenv.RandomSuffix(t)
	if err := enginetest.BuildImage(testenv.Context(t, 2*time.Minute), cli, tag, webserverBinary(t), nil); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, cli: cli, opts: Options{
		Image: tag, Pull: PullNever, Name: "jsa-test-daemon-restart",
		HomeHost: t.TempDir(), HomeContainer: "/data",
		StopGrace: 10 * time.Second,
		Cmd:       []string{"-addr", ":8080", "-dir", "/data"},
		Host:      d.Host(),
		Logger:    slog.New(slog.NewTextHandler(t.Output(), nil)),
	}}
	r := f.runtime()
	mustStart(t, r)
	f.waitStarts(1)
	before := f.inspect()

	type result struct {
		code int64
		err  error
	}
	waited := make(chan result, 1)
	go func() {
		code, err := r.Wait(testenv.Context(t, 5*time.Minute))
		waited <- result{code, err}
	}()
	// Wait has its request in the daemon before the daemon dies.
	time.Sleep(200 * time.Millisecond)

	d.Kill()
	var res result
	select {
	case res = <-waited:
	case <-time.After(testenv.WaitLimit):
		t.Fatal("Wait did not return after the daemon died")
	}
	t.Logf("Wait with the daemon killed: %v", res.err)
	var u interface{ Unavailable() bool }
	if !errors.As(res.err, &u) || !u.Unavailable() {
		t.Errorf("Wait's error %v does not say Unavailable() to callers that cannot import this package", res.err)
	}
	if !errors.Is(res.err, ErrDaemonUnavailable) {
		t.Fatalf("Wait with the daemon gone = %d, %v; want ErrDaemonUnavailable", res.code, res.err)
	}
	ctx := testenv.Context(t, time.Minute)
	if running, err := r.Running(ctx); !errors.Is(err, ErrDaemonUnavailable) {
		t.Errorf("Running with the daemon gone = %v, %v; want ErrDaemonUnavailable, never a plain false", running, err)
	}
	if _, err := r.Start(ctx); !errors.Is(err, ErrDaemonUnavailable) {
		t.Errorf("Start with the daemon gone = %v; want ErrDaemonUnavailable", err)
	}
	if err := r.Stop(ctx, time.Second); !errors.Is(err, ErrDaemonUnavailable) {
		t.Errorf("Stop with the daemon gone = %v; want ErrDaemonUnavailable", err)
	}
	if err := r.Kill(ctx); !errors.Is(err, ErrDaemonUnavailable) {
		t.Errorf("Kill with the daemon gone = %v; want ErrDaemonUnavailable", err)
	}
	if _, err := r.Wait(ctx); !errors.Is(err, ErrDaemonUnavailable) {
		t.Errorf("Wait with the daemon gone = %v; want ErrDaemonUnavailable", err)
	}

	// The daemon comes back without live-restore: it stops what ran.
	d.Start()
	running, err := r.Running(ctx)
	if err != nil || running {
		t.Fatalf("Running after the daemon came back = %v, %v; want false, nil (it stops orphaned containers)", running, err)
	}
	code, err := r.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait on the stopped container = %d, %v; want its exit code at once", code, err)
	}
	t.Logf("the returning daemon stopped the container: exit code %d", code)
	if mustStart(t, r) {
		t.Fatal("Start adopted a stopped container")
	}
	f.waitStarts(2)
	after := f.inspect()
	if after.ID != before.ID || after.Name != before.Name || !after.State.Running {
		t.Fatalf("want the same container running again: id %s→%s name %s→%s running %v", before.ID, after.ID, before.Name, after.Name, after.State.Running)
	}
	if after.Config.Labels[LabelConfigHash] != r.ConfigHash() {
		t.Errorf("configuration hash changed across the daemon restart")
	}

	// And Wait works again on the fresh connection.
	go func() {
		code, err := r.Wait(testenv.Context(t, time.Minute))
		waited <- result{code, err}
	}()
	if err := r.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	res = <-waited
	if res.err != nil || res.code != 137 {
		t.Fatalf("Wait after Kill = %d, %v; want 137", res.code, res.err)
	}
	if err := cli.ContainerRemove(context.Background(), f.opts.Name, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		t.Error(err)
	}
}
