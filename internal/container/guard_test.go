package container

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/enginetest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/guard"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins/jenkinstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// The guard tests run the agent's own static binary twice over, as simulate does: as
// the image (FROM scratch, the Jenkins double as its entrypoint) and as the guard
// bind-mounted in front of it. The lease is the lease package's own, renewed by Hold
// as the agent renews it.
var (
	agentOnce       sync.Once
	agentPath       string
	agentErr        error
	doubleImageOnce sync.Once
	doubleImageTag  string
	doubleImageErr  error
)

const (
	guardHolder = "i-0abc1234def567890"
	otherHolder = "i-0fedcba9876543210"
)

func agentBinary(t testing.TB) string {
	t.Helper()
	agentOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		agentPath = filepath.Join(binDir, "jenkins-spot-agent")
		agentErr = enginetest.BuildStatic(ctx, "github.com/jenkins-spot-agent/jenkins-spot-agent/cmd/jenkins-spot-agent", agentPath)
	})
	if agentErr != nil {
		t.Fatalf("build the agent: %v", agentErr)
	}
	return agentPath
}

func doubleImage(t testing.TB, cli client.APIClient) string {
	t.Helper()
	doubleImageOnce.Do(func() {
		bin := agentBinary(t)
		tag := "jenkins-spot-agent-test/jenkins-double:" + testenv.RandomSuffix(t)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		doubleImageErr = enginetest.BuildImage(ctx, cli, tag, bin, []string{"/jenkins-spot-agent", "jenkins-double"})
		if doubleImageErr == nil {
			doubleImageTag = tag
		}
	})
	if doubleImageErr != nil {
		t.Fatalf("build the Jenkins double image: %v", doubleImageErr)
	}
	return doubleImageTag
}

// guarded is one guarded Jenkins: its home, the lease over it and the options of its
// container (hardened as in production).
type guarded struct {
	*fixture
	home string
	ttl  time.Duration
}

func newGuarded(t *testing.T, ttl time.Duration) *guarded {
	t.Helper()
	if testing.Short() {
		t.Skip("runs a guarded Jenkins double in Docker for several lease periods")
	}
	f := newFixture(t)
	f.opts.Image = doubleImage(t, f.cli)
	f.opts.HomeContainer = "/var/jenkins_home"
	f.opts.Cmd = []string{"--listen", ":8080", "--home", "/var/jenkins_home"}
	f.opts.Env = nil
	f.opts.NoNewPrivileges = true
	f.opts.CapDrop = []string{"ALL"}
	f.opts.CapAdd = []string{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID"}
	f.opts.PidsLimit = 8192
	g := &guarded{fixture: f, home: f.opts.HomeHost, ttl: ttl}
	l := g.newLease()
	rel, err := filepath.Rel(g.home, l.RecordPath())
	if err != nil {
		t.Fatal(err)
	}
	f.opts.Guard = GuardOptions{Executable: agentBinary(t), Holder: guardHolder, Record: rel}
	return g
}

func (g *guarded) newLease() *lease.Lease {
	g.t.Helper()
	l, err := lease.New(lease.Options{Dir: g.home, HolderID: guardHolder, TTL: g.ttl, ClockSkew: 2 * time.Second})
	if err != nil {
		g.t.Fatal(err)
	}
	return l
}

// agent takes the lease and renews it until the returned stop is called, as a running
// agent does; stop returns once renewing has ended, like an agent process that died.
func (g *guarded) agent(l *lease.Lease) (stop func()) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	if _, err := l.Acquire(ctx, nil); err != nil {
		cancel()
		g.t.Fatalf("acquire: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = l.Hold(ctx, nil)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	g.t.Cleanup(stop)
	return stop
}

func (g *guarded) record() lease.Record {
	g.t.Helper()
	l := g.newLease()
	b, err := os.ReadFile(l.RecordPath())
	if err != nil {
		g.t.Fatal(err)
	}
	rec, err := lease.ParseRecord(b)
	if err != nil {
		g.t.Fatal(err)
	}
	return rec
}

// waitJenkins waits until the double has written its home state.
func (g *guarded) waitJenkins() jenkinstest.HomeState {
	g.t.Helper()
	var st jenkinstest.HomeState
	testenv.Eventually(g.t, "the Jenkins double to start", func() bool {
		var err error
		st, err = jenkinstest.ReadHomeState(g.home)
		return err == nil && !st.Started.IsZero()
	})
	return st
}

func (g *guarded) logs() string {
	g.t.Helper()
	rc, err := g.cli.ContainerLogs(testenv.Context(g.t, 30*time.Second), g.opts.Name, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		g.t.Fatal(err)
	}
	defer rc.Close()
	var b bytes.Buffer
	_, _ = io.Copy(&b, rc)
	return b.String()
}

func (g *guarded) finishedAt() time.Time {
	g.t.Helper()
	at, err := time.Parse(time.RFC3339Nano, g.inspect().State.FinishedAt)
	if err != nil {
		g.t.Fatal(err)
	}
	return at
}

// TestGuardStopsJenkinsWhenTheAgentStopsRenewing: the agent dies (its renewals stop)
// and nothing comes back: the guard alone stops Jenkins, cleanly, before the lease's
// expiry.
func TestGuardStopsJenkinsWhenTheAgentStopsRenewing(t *testing.T) {
	g := newGuarded(t, 12*time.Second)
	stop := g.agent(g.newLease())
	r := g.runtime()
	mustStart(t, r)
	g.waitJenkins()
	info := g.inspect()
	ep := info.Config.Entrypoint
	if i := slices.Index(ep, "--"); i < 2 || ep[0] != GuardPath || ep[1] != "guard" || !slices.Equal(ep[i+1:], append([]string{"/jenkins-spot-agent", "jenkins-double"}, g.opts.Cmd...)) || len(info.Config.Cmd) != 0 {
		t.Fatalf("entrypoint %q: want the guard in front of the image's own", ep)
	}

	stop()
	rec := g.record()
	code, err := r.Wait(testenv.Context(t, time.Minute))
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	finished := g.finishedAt()
	st, _ := jenkinstest.ReadHomeState(g.home)
	t.Logf("last renewal %s, expiry %s; Jenkins stopped %s, container finished %s (exit %d)",
		rec.RenewedAt.Format(time.RFC3339Nano), rec.Expires.Format(time.RFC3339Nano), st.Stopped.Format(time.RFC3339Nano), finished.Format(time.RFC3339Nano), code)
	if code != 0 || st.Stopped.IsZero() {
		t.Errorf("exit %d, clean stop recorded %v: want Jenkins stopped by SIGTERM, saving its state", code, !st.Stopped.IsZero())
	}
	if !finished.Before(rec.Expires) {
		t.Fatalf("Jenkins ran until %s, past the lease's expiry %s", finished, rec.Expires)
	}
	if logs := g.logs(); !strings.Contains(logs, "reason=\"not renewed\"") {
		t.Errorf("the guard did not say why it stopped Jenkins:\n%s", logs)
	}
}

// TestGuardKeepsJenkinsWhileARestartedAgentRenews: the agent dies and a new one takes
// its lease back within the lease and renews it: the same Jenkins keeps running, the
// container is adopted, nothing restarts.
func TestGuardKeepsJenkinsWhileARestartedAgentRenews(t *testing.T) {
	g := newGuarded(t, 9*time.Second)
	stop := g.agent(g.newLease())
	mustStart(t, g.runtime())
	st0 := g.waitJenkins()
	info0 := g.inspect()

	stop() // the agent dies...
	time.Sleep(time.Second)
	g.agent(g.newLease()) // ...and its successor on this instance adopts the lease
	if !mustStart(t, g.runtime()) {
		t.Fatal("the restarted agent did not adopt the running container")
	}
	// Several lease periods, each renewal read by the guard.
	deadline := time.Now().Add(2 * g.ttl)
	for time.Now().Before(deadline) {
		if running, err := g.runtime().Running(testenv.Context(t, 30*time.Second)); err != nil || !running {
			t.Fatalf("Running = %v, %v while the lease is renewed:\n%s", running, err, g.logs())
		}
		time.Sleep(500 * time.Millisecond)
	}
	info := g.inspect()
	st, err := jenkinstest.ReadHomeState(g.home)
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != info0.ID || info.State.StartedAt != info0.State.StartedAt || info.RestartCount != 0 {
		t.Errorf("container changed: id %s→%s started %s→%s restarts %d", info0.ID, info.ID, info0.State.StartedAt, info.State.StartedAt, info.RestartCount)
	}
	if st.Instance != st0.Instance || !st.Started.Equal(st0.Started) || !st.Stopped.IsZero() {
		t.Errorf("Jenkins restarted or stopped: %+v, was %+v", st, st0)
	}
	if logs := g.logs(); strings.Contains(logs, "stopping Jenkins") {
		t.Errorf("the guard meant to stop Jenkins:\n%s", logs)
	}
}

// TestGuardKillsJenkinsWhenAnotherHolderTakesTheLease: the record names another
// controller: Jenkins is killed at once, long before this holder's fence point.
func TestGuardKillsJenkinsWhenAnotherHolderTakesTheLease(t *testing.T) {
	g := newGuarded(t, 30*time.Second)
	stop := g.agent(g.newLease())
	r := g.runtime()
	mustStart(t, r)
	g.waitJenkins()
	stop()
	rec := g.record()
	fencePoint := rec.RenewedAt.Add(30*time.Second - 2*time.Second - 5*time.Second)

	now := time.Now().UTC()
	taken := lease.Record{Holder: otherHolder, Epoch: rec.Epoch + 1, Expires: now.Add(30 * time.Second), RenewedAt: now}
	l := g.newLease()
	tmp := l.RecordPath() + ".tmp-test"
	if err := os.WriteFile(tmp, taken.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, l.RecordPath()); err != nil {
		t.Fatal(err)
	}
	code, err := r.Wait(testenv.Context(t, time.Minute))
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if code != 137 {
		t.Errorf("exit %d, want 137: another holder allows no grace", code)
	}
	if finished := g.finishedAt(); !finished.Before(fencePoint) {
		t.Errorf("Jenkins ran until %s, past this holder's own fence point %s: the other holder was not acted on", finished, fencePoint)
	}
	if logs := g.logs(); !strings.Contains(logs, "another holder") {
		t.Errorf("the guard did not say why:\n%s", logs)
	}
}

// TestGuardRefusesToStartJenkinsWithoutTheLease: a container started while the record
// names another holder never starts Jenkins.
func TestGuardRefusesToStartJenkinsWithoutTheLease(t *testing.T) {
	g := newGuarded(t, 30*time.Second)
	now := time.Now().UTC()
	l := g.newLease()
	if err := os.MkdirAll(filepath.Dir(l.RecordPath()), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.RecordPath(), lease.Record{Holder: otherHolder, Epoch: 1, Expires: now.Add(time.Minute), RenewedAt: now}.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	r := g.runtime()
	mustStart(t, r)
	code, err := r.Wait(testenv.Context(t, time.Minute))
	if err != nil || code != guard.ExitNoLease {
		t.Fatalf("Wait = %d, %v; want exit %d", code, err, guard.ExitNoLease)
	}
	if _, err := jenkinstest.ReadHomeState(g.home); err == nil {
		t.Fatal("Jenkins started without the lease")
	}
}
