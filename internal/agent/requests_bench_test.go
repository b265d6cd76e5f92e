package agent

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins/jenkinstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"
)

const (
	benchARN   = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/jenkins/0123456789abcdef"
	benchToken = "0123456789abcdef0123456789abcdef"
)

// BenchmarkNoticeToRequests measures, with the real ELBv2 and Jenkins clients against
// their doubles on loopback, the time from the moment the watcher hands over a notice to
// the moment DeregisterTargets and POST /quietDown arrive at the other end.
func BenchmarkNoticeToRequests(b *testing.B) {
	var dereg, quiet []time.Duration
	for i := 0; i < b.N; i++ {
		aws := awstest.NewServer()
		aws.AddTargetGroup(benchARN, awstest.Target{ID: "i-0123456789abcdef0", Port: 8080})
		js, url, err := jenkinstest.Start(jenkinstest.Config{Users: map[string]jenkinstest.User{"admin": {Token: benchToken, Manage: true}}})
		if err != nil {
			b.Fatal(err)
		}
		jc, err := jenkins.New(jenkins.Options{URL: url, User: "admin", Token: benchToken, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		r := newRig(b.TempDir(), b.TempDir())
		deps := r.deps()
		deps.Jenkins = jc
		deps.NewTargets = func(ctx context.Context, id instance.Identity) (Targets, error) {
			return targets.New(ctx, targets.Options{Region: id.Region, TargetGroups: []targets.TargetGroup{{ARN: benchARN, Port: 8080}},
				Endpoint: aws.URL(), Credentials: aws.Credentials(), Logger: slog.New(slog.DiscardHandler)})
		}
		a, err := New(Options{
			Config: r.cfg,
			Deps:   deps,
			BootID: "bench",
			OnEvent: func(ev status.Event) {
				if ev.Phase != "" {
					r.phases <- ev.Phase
				}
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		if err := r.waitPhase(status.PhaseServing, 10*time.Second); err != nil {
			b.Fatal(err)
		}
		n := instance.Notice{Kind: instance.KindSpotTerminate, Seen: time.Now(), Time: time.Now().Add(2 * time.Minute)}
		r.watch.in <- n
		if err := r.waitPhase(status.PhaseStopped, 30*time.Second); err != nil {
			b.Fatal(err)
		}
		calls := aws.CallsOf("DeregisterTargets")
		if len(calls) == 0 {
			b.Fatal("no DeregisterTargets")
		}
		dereg = append(dereg, calls[0].At.Sub(n.Seen))
		for _, req := range js.Requests() {
			if req.Method == "POST" && req.Path == "/quietDown" {
				quiet = append(quiet, req.Time.Sub(n.Seen))
				break
			}
		}
		cancel()
		<-done
		js.Close()
		aws.Close()
	}
	if len(quiet) != len(dereg) {
		b.Fatalf("quietDown seen %d times in %d plans", len(quiet), len(dereg))
	}
	b.ReportMetric(float64(percentile(dereg, 0.5).Microseconds())/1000, "to-deregister-p50-ms")
	b.ReportMetric(float64(percentile(dereg, 0.99).Microseconds())/1000, "to-deregister-p99-ms")
	b.ReportMetric(float64(percentile(quiet, 0.5).Microseconds())/1000, "to-quietdown-p50-ms")
	b.ReportMetric(float64(percentile(quiet, 0.99).Microseconds())/1000, "to-quietdown-p99-ms")
}
