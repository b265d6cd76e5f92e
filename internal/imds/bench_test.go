package imds_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds/imdstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

var (
	detectionSamples = flag.Int("detection-samples", 20, "notices timed by BenchmarkDetectionDelay")
	footprint        = flag.Duration("footprint", 0, "run TestFootprint for this long (0 skips it)")
)

// BenchmarkDetectionDelay measures, at the production poll interval of 1 s, the time
// from the moment a spot notice becomes visible in IMDS to the moment it arrives on the
// channel. Each sample makes the notice appear at a random phase of the poll cycle.
func BenchmarkDetectionDelay(b *testing.B) {
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	c := imds.New(imds.Options{Endpoint: srv.URL()})
	var delays []time.Duration
	for range b.N {
		for range *detectionSamples {
			srv.Clear()
			ctx, cancel := context.WithCancel(context.Background())
			w := imds.NewWatcher(c, imds.WatchOptions{PollInterval: time.Second, SlowInterval: time.Hour})
			notices := make(chan instance.Notice, 4)
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx, notices) }()
			testenv.Eventually(b, "a first poll", func() bool { return w.Health().Polls >= 1 })
			time.Sleep(rand.N(time.Second))
			visible := time.Now()
			srv.SetSpotAction("terminate", visible.Add(2*time.Minute))
			for n := range notices {
				if n.Kind == instance.KindSpotTerminate {
					delays = append(delays, time.Since(visible))
					break
				}
			}
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				b.Fatalf("watcher ended with %v, want context.Canceled", err)
			}
		}
	}
	slices.Sort(delays)
	pct := func(p float64) float64 {
		i := min(int(p*float64(len(delays))), len(delays)-1)
		return float64(delays[i]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(delays[len(delays)-1])/float64(time.Millisecond), "max-ms")
	b.ReportMetric(0, "ns/op")
}

// usage is what one side of the footprint comparison cost.
type usage struct {
	CPU      time.Duration
	MaxRSSKB int64
	Requests int
}

func rusageOf(ru *syscall.Rusage) usage {
	return usage{
		CPU:      time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		MaxRSSKB: ru.Maxrss,
	}
}

// TestFootprint compares the watcher polling at 1 s (its own process) with a shell
// loop polling with curl every 5 s, over the same duration, against one emulator.
// Run it with: go test ./internal/imds -run TestFootprint -footprint=10m -v
func TestFootprint(t *testing.T) {
	if *footprint <= 0 {
		t.Skip("measurement only: pass -footprint=DURATION to run it")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *footprint+time.Minute)
	defer cancel()

	watcher := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFootprintChild$", "-test.v")
	watcher.Env = append(os.Environ(), "IMDS_FOOTPRINT_URL="+srv.URL(), "IMDS_FOOTPRINT_FOR="+footprint.String())
	script := fmt.Sprintf(`end=$(( $(date +%%s) + %d ))
T=$(%s -s -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600' %s/latest/api/token)
while [ $(date +%%s) -lt $end ]; do %s -s -H "X-aws-ec2-metadata-token: $T" %s/latest/meta-data/spot/instance-action >/dev/null; sleep 5; done`,
		int(footprint.Seconds()), curl, srv.URL(), curl, srv.URL())
	shell := exec.CommandContext(ctx, "bash", "-c", script)

	if err := shell.Start(); err != nil {
		t.Fatal(err)
	}
	out, err := watcher.Output()
	if err != nil {
		t.Fatalf("watcher process: %v\n%s", err, out)
	}
	if err := shell.Wait(); err != nil {
		t.Fatalf("shell loop: %v", err)
	}
	var w usage
	line := out[strings.Index(string(out), "FOOTPRINT ")+len("FOOTPRINT "):]
	if err := json.NewDecoder(strings.NewReader(string(line))).Decode(&w); err != nil {
		t.Fatalf("watcher report: %v\n%s", err, out)
	}
	s := rusageOf(shell.ProcessState.SysUsage().(*syscall.Rusage))
	d := footprint.Seconds()
	t.Logf("footprint over %v (CPU%% of one core)", *footprint)
	t.Logf("%-34s %10s %8s %12s %10s", "poller", "CPU", "CPU%", "peak RSS", "requests")
	t.Logf("%-34s %10v %7.3f%% %9d KiB %10d", "watcher (1 s spot, 5 s slow items)", w.CPU.Round(time.Millisecond), 100*w.CPU.Seconds()/d, w.MaxRSSKB, w.Requests)
	t.Logf("%-34s %10v %7.3f%% %9d KiB %10s", "bash+curl loop (5 s, spot only)", s.CPU.Round(time.Millisecond), 100*s.CPU.Seconds()/d, s.MaxRSSKB, fmt.Sprint(int(d/5)+1))
}

// TestFootprintChild is the watcher side of TestFootprint, run in its own process so
// that its CPU time and RSS are the watcher's alone.
func TestFootprintChild(t *testing.T) {
	url, dur := os.Getenv("IMDS_FOOTPRINT_URL"), os.Getenv("IMDS_FOOTPRINT_FOR")
	if url == "" {
		t.Skip("run by TestFootprint")
	}
	d, err := time.ParseDuration(dur)
	if err != nil {
		t.Fatal(err)
	}
	var counts requestCounts
	c := imds.New(imds.Options{Endpoint: url, OnRequest: counts.record})
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	imds.NewWatcher(c, imds.WatchOptions{PollInterval: time.Second}).Run(ctx, make(chan instance.Notice, 16)) //nolint:errcheck // ends with ctx
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	u := rusageOf(&ru)
	counts.mu.Lock()
	for _, n := range counts.m {
		u.Requests += n
	}
	counts.mu.Unlock()
	b, _ := json.Marshal(u)
	fmt.Printf("FOOTPRINT %s\n", b)
}

var identitySamples = flag.Int("identity-samples", 5, "identities read by BenchmarkIdentityBadWeather")

// BenchmarkIdentityBadWeather reads the identity through the boot-time weather (20 %
// 500, 10 % 429, 5 % dropped connections, 5 % 3 s stalls, a new seed per sample) two
// ways: Identity, each item retried on its own until a 3-minute deadline; and what a
// boot script does, every item read once per try (token included, 2 s per request),
// the whole try repeated six times with backoff from 200 ms, as the agent did before.
// Run it with: go test ./internal/imds -run '^$' -bench IdentityBadWeather -benchtime 1x
func BenchmarkIdentityBadWeather(b *testing.B) {
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	weather := func(p *imdstest.FaultProxy, seed uint64) {
		p.SetChances("/latest/", seed,
			imdstest.Chance{Rate: 0.20, Fault: imdstest.Fault{Status: http.StatusInternalServerError}},
			imdstest.Chance{Rate: 0.10, Fault: imdstest.Fault{Status: http.StatusTooManyRequests}},
			imdstest.Chance{Rate: 0.05, Fault: imdstest.Fault{Drop: true}},
			imdstest.Chance{Rate: 0.05, Fault: imdstest.Fault{Delay: 3 * time.Second}})
	}
	paths := []string{
		"instance-id", "placement/region", "placement/availability-zone", "instance-type",
		"placement/availability-zone-id", "instance-life-cycle", "tags/instance/aws:autoscaling:groupName",
	}
	for range b.N {
		var took []time.Duration
		var requests, okNew, okOld int
		for i := range *identitySamples {
			p := imdstest.NewFaultProxy(srv.URL())
			weather(p, uint64(i+1))
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			id, err := imds.New(imds.Options{Endpoint: p.URL()}).Identity(ctx)
			cancel()
			if err == nil && id == testIdentity {
				okNew++
				took = append(took, time.Since(start))
			}
			requests += p.Requests("/latest/")
			weather(p, uint64(i+1))
			if allOrNothing(p.URL(), paths) {
				okOld++
			}
			p.Close()
		}
		slices.Sort(took)
		n := float64(*identitySamples)
		b.ReportMetric(100*float64(okNew)/n, "identity-ok-%")
		b.ReportMetric(100*float64(okOld)/n, "six-whole-tries-ok-%")
		if len(took) > 0 {
			b.ReportMetric(float64(took[len(took)/2])/float64(time.Millisecond), "p50-ms")
			b.ReportMetric(float64(took[len(took)-1])/float64(time.Millisecond), "max-ms")
		}
		b.ReportMetric(float64(requests)/n, "requests/identity")
		b.ReportMetric(0, "ns/op")
	}
}

// allOrNothing is the boot script's way: a token and every item, each once, in one
// try; six tries with backoff. It reports whether one try got every answer.
func allOrNothing(base string, paths []string) bool {
	client := &http.Client{Timeout: 2 * time.Second}
	try := func() bool {
		req, _ := http.NewRequest(http.MethodPut, base+"/latest/api/token", nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		tok, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
		for _, p := range paths {
			req, _ := http.NewRequest(http.MethodGet, base+"/latest/meta-data/"+p, nil)
			req.Header.Set("X-aws-ec2-metadata-token", string(tok))
			resp, err := client.Do(req)
			if err != nil {
				return false
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
				return false
			}
		}
		return true
	}
	wait := 200 * time.Millisecond
	for range 6 {
		if try() {
			return true
		}
		time.Sleep(wait)
		wait *= 2
	}
	return false
}
