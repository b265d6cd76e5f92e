package simulate

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/containertest"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// The rehearsals are shortened for tests: a 2 s notice and a 25 s budget (the stop time,
// when the container stop must begin, then falls about 12 s after the notice), and a
// replacement that the group has up 4 s after its launch, well before that.
const (
	testNoticeAfter = 2 * time.Second
	testBudget      = 25 * time.Second
	testPoll        = time.Second // the production poll interval
	testLaunchDelay = 4 * time.Second
)

// staticAgent is the static agent binary the Jenkins image is built from, made once for
// the whole test binary when JENKINS_SPOT_AGENT_BIN does not name one.
var staticAgent struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if staticAgent.dir != "" {
		_ = os.RemoveAll(staticAgent.dir)
	}
	os.Exit(code)
}

// runtimeFor decides how a rehearsal runs Jenkins: in Docker containers ("always") when
// a Docker Engine answers, otherwise as the in-process stand-in ("never"). Under
// CI=true Docker must be used, so CI cannot pass by quietly rehearsing without it.
func runtimeFor(t testing.TB) (mode, executable string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ci := testenv.CI()
	if !containertest.Reachable(ctx) {
		if ci {
			t.Fatal("no Docker Engine reachable under CI=true: the rehearsals must run Jenkins in containers")
		}
		t.Log("no Docker Engine reachable: Jenkins runs as the in-process stand-in")
		return "never", ""
	}
	exe, err := staticExecutable()
	if err != nil {
		if ci {
			t.Fatalf("no static agent binary for the Jenkins image: %v", err)
		}
		t.Logf("no static agent binary (%v): Jenkins runs as the in-process stand-in", err)
		return "never", ""
	}
	return "always", exe
}

// staticExecutable is $JENKINS_SPOT_AGENT_BIN (`make build`), or else the agent built
// here with CGO_ENABLED=0.
func staticExecutable() (string, error) {
	if p := os.Getenv("JENKINS_SPOT_AGENT_BIN"); p != "" {
		if !isStatic(p) {
			return "", &os.PathError{Op: "JENKINS_SPOT_AGENT_BIN", Path: p, Err: os.ErrInvalid}
		}
		return p, nil
	}
	staticAgent.once.Do(func() {
		dir, err := os.MkdirTemp("", "simulate-test-bin-")
		if err != nil {
			staticAgent.err = err
			return
		}
		staticAgent.dir = dir
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out := filepath.Join(dir, "jenkins-spot-agent")
		if err := containertest.BuildStatic(ctx, "../../cmd/jenkins-spot-agent", out); err != nil {
			staticAgent.err = err
			return
		}
		staticAgent.path = out
	})
	return staticAgent.path, staticAgent.err
}

// options are the test rehearsal's options, writing to log.
func options(log *testenv.Buffer, mode, exe string) Options {
	return Options{
		NoticeAfter:  testNoticeAfter,
		Budget:       testBudget,
		PollInterval: testPoll,
		LaunchDelay:  testLaunchDelay,
		Docker:       mode,
		Executable:   exe,
		Out:          log,
		Logger:       slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
}

// TestRehearsal runs the operator's rehearsals, `simulate` and `simulate --failover`, and
// checks their summaries. The single run uses a short Pipeline so that its drain ends
// when the builds do; the failover run keeps one running at the stop time, so that it
// is saved by A and resumed by B.
func TestRehearsal(t *testing.T) {
	testenv.SkipShort(t, "a whole rehearsal, in Docker when it answers")
	mode, exe := runtimeFor(t)
	for _, tc := range []struct {
		name     string
		failover bool
		pipeline time.Duration
	}{
		{"single", false, 4 * time.Second},
		{"failover", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := options(testenv.NewLog(t, "timeline and agent logs"), mode, exe)
			opts.Failover, opts.Pipeline = tc.failover, tc.pipeline
			sum := rehearse(t, opts)
			if mode == "always" && !sum.Docker {
				t.Errorf("Docker was asked for and is reachable, but the summary says it was not used: %s", sum.DockerReason)
			}
			checkSummary(t, sum, opts)
		})
	}
}

// TestRehearsalInProcess keeps the path without Docker tested: Jenkins is the in-process
// stand-in, with the same handover and the same Pipeline saved and resumed.
func TestRehearsalInProcess(t *testing.T) {
	testenv.SkipShort(t, "a whole rehearsal with failover")
	t.Parallel()
	opts := options(testenv.NewLog(t, "timeline and agent logs"), "never", "")
	opts.Failover = true
	sum := rehearse(t, opts)
	if sum.Docker {
		t.Error("--docker never, but the summary says Docker was used")
	}
	checkSummary(t, sum, opts)
}

func TestRunRefusesUnknownDockerMode(t *testing.T) {
	_, err := Run(context.Background(), Options{Docker: "sometimes"})
	if err == nil || !strings.Contains(err.Error(), "sometimes") {
		t.Fatalf("Run with docker mode sometimes: got %v, want an error naming the mode", err)
	}
}

func TestRunAlwaysFailsWithoutStaticBinary(t *testing.T) {
	// A test binary is not static, so it cannot be the only file of a FROM scratch image.
	self, err := os.Executable()
	if err != nil {
		t.Skip("cannot find the test binary:", err)
	}
	if isStatic(self) {
		t.Skip("the test binary is static")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = Run(ctx, Options{Docker: "always", Executable: self, Out: testenv.NewLog(t, "timeline and agent logs")})
	if err == nil || !strings.Contains(err.Error(), "not static") {
		t.Fatalf("Run --docker always with a dynamic binary: got %v, want an error saying it is not static", err)
	}
}

// rehearse runs one rehearsal with a deadline and logs its figures.
func rehearse(t *testing.T, opts Options) *Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	start := time.Now()
	sum, err := Run(ctx, opts)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for s := sum; s != nil; s = s.Compared {
		t.Logf("rehearsal (Docker %v, failover %v, %s) took %s: detection %s, deregister sent %s, drain %s, container stop %s, plan %s, margin %s, handover %s, downtime %s, resumed on B %v; unreachable %s (longest %s), successor's start %s",
			s.Docker, opts.Failover, s.Order, time.Since(start).Round(time.Millisecond), ms(s.Detection), ms(s.DeregisterSent),
			ms(s.Drain), ms(s.ContainerStop), ms(s.PlanTotal), ms(s.Margin), ms(s.Handover), ms(s.Downtime), s.ResumedOnB,
			ms(s.Unreachable), ms(s.LongestGap), ms(s.SuccessorStart))
	}
	return sum
}

// checkSummary checks what the operator reads off the closing table.
func checkSummary(t *testing.T, sum *Summary, opts Options) {
	t.Helper()
	if len(sum.FailedSteps) > 0 {
		t.Errorf("failed steps: %q", sum.FailedSteps)
	}
	if sum.BuildsAtNotice != 2 {
		t.Errorf("builds running at the notice: %d, want 2 (a freestyle build and a Pipeline)", sum.BuildsAtNotice)
	}
	// The notice is polled for: it is seen at the next poll, plus the time of one request.
	if limit := opts.PollInterval + 500*time.Millisecond; sum.Detection <= 0 || sum.Detection >= limit {
		t.Errorf("detection delay %s, want within (0, %s)", sum.Detection, limit)
	}
	if sum.Margin <= 0 {
		t.Errorf("margin %s: the plan overran the termination time", sum.Margin)
	}
	if sum.TargetState != "draining" {
		t.Errorf("target state after the plan %q, want draining", sum.TargetState)
	}
	// Detached at the notice, A left the group before it could start terminating A: the
	// group's termination hook no longer applies to it. Otherwise the hook waited and
	// the plan completed it.
	wantLifecycle := "CONTINUE"
	if opts.Failover && opts.Order != OrderAfterTermination {
		wantLifecycle = ""
	}
	if sum.Lifecycle != wantLifecycle {
		t.Errorf("lifecycle action result %q, want %q", sum.Lifecycle, wantLifecycle)
	}
	if !opts.Failover {
		if sum.Handover != 0 || sum.BothRanAtOnce || len(sum.ResumedOnB) > 0 || sum.Order != "" {
			t.Errorf("a single-instance rehearsal reports failover figures: order %q, handover %s, both at once %v, resumed %q",
				sum.Order, sum.Handover, sum.BothRanAtOnce, sum.ResumedOnB)
		}
		return
	}
	if !sum.WaitingSeenOnB {
		t.Error("B was never seen waiting for the lease")
	}
	if sum.ReplacementAsked <= 0 || sum.ReplacementUp <= sum.ReplacementAsked {
		t.Errorf("replacement asked for %s and up %s after the notice, want asked, then up", sum.ReplacementAsked, sum.ReplacementUp)
	}
	if sum.Successor == nil || !sum.Successor.Ready || sum.Successor.InstanceID != sum.instanceB {
		t.Errorf("A's last view of the successor's announcement %+v, want %s ready", sum.Successor, sum.instanceB)
	}
	// The contract: the successor starts Jenkins within 2 s of a clean release.
	if sum.Handover <= 0 || sum.Handover >= 2*time.Second {
		t.Errorf("handover (A released → B's container start call) %s, want within (0, 2s)", sum.Handover)
	}
	if sum.BothRanAtOnce {
		t.Error("both instances' Jenkins were seen running at the same time")
	}
	if !slices.ContainsFunc(sum.ResumedOnB, func(u string) bool { return strings.HasSuffix(u, "/job/"+pipelineJob+"/1/") }) {
		t.Errorf("Pipelines resumed on B: %q, want %s #1 (running on A at the stop time)", sum.ResumedOnB, pipelineJob)
	}
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
