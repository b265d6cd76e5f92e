package imdstest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds/imdstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

var id = instance.Identity{InstanceID: "i-0abc1234def567890", AvailabilityZone: "eu-west-1b", AZID: "euw1-az2", Region: "eu-west-1", Market: "spot"}

func do(t *testing.T, method, url string, header map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

func token(t *testing.T, base string) string {
	t.Helper()
	status, h, body := do(t, http.MethodPut, base+"/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
	if status != http.StatusOK || h.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") != "21600" || body == "" {
		t.Fatalf("token: %d %v %q", status, h, body)
	}
	return body
}

func TestServerBehavesLikeIMDSv2(t *testing.T) {
	srv := imdstest.NewServer(id)
	defer srv.Close()
	base := srv.URL()
	ttl := "X-aws-ec2-metadata-token-ttl-seconds"
	for name, tc := range map[string]struct {
		method string
		header map[string]string
		want   int
	}{
		"no ttl":          {http.MethodPut, nil, http.StatusBadRequest},
		"ttl zero":        {http.MethodPut, map[string]string{ttl: "0"}, http.StatusBadRequest},
		"ttl too long":    {http.MethodPut, map[string]string{ttl: "21601"}, http.StatusBadRequest},
		"forwarded":       {http.MethodPut, map[string]string{ttl: "60", "X-Forwarded-For": "10.0.0.1"}, http.StatusForbidden},
		"GET on token":    {http.MethodGet, map[string]string{ttl: "60"}, http.StatusMethodNotAllowed},
		"good, short ttl": {http.MethodPut, map[string]string{ttl: "1"}, http.StatusOK},
	} {
		if got, _, _ := do(t, tc.method, base+"/latest/api/token", tc.header); got != tc.want {
			t.Errorf("%s: status %d, want %d", name, got, tc.want)
		}
	}

	item := base + "/latest/meta-data/instance-id"
	if got, _, _ := do(t, http.MethodGet, item, nil); got != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401 (no IMDSv1)", got)
	}
	if got, _, _ := do(t, http.MethodGet, item, map[string]string{"X-aws-ec2-metadata-token": "forged"}); got != http.StatusUnauthorized {
		t.Errorf("unknown token: %d, want 401", got)
	}
	tok := token(t, base)
	auth := map[string]string{"X-aws-ec2-metadata-token": tok}
	if got, _, body := do(t, http.MethodGet, item, auth); got != http.StatusOK || body != id.InstanceID {
		t.Errorf("instance-id: %d %q", got, body)
	}
	for _, p := range []string{
		"spot/instance-action", "events/recommendations/rebalance", "autoscaling/target-lifecycle-state",
		"events/maintenance/scheduled", "tags/instance/aws:autoscaling:groupName", "no/such/item",
	} {
		if got, _, _ := do(t, http.MethodGet, base+"/latest/meta-data/"+p, auth); got != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, got)
		}
	}

	// Expiry: a one-second token stops working.
	_, _, short := do(t, http.MethodPut, base+"/latest/api/token", map[string]string{ttl: "1"})
	time.Sleep(1100 * time.Millisecond)
	if got, _, _ := do(t, http.MethodGet, item, map[string]string{"X-aws-ec2-metadata-token": short}); got != http.StatusUnauthorized {
		t.Errorf("expired token: %d, want 401", got)
	}

	srv.RevokeTokens()
	if got, _, _ := do(t, http.MethodGet, item, auth); got != http.StatusUnauthorized {
		t.Errorf("revoked token: %d, want 401", got)
	}
	srv.SetDisabled(true)
	if got, _, _ := do(t, http.MethodPut, base+"/latest/api/token", map[string]string{ttl: "60"}); got != http.StatusForbidden {
		t.Errorf("disabled: %d, want 403", got)
	}
	if srv.Requests() < 10 {
		t.Errorf("Requests = %d", srv.Requests())
	}
}

func TestServerNoticesParse(t *testing.T) {
	srv := imdstest.NewServer(id)
	defer srv.Close()
	at := time.Date(2027, 5, 6, 7, 8, 9, 0, time.UTC)
	srv.SetSpotAction("hibernate", at)
	srv.SetRebalance(at)
	srv.SetTargetLifecycleState("Warmed:Running")
	srv.SetScheduledEvents([]imds.ScheduledEvent{{Code: "system-reboot", EventID: "instance-event-1", State: "active", NotBefore: at, NotAfter: at.Add(time.Hour)}})
	auth := map[string]string{"X-aws-ec2-metadata-token": token(t, srv.URL())}
	get := func(p string) []byte {
		status, _, body := do(t, http.MethodGet, srv.URL()+"/latest/meta-data/"+p, auth)
		if status != http.StatusOK {
			t.Fatalf("%s: %d", p, status)
		}
		return []byte(body)
	}
	if k, got, err := imds.ParseInstanceAction(get("spot/instance-action")); err != nil || k != instance.KindSpotHibernate || !got.Equal(at) {
		t.Errorf("instance-action: %v %v %v", k, got, err)
	}
	if got, err := imds.ParseRebalance(get("events/recommendations/rebalance")); err != nil || !got.Equal(at) {
		t.Errorf("rebalance: %v %v", got, err)
	}
	if got, err := imds.ParseTargetLifecycleState(get("autoscaling/target-lifecycle-state")); err != nil || got != "Warmed:Running" {
		t.Errorf("lifecycle: %v %v", got, err)
	}
	raw := get("events/maintenance/scheduled")
	var generic []map[string]string
	if err := json.Unmarshal(raw, &generic); err != nil || generic[0]["NotBefore"] != "6 May 2027 07:08:09 GMT" {
		t.Errorf("scheduled wire format: %s", raw)
	}
	evs, err := imds.ParseScheduledEvents(raw)
	if err != nil || len(evs) != 1 || !evs[0].NotAfter.Equal(at.Add(time.Hour)) {
		t.Errorf("scheduled: %+v %v", evs, err)
	}
	srv.Clear()
	if status, _, _ := do(t, http.MethodGet, srv.URL()+"/latest/meta-data/spot/instance-action", auth); status != http.StatusNotFound {
		t.Errorf("after Clear: %d", status)
	}
}

func TestFaultProxy(t *testing.T) {
	srv := imdstest.NewServer(id)
	defer srv.Close()
	p := imdstest.NewFaultProxy(srv.URL())
	defer p.Close()
	// Token requests pass through without X-Forwarded-For, which IMDS would refuse.
	auth := map[string]string{"X-aws-ec2-metadata-token": token(t, p.URL())}
	item := p.URL() + "/latest/meta-data/instance-id"

	p.Schedule("/latest/meta-data/", imdstest.Fault{Status: http.StatusTooManyRequests}, imdstest.Fault{}, imdstest.Fault{Body: []byte("garbage")})
	p.SetFault("/latest/meta-data/instance-id", imdstest.Fault{Status: http.StatusInternalServerError})
	want := []struct {
		status int
		body   string
	}{{429, ""}, {200, id.InstanceID}, {200, "garbage"}, {500, ""}}
	for i, w := range want {
		status, _, body := do(t, http.MethodGet, item, auth)
		if status != w.status || (w.body != "" && body != w.body) {
			t.Errorf("request %d: %d %q, want %d %q", i, status, body, w.status, w.body)
		}
	}
	if p.Pending() != 0 || p.Injected() != 3 {
		t.Errorf("Pending = %d, Injected = %d", p.Pending(), p.Injected())
	}
	p.ClearFaults()

	p.Schedule("/latest/meta-data/", imdstest.Fault{Drop: true})
	req, _ := http.NewRequest(http.MethodGet, item, nil)
	req.Header.Set("X-aws-ec2-metadata-token", auth["X-aws-ec2-metadata-token"])
	// A fresh transport, so the drop is not hidden by a retry on another connection.
	if resp, err := (&http.Transport{DisableKeepAlives: true}).RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Errorf("dropped connection answered %d", resp.StatusCode)
	}

	p.Schedule("/latest/meta-data/", imdstest.Fault{Delay: time.Minute})
	client := &http.Client{Timeout: 100 * time.Millisecond}
	if resp, err := client.Do(req); err == nil || !strings.Contains(err.Error(), "Timeout") {
		if resp != nil {
			resp.Body.Close()
		}
		t.Errorf("slow answer: err = %v", err)
	}
	if got := p.Requests("/latest/meta-data/"); got != 6 {
		t.Errorf("Requests = %d, want 6", got)
	}
}

// TestFaultProxyChances: random faults hit about their share of requests, and the same
// seed gives the same sequence.
func TestFaultProxyChances(t *testing.T) {
	srv := imdstest.NewServer(id)
	defer srv.Close()
	run := func(seed uint64) []int {
		p := imdstest.NewFaultProxy(srv.URL())
		defer p.Close()
		p.SetChances("/latest/meta-data/", seed,
			imdstest.Chance{Rate: 0.2, Fault: imdstest.Fault{Status: http.StatusInternalServerError}},
			imdstest.Chance{Rate: 0.1, Fault: imdstest.Fault{Status: http.StatusTooManyRequests}})
		auth := map[string]string{"X-aws-ec2-metadata-token": token(t, p.URL())}
		var out []int
		for range 400 {
			status, _, _ := do(t, http.MethodGet, p.URL()+"/latest/meta-data/instance-id", auth)
			out = append(out, status)
		}
		return out
	}
	a, b := run(7), run(7)
	count := map[int]int{}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("request %d: %d then %d with the same seed", i, a[i], b[i])
		}
		count[a[i]]++
	}
	// 400 draws: the shares land well inside these bounds for any fair generator.
	if n := count[http.StatusInternalServerError]; n < 50 || n > 115 {
		t.Errorf("%d of 400 answered 500, want about 80", n)
	}
	if n := count[http.StatusTooManyRequests]; n < 20 || n > 65 {
		t.Errorf("%d of 400 answered 429, want about 40", n)
	}
	if n := count[http.StatusOK]; n < 230 {
		t.Errorf("%d of 400 passed, want about 280", n)
	}
	if c := run(8); slices.Equal(c, a) {
		t.Error("another seed gave the same sequence")
	}
}
