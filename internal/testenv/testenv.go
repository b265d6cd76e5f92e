// Package testenv holds the one rule for tests that need something this machine may
// lack (Docker, root, promtool, a mount namespace): skip with the reason on a
// workstation, fail under CI=true, where a skip would let CI pass without the test.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// CI reports whether the tests run in CI, where every peer must be present.
func CI() bool { return os.Getenv("CI") == "true" }

// Require skips (or, in CI, fails) the test unless ok.
func Require(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("%s (required under CI=true)", msg)
		return
	}
	t.Skip(msg)
}

// SkipShort skips the test under go test -short (make check, the quick loop): it needs
// Docker, a mount, a peer process built for it, or takes more than a few seconds.
// why says which; the full suite (make test, CI) runs it.
func SkipShort(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("%s: skipped under -short", why)
	}
}

// Missing skips (or, in CI, fails) the test: something it needs is absent.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	Require(t, false, format, args...)
}

// Root requires root (mounts, namespaces, file owners); why says what for.
func Root(t testing.TB, why string) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "needs root: %s", why)
}

// Tool returns the path of a program, requiring it; pkg names the Debian package.
func Tool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, err == nil, "%s not found (Debian package %s)", name, pkg)
	return p
}

// Context returns a context that ends after d or when the test and its cleanups are
// done. It is not derived from t.Context(), which ends before the cleanups run, so
// cleanups may use it too.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// RandomSuffix returns 12 random hex digits, to name the containers, images and
// other shared objects of one test run apart from those of another.
func RandomSuffix(t testing.TB) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// FreePort returns a loopback TCP port that was free a moment ago, for a peer that
// must be told its port before it starts.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Buffer is a log sink that a test reads while other goroutines write to it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// NewLog returns a Buffer for the logs of the code under test, which the test prints,
// under the heading what, if it fails. Writes after the test ended (a late log line of
// a goroutine on its way out) go nowhere harmful.
func NewLog(t testing.TB, what string) *Buffer {
	b := &Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s:\n%s", what, b.String())
		}
	})
	return b
}

// WaitLimit bounds Eventually. It is generous on purpose: it only stops a test that
// would otherwise hang, it is not a speed assertion.
const WaitLimit = 60 * time.Second

// Eventually polls cond until it holds, and fails the test, naming what it waited for,
// after WaitLimit.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
