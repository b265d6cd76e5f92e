package simulate

import (
	"context"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// The failover figures, one whole rehearsal per iteration (tens of seconds each): run
// them with -benchtime 1x. Jenkins runs in Docker when it is reachable.

// BenchmarkHandover measures a clean handover after a Spot notice: A's lease release →
// B's container start call (goal: under 2 s; B re-reads the lease every 250 ms), and
// Jenkins' downtime (A's container stop began → B's Jenkins answered).
func BenchmarkHandover(b *testing.B) {
	mode, exe := runtimeFor(b)
	var handover, downtime time.Duration
	n := 0
	for b.Loop() {
		f := cleanScenario(b, mode, exe)
		handover += f.Handover
		downtime += f.Downtime
		n++
	}
	b.ReportMetric(float64(handover.Milliseconds())/float64(n), "handover-ms")
	b.ReportMetric(downtime.Seconds()/float64(n), "downtime-s")
}

// BenchmarkTakeoverAfterKill measures B's wait after A died without releasing (its
// renewals stopped, its Jenkins killed), next to what was left of A's lease: B should
// start the clock-skew allowance (2 s) plus one poll after the remaining ttl.
func BenchmarkTakeoverAfterKill(b *testing.B) {
	mode, exe := runtimeFor(b)
	var remaining, wait time.Duration
	n := 0
	for b.Loop() {
		f := killScenario(b, mode, exe)
		remaining += f.Remaining
		wait += f.Wait
		n++
	}
	b.ReportMetric(wait.Seconds()/float64(n), "wait-s")
	b.ReportMetric(remaining.Seconds()/float64(n), "remaining-ttl-s")
	b.ReportMetric((wait-remaining).Seconds()/float64(n), "beyond-ttl-s")
}

// BenchmarkSelfFence measures a holder that can no longer write the home: how soon it
// kills its own Jenkins, how long before its lease lapses that is, and how long after
// the fence the successor starts Jenkins. Needs root (a read-only bind mount).
func BenchmarkSelfFence(b *testing.B) {
	testenv.Root(b, "this benchmark bind-mounts the home")
	mode, exe := runtimeFor(b)
	var toFence, beforeExpiry, toStart time.Duration
	n := 0
	for b.Loop() {
		f := fenceScenario(b, mode, exe)
		toFence += f.BlockedToFence
		beforeExpiry += f.FenceBeforeExpiry
		toStart += f.FenceToStart
		n++
	}
	b.ReportMetric(toFence.Seconds()/float64(n), "blocked-to-fence-s")
	b.ReportMetric(beforeExpiry.Seconds()/float64(n), "fence-before-expiry-s")
	b.ReportMetric(toStart.Seconds()/float64(n), "fence-to-b-start-s")
}

// BenchmarkFailoverOrders measures, as `simulate --failover --compare` does (a 5 s
// notice, a 40 s budget, an 8 s launch delay), how long Jenkins is unreachable through
// the load balancer across an interruption: with the replacement asked for at the
// notice, and with the group replacing the instance only once it is gone, next to the
// successor's own start (the goal: unreachable ≤ that start + 2 s). Two whole
// rehearsals per iteration (about a minute and a half): run it with -benchtime 1x.
func BenchmarkFailoverOrders(b *testing.B) {
	mode, exe := runtimeFor(b)
	var at, after, gapAt, gapAfter, start, startAfter, launch time.Duration
	n := 0
	for b.Loop() {
		log := testenv.NewLog(b, "timeline and agent logs")
		opts := Options{Compare: true, Docker: mode, Executable: exe, Out: log}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		sum, err := Run(ctx, opts)
		cancel()
		if err != nil {
			b.Fatalf("Run: %v", err)
		}
		other := sum.Compared
		if len(sum.FailedSteps)+len(other.FailedSteps) > 0 || sum.BothRanAtOnce || other.BothRanAtOnce {
			b.Fatalf("failed steps %q / %q, two Jenkins at once %v / %v", sum.FailedSteps, other.FailedSteps, sum.BothRanAtOnce, other.BothRanAtOnce)
		}
		at += sum.Unreachable
		gapAt += sum.LongestGap
		start += sum.SuccessorStart
		after += other.Unreachable
		gapAfter += other.LongestGap
		startAfter += other.SuccessorStart
		launch += sum.LaunchDelay
		n++
	}
	per := func(d time.Duration) float64 { return d.Seconds() / float64(n) }
	b.ReportMetric(per(at), "unreachable-at-notice-s")
	b.ReportMetric(per(gapAt), "longest-gap-at-notice-s")
	b.ReportMetric(per(start), "successor-start-at-notice-s")
	b.ReportMetric(per(after), "unreachable-after-termination-s")
	b.ReportMetric(per(gapAfter), "longest-gap-after-termination-s")
	b.ReportMetric(per(startAfter), "successor-start-after-termination-s")
	b.ReportMetric(per(launch), "launch-delay-s")
}
