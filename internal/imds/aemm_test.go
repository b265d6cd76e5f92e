package imds_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds/imdstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// These tests run against amazon-ec2-metadata-mock (AEMM), the real peer, started in
// IMDSv2-only mode.

func TestAEMMIdentityAndIMDSv2Only(t *testing.T) {
	url := startAEMM(t)
	resp, err := http.Get(url + "/latest/meta-data/instance-id")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("request without token answered %d, want 401", resp.StatusCode)
	}

	var counts requestCounts
	c := imds.New(imds.Options{Endpoint: url, OnRequest: counts.record})
	ctx, cancel := context.WithTimeout(context.Background(), testenv.WaitLimit)
	defer cancel()
	id, err := c.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id != aemmIdentity {
		t.Fatalf("Identity = %+v, want %+v", id, aemmIdentity)
	}
	if counts.get(imds.EndpointIdentity, imds.ResultUnauthorized) != 0 {
		t.Error("a request went out without a valid token")
	}
}

// aemmIdentity is what amazon-ec2-metadata-mock v1.13.0 serves by default (no instance
// tags, so no group name).
var aemmIdentity = instance.Identity{
	InstanceID: "i-1234567890abcdef0", InstanceType: "m4.xlarge", AvailabilityZone: "us-east-1a",
	AZID: "use1-az4", Region: "us-east-1", Market: "on-demand",
}

// flakyIMDS is the boot-time weather Identity must get through: a fifth of the requests
// fail with 500, a tenth are throttled, one in twenty loses its connection and one in
// twenty stalls longer than the request deadline. Token requests meet it too.
func flakyIMDS() []imdstest.Chance {
	return []imdstest.Chance{
		{Rate: 0.20, Fault: imdstest.Fault{Status: http.StatusInternalServerError}},
		{Rate: 0.10, Fault: imdstest.Fault{Status: http.StatusTooManyRequests}},
		{Rate: 0.05, Fault: imdstest.Fault{Drop: true}},
		{Rate: 0.05, Fault: imdstest.Fault{Delay: 3 * time.Second}},
	}
}

// TestAEMMIdentityThroughFlakyIMDS reads the identity from AEMM through the fault proxy
// with those rates, several times over (each time with a fresh client, so the token
// request meets the faults too): every read must come back whole and right. Reading
// every item in one go, as a single attempt, fails on the first fault.
func TestAEMMIdentityThroughFlakyIMDS(t *testing.T) {
	if testing.Short() {
		t.Skip("reads the identity through seconds of stalls")
	}
	url := startAEMM(t)
	proxy := imdstest.NewFaultProxy(url)
	defer proxy.Close()
	const seed = 20261125
	proxy.SetChances("/latest/", seed, flakyIMDS()...)
	var counts requestCounts
	for i := range 4 {
		c := imds.New(imds.Options{Endpoint: proxy.URL(), OnRequest: counts.record})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		id, err := c.Identity(ctx)
		cancel()
		if err != nil {
			t.Fatalf("read %d: Identity through the flaky service: %v", i, err)
		}
		if id != aemmIdentity {
			t.Fatalf("read %d: Identity = %+v, want %+v", i, id, aemmIdentity)
		}
	}
	faults, requests := proxy.Injected(), proxy.Requests("/latest/")
	t.Logf("%d requests, %d met a fault", requests, faults)
	// The seeded schedule must actually have hit: a test that met no fault proves nothing.
	if faults < 5 {
		t.Fatalf("only %d of %d requests met a fault; the weather is too fair to test anything", faults, requests)
	}
	if counts.get(imds.EndpointIdentity, imds.ResultError) == 0 || counts.get(imds.EndpointToken, imds.ResultError) == 0 {
		t.Errorf("want failures on both identity and token requests: %v", counts.m)
	}
}

func TestAEMMSpotActions(t *testing.T) {
	for _, tc := range []struct {
		action string
		kind   instance.Kind
	}{{"terminate", instance.KindSpotTerminate}, {"stop", instance.KindSpotStop}, {"hibernate", instance.KindSpotHibernate}} {
		t.Run(tc.action, func(t *testing.T) {
			url := startAEMM(t, "spot", "-a", tc.action)
			r := startWatcher(t, imds.New(imds.Options{Endpoint: url}), fast, 16)
			n := r.next(t, tc.kind)
			if n.Time.IsZero() || n.Seen.IsZero() {
				t.Errorf("notice = %+v", n)
			}
			// AEMM moves the notice's time on every request: still one notice.
			polls := r.w.Health().Polls
			testenv.Eventually(t, "ten more polls", func() bool { return r.w.Health().Polls >= polls+10 })
			r.stop()
			if got := countKind(r.drain(), tc.kind); got != 0 {
				t.Fatalf("%d repeated %s notices", got, tc.kind)
			}
			if h := r.w.Health(); h.LastError != "" {
				t.Errorf("health = %+v", h)
			}
		})
	}
}

func TestAEMMRebalance(t *testing.T) {
	// The spot notice is an hour away; the rebalance recommendation comes after 1 s.
	url := startAEMM(t, "spot", "-d", "3600", "--rebalance-delay-sec", "1")
	opts := imds.WatchOptions{PollInterval: 100 * time.Millisecond, SlowInterval: 100 * time.Millisecond}
	r := startWatcher(t, imds.New(imds.Options{Endpoint: url}), opts, 16)
	n := r.next(t, instance.KindRebalance)
	if !n.Time.IsZero() {
		t.Errorf("rebalance Time = %v, want zero", n.Time)
	}
	polls := r.w.Health().Polls
	testenv.Eventually(t, "more polls", func() bool { return r.w.Health().Polls >= polls+10 })
	r.stop()
	rest := r.drain()
	if countKind(rest, instance.KindRebalance) != 0 || countKind(rest, instance.KindSpotTerminate) != 0 {
		t.Fatalf("unexpected notices: %+v", rest)
	}
}

func TestAEMMAutoScalingTermination(t *testing.T) {
	url := startAEMM(t, "asglifecycle", "--asg-termination-delay-sec", "1")
	opts := imds.WatchOptions{PollInterval: 100 * time.Millisecond, SlowInterval: 100 * time.Millisecond}
	r := startWatcher(t, imds.New(imds.Options{Endpoint: url}), opts, 16)
	r.next(t, instance.KindASGTerminated)
	polls := r.w.Health().Polls
	testenv.Eventually(t, "more polls", func() bool { return r.w.Health().Polls >= polls+10 })
	r.stop()
	if rest := r.drain(); len(rest) != 0 {
		t.Fatalf("unexpected notices: %+v", rest)
	}
}

func TestAEMMScheduledEvent(t *testing.T) {
	url := startAEMM(t, "events", "-o", "instance-stop")
	opts := imds.WatchOptions{PollInterval: 100 * time.Millisecond, SlowInterval: 100 * time.Millisecond}
	r := startWatcher(t, imds.New(imds.Options{Endpoint: url}), opts, 16)
	n := r.next(t, instance.KindScheduledEvent)
	if n.Time.IsZero() || n.Code != "instance-stop" || !strings.HasPrefix(n.EventID, "instance-event-") {
		t.Errorf("scheduled event notice without NotBefore, code or event id: %+v", n)
	}
	polls := r.w.Health().Polls
	testenv.Eventually(t, "more polls", func() bool { return r.w.Health().Polls >= polls+10 })
	r.stop()
	if rest := r.drain(); len(rest) != 0 {
		t.Fatalf("unexpected notices: %+v", rest)
	}
}

// faultMix is one of each fault the watcher must survive. Each entry is applied to one
// request; a 401 appears twice in a row so that the SDK's retry with a fresh token is
// refused too and the poll fails.
func faultMix() []imdstest.Fault {
	return []imdstest.Fault{
		{Status: http.StatusTooManyRequests},
		{Status: http.StatusInternalServerError},
		{Delay: 2 * time.Second}, // longer than the poll's deadline
		{Drop: true},
		{Body: []byte(`{"action":"terminate","ti`)},
		{Status: http.StatusUnauthorized},
		{Status: http.StatusUnauthorized},
		{Body: []byte(`<html><body>Bad Gateway</body></html>`)},
		{Status: http.StatusServiceUnavailable},
		{Body: []byte(`{"action":"terminate","time":"soon"}`)},
		{Drop: true},
		{Body: []byte(`{"action":"reboot","time":"2026-11-25T10:02:00Z"}`)},
	}
}

// TestAEMMThroughFaultsNoMissedNotice puts the fault proxy between the watcher and an
// AEMM that serves a spot notice from the start. Every request up to the last
// scheduled fault fails; the first one that gets through must deliver the notice, and
// later faults must neither repeat nor lose it.
func TestAEMMThroughFaultsNoMissedNotice(t *testing.T) {
	url := startAEMM(t, "spot", "-a", "terminate")
	proxy := imdstest.NewFaultProxy(url)
	defer proxy.Close()
	faults := faultMix()
	proxy.Schedule(spotPath, faults...)

	log, logs := testLogger(t)
	opts := imds.WatchOptions{PollInterval: 100 * time.Millisecond, SlowInterval: time.Hour, Logger: log}
	// Unbuffered: the spot loop blocks on the send right after the poll that found
	// the notice, so its counters can be read at that very point.
	r := startWatcher(t, imds.New(imds.Options{Endpoint: proxy.URL()}), opts, 0)
	testenv.Eventually(t, "the faults to be used and a good poll", func() bool {
		return proxy.Pending() == 0 && r.w.Health().ConsecutiveFails == 0 && r.w.Health().Polls > 0
	})
	if got, want := proxy.Requests(spotPath), len(faults)+1; got != want {
		t.Fatalf("the notice was not taken from the first request that got through: %d spot requests, want %d", got, want)
	}
	h := r.w.Health()
	if h.LastError == "" || h.LastSuccess.IsZero() {
		t.Errorf("health = %+v", h)
	}
	r.next(t, instance.KindSpotTerminate)

	// More faults while the notice stays visible: no second notice.
	proxy.Schedule(spotPath, faultMix()...)
	polls := r.w.Health().Polls
	testenv.Eventually(t, "polls through a second round of faults", func() bool {
		return proxy.Pending() == 0 && r.w.Health().Polls >= polls+uint64(len(faults))
	})
	r.stop()
	for _, n := range r.drain() {
		if n.Kind == instance.KindSpotTerminate {
			t.Fatalf("repeated notice: %+v", n)
		}
	}
	if out := logs.String(); !containsAll(out, "imds poll failed", "imds poll recovered", "failed_polls=") {
		t.Errorf("streak not logged:\n%s", out)
	}
}

// TestAEMMThroughFaultsNoFalseTrigger polls an AEMM whose spot notice is an hour away
// through every kind of fault, garbage that looks like a notice included.
func TestAEMMThroughFaultsNoFalseTrigger(t *testing.T) {
	url := startAEMM(t, "spot", "-d", "3600", "--rebalance-delay-sec", "3600")
	proxy := imdstest.NewFaultProxy(url)
	defer proxy.Close()
	var schedule []imdstest.Fault
	for range 2 {
		for _, f := range faultMix() {
			schedule = append(schedule, f, imdstest.Fault{}) // alternate faults and clean answers
		}
	}
	proxy.Schedule(spotPath, schedule...)
	opts := imds.WatchOptions{PollInterval: 50 * time.Millisecond, SlowInterval: time.Hour}
	r := startWatcher(t, imds.New(imds.Options{Endpoint: proxy.URL()}), opts, 16)
	testenv.Eventually(t, "the schedule to be used", func() bool { return proxy.Pending() == 0 })
	polls := r.w.Health().Polls
	testenv.Eventually(t, "a few clean polls", func() bool { return r.w.Health().Polls >= polls+5 })
	r.stop()
	if got := r.drain(); len(got) != 0 {
		t.Fatalf("false trigger: %+v", got)
	}
	if h := r.w.Health(); h.LastError == "" || h.ConsecutiveFails != 0 {
		t.Errorf("health = %+v", h)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
