package control

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

func TestParseRequest(t *testing.T) {
	cases := []struct {
		line    string
		want    command
		wantErr string
	}{
		{`{"command":"status"}`, command{name: "status"}, ""},
		{`{"command":"status"}` + "\n", command{name: "status"}, ""},
		{`{"command":"drill"}`, command{name: "drill"}, ""},
		{`{"command":"drill","budget":"90s"}`, command{name: "drill", budget: 90 * time.Second}, ""},
		{`{"command":"drill","budget":"1h"}`, command{name: "drill", budget: time.Hour}, ""},
		{`{"command":"drill","budget":"1h1s"}`, command{}, "at most 1h0m0s"},
		{`{"command":"drill","budget":"0s"}`, command{}, "must be above 0"},
		{`{"command":"drill","budget":"-5s"}`, command{}, "must be above 0"},
		{`{"command":"drill","budget":"90"}`, command{}, "budget: time: missing unit"},
		{`{"command":"drill","budget":90}`, command{}, "bad request"},
		{`{"command":"status","budget":"90s"}`, command{}, "budget applies to drill only"},
		{`{"command":"status","force":true}`, command{}, "unknown field"},
		{`{"command":"reboot"}`, command{}, `unknown command "reboot"`},
		{`{}`, command{}, "no command"},
		{`{"command":"status"}{"command":"drill"}`, command{}, "more than one JSON value"},
		{``, command{}, "bad request"},
		{`[`, command{}, "bad request"},
	}
	for _, c := range cases {
		got, err := parseRequest([]byte(c.line))
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("parseRequest(%q) = %+v, %v; want error with %q", c.line, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("parseRequest(%q) = %+v, %v; want %+v", c.line, got, err, c.want)
		}
	}
}

// FuzzParseRequest: any accepted request is a known command with a budget in range.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{`{"command":"status"}`, `{"command":"drill","budget":"90s"}`, `{"command":"drill","budget":"-1ns"}`, `{}`, `nul`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		c, err := parseRequest(line)
		if err != nil {
			return
		}
		switch c.name {
		case commandStatus:
			if c.budget != 0 {
				t.Errorf("status with budget %s", c.budget)
			}
		case commandDrill:
			if c.budget < 0 || c.budget > maxDrillBudget {
				t.Errorf("drill budget %s accepted", c.budget)
			}
		default:
			t.Errorf("unknown command %q accepted", c.name)
		}
	})
}

func TestParseFrame(t *testing.T) {
	cases := []struct {
		line    string
		check   func(frame) bool
		wantErr string
	}{
		{`{"status":{"Phase":"serving"}}`, func(f frame) bool { return f.Status != nil && f.Status.Phase == status.PhaseServing }, ""},
		// An event's own Done field must not be mistaken for the final frame.
		{`{"event":{"Step":"drain","Done":true}}`, func(f frame) bool { return f.Event != nil && f.Event.Done && !f.Done }, ""},
		{`{"done":true,"error":""}`, func(f frame) bool { return f.Done && f.Error == "" }, ""},
		{`{"done":true,"error":"boom"}`, func(f frame) bool { return f.Done && f.Error == "boom" }, ""},
		{`{"done":false,"error":"boom"}`, nil, "exactly one"},
		{`{"status":{},"done":true}`, nil, "exactly one"},
		{`{"event":{},"error":"x"}`, nil, "error outside a done frame"},
		{`{}`, nil, "exactly one"},
		{`{"status":`, nil, "bad response"},
	}
	for _, c := range cases {
		got, err := parseFrame([]byte(c.line))
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("parseFrame(%q) = %+v, %v; want error with %q", c.line, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || !c.check(got) {
			t.Errorf("parseFrame(%q) = %+v, %v", c.line, got, err)
		}
	}
}

// TestFramesRoundTrip checks that what the server writes, the client reads back
// as the same kind of frame.
func TestFramesRoundTrip(t *testing.T) {
	st := sampleStatus()
	ev := st.Steps[1]
	for _, v := range []any{frame{Status: &st}, frame{Event: &ev}, doneFrame{Done: true}, doneFrame{Done: true, Error: "x"}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseFrame(b); err != nil {
			t.Errorf("server frame %s not readable: %v", b, err)
		}
	}
	b, _ := json.Marshal(doneFrame{Done: true})
	if string(b) != `{"done":true,"error":""}` {
		t.Errorf("final line = %s", b)
	}
}

// FuzzParseFrame: an accepted frame is exactly one kind, and parsing never panics.
func FuzzParseFrame(f *testing.F) {
	for _, s := range []string{`{"status":{"Phase":"serving"}}`, `{"event":{"Done":true}}`, `{"done":true,"error":""}`, `{"DONE":true}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		fr, err := parseFrame(line)
		if err != nil {
			return
		}
		n := 0
		for _, set := range []bool{fr.Status != nil, fr.Event != nil, fr.Done} {
			if set {
				n++
			}
		}
		if n != 1 {
			t.Errorf("frame %q accepted with %d kinds", line, n)
		}
	})
}

func TestWriteStatus(t *testing.T) {
	now := t0
	var b bytes.Buffer
	if err := writeStatus(&b, sampleStatus(), now); err != nil {
		t.Fatal(err)
	}
	want := `phase           draining since 2025-03-04T09:59:57Z (3s ago)
instance        i-0123456789abcdef0
lease           held by i-0123456789abcdef0, epoch 7, expires 2025-03-04T10:00:30Z (30s left)
last IMDS poll  2025-03-04T09:59:59Z (1s ago), 812 polls
blind streak    2 failed polls in a row; last error: GET spot/instance-action: 500
notices         rebalance seen 2025-03-04T09:50:00Z (10m0s ago)
                spot_terminate seen 2025-03-04T09:59:57Z (3s ago), for 2025-03-04T10:02:00Z: terminate
deadline        2025-03-04T10:02:00Z (2m0s left)
running builds  2: build-app #41, deploy #9
steps           deregister 1.2s ok
                quiet_down 300ms failed: 401 Unauthorized
`
	if got := b.String(); got != want {
		t.Errorf("status table:\n%s\nwant:\n%s", got, want)
	}
}

// The successor, a replaced instance, a pending advisory notice, build-list failures,
// restarts and the builds a predecessor's stop aborted show when there are any.
func TestWriteStatusHandover(t *testing.T) {
	st := status.Snapshot{
		Phase: status.PhaseServing,
		Lease: status.LeaseState{
			Held: true, Holder: "i-0123456789abcdef0", Epoch: 2, Expires: t0.Add(20 * time.Second),
			Successor: &status.Successor{InstanceID: "i-0bbbbbbbbbbbbbbb2", Since: t0.Add(-40 * time.Second), Ready: true},
		},
		Notices:           []instance.Notice{{Kind: instance.KindSpotTerminate, Seen: t0.Add(-time.Minute), InstanceType: "m7g.large", AvailabilityZone: "us-east-1a"}},
		BuildListFailures: 3,
		Restarts:          1,
		Aborted:           []status.AbortedBuild{{Job: "nightly", Number: 7, Requeued: true}},
		Pending:           "scheduled instance-stop at 2025-03-05T00:00:00Z",
	}
	var b bytes.Buffer
	if err := writeStatus(&b, st, t0); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(strings.Fields(b.String()), " ") // the columns' widths do not matter here
	for _, want := range []string{
		"successor       i-0bbbbbbbbbbbbbbb2 waits on the lease since 2025-03-04T09:59:20Z (40s ago), ready to start Jenkins",
		"pending         scheduled instance-stop",
		"[m7g.large in us-east-1a]",
		"build list failures  3 (unknown, never taken as no builds)",
		"jenkins restarts",
		"aborted builds",
		"nightly #7 (queued again)",
	} {
		if !strings.Contains(got, strings.Join(strings.Fields(want), " ")) {
			t.Errorf("status table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestWriteStatusEmpty(t *testing.T) {
	var b bytes.Buffer
	if err := writeStatus(&b, status.Snapshot{Lease: status.LeaseState{Holder: "i-other", Epoch: 3, Expires: t0.Add(-5 * time.Second)}}, t0); err != nil {
		t.Fatal(err)
	}
	want := `phase           unknown
instance        none
lease           not held; holder i-other, epoch 3, expires 2025-03-04T09:59:55Z (5s ago)
last IMDS poll  never (0 polls)
blind streak    0 failed polls in a row
notices         none
deadline        none
running builds  0
`
	if got := b.String(); got != want {
		t.Errorf("status table:\n%s\nwant:\n%s", got, want)
	}
}
