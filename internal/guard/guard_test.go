package guard_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/guard"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// The test binary plays three parts, chosen by its first argument: the guard itself
// (guard-run), the child it supervises (guard-child, a stand-in for Jenkins) and the
// parent of an orphan (guard-orphan-parent). Run reaps every child of its process, so
// it runs in a process of its own, as in the container.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "guard-run":
			os.Exit(runGuard(os.Args[2:]))
		case "guard-child":
			os.Exit(runChild(os.Args[2:]))
		case "guard-orphan-parent":
			os.Exit(runOrphanParent(os.Args[2:]))
		}
	}
	os.Exit(m.Run())
}

const (
	me    = "i-0abc1234def567890"
	other = "i-0fedcba9876543210"
)

// runGuard: record holder skew grace poll -- argv...
func runGuard(args []string) int {
	dur := func(s string) time.Duration {
		d, err := time.ParseDuration(s)
		if err != nil {
			panic(err)
		}
		return d
	}
	if len(args) < 6 || args[5] != "--" {
		return 99
	}
	opts := guard.Options{
		Record: args[0], Holder: args[1], ClockSkew: dur(args[2]), StopGrace: dur(args[3]), PollInterval: dur(args[4]),
		StartTimeout: 5 * time.Second,
	}
	return guard.Run(context.Background(), opts, args[6:])
}

// runChild: dir [exit=N] [ignore-term] [orphan]. It records its start, and on SIGTERM
// the time it came, then exits 0 (or ignores it).
func runChild(args []string) int {
	dir := args[0]
	sigs := make(chan os.Signal, 1)
	ignore := false
	for _, a := range args[1:] {
		switch {
		case a == "ignore-term":
			ignore = true
		case a == "orphan":
			cmd := exec.Command(os.Args[0], "guard-orphan-parent", dir)
			if err := cmd.Run(); err != nil {
				return 98
			}
		case strings.HasPrefix(a, "exit="):
			n, _ := strconv.Atoi(strings.TrimPrefix(a, "exit="))
			write(dir, "started", strconv.Itoa(os.Getpid()))
			return n
		}
	}
	if ignore {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(sigs, syscall.SIGTERM)
	}
	write(dir, "started", strconv.Itoa(os.Getpid()))
	if ignore {
		select {}
	}
	<-sigs
	write(dir, "term", strconv.FormatInt(time.Now().UnixNano(), 10))
	return 0
}

// runOrphanParent starts a child that outlives it by a moment, and exits at once: the
// child becomes an orphan of the guard.
func runOrphanParent(args []string) int {
	cmd := exec.Command("sleep", "0.3")
	if err := cmd.Start(); err != nil {
		return 97
	}
	write(args[0], "orphan", strconv.Itoa(cmd.Process.Pid))
	return 0
}

func write(dir, name, content string) {
	tmp := filepath.Join(dir, name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		panic(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		panic(err)
	}
}

// world is one guard run: a home with a lease record, a directory for the child's
// traces, and the guard process.
type world struct {
	t      *testing.T
	record string
	trace  string
	cmd    *exec.Cmd
	done   chan struct{}
	code   int
}

func newWorld(t *testing.T) *world {
	t.Helper()
	home := t.TempDir()
	if err := os.Mkdir(filepath.Join(home, lease.DirName), 0o755); err != nil {
		t.Fatal(err)
	}
	return &world{t: t, record: filepath.Join(home, lease.DirName, lease.RecordName), trace: t.TempDir(), done: make(chan struct{})}
}

// renew writes the record as the holder would, atomically, and returns it.
func (w *world) renew(holder string, ttl time.Duration) lease.Record {
	w.t.Helper()
	now := time.Now().UTC()
	rec := lease.Record{Holder: holder, Epoch: 1, Expires: now.Add(ttl), RenewedAt: now}
	w.put(rec.Marshal())
	return rec
}

func (w *world) put(data []byte) {
	w.t.Helper()
	tmp := w.record + ".tmp-test"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		w.t.Fatal(err)
	}
	if err := os.Rename(tmp, w.record); err != nil {
		w.t.Fatal(err)
	}
}

// start runs the guard with skew, grace and a 100ms poll over the child with args.
func (w *world) start(skew, grace time.Duration, childArgs ...string) {
	w.t.Helper()
	args := append([]string{"guard-run", w.record, me, skew.String(), grace.String(), "100ms", "--", os.Args[0], "guard-child", w.trace}, childArgs...)
	w.cmd = exec.Command(os.Args[0], args...)
	// Under -race a process sleeps a second at exit by default, which a test of
	// deadlines cannot afford; the guard passes its environment on to the child.
	w.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	var out testenv.Buffer
	w.cmd.Stdout, w.cmd.Stderr = &out, &out
	if err := w.cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	go func() {
		err := w.cmd.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			w.code = ee.ExitCode()
		default:
			w.code = -1
		}
		close(w.done)
	}()
	w.t.Cleanup(func() {
		_ = w.cmd.Process.Kill()
		<-w.done
		if w.t.Failed() {
			w.t.Logf("guard output:\n%s", out.String())
		}
	})
}

// wait waits for the guard to exit and returns its exit code and when it was seen.
func (w *world) wait() (int, time.Time) {
	w.t.Helper()
	select {
	case <-w.done:
		return w.code, time.Now()
	case <-time.After(testenv.WaitLimit):
		w.t.Fatal("the guard did not exit")
		return 0, time.Time{}
	}
}

func (w *world) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

func (w *world) trace1(name string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(w.trace, name))
	if err != nil {
		return "", false
	}
	return string(b), true
}

func (w *world) waitStarted() {
	w.t.Helper()
	testenv.Eventually(w.t, "the child to start", func() bool { _, ok := w.trace1("started"); return ok || w.exited() })
	if _, ok := w.trace1("started"); !ok {
		w.t.Fatalf("the child did not start; guard exit code %d", w.code)
	}
}

func (w *world) termAt() (time.Time, bool) {
	s, ok := w.trace1("term")
	if !ok {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		w.t.Fatal(err)
	}
	return time.Unix(0, n), true
}

func TestRunRefusesWithoutLease(t *testing.T) {
	t.Parallel()
	for name, setup := range map[string]func(w *world){
		"another holder": func(w *world) { w.renew(other, time.Minute) },
		"released": func(w *world) {
			rec := w.renew(me, time.Minute)
			rec.Released = true
			w.put(rec.Marshal())
		},
		"no record":  func(*world) {},
		"unreadable": func(w *world) { w.put([]byte("{\"holder\":")) },
		"past its fence point": func(w *world) {
			now := time.Now().UTC()
			w.put(lease.Record{Holder: me, Epoch: 1, RenewedAt: now.Add(-time.Minute), Expires: now.Add(-30 * time.Second)}.Marshal())
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			setup(w)
			w.start(time.Second, time.Second)
			if code, _ := w.wait(); code != guard.ExitNoLease {
				t.Fatalf("exit code %d, want %d", code, guard.ExitNoLease)
			}
			if _, ok := w.trace1("started"); ok {
				t.Fatal("the child was started without the lease")
			}
		})
	}
}

func TestRunPassesTheChildsExitCode(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.renew(me, time.Minute)
	w.start(time.Second, time.Second, "exit=3")
	if code, _ := w.wait(); code != 3 {
		t.Fatalf("exit code %d, want the child's 3", code)
	}
}

func TestRunForwardsSIGTERM(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.renew(me, time.Minute)
	w.start(time.Second, time.Second)
	w.waitStarted()
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, _ := w.wait(); code != 0 {
		t.Fatalf("exit code %d, want the child's clean 0", code)
	}
	if _, ok := w.termAt(); !ok {
		t.Fatal("the child never saw SIGTERM")
	}
}

// TestRunStopsBeforeExpiryWhenNotRenewed: the holder renews once and then no more (the
// agent died): the child gets SIGTERM at the fence point, before the expiry.
func TestRunStopsBeforeExpiryWhenNotRenewed(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a lease to lapse")
	}
	t.Parallel()
	w := newWorld(t)
	rec := w.renew(me, 6*time.Second)
	w.start(time.Second, 30*time.Second)
	w.waitStarted()
	code, _ := w.wait()
	term, ok := w.termAt()
	if !ok || code != 0 {
		t.Fatalf("exit code %d, SIGTERM seen %v: want a clean stop on SIGTERM", code, ok)
	}
	if !term.Before(rec.Expires) {
		t.Fatalf("SIGTERM came %s after the expiry", term.Sub(rec.Expires))
	}
}

// TestRunKillsBeforeExpiryWhenTERMIsIgnored: a child that ignores SIGTERM is killed no
// later than expires - skew, however long the stop grace.
func TestRunKillsBeforeExpiryWhenTERMIsIgnored(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a lease to lapse")
	}
	t.Parallel()
	w := newWorld(t)
	rec := w.renew(me, 9*time.Second)
	w.start(2*time.Second, time.Hour, "ignore-term")
	w.waitStarted()
	code, at := w.wait()
	if code != 128+int(syscall.SIGKILL) {
		t.Fatalf("exit code %d, want %d (SIGKILL)", code, 128+int(syscall.SIGKILL))
	}
	if !at.Before(rec.Expires) {
		t.Fatalf("the child was still there %s after the expiry", at.Sub(rec.Expires))
	}
}

// TestRunRenewedKeepsRunningThenReleaseStops: renewals every ttl/3, with a gap such as
// an agent restart leaves, keep the child running for several ttls; a release then
// kills it at once.
func TestRunRenewedKeepsRunningThenReleaseStops(t *testing.T) {
	if testing.Short() {
		t.Skip("renews a lease for several ttls")
	}
	t.Parallel()
	w := newWorld(t)
	ttl := 3 * time.Second
	w.renew(me, ttl)
	w.start(500*time.Millisecond, 30*time.Second)
	w.waitStarted()
	for i := range 10 {
		gap := ttl / 3
		if i == 5 {
			gap = ttl / 2 // the agent restarts: a longer gap, still within the lease
		}
		time.Sleep(gap)
		if w.exited() {
			t.Fatalf("the guard exited (code %d) while the lease was renewed", w.code)
		}
		w.renew(me, ttl)
	}
	rec := w.renew(me, ttl)
	rec.Released = true
	w.put(rec.Marshal())
	if code, _ := w.wait(); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("exit code %d after a release, want SIGKILL at once", code)
	}
	if _, ok := w.termAt(); ok {
		t.Error("the child got SIGTERM first; a released lease allows no grace")
	}
	if s, _ := w.trace1("started"); s == "" {
		t.Fatal("no start recorded")
	}
}

// TestRunAnotherHolderKillsAtOnce: the record names another holder: SIGKILL at once.
func TestRunAnotherHolderKillsAtOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.renew(me, time.Minute)
	w.start(time.Second, time.Minute)
	w.waitStarted()
	w.renew(other, time.Minute)
	if code, _ := w.wait(); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("exit code %d, want SIGKILL", code)
	}
	if _, ok := w.termAt(); ok {
		t.Error("the child got SIGTERM first; another holder allows no grace")
	}
}

// TestRunHungReadStillFences: after the first read every read of the record hangs (a
// FIFO with no writer blocks open, as a hung NFS mount blocks a read): the fence point
// of the last good read still stops the child before the expiry.
func TestRunHungReadStillFences(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a lease to lapse")
	}
	t.Parallel()
	w := newWorld(t)
	rec := w.renew(me, 6*time.Second)
	w.start(time.Second, 30*time.Second)
	w.waitStarted()
	fifo := w.record + ".fifo"
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fifo, w.record); err != nil {
		t.Fatal(err)
	}
	code, _ := w.wait()
	term, ok := w.termAt()
	if !ok || code != 0 {
		t.Fatalf("exit code %d, SIGTERM seen %v: want a clean stop on SIGTERM", code, ok)
	}
	if !term.Before(rec.Expires) {
		t.Fatalf("SIGTERM came %s after the expiry", term.Sub(rec.Expires))
	}
}

// TestRunReapsOrphans: a process orphaned under the guard is reaped when it exits,
// not left a zombie.
func TestRunReapsOrphans(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.renew(me, time.Minute)
	w.start(time.Second, time.Second, "orphan")
	w.waitStarted()
	s, ok := w.trace1("orphan")
	if !ok {
		t.Fatal("no orphan was made")
	}
	pid, _ := strconv.Atoi(s)
	testenv.Eventually(t, fmt.Sprintf("orphan %d to be reaped", pid), func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
		return errors.Is(err, os.ErrNotExist)
	})
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	if code, _ := w.wait(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
