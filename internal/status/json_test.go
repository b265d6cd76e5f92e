package status

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

var snakeKey = regexp.MustCompile(`^[a-z0-9_]+$`)

// zeroTime is how encoding/json writes time.Time{}.
var zeroTime = func() string {
	b, _ := json.Marshal(time.Time{})
	return strings.Trim(string(b), `"`)
}()

// checkShape walks a decoded JSON value: every key snake_case, no zero time. The keys
// of a build's parameters are the job's own names, not the agent's, so they are skipped.
func checkShape(t *testing.T, path string, v any) {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if !snakeKey.MatchString(k) {
				t.Errorf("%s.%s: key is not snake_case", path, k)
			}
			if k == "parameters" {
				continue
			}
			checkShape(t, path+"."+k, child)
		}
	case []any:
		for i, child := range v {
			checkShape(t, fmt.Sprintf("%s[%d]", path, i), child)
		}
	case string:
		if v == zeroTime {
			t.Errorf("%s: zero time %s", path, v)
		}
	}
}

func roundTrip(t *testing.T, st Snapshot) map[string]any {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var tree map[string]any
	if err := json.Unmarshal(b, &tree); err != nil {
		t.Fatal(err)
	}
	checkShape(t, "", tree)
	var back Snapshot
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, st) {
		t.Errorf("round trip changed the snapshot:\n got %+v\nwant %+v\njson %s", back, st, b)
	}
	return tree
}

// item is the i-th object of the list under key, or nil.
func item(tree map[string]any, key string, i int) map[string]any {
	list, _ := tree[key].([]any)
	if i >= len(list) {
		return nil
	}
	m, _ := list[i].(map[string]any)
	return m
}

// TestSnapshotJSONServing: a serving agent holding the lease with one notice seen, no
// successor and no plan yet prints snake_case keys, no zero time, and reads back equal.
func TestSnapshotJSONServing(t *testing.T) {
	at := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	st := Snapshot{
		Phase:      PhaseServing,
		InstanceID: "i-0123456789abcdef0",
		Lease:      LeaseState{Held: true, Holder: "i-0123456789abcdef0", Epoch: 7, Expires: at.Add(30 * time.Second)},
		Watch:      WatchHealth{LastSuccess: at.Add(-time.Second), Polls: 1200},
		Notices: []instance.Notice{{
			Kind: instance.KindRebalance, Seen: at.Add(-time.Minute), Detail: "rebalance recommendation",
			InstanceType: "m7g.large", AvailabilityZone: "us-east-1a",
		}},
		Running: []string{"http://127.0.0.1:8080/job/nightly/7/"},
		Steps: []Event{
			{Kind: EventStep, At: at.Add(-time.Hour), Step: StepMount, Duration: 1500 * time.Millisecond, Done: true},
			{Kind: EventStep, At: at.Add(-time.Hour), Step: StepJenkinsReady, Duration: 42 * time.Second, Done: true},
		},
		Since:   at.Add(-59 * time.Minute),
		Pending: "rebalance: waits for a successor",
	}
	tree := roundTrip(t, st)
	if tree["phase"] != "serving" {
		t.Errorf("phase = %v, want the string serving", tree["phase"])
	}
	if n := item(tree, "notices", 0); n["kind"] != "rebalance" || n["availability_zone"] != "us-east-1a" {
		t.Errorf("notice = %v", n)
	}
	if s := item(tree, "steps", 1); s["step"] != "jenkins_ready" || s["duration_ns"] != float64(42*time.Second) {
		t.Errorf("step = %v", s)
	}
	lease, _ := tree["lease"].(map[string]any)
	for _, absent := range []string{"successor", "clock_skew_ns"} {
		if _, ok := lease[absent]; ok {
			t.Errorf("lease.%s present, want it left out: %v", absent, lease)
		}
	}
	for _, absent := range []string{"deadline", "margin_ns", "aborted", "replaced"} {
		if _, ok := tree[absent]; ok {
			t.Errorf("%s present, want it left out", absent)
		}
	}
}

// TestSnapshotJSONEverything: every optional part set, down to an event's plan report.
func TestSnapshotJSONEverything(t *testing.T) {
	at := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	n := instance.Notice{
		Kind: instance.KindScheduledEvent, Time: at.Add(2 * time.Minute), Seen: at, Detail: "instance-stop",
		EventID: "instance-event-0d59937288b749b32", Code: "instance-stop", InstanceType: "m7g.large", AvailabilityZone: "us-east-1a",
	}
	sc := &Successor{InstanceID: "i-0fedcba9876543210", Since: at, Updated: at.Add(5 * time.Second), Ready: true}
	st := Snapshot{
		Phase: PhaseStopped, InstanceID: "i-0123456789abcdef0",
		Lease:    LeaseState{Holder: "i-0fedcba9876543210", Epoch: 8, Expires: at.Add(time.Minute), Successor: sc, ClockSkew: -250 * time.Millisecond},
		Watch:    WatchHealth{LastSuccess: at, ConsecutiveFails: 2, LastError: "timeout", Polls: 9},
		Notices:  []instance.Notice{n},
		Deadline: n.Time, Running: []string{}, Since: at.Add(time.Minute), Restarts: 1, Margin: 31 * time.Second,
		BuildListFailures: 3,
		Aborted:           []AbortedBuild{{Job: "folder/nightly", Number: 7, URL: "http://127.0.0.1:8080/job/folder/job/nightly/7/", Parameters: map[string]string{"GIT BRANCH": "main"}, Requeued: true}},
		Replaced:          "handed over after instance-stop",
		Steps: []Event{
			{Kind: EventNotice, At: at, Notice: &n},
			{Kind: EventPhase, At: at, Phase: PhaseDraining, Message: "draining"},
			{Kind: EventStep, At: at, Step: StepDrain, Duration: time.Second, Err: "2 builds still running", Done: true},
			{Kind: EventHandover, At: at, Successor: sc},
			{Kind: EventPlanDone, At: at, Report: &PlanReport{
				Notice: n, Deadline: n.Time, Margin: 31 * time.Second,
				Aborted: []string{"folder/nightly #7"}, Failed: []string{"drain: 2 builds still running"}, HandedOverTo: sc.InstanceID,
			}},
		},
	}
	roundTrip(t, st)
}

// TestSnapshotJSONEmpty: an agent that knows nothing yet prints only its counters.
func TestSnapshotJSONEmpty(t *testing.T) {
	b, err := json.Marshal(Snapshot{})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"phase":"","lease":{"held":false,"epoch":0},"watch":{"consecutive_fails":0,"polls":0},"restarts":0,"build_list_failures":0}`
	if string(b) != want {
		t.Errorf("empty snapshot = %s\nwant %s", b, want)
	}
}

// TestAbortedBuildReadsCapitalisedKeys: the aborted-builds note on the home may have
// been written by an agent from before the snake_case keys; it still reads.
func TestAbortedBuildReadsCapitalisedKeys(t *testing.T) {
	var b AbortedBuild
	old := `{"Job":"folder/nightly","Number":7,"URL":"http://127.0.0.1:8080/job/folder/job/nightly/7/","Parameters":{"X":"1"},"Requeued":false}`
	if err := json.Unmarshal([]byte(old), &b); err != nil {
		t.Fatal(err)
	}
	want := AbortedBuild{Job: "folder/nightly", Number: 7, URL: "http://127.0.0.1:8080/job/folder/job/nightly/7/", Parameters: map[string]string{"X": "1"}}
	if !reflect.DeepEqual(b, want) {
		t.Errorf("got %+v, want %+v", b, want)
	}
}
