package lease

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

func newLease(t testing.TB, dir, id string, mod func(*Options)) *Lease {
	t.Helper()
	opts := Options{Dir: dir, HolderID: id, TTL: time.Hour, ClockSkew: 50 * time.Millisecond, PollInterval: 20 * time.Millisecond}
	if mod != nil {
		mod(&opts)
	}
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func readOnDisk(t *testing.T, l *Lease) Record {
	t.Helper()
	rec, ok, err := l.readRecord()
	if err != nil || !ok {
		t.Fatalf("read record: ok=%v err=%v", ok, err)
	}
	return rec
}

func TestNewValidates(t *testing.T) {
	for name, opts := range map[string]Options{
		"no dir":        {HolderID: "i-1"},
		"no holder":     {Dir: "/x"},
		"skew too big":  {Dir: "/x", HolderID: "i-1", TTL: 3 * time.Second, ClockSkew: 2 * time.Second},
		"negative poll": {Dir: "/x", HolderID: "i-1", PollInterval: -time.Second},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("%s: New() accepted %+v", name, opts)
		}
	}
	l, err := New(Options{Dir: "/x", HolderID: "i-1"})
	if err != nil {
		t.Fatal(err)
	}
	if l.opts.TTL != DefaultTTL || l.opts.ClockSkew != DefaultClockSkew || l.opts.PollInterval != DefaultPollInterval {
		t.Fatalf("defaults not applied: %+v", l.opts)
	}
}

func TestAcquireRefusesMissingHome(t *testing.T) {
	l := newLease(t, filepath.Join(t.TempDir(), "not-mounted"), "i-a", nil)
	_, err := l.Acquire(ctxFor(t, 5*time.Second), nil)
	if err == nil || !strings.Contains(err.Error(), "mounted") {
		t.Fatalf("Acquire() on a missing home = %v, want an error asking about the mount", err)
	}
}

func TestExclusive(t *testing.T) {
	dir := t.TempDir()
	a := newLease(t, dir, "i-a", nil)
	b := newLease(t, dir, "i-b", nil)
	st, err := a.Acquire(ctxFor(t, 5*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Held || st.Holder != "i-a" || st.Epoch != 1 || !a.Held() {
		t.Fatalf("A's state after Acquire = %+v, Held()=%v", st, a.Held())
	}
	var seen []status.LeaseState
	_, err = b.Acquire(ctxFor(t, 300*time.Millisecond), func(s status.LeaseState) { seen = append(seen, s) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("B's Acquire while A holds = %v, want deadline exceeded", err)
	}
	if !strings.Contains(err.Error(), "i-a") {
		t.Errorf("error %q does not name the holder", err)
	}
	if len(seen) != 1 || seen[0].Holder != "i-a" || !seen[0].Held || seen[0].Epoch != 1 {
		t.Fatalf("waiting calls = %+v, want one naming i-a epoch 1", seen)
	}
	if b.Held() {
		t.Fatal("B reports Held while A holds the lease")
	}
	peek, err := b.Peek(ctxFor(t, 5*time.Second))
	if err != nil || !peek.Held || peek.Holder != "i-a" {
		t.Fatalf("Peek() = %+v, %v; want held by i-a", peek, err)
	}
}

func TestHandoverOnRelease(t *testing.T) {
	dir := t.TempDir()
	a := newLease(t, dir, "i-a", nil) // one-hour TTL: only a release can hand over
	b := newLease(t, dir, "i-b", nil)
	if _, err := a.Acquire(ctxFor(t, 5*time.Second), nil); err != nil {
		t.Fatal(err)
	}
	holdDone := make(chan error, 1)
	go func() { holdDone <- a.Hold(ctxFor(t, time.Minute), nil) }()

	waiting := make(chan struct{})
	var once sync.Once
	type result struct {
		st  status.LeaseState
		err error
	}
	got := make(chan result, 1)
	go func() {
		st, err := b.Acquire(ctxFor(t, time.Minute), func(status.LeaseState) { once.Do(func() { close(waiting) }) })
		got <- result{st, err}
	}()
	<-waiting
	if err := a.Release(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatalf("second Release() = %v, want nil (idempotent)", err)
	}
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.st.Holder != "i-b" || r.st.Epoch != 2 || !r.st.Held {
		t.Fatalf("B's state = %+v, want i-b epoch 2", r.st)
	}
	if err := <-holdDone; err != nil {
		t.Fatalf("A's Hold after Release = %v, want nil", err)
	}
	if a.Held() {
		t.Fatal("A still reports Held after Release")
	}
	if rec := readOnDisk(t, b); rec.Holder != "i-b" || rec.Epoch != 2 || rec.Released {
		t.Fatalf("record = %+v", rec)
	}
}

func TestWaitsForExpiryWhenHolderVanished(t *testing.T) {
	dir := t.TempDir()
	skew := 50 * time.Millisecond
	a := newLease(t, dir, "i-a", func(o *Options) { o.TTL = 600 * time.Millisecond; o.ClockSkew = skew })
	b := newLease(t, dir, "i-b", func(o *Options) { o.ClockSkew = skew })
	st, err := a.Acquire(ctxFor(t, 5*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	// A never renews: it vanished.
	var waited []status.LeaseState
	got, err := b.Acquire(ctxFor(t, time.Minute), func(s status.LeaseState) { waited = append(waited, s) })
	if err != nil {
		t.Fatal(err)
	}
	if len(waited) == 0 || waited[0].Holder != "i-a" {
		t.Fatalf("B did not wait for i-a: %+v", waited)
	}
	rec := readOnDisk(t, b)
	if !rec.RenewedAt.After(st.Expires.Add(skew)) {
		t.Fatalf("B took the lease at %s, before A's expiry %s plus skew", rec.RenewedAt, st.Expires)
	}
	if got.Epoch != 2 || rec.Holder != "i-b" {
		t.Fatalf("B's state = %+v, record %+v", got, rec)
	}
}

func TestEpochGrowsWithEachTenure(t *testing.T) {
	dir := t.TempDir()
	a := newLease(t, dir, "i-a", nil)
	b := newLease(t, dir, "i-b", nil)
	var epochs []uint64
	for _, l := range []*Lease{a, b, a, a} {
		st, err := l.Acquire(ctxFor(t, 10*time.Second), nil)
		if err != nil {
			t.Fatal(err)
		}
		epochs = append(epochs, st.Epoch)
		if err := l.Release(ctxFor(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		if rec := readOnDisk(t, l); !rec.Released || rec.Epoch != st.Epoch {
			t.Fatalf("record after release = %+v", rec)
		}
	}
	want := []uint64{1, 2, 3, 4}
	if !slicesEqual(epochs, want) {
		t.Fatalf("epochs = %v, want %v", epochs, want)
	}
}

func slicesEqual(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAdoptsOwnLease(t *testing.T) {
	dir := t.TempDir()
	first := newLease(t, dir, "i-a", nil)
	st1, err := first.Acquire(ctxFor(t, 5*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The agent restarts on the same instance: a new Lease with the same holder id.
	var logs bytes.Buffer
	again := newLease(t, dir, "i-a", func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	st2, err := again.Acquire(ctxFor(t, 5*time.Second), func(status.LeaseState) { t.Error("adoption must not wait") })
	if err != nil {
		t.Fatal(err)
	}
	if st2.Epoch != st1.Epoch || !again.Held() {
		t.Fatalf("adopted epoch %d, want %d (held=%v)", st2.Epoch, st1.Epoch, again.Held())
	}
	if !strings.Contains(logs.String(), "adopting own lease") {
		t.Fatalf("logs do not mention adoption:\n%s", logs.String())
	}
}

func TestHolderTerminatedShortcut(t *testing.T) {
	dir := t.TempDir()
	a := newLease(t, dir, "i-a", nil)
	if _, err := a.Acquire(ctxFor(t, 5*time.Second), nil); err != nil {
		t.Fatal(err)
	}

	failing := newLease(t, dir, "i-c", func(o *Options) {
		o.HolderTerminated = func(context.Context, string) (bool, error) { return false, errors.New("throttled") }
	})
	if _, err := failing.Acquire(ctxFor(t, 200*time.Millisecond), nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire with a failing EC2 check = %v, want to keep waiting", err)
	}

	var asked []string
	b := newLease(t, dir, "i-b", func(o *Options) {
		o.HolderTerminated = func(_ context.Context, id string) (bool, error) {
			asked = append(asked, id)
			return id == "i-a", nil
		}
	})
	st, err := b.Acquire(ctxFor(t, 10*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Holder != "i-b" || st.Epoch != 2 {
		t.Fatalf("state = %+v, want i-b epoch 2", st)
	}
	if len(asked) != 1 || asked[0] != "i-a" {
		t.Fatalf("HolderTerminated asked about %v, want [i-a]", asked)
	}
	// A, still alive, must not release B's lease.
	if err := a.Release(ctxFor(t, 5*time.Second)); !errors.Is(err, ErrLost) {
		t.Fatalf("A's Release after takeover = %v, want ErrLost", err)
	}
	if rec := readOnDisk(t, b); rec.Holder != "i-b" || rec.Released {
		t.Fatalf("record after A's release attempt = %+v", rec)
	}
}

func TestUnreadableRecordIsRefused(t *testing.T) {
	dir := t.TempDir()
	a := newLease(t, dir, "i-a", nil)
	if err := os.MkdirAll(filepath.Join(dir, DirName), 0o755); err != nil {
		t.Fatal(err)
	}
	torn := []byte(`{"holder":"i-z","epoch":4,"exp`)
	if err := os.WriteFile(a.RecordPath(), torn, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := a.Acquire(ctxFor(t, 5*time.Second), nil)
	if !errors.Is(err, ErrUnreadable) {
		t.Fatalf("Acquire() over a torn record = %v, want ErrUnreadable", err)
	}
	if !strings.Contains(err.Error(), "then remove "+a.RecordPath()) || !strings.Contains(err.Error(), "no other controller") {
		t.Fatalf("error %q does not say how to recover", err)
	}
	if _, err := a.Peek(ctxFor(t, 5*time.Second)); !errors.Is(err, ErrUnreadable) {
		t.Fatalf("Peek() = %v, want ErrUnreadable", err)
	}
	if data, _ := os.ReadFile(a.RecordPath()); !bytes.Equal(data, torn) {
		t.Fatalf("the torn record was overwritten: %q", data)
	}
}

func TestConcurrentAcquireOneWins(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	var (
		wg      sync.WaitGroup
		winners atomic.Int32
		winner  atomic.Value
		start   = make(chan struct{})
	)
	for i := range n {
		l := newLease(t, dir, "i-"+string(rune('a'+i)), nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			st, err := l.Acquire(ctxFor(t, 2*time.Second), nil)
			switch {
			case err == nil:
				winners.Add(1)
				winner.Store(st.Holder)
			case !errors.Is(err, context.DeadlineExceeded):
				t.Errorf("Acquire: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if winners.Load() != 1 {
		t.Fatalf("%d holders acquired the lease, want exactly 1", winners.Load())
	}
	rec, ok, err := newLease(t, dir, "i-reader", nil).readRecord()
	if err != nil || !ok || rec.Holder != winner.Load().(string) || rec.Epoch != 1 {
		t.Fatalf("record = %+v (%v %v), winner %v", rec, ok, err, winner.Load())
	}
}

func TestHoldReturnsLostAndFences(t *testing.T) {
	dir := t.TempDir()
	a := newLease(t, dir, "i-a", func(o *Options) { o.TTL = 300 * time.Millisecond; o.ClockSkew = 10 * time.Millisecond })
	if _, err := a.Acquire(ctxFor(t, 5*time.Second), nil); err != nil {
		t.Fatal(err)
	}
	var fences atomic.Int32
	holdDone := make(chan error, 1)
	go func() {
		holdDone <- a.Hold(ctxFor(t, time.Minute), func(context.Context) error { fences.Add(1); return nil })
	}()
	b := newLease(t, dir, "i-b", func(o *Options) {
		o.HolderTerminated = func(context.Context, string) (bool, error) { return true, nil } // EC2 is wrong: A lives
	})
	if _, err := b.Acquire(ctxFor(t, 10*time.Second), nil); err != nil {
		t.Fatal(err)
	}
	err := <-holdDone
	if !errors.Is(err, ErrLost) || !strings.Contains(err.Error(), "i-b") {
		t.Fatalf("Hold() = %v, want ErrLost naming i-b", err)
	}
	if fences.Load() != 1 {
		t.Fatalf("fence called %d times, want 1", fences.Load())
	}
	if a.Held() {
		t.Fatal("A reports Held after losing the lease")
	}
	if rec := readOnDisk(t, b); rec.Holder != "i-b" || rec.Epoch != 2 {
		t.Fatalf("record = %+v: the old holder overwrote the successor", rec)
	}
}

func TestHoldRenewsUntilCancelled(t *testing.T) {
	dir := t.TempDir()
	// A TTL long enough that a slow fsync on a loaded machine does not trigger the fence.
	a := newLease(t, dir, "i-a", func(o *Options) { o.TTL = 3 * time.Second; o.ClockSkew = 100 * time.Millisecond })
	st, err := a.Acquire(ctxFor(t, 5*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	holdDone := make(chan error, 1)
	go func() {
		holdDone <- a.Hold(ctx, func(context.Context) error { t.Error("fenced while renewals succeed"); return nil })
	}()
	// Wait (bounded) for a few renewals to move the expiry forward.
	deadline := time.Now().Add(30 * time.Second)
	for readOnDisk(t, a).Expires.Before(st.Expires.Add(300*time.Millisecond)) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if rec := readOnDisk(t, a); !rec.Expires.After(st.Expires) || rec.Epoch != st.Epoch || rec.Holder != "i-a" {
		t.Fatalf("record after renewals = %+v, first expiry %s", rec, st.Expires)
	}
	cancel()
	if err := <-holdDone; err != nil {
		t.Fatalf("Hold() after cancel = %v, want nil", err)
	}
	if err := a.Release(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// TestFenceBeforeExpiry makes the holder's view of the file system read-only (a bind
// mount remounted read-only, inside a private mount namespace) while a successor
// still sees it writable, as in a partition that stops one client's writes.
func TestFenceBeforeExpiry(t *testing.T) {
	if os.Getenv("LEASE_FENCE_CHILD") == "1" {
		fenceScenario(t)
		return
	}
	if testing.Short() {
		t.Skip("mounts in a private namespace and waits a ttl; skipped in -short")
	}
	if os.Geteuid() != 0 {
		testenv.Missing(t, "%s", "needs root to mount a tmpfs in a private mount namespace")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		testenv.Missing(t, "%s", "needs unshare(1) from util-linux")
	}
	cmd := exec.CommandContext(ctxFor(t, 2*time.Minute), unshare, "-m", "--propagation", "private",
		os.Args[0], "-test.run=^TestFenceBeforeExpiry$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "LEASE_FENCE_CHILD=1")
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("scenario failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestFenceBeforeExpiry") {
		t.Fatal("scenario did not run")
	}
}

func fenceScenario(t *testing.T) {
	base := t.TempDir()
	shared, aView, bView := filepath.Join(base, "efs"), filepath.Join(base, "a"), filepath.Join(base, "b")
	for _, d := range []string{shared, aView, bView} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("fs-test.efs:/", shared, "tmpfs", 0, "size=8m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(shared, unix.MNT_DETACH) })
	for _, v := range []string{aView, bView} {
		if err := unix.Mount(shared, v, "", unix.MS_BIND, ""); err != nil {
			t.Fatalf("bind mount: %v", err)
		}
		t.Cleanup(func() { _ = unix.Unmount(v, unix.MNT_DETACH) })
	}

	ttl, skew := 3*time.Second, 300*time.Millisecond
	a := newLease(t, aView, "i-a", func(o *Options) { o.TTL = ttl; o.ClockSkew = skew })
	b := newLease(t, bView, "i-b", func(o *Options) { o.TTL = ttl; o.ClockSkew = skew })
	stA, err := a.Acquire(ctxFor(t, 5*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu        sync.Mutex
		fencedAt  []time.Time
		heldAfter bool
	)
	holdDone := make(chan error, 1)
	go func() {
		holdDone <- a.Hold(ctxFor(t, time.Minute), func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			fencedAt = append(fencedAt, time.Now())
			heldAfter = a.Held()
			return nil
		})
	}()

	// A's writes start failing. The remount is refused while a renewal has a file
	// open for writing, so retry it (bounded).
	var rerr error
	for range 200 {
		if rerr = unix.Mount("", aView, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); rerr == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if rerr != nil {
		t.Fatalf("remount read-only: %v", rerr)
	}
	last := readOnDisk(t, b) // A's last successful renewal; no write can follow it
	if last.Holder != "i-a" || last.Epoch != stA.Epoch {
		t.Fatalf("record = %+v", last)
	}

	// A cannot renew: it fences, and its tenure is over, before B may take over.
	if err := <-holdDone; !errors.Is(err, ErrFenced) {
		t.Fatalf("A's Hold() = %v, want ErrFenced", err)
	}
	if a.Held() {
		t.Fatal("A reports Held after its fence")
	}
	stB, err := b.Acquire(ctxFor(t, time.Minute), nil)
	if err != nil {
		t.Fatal(err)
	}
	recB := readOnDisk(t, b)
	if err := a.Release(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatalf("A's Release after its fence = %v, want nil (nothing held)", err)
	}
	if rec := readOnDisk(t, b); rec != recB {
		t.Fatalf("A's Release after its fence changed the record: %+v", rec)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(fencedAt) != 1 {
		t.Fatalf("fence called %d times, want once", len(fencedAt))
	}
	if !fencedAt[0].Before(last.Expires) {
		t.Fatalf("fenced at %s, not before the lease lapsed at %s", fencedAt[0].Format(time.RFC3339Nano), last.Expires.Format(time.RFC3339Nano))
	}
	if heldAfter {
		t.Fatal("Held() was true while fencing")
	}
	if !recB.RenewedAt.After(last.Expires.Add(skew)) {
		t.Fatalf("B took over at %s, before A's expiry %s plus skew", recB.RenewedAt, last.Expires)
	}
	if !fencedAt[0].Before(recB.RenewedAt) {
		t.Fatal("B took over before A fenced")
	}
	if stB.Epoch != stA.Epoch+1 {
		t.Fatalf("B's epoch %d, want %d", stB.Epoch, stA.Epoch+1)
	}
	t.Logf("fenced %s before expiry; successor took over %s after expiry",
		last.Expires.Sub(fencedAt[0]).Round(time.Millisecond), recB.RenewedAt.Sub(last.Expires).Round(time.Millisecond))
}

// The configured ttl is refused at load exactly when the lease would refuse it.
func TestCheckTTLIsTheRuleNewApplies(t *testing.T) {
	if err := CheckTTL(0); err == nil {
		t.Error("CheckTTL(0) accepted")
	}
	for _, ttl := range []time.Duration{
		-time.Second, time.Second, 3 * time.Second, 2 * DefaultClockSkew, 2*DefaultClockSkew + time.Millisecond,
		5 * time.Second, DefaultTTL, MaxTTL, MaxTTL + time.Second, time.Hour,
	} {
		checked := CheckTTL(ttl)
		_, newErr := New(Options{Dir: "/x", HolderID: "i-1", TTL: ttl})
		switch {
		case ttl > MaxTTL:
			if checked == nil || !strings.Contains(checked.Error(), "too long") {
				t.Errorf("CheckTTL(%s) = %v, want too long", ttl, checked)
			}
		case (checked == nil) != (newErr == nil):
			t.Errorf("ttl %s: CheckTTL says %v, New says %v", ttl, checked, newErr)
		}
	}
	if err := CheckTTL(3 * time.Second); err == nil || !strings.Contains(err.Error(), "more than 4s") {
		t.Errorf("CheckTTL(3s) = %v, want an error naming the 4s floor", err)
	}
	if err := CheckTTL(DefaultTTL); err != nil {
		t.Errorf("CheckTTL(default %s) = %v", DefaultTTL, err)
	}
}
