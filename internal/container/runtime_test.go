package container

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/enginetest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// The test program and its image are built once per test binary and removed
// by TestMain.
var (
	binDir    string
	binOnce   sync.Once
	binPath   string
	binErr    error
	imageOnce sync.Once
	imageTag  string
	imageErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "container-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(binDir)
	if cli, err := enginetest.NewClient(); err == nil {
		for _, tag := range []string{imageTag, doubleImageTag} {
			if tag == "" {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, _ = cli.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true})
			cancel()
		}
		cli.Close()
	}
	os.Exit(code)
}

// webserverBinary returns the path of the static test program.
func webserverBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		binPath = filepath.Join(binDir, "webserver")
		binErr = enginetest.BuildStatic(ctx, webserverPackage, binPath)
	})
	if binErr != nil {
		t.Fatalf("build test program: %v", binErr)
	}
	return binPath
}

// webserverPackage is containertest.WebserverPackage, which this package's tests
// cannot import (containertest imports container).
const webserverPackage = "github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/containertest/webserver"

// testImage returns the tag of an image running the webserver stand-in.
func testImage(t testing.TB, cli client.APIClient) string {
	t.Helper()
	imageOnce.Do(func() {
		bin := webserverBinary(t)
		tag := "jenkins-spot-agent-test/webserver:" + testenv.RandomSuffix(t)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		imageErr = enginetest.BuildImage(ctx, cli, tag, bin, nil)
		if imageErr == nil {
			imageTag = tag
		}
	})
	if imageErr != nil {
		t.Fatalf("build test image: %v", imageErr)
	}
	return imageTag
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// fixture is one test's container: its options, its home directory on the
// host, and a client for looking at it from the outside.
type fixture struct {
	t    testing.TB
	cli  *client.Client
	opts Options
}

// newFixture prepares options for a uniquely named container whose home is a
// fresh directory, published on a random port of 127.0.0.1 only.
func newFixture(t testing.TB, args ...string) *fixture {
	t.Helper()
	cli := enginetest.RequireDocker(t)
	tag := testImage(t, cli)
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	if _, ok := t.(*testing.B); ok {
		logger = slog.New(slog.DiscardHandler) // keep benchmark output to figures
	}
	name := "jsa-test-" + strings.ToLower(unsafeName.ReplaceAllString(t.Name(), "-")) + "-" + testenv.RandomSuffix(t)
	f := &fixture{t: t, cli: cli, opts: Options{
		Image:         tag,
		Pull:          PullNever,
		Name:          name,
		HomeHost:      t.TempDir(),
		HomeContainer: "/data",
		Ports:         []string{"127.0.0.1::8080"},
		Env:           map[string]string{"GREETING": "hello"},
		StopGrace:     10 * time.Second,
		Cmd:           append([]string{"-addr", ":8080", "-dir", "/data"}, args...),
		Labels:        map[string]string{"test": t.Name()},
		Logger:        logger,
	}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = cli.ContainerRemove(ctx, name, container.RemoveOptions{Force: true})
	})
	return f
}

// runtime returns a Runtime for the fixture's current options; each call is
// like a fresh agent process.
func (f *fixture) runtime() *Runtime {
	f.t.Helper()
	r, err := New(f.opts)
	if err != nil {
		f.t.Fatalf("New: %v", err)
	}
	f.t.Cleanup(func() { r.Close() })
	return r
}

func (f *fixture) inspect() container.InspectResponse {
	f.t.Helper()
	info, err := f.cli.ContainerInspect(testenv.Context(f.t, 30*time.Second), f.opts.Name)
	if err != nil {
		f.t.Fatalf("inspect: %v", err)
	}
	return info
}

// lines returns the lines of a trace file the program wrote into its home.
func (f *fixture) lines(file string) []string {
	b, err := os.ReadFile(filepath.Join(f.opts.HomeHost, file))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// waitStarts polls until the program has recorded n starts in the mounted
// home, which also means its signal handling is in place.
func (f *fixture) waitStarts(n int) {
	f.t.Helper()
	for range 600 {
		if len(f.lines("starts")) >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.t.Fatalf("program did not record %d starts in %s; it sees: %q", n, f.opts.HomeHost, f.lines("starts"))
}

// url is the published address of the container's port 8080.
func (f *fixture) url() string {
	f.t.Helper()
	info := f.inspect()
	b := info.NetworkSettings.Ports["8080/tcp"]
	if len(b) == 0 {
		f.t.Fatalf("port 8080/tcp not published: %+v", info.NetworkSettings.Ports)
	}
	if b[0].HostIP != "127.0.0.1" {
		f.t.Fatalf("port published on %q, want 127.0.0.1 only", b[0].HostIP)
	}
	return "http://127.0.0.1:" + b[0].HostPort
}

// get fetches a path, retrying while the server is still coming up.
func (f *fixture) get(path string) (int, string) {
	f.t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	u := f.url() + path
	var lastErr error
	for range 100 {
		resp, err := c.Get(u)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(b)
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	f.t.Fatalf("GET %s: %v", u, lastErr)
	return 0, ""
}

func mustStart(t testing.TB, r *Runtime) bool {
	t.Helper()
	adopted, err := r.Start(testenv.Context(t, time.Minute))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return adopted
}

func TestStartCreatesContainerWithHomeMountAndPort(t *testing.T) {
	f := newFixture(t)
	r := f.runtime()
	if err := r.Prepare(testenv.Context(t, time.Minute)); err != nil {
		t.Fatalf("Prepare with a present image and pull never: %v", err)
	}
	if mustStart(t, r) {
		t.Fatal("Start adopted a container that did not exist")
	}
	f.waitStarts(1)
	if code, body := f.get("/"); code != http.StatusOK || body != "hello" {
		t.Fatalf("GET / = %d %q, want 200 \"hello\" (from the env)", code, body)
	}

	info := f.inspect()
	if got := info.HostConfig.RestartPolicy.Name; got != container.RestartPolicyDisabled {
		t.Errorf("restart policy %q, want %q: dockerd must never start Jenkins by itself", got, container.RestartPolicyDisabled)
	}
	labels := info.Config.Labels
	if labels[LabelManaged] != "true" || labels[LabelConfigHash] != r.ConfigHash() || labels["test"] != t.Name() {
		t.Errorf("labels %v: want managed, hash %s and the user label", labels, r.ConfigHash())
	}
	if info.Config.StopSignal != "SIGTERM" || info.Config.StopTimeout == nil || *info.Config.StopTimeout != 10 {
		t.Errorf("stop signal %q timeout %v, want SIGTERM and 10", info.Config.StopSignal, info.Config.StopTimeout)
	}
	if want := f.opts.HomeHost + ":/data"; len(info.HostConfig.Binds) == 0 || info.HostConfig.Binds[0] != want {
		t.Errorf("binds %v, want %s first", info.HostConfig.Binds, want)
	}
	if running, err := r.Running(testenv.Context(t, 30*time.Second)); err != nil || !running {
		t.Errorf("Running = %v, %v; want true", running, err)
	}
}

func TestStartAdoptsRunningContainerWithSameConfig(t *testing.T) {
	f := newFixture(t)
	mustStart(t, f.runtime())
	f.waitStarts(1)
	before := f.inspect()

	// A restarted agent builds a new Runtime from the same configuration.
	if !mustStart(t, f.runtime()) {
		t.Fatal("Start did not adopt the running container with the same configuration")
	}
	after := f.inspect()
	if after.ID != before.ID || after.State.StartedAt != before.State.StartedAt {
		t.Fatalf("container changed on adoption: id %s→%s started %s→%s", before.ID, after.ID, before.State.StartedAt, after.State.StartedAt)
	}
	if n := len(f.lines("starts")); n != 1 {
		t.Fatalf("program started %d times, want 1", n)
	}
}

func TestStartReplacesContainerWhenConfigChanges(t *testing.T) {
	f := newFixture(t)
	mustStart(t, f.runtime())
	f.waitStarts(1)
	before := f.inspect()

	f.opts.Env = map[string]string{"GREETING": "changed"}
	if mustStart(t, f.runtime()) {
		t.Fatal("Start adopted a container whose configuration changed")
	}
	f.waitStarts(2)
	after := f.inspect()
	if after.ID == before.ID {
		t.Fatal("container was not recreated after a configuration change")
	}
	if _, body := f.get("/"); body != "changed" {
		t.Fatalf("GET / = %q, want the new configuration's \"changed\"", body)
	}
	if len(f.lines("clean")) != 1 {
		t.Fatalf("old container was not stopped gracefully (clean exits: %q)", f.lines("clean"))
	}
}

func TestStartStartsStoppedContainer(t *testing.T) {
	f := newFixture(t)
	r := f.runtime()
	mustStart(t, r)
	f.waitStarts(1)
	before := f.inspect()
	if err := r.Stop(testenv.Context(t, time.Minute), 10*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if running, err := r.Running(testenv.Context(t, 30*time.Second)); err != nil || running {
		t.Fatalf("Running after Stop = %v, %v; want false", running, err)
	}
	if mustStart(t, f.runtime()) {
		t.Fatal("Start reported adopting a stopped container")
	}
	f.waitStarts(2)
	if after := f.inspect(); after.ID != before.ID || !after.State.Running {
		t.Fatalf("want the same container %s running again, got %s running=%v", before.ID, after.ID, after.State.Running)
	}
}

func TestStopHonoursGraceAndIsIdempotent(t *testing.T) {
	f := newFixture(t, "-term-delay", "1s")
	r := f.runtime()
	mustStart(t, r)
	f.waitStarts(1)
	if err := r.Stop(testenv.Context(t, time.Minute), 20*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if code := f.inspect().State.ExitCode; code != 0 {
		t.Fatalf("exit code %d, want 0: the program needed 1s of a 20s grace", code)
	}
	if len(f.lines("clean")) != 1 {
		t.Fatal("program did not finish its clean shutdown")
	}
	if err := r.Stop(testenv.Context(t, time.Minute), 20*time.Second); err != nil {
		t.Fatalf("Stop of a stopped container: %v", err)
	}
	if err := r.Remove(testenv.Context(t, time.Minute)); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := r.Stop(testenv.Context(t, time.Minute), 20*time.Second); err != nil {
		t.Fatalf("Stop of an absent container: %v", err)
	}
	if running, err := r.Running(testenv.Context(t, 30*time.Second)); err != nil || running {
		t.Fatalf("Running of an absent container = %v, %v; want false, nil", running, err)
	}
}

func TestStopKillsWhenGraceRunsOut(t *testing.T) {
	f := newFixture(t, "-ignore-term")
	r := f.runtime()
	mustStart(t, r)
	f.waitStarts(1)
	if err := r.Stop(testenv.Context(t, time.Minute), time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if code := f.inspect().State.ExitCode; code != 137 {
		t.Fatalf("exit code %d, want 137 (SIGKILL after the grace)", code)
	}
}

func TestStopShortensGraceToDeadline(t *testing.T) {
	f := newFixture(t, "-ignore-term")
	r := f.runtime()
	mustStart(t, r)
	f.waitStarts(1)
	// A grace of an hour is cut to what the deadline leaves after the margin,
	// so the kill comes in about 3s and Stop returns before the deadline
	// instead of abandoning a request that dockerd would keep waiting out.
	ctx := testenv.Context(t, stopMargin+3*time.Second)
	if err := r.Stop(ctx, time.Hour); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if code := f.inspect().State.ExitCode; code != 137 {
		t.Fatalf("exit code %d, want 137", code)
	}
}

func TestKillIsImmediateAndIdempotent(t *testing.T) {
	f := newFixture(t)
	r := f.runtime()
	mustStart(t, r)
	f.waitStarts(1)
	if err := r.Kill(testenv.Context(t, 30*time.Second)); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	code, err := r.Wait(testenv.Context(t, 30*time.Second))
	if err != nil || code != 137 {
		t.Fatalf("Wait after Kill = %d, %v; want 137", code, err)
	}
	if len(f.lines("term")) != 0 {
		t.Fatal("Kill sent SIGTERM first; it must not wait for Jenkins")
	}
	if err := r.Kill(testenv.Context(t, 30*time.Second)); err != nil {
		t.Fatalf("Kill of a stopped container: %v", err)
	}
	if err := r.Remove(testenv.Context(t, 30*time.Second)); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := r.Kill(testenv.Context(t, 30*time.Second)); err != nil {
		t.Fatalf("Kill of an absent container: %v", err)
	}
}

func TestWaitReturnsExitCodeOfCrash(t *testing.T) {
	f := newFixture(t)
	r := f.runtime()
	mustStart(t, r)
	f.waitStarts(1)
	url := f.url()

	type result struct {
		code int64
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := r.Wait(testenv.Context(t, time.Minute))
		done <- result{code, err}
	}()
	if code, _ := f.get("/exit?code=3"); code != http.StatusOK {
		t.Fatalf("GET %s/exit = %d", url, code)
	}
	res := <-done
	if res.err != nil || res.code != 3 {
		t.Fatalf("Wait = %d, %v; want 3", res.code, res.err)
	}
	if running, err := r.Running(testenv.Context(t, 30*time.Second)); err != nil || running {
		t.Fatalf("Running after crash = %v, %v; want false", running, err)
	}
}

func TestWaitReturnsContextError(t *testing.T) {
	f := newFixture(t)
	r := f.runtime()
	mustStart(t, r)
	f.waitStarts(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with an ended context = %v, want context.Canceled", err)
	}
}

func TestPrepareNeverWithAbsentImage(t *testing.T) {
	enginetest.RequireDocker(t)
	r, err := New(Options{
		Image: "jenkins-spot-agent-test/absent:" + testenv.RandomSuffix(t), Pull: PullNever,
		Name: "jsa-test-absent", HomeHost: "/tmp", HomeContainer: "/data",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	present, err := r.ImagePresent(testenv.Context(t, 30*time.Second))
	if err != nil || present {
		t.Fatalf("ImagePresent = %v, %v; want false, nil", present, err)
	}
	err = r.Prepare(testenv.Context(t, 30*time.Second))
	if err == nil || !strings.Contains(err.Error(), "is not present and jenkins.pull is never") {
		t.Fatalf("Prepare = %v, want an error saying the image is absent and pull is never", err)
	}
}

func TestStartRefusesForeignContainer(t *testing.T) {
	f := newFixture(t)
	ctx := testenv.Context(t, time.Minute)
	_, err := f.cli.ContainerCreate(ctx, &container.Config{Image: f.opts.Image, Cmd: f.opts.Cmd}, nil, nil, nil, f.opts.Name)
	if err != nil {
		t.Fatalf("create foreign container: %v", err)
	}
	foreign := f.inspect()
	_, err = f.runtime().Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "did not create") || !strings.Contains(err.Error(), "jenkins.container_name") {
		t.Fatalf("Start = %v, want a refusal naming jenkins.container_name", err)
	}
	if after := f.inspect(); after.ID != foreign.ID || after.State.Running {
		t.Fatalf("foreign container was touched: id %s→%s running=%v", foreign.ID, after.ID, after.State.Running)
	}
}

func TestPingAnswers(t *testing.T) {
	f := newFixture(t)
	if err := f.runtime().Ping(testenv.Context(t, 30*time.Second)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	r, err := New(Options{
		Image: "x", Name: "jsa-test-ping", HomeHost: "/tmp", HomeContainer: "/data",
		Host: "unix://" + filepath.Join(t.TempDir(), "absent.sock"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Ping(testenv.Context(t, 30*time.Second)); err == nil || !strings.Contains(err.Error(), "dockerd") {
		t.Fatalf("Ping of an absent socket = %v, want an error naming dockerd", err)
	}
}

// BenchmarkStartAdopt measures Start when the container already runs with
// the same configuration: one inspect, nothing restarted.
func BenchmarkStartAdopt(b *testing.B) {
	f := newFixture(b)
	r := f.runtime()
	mustStart(b, r)
	ctx := testenv.Context(b, 10*time.Minute)
	b.ResetTimer()
	for b.Loop() {
		adopted, err := r.Start(ctx)
		if err != nil || !adopted {
			b.Fatalf("Start = %v, %v; want adoption", adopted, err)
		}
	}
}

// BenchmarkStartCreate measures Start when no container exists: create and
// start (the removal between iterations is not timed).
func BenchmarkStartCreate(b *testing.B) {
	f := newFixture(b)
	r := f.runtime()
	ctx := testenv.Context(b, 10*time.Minute)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if err := r.Remove(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if adopted, err := r.Start(ctx); err != nil || adopted {
			b.Fatalf("Start = %v, %v; want a new container", adopted, err)
		}
	}
}

func TestStartReplacesStoppedContainerWhenImageChanged(t *testing.T) {
	f := newFixture(t)
	bin := webserverBinary(t)
	f.opts.Image = "jenkins-spot-agent-test/retagged:" + testenv.RandomSuffix(t)
	build := func(entrypoint []string) string {
		if err := enginetest.BuildImage(testenv.Context(t, 2*time.Minute), f.cli, f.opts.Image, bin, entrypoint); err != nil {
			t.Fatal(err)
		}
		img, err := f.cli.ImageInspect(testenv.Context(t, 30*time.Second), f.opts.Image)
		if err != nil {
			t.Fatal(err)
		}
		return img.ID
	}
	var ids []string
	t.Cleanup(func() {
		ctx := testenv.Context(t, time.Minute)
		_ = f.cli.ContainerRemove(ctx, f.opts.Name, container.RemoveOptions{Force: true})
		for _, id := range ids {
			_, _ = f.cli.ImageRemove(ctx, id, image.RemoveOptions{Force: true, PruneChildren: true})
		}
	})
	ids = append(ids, build(nil))

	r := f.runtime()
	mustStart(t, r)
	f.waitStarts(1)
	before := f.inspect()
	if err := r.Stop(testenv.Context(t, time.Minute), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The same reference now names another image, as after a newer pull.
	ids = append(ids, build([]string{"/webserver", "-addr", ":8080"}))
	if ids[0] == ids[1] {
		t.Fatal("rebuilt image has the same ID; the test cannot tell images apart")
	}
	if mustStart(t, f.runtime()) {
		t.Fatal("Start adopted a stopped container")
	}
	f.waitStarts(2)
	after := f.inspect()
	if after.ID == before.ID || after.Image != ids[1] {
		t.Fatalf("want a new container on image %s; got container %s (was %s) on image %s", ids[1], after.ID, before.ID, after.Image)
	}
}
