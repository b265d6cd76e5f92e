package control

import (
	"bufio"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// fakeAgent answers with whatever its fields say.
type fakeAgent struct {
	status func() status.Snapshot
	drill  func(ctx context.Context, budget time.Duration, emit func(status.Event)) error
}

var _ Agent = (*fakeAgent)(nil)

func (f *fakeAgent) Status() status.Snapshot { return f.status() }

func (f *fakeAgent) Drill(ctx context.Context, budget time.Duration, emit func(status.Event)) error {
	return f.drill(ctx, budget, emit)
}

var t0 = time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC)

func sampleStatus() status.Snapshot {
	return status.Snapshot{
		Phase:      status.PhaseDraining,
		InstanceID: "i-0123456789abcdef0",
		Lease:      status.LeaseState{Held: true, Holder: "i-0123456789abcdef0", Epoch: 7, Expires: t0.Add(30 * time.Second)},
		Watch:      status.WatchHealth{LastSuccess: t0.Add(-time.Second), ConsecutiveFails: 2, LastError: "GET spot/instance-action: 500", Polls: 812},
		Notices: []instance.Notice{
			{Kind: instance.KindRebalance, Seen: t0.Add(-10 * time.Minute)},
			{Kind: instance.KindSpotTerminate, Time: t0.Add(2 * time.Minute), Seen: t0.Add(-3 * time.Second), Detail: "terminate"},
		},
		Deadline: t0.Add(2 * time.Minute),
		Running:  []string{"build-app #41", "deploy #9"},
		Steps: []status.Event{
			{At: t0.Add(-time.Second), Step: status.StepDeregister, Duration: 1200 * time.Millisecond, Done: true},
			{At: t0, Step: status.StepQuietDown, Duration: 300 * time.Millisecond, Err: "401 Unauthorized", Done: true},
		},
		Since: t0.Add(-3 * time.Second),
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// start listens on a fresh socket and serves until the test ends.
func start(t *testing.T, a Agent) (*Server, string) {
	t.Helper()
	return startWith(t, a, func(*Server) {})
}

// startWith is start with a chance to adjust the server before it serves.
func startWith(t *testing.T, a Agent, adjust func(*Server)) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "control.sock")
	srv, err := Listen(path, a, quiet())
	if err != nil {
		t.Fatal(err)
	}
	adjust(srv)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, path
}

func TestStatusRoundTrip(t *testing.T) {
	want := sampleStatus()
	_, path := start(t, &fakeAgent{status: func() status.Snapshot { return want }})
	got, err := QueryStatus(testenv.Context(t, 30*time.Second), path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("status changed on the wire:\n got %+v\nwant %+v", got, want)
	}
}

func TestDrillStreamsInOrder(t *testing.T) {
	firstSeen := make(chan struct{})
	budgets := make(chan time.Duration, 1)
	agent := &fakeAgent{drill: func(ctx context.Context, budget time.Duration, emit func(status.Event)) error {
		budgets <- budget
		emit(status.Event{At: t0, Notice: &instance.Notice{Kind: instance.KindDrill, Seen: t0}, Message: "drill"})
		// The client must see the first event while the plan is still running:
		// a server that buffered to the end would block here until the deadline.
		select {
		case <-firstSeen:
		case <-ctx.Done():
			return ctx.Err()
		}
		emit(status.Event{At: t0.Add(time.Second), Step: status.StepDeregister})
		emit(status.Event{At: t0.Add(2 * time.Second), Step: status.StepDeregister, Duration: time.Second, Done: true})
		return nil
	}}
	_, path := start(t, agent)

	var got []status.Event
	err := RunDrill(testenv.Context(t, 30*time.Second), path, 90*time.Second, func(ev status.Event) {
		if len(got) == 0 {
			close(firstSeen)
		}
		got = append(got, ev)
	})
	if err != nil {
		t.Fatal(err)
	}
	if gotBudget := <-budgets; gotBudget != 90*time.Second {
		t.Errorf("agent got budget %s, want 90s", gotBudget)
	}
	if len(got) != 3 || got[0].Notice == nil || got[0].Notice.Kind != instance.KindDrill ||
		got[1].Step != status.StepDeregister || got[1].Done || !got[2].Done || got[2].Duration != time.Second {
		t.Errorf("events = %+v", got)
	}
}

func TestDrillErrorReachesClient(t *testing.T) {
	agent := &fakeAgent{drill: func(_ context.Context, budget time.Duration, emit func(status.Event)) error {
		if budget != 0 {
			return errors.New("want the default budget")
		}
		emit(status.Event{Step: status.StepContainerStop, Err: "timeout", Done: true})
		return errors.New("container_stop: timeout")
	}}
	_, path := start(t, agent)
	n := 0
	err := RunDrill(testenv.Context(t, 30*time.Second), path, 0, func(status.Event) { n++ })
	if err == nil || !strings.Contains(err.Error(), "container_stop: timeout") {
		t.Errorf("RunDrill = %v, want the plan's error", err)
	}
	if n != 1 {
		t.Errorf("got %d events before the error, want 1", n)
	}
}

// TestDrillConcurrentEmit runs emit from many goroutines, as parallel plan steps
// do; every line must arrive whole.
func TestDrillConcurrentEmit(t *testing.T) {
	const workers, each = 8, 25
	agent := &fakeAgent{drill: func(_ context.Context, _ time.Duration, emit func(status.Event)) error {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for range each {
					emit(status.Event{Step: status.StepDrain, Message: strings.Repeat("x", 100*w)})
				}
			})
		}
		wg.Wait()
		return nil
	}}
	_, path := start(t, agent)
	n := 0
	if err := RunDrill(testenv.Context(t, 30*time.Second), path, time.Minute, func(status.Event) { n++ }); err != nil {
		t.Fatal(err)
	}
	if n != workers*each {
		t.Errorf("got %d events, want %d", n, workers*each)
	}
}

func TestSocketModes(t *testing.T) {
	_, path := start(t, &fakeAgent{})
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %s, want a socket with 0600", fi.Mode())
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode = %s, want 0700", di.Mode().Perm())
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	// What a killed agent leaves behind: the socket file, nobody listening.
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}

	srv, err := Listen(path, &fakeAgent{status: func() status.Snapshot { return status.Snapshot{Phase: status.PhaseServing} }}, quiet())
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	st, err := QueryStatus(testenv.Context(t, 30*time.Second), path)
	if err != nil || st.Phase != status.PhaseServing {
		t.Errorf("status after replacing stale socket = %+v, %v", st, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve = %v, want nil after cancel", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind after Serve ended: %v", err)
	}
}

func TestSecondAgentRefused(t *testing.T) {
	_, path := start(t, &fakeAgent{status: func() status.Snapshot { return status.Snapshot{Phase: status.PhaseServing} }})
	_, err := Listen(path, &fakeAgent{}, quiet())
	if err == nil || !strings.Contains(err.Error(), "another agent is running") {
		t.Fatalf("second Listen = %v, want 'another agent is running'", err)
	}
	// The first agent still answers on its socket.
	if st, err := QueryStatus(testenv.Context(t, 30*time.Second), path); err != nil || st.Phase != status.PhaseServing {
		t.Errorf("first agent after refused second = %+v, %v", st, err)
	}
}

func TestNotASocketRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path, &fakeAgent{}, quiet()); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file = %v, want refusal", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Error("regular file was replaced")
	}
}

func TestNoAgent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	_, err := QueryStatus(testenv.Context(t, 30*time.Second), path)
	if err == nil || !strings.Contains(err.Error(), "is jenkins-spot-agent running? socket "+path) {
		t.Errorf("QueryStatus without agent = %v", err)
	}
	err = RunDrill(testenv.Context(t, 30*time.Second), path, time.Minute, func(status.Event) {})
	if err == nil || !strings.Contains(err.Error(), "is jenkins-spot-agent running?") {
		t.Errorf("RunDrill without agent = %v", err)
	}
}

func TestPeerRefused(t *testing.T) {
	var seen []uint32
	var mu sync.Mutex
	_, path := startWith(t, &fakeAgent{status: sampleStatus}, func(srv *Server) {
		srv.allow = func(uid uint32) bool {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, uid)
			return false
		}
	})
	_, err := QueryStatus(testenv.Context(t, 30*time.Second), path)
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("QueryStatus from a refused peer = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != uint32(os.Getuid()) {
		t.Errorf("peer uids checked = %v, want [%d] from SO_PEERCRED", seen, os.Getuid())
	}
}

func TestPeerAllowed(t *testing.T) {
	cases := []struct {
		peer, own uint32
		want      bool
	}{
		{0, 0, true}, {0, 998, true}, {998, 998, true}, {1000, 998, false}, {1000, 0, false},
	}
	for _, c := range cases {
		if got := peerAllowed(c.peer, c.own); got != c.want {
			t.Errorf("peerAllowed(%d, %d) = %t", c.peer, c.own, got)
		}
	}
}

// raw sends line as-is and returns the first response line.
func raw(t *testing.T, path, line string) string {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte(line)); err != nil {
		t.Fatal(err)
	}
	resp, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("reading answer to %q: %v", line, err)
	}
	return resp
}

func TestBadRequests(t *testing.T) {
	_, path := start(t, &fakeAgent{status: sampleStatus})
	for line, want := range map[string]string{
		"{\"command\":\"reboot\"}\n":                  `{"done":true,"error":"bad request: unknown command \"reboot\" (want status or drill)"}` + "\n",
		"{\"command\":\"drill\",\"budget\":\"2h\"}\n": `{"done":true,"error":"bad request: budget 2h0m0s: must be above 0 and at most 1h0m0s"}` + "\n",
	} {
		if got := raw(t, path, line); got != want {
			t.Errorf("answer to %q = %q, want %q", line, got, want)
		}
	}
	if got := raw(t, path, "not json\n"); !strings.HasPrefix(got, `{"done":true,"error":"bad request: `) {
		t.Errorf("answer to garbage = %q", got)
	}
	// A request without its newline is still answered once the client stops writing.
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte(`{"command":"status"}`)); err != nil {
		t.Fatal(err)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(resp, `{"status":{"phase":"draining"`) {
		t.Errorf("status without newline = %q, %v", resp, err)
	}
}

// TestSilentClientDropped: a client that never sends a request does not hold a
// connection slot for ever.
func TestSilentClientDropped(t *testing.T) {
	_, path := startWith(t, &fakeAgent{}, func(srv *Server) { srv.requestTimeout = 50 * time.Millisecond })
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var buf [1]byte
	if _, err := conn.Read(buf[:]); err == nil {
		t.Error("server wrote to a client that sent nothing")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Error("server kept a silent client connected")
	}
}

func TestDrillBudgetChecked(t *testing.T) {
	if err := RunDrill(testenv.Context(t, 30*time.Second), "/nonexistent", 3*time.Hour, func(status.Event) {}); err == nil || !strings.Contains(err.Error(), "budget") {
		t.Errorf("RunDrill with a 3h budget = %v", err)
	}
}

func BenchmarkQueryStatus(b *testing.B) {
	path := filepath.Join(b.TempDir(), "control.sock")
	st := sampleStatus()
	srv, err := Listen(path, &fakeAgent{status: func() status.Snapshot { return st }}, quiet())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	for b.Loop() {
		if _, err := QueryStatus(ctx, path); err != nil {
			b.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
