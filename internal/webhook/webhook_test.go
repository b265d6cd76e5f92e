package webhook

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// secretPath is the part of the URL that is a credential, as in Slack's webhooks.
const secretPath = "/services/T0000/B0000/XXsecretXXtoken"

// receiver is an httptest webhook endpoint that records bodies and answers with
// status (200 when 0), optionally blocking every request until released.
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies [][]byte
	status int
	block  chan struct{}
	hits   int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.hits++
		block, status := r.block, r.status
		r.mu.Unlock()
		if req.URL.Path != secretPath || req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if block != nil {
			select {
			case <-block:
			case <-req.Context().Done():
				return
			}
		}
		if status != 0 {
			w.WriteHeader(status)
			return
		}
		r.mu.Lock()
		r.bodies = append(r.bodies, body)
		r.mu.Unlock()
		w.Write([]byte("ok")) // the client went away if this fails: nothing to check
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) url() config.Secret { return config.Secret(r.srv.URL + secretPath) }

func (r *receiver) received() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.bodies...)
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hits
}

// results counts OnResult calls.
type results struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *results) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[s]++
}

func (r *results) get(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[s]
}

var at = time.Date(2026, 11, 25, 10, 0, 2, 0, time.UTC)

func noticeEvent() status.Event {
	return status.Event{Kind: status.EventNotice, At: at, Notice: &instance.Notice{
		Kind: instance.KindSpotTerminate, Time: at.Add(2 * time.Minute), Seen: at, Detail: "terminate",
		InstanceType: "m7g.large", AvailabilityZone: "us-east-1a",
	}}
}

func planDoneEvent() status.Event {
	return status.Event{Kind: status.EventPlanDone, At: at.Add(time.Minute), Report: &status.PlanReport{
		Notice:   instance.Notice{Kind: instance.KindSpotTerminate},
		Deadline: at.Add(2 * time.Minute), Margin: 12300 * time.Millisecond,
		Aborted: []string{"job/a/7/"}, Failed: []string{"deregister: throttled"}, HandedOverTo: "i-0successor",
	}}
}

func start(t *testing.T, opts Options) (*Notifier, *results, func()) {
	t.Helper()
	var res results
	opts.OnResult = res.add
	if opts.Source == "" {
		opts.Source = "i-0abc"
	}
	n, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return n, &res, stop
}

func TestSlackPayload(t *testing.T) {
	r := newReceiver(t)
	n, res, _ := start(t, Options{URL: r.url(), Format: FormatSlack})
	n.Event(noticeEvent())
	n.Event(status.Event{Kind: status.EventPhase, Phase: status.PhaseDraining}) // not notable
	n.Event(planDoneEvent())
	testenv.Eventually(t, "two notifications", func() bool { return res.get(ResultSent) == 2 })
	bodies := r.received()
	if len(bodies) != 2 {
		t.Fatalf("%d bodies, want 2 (the phase change is not announced)", len(bodies))
	}
	var msgs []map[string]any
	for _, b := range bodies {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("body %s: %v", b, err)
		}
		if len(m) != 1 || m["text"] == nil {
			t.Fatalf("slack body %s: want exactly {\"text\": ...}", b)
		}
		msgs = append(msgs, m)
	}
	want0 := "jenkins-spot-agent on i-0abc: spot_terminate notice (m7g.large in us-east-1a), termination at 2026-11-25T10:02:02Z: terminate"
	if msgs[0]["text"] != want0 {
		t.Errorf("notice text %q\nwant        %q", msgs[0]["text"], want0)
	}
	want1 := "jenkins-spot-agent on i-0abc: shutdown plan for spot_terminate done, 12.3s left before termination; 1 build(s) aborted (job/a/7/); handed over to i-0successor; failed: deregister: throttled"
	if msgs[1]["text"] != want1 {
		t.Errorf("plan text %q\nwant      %q", msgs[1]["text"], want1)
	}
}

func TestJSONPayload(t *testing.T) {
	r := newReceiver(t)
	n, res, _ := start(t, Options{URL: r.url(), Format: FormatJSON})
	n.Event(planDoneEvent())
	n.Event(status.Event{Kind: status.EventHandover, At: at, Successor: &status.Successor{InstanceID: "i-0next"}})
	n.Event(status.Event{Kind: status.EventLeaseLost, At: at, Message: "held by i-0other"})
	testenv.Eventually(t, "three notifications", func() bool { return res.get(ResultSent) == 3 })
	var plan, handover, lost Message
	bodies := r.received()
	for i, m := range []*Message{&plan, &handover, &lost} {
		if err := json.Unmarshal(bodies[i], m); err != nil {
			t.Fatal(err)
		}
	}
	if plan.Kind != status.EventPlanDone || plan.Source != "i-0abc" || plan.Report == nil ||
		plan.Report.MarginSeconds != 12.3 || len(plan.Report.AbortedBuilds) != 1 || plan.Report.HandedOverTo != "i-0successor" ||
		plan.Report.Deadline == nil || !plan.Report.Deadline.Equal(at.Add(2*time.Minute)) || plan.Text == "" {
		t.Errorf("plan message %+v / %+v", plan, plan.Report)
	}
	if handover.Kind != status.EventHandover || handover.Successor != "i-0next" || !strings.Contains(handover.Text, "handed JENKINS_HOME over to i-0next") {
		t.Errorf("handover message %+v", handover)
	}
	if lost.Kind != status.EventLeaseLost || !strings.Contains(lost.Text, "lost the lease") {
		t.Errorf("lease lost message %+v", lost)
	}
	var raw map[string]any
	if err := json.Unmarshal(bodies[0], &raw); err != nil {
		t.Fatalf("first body is not JSON: %v: %s", err, bodies[0])
	}
	report := raw["report"].(map[string]any)
	for _, key := range []string{"notice", "deadline", "margin_seconds", "aborted_builds", "failed_steps", "handed_over_to"} {
		if _, ok := report[key]; !ok {
			t.Errorf("report lacks %q: %v", key, report)
		}
	}
}

// TestTimeoutAndRetries: a receiver that never answers costs each attempt its
// deadline, the notification is tried Attempts times and then counted failed.
func TestTimeoutAndRetries(t *testing.T) {
	r := newReceiver(t)
	r.block = make(chan struct{}) // never released: every attempt times out
	defer close(r.block)
	n, res, _ := start(t, Options{URL: r.url(), Timeout: 50 * time.Millisecond, Attempts: 2})
	n.Event(noticeEvent())
	testenv.Eventually(t, "the notification to fail", func() bool { return res.get(ResultFailed) == 1 })
	if r.count() != 2 {
		t.Errorf("%d attempts, want 2", r.count())
	}
}

func TestPermanentErrorsAreNotRetried(t *testing.T) {
	r := newReceiver(t)
	r.status = http.StatusNotFound
	n, res, _ := start(t, Options{URL: r.url(), Attempts: 3})
	n.Event(noticeEvent())
	testenv.Eventually(t, "the notification to fail", func() bool { return res.get(ResultFailed) == 1 })
	if r.count() != 1 {
		t.Errorf("%d attempts after a 404, want 1", r.count())
	}
	r.mu.Lock()
	r.status, r.hits = http.StatusServiceUnavailable, 0
	r.mu.Unlock()
	n.Event(noticeEvent())
	testenv.Eventually(t, "the second to fail", func() bool { return res.get(ResultFailed) == 2 })
	if r.count() != 3 {
		t.Errorf("%d attempts after 503s, want 3", r.count())
	}
}

// TestSlowReceiverNeverBlocksTheCaller: while the receiver holds the first request,
// Event keeps returning; what does not fit in the queue is dropped and counted, and
// the queued rest is delivered once the receiver answers.
func TestSlowReceiverNeverBlocksTheCaller(t *testing.T) {
	r := newReceiver(t)
	release := make(chan struct{})
	r.block = release
	n, res, _ := start(t, Options{URL: r.url(), Queue: 4, Timeout: time.Minute})
	n.Event(noticeEvent())
	testenv.Eventually(t, "the first request to be held", func() bool { return r.count() == 1 })
	const burst = 100
	returned := make(chan struct{})
	go func() {
		for range burst {
			n.Event(noticeEvent())
		}
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(testenv.WaitLimit):
		t.Fatal("Event blocked while the receiver was slow")
	}
	if got := res.get(ResultDropped); got != burst-4 {
		t.Errorf("dropped %d, want %d (a queue of 4)", got, burst-4)
	}
	close(release)
	testenv.Eventually(t, "the queued notifications", func() bool { return res.get(ResultSent) == 5 })
}

// TestURLNeverLogged: failures of every kind are logged without the URL.
func TestURLNeverLogged(t *testing.T) {
	var logs testenv.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := newReceiver(t)
	r.status = http.StatusInternalServerError
	n, res, _ := start(t, Options{URL: r.url(), Attempts: 1, Logger: log})
	n.Event(noticeEvent())
	testenv.Eventually(t, "the 500 to be counted", func() bool { return res.get(ResultFailed) == 1 })

	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := config.Secret(dead.URL + secretPath)
	dead.Close() // connection refused
	n2, res2, _ := start(t, Options{URL: deadURL, Attempts: 1, Logger: log})
	n2.Event(noticeEvent())
	testenv.Eventually(t, "the refused connection to be counted", func() bool { return res2.get(ResultFailed) == 1 })

	out := logs.String()
	if !strings.Contains(out, "webhook notification failed") || !strings.Contains(out, "connection refused") {
		t.Fatalf("failures not logged:\n%s", out)
	}
	for _, leak := range []string{"XXsecretXXtoken", strings.TrimPrefix(r.srv.URL, "http://")} {
		if strings.Contains(out, leak) {
			t.Errorf("the log shows %q:\n%s", leak, out)
		}
	}
	if _, err := New(Options{URL: "ftp://x/" + secretPath}); err == nil || strings.Contains(err.Error(), "XXsecretXXtoken") {
		t.Errorf("New with a bad URL = %v; want an error without the URL", err)
	}
}

// TestFlushAfterStop: the end of a plan comes right before the agent exits; what is
// queued when Run's context ends is still sent.
func TestFlushAfterStop(t *testing.T) {
	r := newReceiver(t)
	n, res, stop := start(t, Options{URL: r.url()})
	r.mu.Lock()
	r.block = make(chan struct{})
	r.mu.Unlock()
	n.Event(noticeEvent())
	testenv.Eventually(t, "the notice to be in flight", func() bool { return r.count() == 1 })
	n.Event(planDoneEvent())
	r.mu.Lock()
	close(r.block)
	r.block = nil
	r.mu.Unlock()
	stop()
	if res.get(ResultSent) != 2 {
		t.Errorf("sent %d after stop, want 2 (the queued end of the plan included)", res.get(ResultSent))
	}
}
