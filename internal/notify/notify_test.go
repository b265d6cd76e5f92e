package notify

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// listen plays systemd: a unixgram socket named in NOTIFY_SOCKET.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

// next returns the next datagram; the deadline only bounds a broken test.
func next(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, _, err := conn.ReadFromUnix(buf)
	if err != nil {
		t.Fatalf("reading notify socket: %v", err)
	}
	return string(buf[:n])
}

func TestMessages(t *testing.T) {
	conn := listen(t)
	n := New(slog.New(slog.DiscardHandler))

	cases := []struct {
		name string
		send func() error
		want string
	}{
		{"ready", func() error { return n.Ready("serving jenkins") }, "READY=1\nSTATUS=serving jenkins"},
		{
			"status", func() error { return n.Status("waiting for i-0abc to release JENKINS_HOME") },
			"STATUS=waiting for i-0abc to release JENKINS_HOME",
		},
		// A status text must not smuggle in another assignment.
		{"status with newline", func() error { return n.Status("bad\nREADY=1") }, "STATUS=bad READY=1"},
		{"extend", func() error { return n.ExtendTimeout(90 * time.Second) }, "EXTEND_TIMEOUT_USEC=90000000"},
		{"stopping", func() error { return n.Stopping("draining: spot_terminate") }, "STOPPING=1\nSTATUS=draining: spot_terminate"},
		{"watchdog", n.Watchdog, "WATCHDOG=1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.send(); err != nil {
				t.Fatal(err)
			}
			if got := next(t, conn); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestExtendTimeoutRejectsNonPositive(t *testing.T) {
	listen(t)
	if err := New(slog.New(slog.DiscardHandler)).ExtendTimeout(0); err == nil {
		t.Error("ExtendTimeout(0) succeeded; systemd would read it as no extension")
	}
}

func TestSendErrorWhenNobodyListens(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	err := New(slog.New(slog.DiscardHandler)).Ready("x")
	if err == nil || !strings.HasPrefix(err.Error(), "notify ready: ") {
		t.Errorf("Ready to a missing socket = %v, want a wrapped error", err)
	}
}

func TestOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n := New(slog.New(slog.DiscardHandler))
	for name, err := range map[string]error{
		"ready": n.Ready("x"), "status": n.Status("x"), "extend": n.ExtendTimeout(time.Second),
		"stopping": n.Stopping("x"), "watchdog": n.Watchdog(),
	} {
		if err != nil {
			t.Errorf("%s without NOTIFY_SOCKET = %v, want nil", name, err)
		}
	}
	if d, ok := n.WatchdogInterval(); ok {
		t.Errorf("WatchdogInterval without NOTIFY_SOCKET = %s, true; want false", d)
	}
	// Returns at once; a loop here would hang the test.
	n.RunWatchdog(t.Context(), func() bool { return true })
}

func TestWatchdogInterval(t *testing.T) {
	listen(t)
	self := strconv.Itoa(os.Getpid())
	cases := []struct {
		usec, pid string
		want      time.Duration
		ok        bool
	}{
		{"3000000", self, 3 * time.Second, true},
		{"3000000", "", 3 * time.Second, true},
		{"3000000", "1", 0, false}, // meant for another process
		{"", "", 0, false},
		{"soon", self, 0, false},
		{"-5", self, 0, false},
	}
	for _, c := range cases {
		t.Setenv("WATCHDOG_USEC", c.usec)
		t.Setenv("WATCHDOG_PID", c.pid)
		d, ok := New(slog.New(slog.DiscardHandler)).WatchdogInterval()
		if d != c.want || ok != c.ok {
			t.Errorf("USEC=%q PID=%q: got %s, %t; want %s, %t", c.usec, c.pid, d, ok, c.want, c.ok)
		}
	}
}

// TestRunWatchdog drives the health answers by a script and uses the order of
// datagrams, not the clock, to prove that no ping was sent while unhealthy: a
// marker sent after the unhealthy checks must be the next thing on the socket.
func TestRunWatchdog(t *testing.T) {
	conn := listen(t)
	t.Setenv("WATCHDOG_USEC", "100000") // pings every 50ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	var logs testenv.Buffer
	n := New(slog.New(slog.NewTextHandler(&logs, nil)))

	script := []bool{true, true, false, false, false, true, true}
	calls := make(chan int, 1000)
	var mu sync.Mutex
	i := 0
	healthy := func() bool {
		mu.Lock()
		defer mu.Unlock()
		i++
		calls <- i
		if i > len(script) {
			return true // stays healthy until the test stops it
		}
		return script[i-1]
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); n.RunWatchdog(ctx, healthy) }()

	for k := 0; k < 2; k++ {
		if got := next(t, conn); got != "WATCHDOG=1" {
			t.Fatalf("ping %d = %q", k+1, got)
		}
	}
	waitCall(t, calls, 5) // three unhealthy checks done, each followed by no ping
	sendMarker(t, conn.LocalAddr().String())
	if got := next(t, conn); got != "MARKER" {
		t.Fatalf("after unhealthy checks got %q, want no ping before the marker", got)
	}
	for k := 0; k < 2; k++ {
		if got := next(t, conn); got != "WATCHDOG=1" {
			t.Fatalf("ping after recovery = %q", got)
		}
	}
	cancel()
	<-done

	out := logs.String()
	if c := strings.Count(out, "withholding systemd watchdog"); c != 1 {
		t.Errorf("withholding logged %d times, want once per unhealthy spell:\n%s", c, out)
	}
	if c := strings.Count(out, "resuming systemd watchdog"); c != 1 {
		t.Errorf("resuming logged %d times, want 1:\n%s", c, out)
	}
}

func waitCall(t *testing.T, calls <-chan int, want int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case got := <-calls:
			if got >= want {
				return
			}
		case <-deadline:
			t.Fatalf("health was never checked %d times", want)
		}
	}
}

func sendMarker(t *testing.T, path string) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("MARKER")); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkStatus(b *testing.B) {
	path := filepath.Join(b.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, _, err := conn.ReadFromUnix(buf); err != nil {
				return
			}
		}
	}()
	b.Setenv("NOTIFY_SOCKET", path)
	n := New(slog.New(slog.DiscardHandler))
	for b.Loop() {
		if err := n.Status("serving jenkins"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestStatusLine(t *testing.T) {
	cases := map[string]string{
		"serving":                   "STATUS=serving",
		"":                          "STATUS=",
		"  two  words ":             "STATUS=two words",
		"a\nREADY=1":                "STATUS=a READY=1",
		"tab\tand\r\ncarriage\nend": "STATUS=tab and carriage end",
	}
	for in, want := range cases {
		if got := statusLine(in); got != want {
			t.Errorf("statusLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzStatusLine checks that no status text can add a second assignment.
func FuzzStatusLine(f *testing.F) {
	for _, s := range []string{"serving", "a\nREADY=1", "\n\n", "waiting for i-0abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := statusLine(s)
		if strings.ContainsAny(got, "\n") || !strings.HasPrefix(got, "STATUS=") {
			t.Errorf("statusLine(%q) = %q", s, got)
		}
	})
}
