package imds_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds/imdstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

const spotPath = "/latest/meta-data/spot/instance-action"

// fast polls often so that the tests need few seconds; an hour-long slow interval
// keeps the slow items to their first poll when a test is about the spot item.
var fast = imds.WatchOptions{PollInterval: 50 * time.Millisecond, SlowInterval: time.Hour}

func TestWatcherSpotNoticeOncePerKind(t *testing.T) {
	for _, tc := range []struct {
		action string
		kind   instance.Kind
	}{{"terminate", instance.KindSpotTerminate}, {"stop", instance.KindSpotStop}, {"hibernate", instance.KindSpotHibernate}} {
		t.Run(tc.action, func(t *testing.T) {
			srv := imdstest.NewServer(testIdentity)
			defer srv.Close()
			r := startWatcher(t, imds.New(imds.Options{Endpoint: srv.URL()}), fast, 16)
			testenv.Eventually(t, "two quiet polls", func() bool { return r.w.Health().Polls >= 2 })
			if got := r.drain(); len(got) != 0 {
				t.Fatalf("notices without any notice served: %+v", got)
			}

			at := time.Now().Add(2 * time.Minute).Truncate(time.Second).UTC()
			before := time.Now()
			srv.SetSpotAction(tc.action, at)
			n := r.next(t, tc.kind)
			if !n.Time.Equal(at) {
				t.Errorf("Time = %v, want the time the notice names, %v", n.Time, at)
			}
			if n.Seen.Before(before) {
				t.Errorf("Seen = %v, before the notice was served (%v)", n.Seen, before)
			}
			if !strings.Contains(n.Detail, tc.action) {
				t.Errorf("Detail = %q", n.Detail)
			}

			// The notice's time moves between polls, as on AEMM: still one notice.
			for i := range 5 {
				polls := r.w.Health().Polls
				srv.SetSpotAction(tc.action, at.Add(time.Duration(i+1)*time.Second))
				testenv.Eventually(t, "another poll", func() bool { return r.w.Health().Polls >= polls+2 })
			}
			r.stop()
			if got := r.drain(); len(got) != 0 {
				t.Fatalf("repeated notices: %+v", got)
			}
			h := r.w.Health()
			if h.ConsecutiveFails != 0 || h.LastError != "" || h.LastSuccess.IsZero() {
				t.Errorf("health after clean polls = %+v", h)
			}
		})
	}
}

func TestWatcherLateNoticeKeepsItsTime(t *testing.T) {
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	// Found 90 s after it was issued: the notice still works to the time it names.
	at := time.Now().Add(30 * time.Second).Truncate(time.Second).UTC()
	srv.SetSpotAction("terminate", at)
	r := startWatcher(t, imds.New(imds.Options{Endpoint: srv.URL()}), fast, 16)
	n := r.next(t, instance.KindSpotTerminate)
	if !n.Time.Equal(at) {
		t.Fatalf("Time = %v, want %v", n.Time, at)
	}
}

func TestWatcherSlowItems(t *testing.T) {
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	notBefore := time.Date(2027, 1, 21, 9, 0, 43, 0, time.UTC)
	srv.SetTargetLifecycleState("InService")
	srv.SetScheduledEvents([]imds.ScheduledEvent{
		{Code: "system-reboot", EventID: "instance-event-0000000000000000a", State: "canceled", NotBefore: notBefore},
		{Code: "instance-retirement", EventID: "instance-event-0000000000000000b", State: "active", NotBefore: notBefore, Description: "retiring"},
	})
	log, logs := testLogger(t)
	opts := imds.WatchOptions{PollInterval: 50 * time.Millisecond, SlowInterval: 50 * time.Millisecond, Logger: log}
	r := startWatcher(t, imds.New(imds.Options{Endpoint: srv.URL()}), opts, 16)

	ev := r.next(t, instance.KindScheduledEvent)
	if !ev.Time.Equal(notBefore) || !strings.Contains(ev.Detail, "instance-retirement") || !strings.Contains(ev.Detail, "0000b") {
		t.Errorf("scheduled event notice = %+v", ev)
	}

	srv.SetRebalance(time.Now())
	if n := r.next(t, instance.KindRebalance); !n.Time.IsZero() {
		t.Errorf("rebalance names no termination time, got %v", n.Time)
	}
	srv.SetRebalance(time.Now().Add(time.Minute)) // a new noticeTime is the same recommendation

	srv.SetTargetLifecycleState("Terminated")
	r.next(t, instance.KindASGTerminated)

	// A second ending event arrives later: one more notice, for it alone.
	srv.SetScheduledEvents([]imds.ScheduledEvent{
		{Code: "instance-retirement", EventID: "instance-event-0000000000000000b", State: "active", NotBefore: notBefore},
		{Code: "instance-stop", EventID: "instance-event-0000000000000000c", State: "active", NotBefore: notBefore.Add(time.Hour)},
	})
	if n := r.next(t, instance.KindScheduledEvent); !strings.Contains(n.Detail, "0000c") {
		t.Errorf("second event notice = %+v", n)
	}
	testenv.Eventually(t, "more slow polls", func() bool { return strings.Count(logs.String(), "msg=") > 0 && r.w.Health().Polls >= 30 })
	r.stop()
	if got := r.drain(); len(got) != 0 {
		t.Fatalf("repeated notices: %+v", got)
	}
	if !strings.Contains(logs.String(), "state=InService") {
		t.Error("the lifecycle state was not logged")
	}
}

// TestWatcherScheduledEventsOncePerEventID: every ending event is a notice of its own,
// carrying its id, code and start, sent once however often it is seen and whatever
// other events share its code; completed and canceled events are never notices.
func TestWatcherScheduledEventsOncePerEventID(t *testing.T) {
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	at := time.Date(2027, 3, 1, 10, 0, 0, 0, time.UTC)
	ev := func(id, code, state string, notBefore time.Time) imds.ScheduledEvent {
		return imds.ScheduledEvent{Code: code, EventID: "instance-event-" + id, State: state, NotBefore: notBefore, Description: code + " " + id}
	}
	srv.SetScheduledEvents([]imds.ScheduledEvent{
		ev("0000000000000000a", "system-reboot", "completed", at),
		ev("0000000000000000b", "system-reboot", "canceled", at),
		ev("0000000000000000c", "system-reboot", "active", at.Add(time.Hour)),
	})
	opts := imds.WatchOptions{PollInterval: time.Hour, SlowInterval: 30 * time.Millisecond}
	r := startWatcher(t, imds.New(imds.Options{Endpoint: srv.URL()}), opts, 16)
	n := r.next(t, instance.KindScheduledEvent)
	if n.EventID != "instance-event-0000000000000000c" || n.Code != "system-reboot" || !n.Time.Equal(at.Add(time.Hour)) || n.Seen.IsZero() {
		t.Fatalf("notice = %+v, want event c with its code and NotBefore", n)
	}
	// A second event of the same code: a notice of its own. Event c rescheduled: not
	// a new notice.
	srv.SetScheduledEvents([]imds.ScheduledEvent{
		ev("0000000000000000c", "system-reboot", "active", at.Add(2*time.Hour)),
		ev("0000000000000000d", "system-reboot", "scheduled", at.Add(3*time.Hour)),
	})
	n = r.next(t, instance.KindScheduledEvent)
	if n.EventID != "instance-event-0000000000000000d" || n.Code != "system-reboot" || !n.Time.Equal(at.Add(3*time.Hour)) {
		t.Fatalf("notice = %+v, want event d", n)
	}
	// Events that end (or are called off) are no news; a new ending code is.
	srv.SetScheduledEvents([]imds.ScheduledEvent{
		ev("0000000000000000c", "system-reboot", "completed", at),
		ev("0000000000000000d", "system-reboot", "canceled", at),
		ev("0000000000000000e", "instance-stop", "active", at),
	})
	n = r.next(t, instance.KindScheduledEvent)
	if n.EventID != "instance-event-0000000000000000e" || n.Code != "instance-stop" {
		t.Fatalf("notice = %+v, want event e", n)
	}
	requests := srv.Requests()
	testenv.Eventually(t, "ten more polls", func() bool { return srv.Requests() >= requests+30 })
	r.stop()
	if got := r.drain(); len(got) != 0 {
		t.Fatalf("repeated or unwanted notices: %+v", got)
	}
}

func TestWatcherBlindnessIsNotSilence(t *testing.T) {
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	proxy := imdstest.NewFaultProxy(srv.URL())
	defer proxy.Close()
	srv.SetSpotAction("terminate", time.Now().Add(2*time.Minute))
	proxy.SetFault(spotPath, imdstest.Fault{Status: http.StatusInternalServerError})

	log, logs := testLogger(t)
	var counts requestCounts
	c := imds.New(imds.Options{Endpoint: proxy.URL(), OnRequest: counts.record})
	r := startWatcher(t, c, imds.WatchOptions{PollInterval: 20 * time.Millisecond, SlowInterval: time.Hour, Logger: log}, 16)
	testenv.Eventually(t, "a streak of failed polls", func() bool { return r.w.Health().ConsecutiveFails >= 5 })
	h := r.w.Health()
	if !h.LastSuccess.IsZero() || !strings.Contains(h.LastError, "500") {
		t.Errorf("health while blind = %+v", h)
	}
	if got := countKind(r.drain(), instance.KindSpotTerminate); got != 0 {
		t.Fatalf("a notice came through a 500")
	}
	if got := counts.get(imds.EndpointSpotAction, imds.ResultError); got < 5 {
		t.Errorf("error requests counted = %d", got)
	}

	proxy.ClearFaults()
	r.next(t, instance.KindSpotTerminate)
	testenv.Eventually(t, "recovery", func() bool { return r.w.Health().ConsecutiveFails == 0 })
	r.stop()
	out := logs.String()
	if n := strings.Count(out, "imds poll failed"); n != 1 {
		t.Errorf("failure logged %d times, want once per streak:\n%s", n, out)
	}
	if n := strings.Count(out, "imds poll recovered"); n != 1 {
		t.Errorf("recovery logged %d times, want once:\n%s", n, out)
	}
}

// TestWatcherTokenRevoked checks that a revoked (or expired) token costs no poll: the
// SDK drops it on the 401 and the retry fetches a new one.
func TestWatcherTokenRevoked(t *testing.T) {
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	var counts requestCounts
	r := startWatcher(t, imds.New(imds.Options{Endpoint: srv.URL(), OnRequest: counts.record}), fast, 16)
	testenv.Eventually(t, "a first poll", func() bool { return r.w.Health().Polls >= 1 })
	for i := range 3 {
		polls := r.w.Health().Polls
		srv.RevokeTokens()
		testenv.Eventually(t, "polls after revocation", func() bool { return r.w.Health().Polls >= polls+3 })
		if got := counts.get(imds.EndpointToken, imds.ResultOK); got < i+2 {
			t.Fatalf("token fetched %d times after %d revocations; health %+v", got, i+1, r.w.Health())
		}
	}
	r.stop()
	if h := r.w.Health(); h.LastError != "" {
		t.Fatalf("a revocation cost a poll: %+v", h)
	}
	// Whichever poll came first after a revocation got the 401 (the Spot poll or a
	// slower one): each revocation shows as one.
	if got := counts.result(imds.ResultUnauthorized); got < 3 {
		t.Errorf("%d 401 answers counted after 3 revocations", got)
	}
}

func TestWatcherBacksOffWhenThrottled(t *testing.T) {
	srv := imdstest.NewServer(testIdentity)
	defer srv.Close()
	proxy := imdstest.NewFaultProxy(srv.URL())
	defer proxy.Close()
	proxy.SetFault(spotPath, imdstest.Fault{Status: http.StatusTooManyRequests})
	opts := imds.WatchOptions{PollInterval: 25 * time.Millisecond, SlowInterval: time.Hour}
	r := startWatcher(t, imds.New(imds.Options{Endpoint: proxy.URL()}), opts, 16)
	testenv.Eventually(t, "throttled polls", func() bool { return r.w.Health().ConsecutiveFails >= 8 })
	// Still polling after a long streak (back-off, not surrender), and recovers.
	proxy.ClearFaults()
	testenv.Eventually(t, "recovery", func() bool { return r.w.Health().ConsecutiveFails == 0 })
	r.stop()
	if h := r.w.Health(); !strings.Contains(h.LastError, "429") || h.LastSuccess.IsZero() {
		t.Errorf("health = %+v", h)
	}
}
