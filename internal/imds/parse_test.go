package imds

import (
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

func TestParseInstanceAction(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 2, 0, 0, time.UTC)
	tests := []struct {
		name    string
		body    string
		kind    instance.Kind
		wantErr string
	}{
		{"terminate", `{"action":"terminate","time":"2026-11-25T10:02:00Z"}`, instance.KindSpotTerminate, ""},
		{"stop", `{"action":"stop","time":"2026-11-25T10:02:00Z"}`, instance.KindSpotStop, ""},
		{"hibernate", `{"action":"hibernate","time":"2026-11-25T10:02:00Z"}`, instance.KindSpotHibernate, ""},
		{"aemm layout", "{\n\t\"action\": \"terminate\",\n\t\"time\": \"2026-11-25T10:02:00Z\"\n}\n", instance.KindSpotTerminate, ""},
		{"offset time", `{"action":"stop","time":"2026-11-25T11:02:00+01:00"}`, instance.KindSpotStop, ""},
		{"unknown field tolerated", `{"action":"stop","time":"2026-11-25T10:02:00Z","extra":1}`, instance.KindSpotStop, ""},
		{"unknown action", `{"action":"reboot","time":"2026-11-25T10:02:00Z"}`, "", "unknown action"},
		{"capitalised action", `{"action":"Terminate","time":"2026-11-25T10:02:00Z"}`, "", "unknown action"},
		{"missing time", `{"action":"terminate"}`, "", "required"},
		{"missing action", `{"time":"2026-11-25T10:02:00Z"}`, "", "required"},
		{"bad time", `{"action":"terminate","time":"25 Nov 2026 10:02:00 GMT"}`, "", "RFC 3339"},
		{"empty time", `{"action":"terminate","time":""}`, "", "RFC 3339"},
		{"year zero", `{"action":"terminate","time":"0001-01-01T00:00:00Z"}`, "", "out of range"},
		{"time not a string", `{"action":"terminate","time":1764064920}`, "", "parse instance-action"},
		{"trailing garbage", `{"action":"terminate","time":"2026-11-25T10:02:00Z"}}`, "", "trailing"},
		{"two values", `{"action":"terminate","time":"2026-11-25T10:02:00Z"}{}`, "", "trailing"},
		{"truncated", `{"action":"terminate","ti`, "", "parse instance-action"},
		{"html", `<html><body>502 Bad Gateway</body></html>`, "", "parse instance-action"},
		{"null", `null`, "", "required"},
		{"empty", ``, "", "parse instance-action"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, got, err := ParseInstanceAction([]byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if kind != tt.kind || !got.Equal(at) || got.Location() != time.UTC {
				t.Fatalf("got %s %v, want %s %v UTC", kind, got, tt.kind, at)
			}
		})
	}
}

func TestParseRebalance(t *testing.T) {
	tests := []struct {
		body    string
		want    time.Time
		wantErr bool
	}{
		{`{"noticeTime":"2026-11-25T10:00:00Z"}`, time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), false},
		{"{\n\t\"noticeTime\": \"2026-11-26T00:47:44Z\"\n}", time.Date(2026, 11, 26, 0, 47, 44, 0, time.UTC), false},
		{`{"noticeTime":"yesterday"}`, time.Time{}, true},
		{`{}`, time.Time{}, true},
		{`{"noticeTime":"2026-11-25T10:00:00Z"} x`, time.Time{}, true},
		{`[]`, time.Time{}, true},
		{``, time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := ParseRebalance([]byte(tt.body))
		if (err != nil) != tt.wantErr || !got.Equal(tt.want) {
			t.Errorf("ParseRebalance(%q) = %v, %v; want %v, error %v", tt.body, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseTargetLifecycleState(t *testing.T) {
	good := []string{
		"InService", "Terminated", "Detached", "Standby", "Pending", "Pending:Wait",
		"Warmed:Running", "Warmed:Hibernated", "Warmed:Pending:Wait", "Warmed:Terminated", "Terminated\n", " InService ",
	}
	for _, s := range good {
		got, err := ParseTargetLifecycleState([]byte(s))
		if err != nil || got != strings.TrimSpace(s) {
			t.Errorf("ParseTargetLifecycleState(%q) = %q, %v; want %q", s, got, err, strings.TrimSpace(s))
		}
	}
	bad := []string{
		"", "terminated", "In Service", "Warmed:", ":Running", "A:B:C:D", "<html>", `{"state":"InService"}`,
		"Terminated\nInService", strings.Repeat("X", 100),
	}
	for _, s := range bad {
		if got, err := ParseTargetLifecycleState([]byte(s)); err == nil {
			t.Errorf("ParseTargetLifecycleState(%q) = %q, want an error", s, got)
		}
	}
}

func TestParseScheduledEvents(t *testing.T) {
	aemm := `[
	{
		"Code": "system-reboot",
		"Description": "The instance is scheduled for system-reboot",
		"State": "active",
		"EventId": "instance-event-1234567890abcdef0",
		"NotBefore": "26 Nov 2026 00:47:41 GMT",
		"NotAfter": "3 Dec 2026 00:47:41 GMT",
		"NotBeforeDeadline": "5 Dec 2026 00:47:41 GMT"
	}
]`
	evs, err := ParseScheduledEvents([]byte(aemm))
	if err != nil {
		t.Fatal(err)
	}
	want := ScheduledEvent{
		Code: "system-reboot", Description: "The instance is scheduled for system-reboot", State: "active",
		EventID:   "instance-event-1234567890abcdef0",
		NotBefore: time.Date(2026, 11, 26, 0, 47, 41, 0, time.UTC),
		NotAfter:  time.Date(2026, 12, 3, 0, 47, 41, 0, time.UTC),
	}
	if len(evs) != 1 || evs[0] != want {
		t.Fatalf("got %+v, want [%+v]", evs, want)
	}
	if !evs[0].IsEnding() {
		t.Error("an active system-reboot should end the instance")
	}

	docs := `[{"NotBefore":"21 Jan 2019 09:00:43 GMT","Code":"system-reboot","Description":"scheduled reboot","EventId":"instance-event-0d59937288b749b32","NotAfter":"21 Jan 2019 09:17:23 GMT","State":"completed"}]`
	evs, err = ParseScheduledEvents([]byte(docs))
	if err != nil || len(evs) != 1 || !evs[0].NotBefore.Equal(time.Date(2019, 1, 21, 9, 0, 43, 0, time.UTC)) {
		t.Fatalf("docs example: %+v, %v", evs, err)
	}
	if evs[0].IsEnding() {
		t.Error("a completed event should not end the instance")
	}

	if evs, err := ParseScheduledEvents([]byte(`[]`)); err != nil || len(evs) != 0 {
		t.Errorf("empty array: %v, %v", evs, err)
	}
	noAfter := `[{"Code":"instance-retirement","EventId":"e-1","State":"active","NotBefore":"1 Feb 2027 10:00:00 GMT"}]`
	if evs, err := ParseScheduledEvents([]byte(noAfter)); err != nil || !evs[0].NotAfter.IsZero() {
		t.Errorf("missing NotAfter: %v, %v", evs, err)
	}

	bad := map[string]string{
		"null":            `null`,
		"object":          `{"Code":"system-reboot"}`,
		"rfc3339 date":    `[{"Code":"system-reboot","EventId":"e","State":"active","NotBefore":"2019-01-21T09:00:43Z"}]`,
		"no EventId":      `[{"Code":"system-reboot","State":"active","NotBefore":"21 Jan 2019 09:00:43 GMT"}]`,
		"no Code":         `[{"EventId":"e","State":"active","NotBefore":"21 Jan 2019 09:00:43 GMT"}]`,
		"no NotBefore":    `[{"Code":"system-reboot","EventId":"e","State":"active"}]`,
		"bad NotAfter":    `[{"Code":"system-reboot","EventId":"e","State":"active","NotBefore":"21 Jan 2019 09:00:43 GMT","NotAfter":"soon"}]`,
		"trailing":        `[] []`,
		"truncated":       `[{"Code":`,
		"wrong zone name": `[{"Code":"system-reboot","EventId":"e","State":"active","NotBefore":"21 Jan 2019 09:00:43 PST"}]`,
	}
	for name, body := range bad {
		if evs, err := ParseScheduledEvents([]byte(body)); err == nil {
			t.Errorf("%s: got %+v, want an error", name, evs)
		}
	}
}

func TestScheduledEventIsEnding(t *testing.T) {
	tests := []struct {
		code, state string
		want        bool
	}{
		{"instance-stop", "active", true},
		{"instance-retirement", "scheduled", true},
		{"instance-reboot", "active", true},
		{"system-maintenance", "active", true},
		{"system-reboot", "canceled", false},
		{"system-reboot", "completed", false},
		{"something-new", "active", false},
	}
	for _, tt := range tests {
		if got := (ScheduledEvent{Code: tt.code, State: tt.state}).IsEnding(); got != tt.want {
			t.Errorf("%s/%s: IsEnding = %v, want %v", tt.code, tt.state, got, tt.want)
		}
	}
}

func TestFormatScheduledTimeRoundTrip(t *testing.T) {
	at := time.Date(2027, 3, 4, 5, 6, 7, 0, time.UTC)
	s := FormatScheduledTime(at)
	if s != "4 Mar 2027 05:06:07 GMT" {
		t.Fatalf("FormatScheduledTime = %q", s)
	}
	got, err := parseScheduledTime(s)
	if err != nil || !got.Equal(at) {
		t.Fatalf("round trip: %v, %v", got, err)
	}
}

func TestValidateIdentity(t *testing.T) {
	good := instance.Identity{InstanceID: "i-1234567890abcdef0", AvailabilityZone: "us-east-1a", AZID: "use1-az4", Region: "us-east-1", Market: "spot", AutoScalingGroup: "jenkins-controller"}
	if err := ValidateIdentity(good); err != nil {
		t.Fatalf("good identity refused: %v", err)
	}
	okVariants := []func(*instance.Identity){
		func(id *instance.Identity) { id.InstanceID = "i-0123abcd" },
		func(id *instance.Identity) { id.AZID, id.Market, id.AutoScalingGroup = "", "", "" },
		func(id *instance.Identity) { id.Region, id.AvailabilityZone = "us-west-2", "us-west-2-lax-1a" },
		func(id *instance.Identity) { id.Region, id.AvailabilityZone = "us-gov-west-1", "us-gov-west-1b" },
		func(id *instance.Identity) { id.AZID = "usw2-lax1-az1" },
	}
	for i, f := range okVariants {
		id := good
		f(&id)
		if err := ValidateIdentity(id); err != nil {
			t.Errorf("variant %d refused: %v", i, err)
		}
	}
	badVariants := map[string]func(*instance.Identity){
		"instance id not hex":   func(id *instance.Identity) { id.InstanceID = "i-1234567890abcdefg" },
		"instance id no prefix": func(id *instance.Identity) { id.InstanceID = "1234567890abcdef0" },
		"instance id html":      func(id *instance.Identity) { id.InstanceID = "<html>" },
		"az of another region":  func(id *instance.Identity) { id.AvailabilityZone = "eu-west-1a" },
		"az equals region":      func(id *instance.Identity) { id.AvailabilityZone = "us-east-1" },
		"region garbage":        func(id *instance.Identity) { id.Region = "US East" },
		"az id garbage":         func(id *instance.Identity) { id.AZID = "use1 az4" },
		"lifecycle garbage":     func(id *instance.Identity) { id.Market = "<html>" },
		"group with newline":    func(id *instance.Identity) { id.AutoScalingGroup = "a\nb" },
	}
	for name, f := range badVariants {
		id := good
		f(&id)
		if err := ValidateIdentity(id); err == nil {
			t.Errorf("%s: accepted %+v", name, id)
		}
	}
}

func TestShortenTokenTTL(t *testing.T) {
	for in, want := range map[string]string{"300": "270", "21600": "21570", "60": "54", "5": "4", "1": "1", "x": "x"} {
		h := map[string][]string{tokenTTLHeader: {in}}
		shortenTokenTTL(h)
		if got := h[tokenTTLHeader][0]; got != want {
			t.Errorf("shortenTokenTTL(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestEndpointLabel(t *testing.T) {
	for p, want := range map[string]string{
		"/latest/api/token":                                         EndpointToken,
		"/latest/meta-data/spot/instance-action":                    EndpointSpotAction,
		"/latest/meta-data/events/recommendations/rebalance":        EndpointRebalance,
		"/latest/meta-data/autoscaling/target-lifecycle-state":      EndpointTargetLifecycleState,
		"/latest/meta-data/events/maintenance/scheduled":            EndpointScheduledEvents,
		"/latest/meta-data/instance-id":                             EndpointIdentity,
		"/latest/meta-data/tags/instance/aws:autoscaling:groupName": EndpointIdentity,
		"/latest/meta-data/iam/security-credentials/":               EndpointOther,
		"/latest/user-data":                                         EndpointOther,
	} {
		if got := endpointLabel(p); got != want {
			t.Errorf("endpointLabel(%s) = %s, want %s", p, got, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second}
	for i, w := range want {
		if got := backoff(time.Second, i+1); got != w {
			t.Errorf("backoff(1s, %d) = %v, want %v", i+1, got, w)
		}
	}
	for range 1000 {
		if j := jitter(time.Second); j < 900*time.Millisecond || j > time.Second {
			t.Fatalf("jitter(1s) = %v, outside [0.9s, 1s]", j)
		}
	}
	if got := requestTimeout(time.Second); got != 500*time.Millisecond {
		t.Errorf("requestTimeout(1s) = %v", got)
	}
	if got := requestTimeout(time.Minute); got != 2*time.Second {
		t.Errorf("requestTimeout(1m) = %v", got)
	}
}

func FuzzParseInstanceAction(f *testing.F) {
	for _, s := range []string{`{"action":"terminate","time":"2026-11-25T10:02:00Z"}`, `{"action":"hibernate","time":"2026-11-25T10:02:00+01:00"}`, `{"action":"x"}`, `null`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		kind, at, err := ParseInstanceAction(body)
		if err != nil {
			return
		}
		if kind != instance.KindSpotTerminate && kind != instance.KindSpotStop && kind != instance.KindSpotHibernate {
			t.Fatalf("accepted kind %q", kind)
		}
		if at.IsZero() || at.Location() != time.UTC {
			t.Fatalf("accepted time %v", at)
		}
	})
}

func FuzzParseRebalance(f *testing.F) {
	for _, s := range []string{`{"noticeTime":"2026-11-25T10:00:00Z"}`, `{}`, `[`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if at, err := ParseRebalance(body); err == nil && at.IsZero() {
			t.Fatal("accepted a zero time")
		}
	})
}

func FuzzParseTargetLifecycleState(f *testing.F) {
	for _, s := range []string{"InService", "Warmed:Pending:Wait", "Terminated\n", "", "<html>"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := ParseTargetLifecycleState(body)
		if err != nil {
			return
		}
		if s == "" || len(s) > 100 || strings.ContainsAny(s, " \n\t<>{}\"") {
			t.Fatalf("accepted %q", s)
		}
	})
}

func FuzzParseScheduledEvents(f *testing.F) {
	for _, s := range []string{
		`[{"NotBefore":"21 Jan 2019 09:00:43 GMT","Code":"system-reboot","Description":"d","EventId":"e","NotAfter":"21 Jan 2019 09:17:23 GMT","State":"active"}]`,
		`[]`, `null`, `[{}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, err := ParseScheduledEvents(body)
		if err != nil {
			return
		}
		for _, ev := range evs {
			if ev.Code == "" || ev.EventID == "" || ev.NotBefore.IsZero() {
				t.Fatalf("accepted %+v", ev)
			}
		}
	})
}
