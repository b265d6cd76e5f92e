package status

import (
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

func TestEventLine(t *testing.T) {
	at := time.Date(2026, 3, 4, 10, 2, 0, 0, time.UTC)
	for _, tc := range []struct {
		ev   Event
		want string
	}{
		{
			Event{Kind: EventNotice, Notice: &instance.Notice{Kind: instance.KindSpotTerminate, Time: at, Detail: "terminate"}},
			"notice        spot_terminate terminate, for 10:02:00 UTC",
		},
		{Event{Kind: EventNotice, Notice: &instance.Notice{Kind: instance.KindRebalance}}, "notice        rebalance"},
		{Event{Kind: EventPhase, Phase: PhaseDraining, Message: "draining: spot_terminate"}, "phase         draining: spot_terminate"},
		{Event{Kind: EventPhase, Phase: PhaseServing}, "phase         serving"},
		{Event{Kind: EventStep, Step: StepDrain}, "drain         started"},
		{Event{Kind: EventStep, Step: StepDrain, Message: "2 builds running"}, "drain         2 builds running"},
		{Event{Kind: EventStep, Step: StepDeregister, Done: true, Duration: 1234567 * time.Microsecond}, "deregister    ok (1.235s)"},
		{
			Event{Kind: EventStep, Step: StepQuietDown, Done: true, Err: "401 Unauthorized", Duration: 300 * time.Millisecond},
			"quiet_down    FAILED: 401 Unauthorized (300ms)",
		},
		{Event{Kind: EventHandover, Message: "released to i-0b"}, "handover      released to i-0b"},
		{Event{Message: "just words"}, "just words"},
	} {
		if got := tc.ev.Line(); got != tc.want {
			t.Errorf("Line() = %q, want %q", got, tc.want)
		}
	}
}

func TestOrNone(t *testing.T) {
	if OrNone("") != "none" || OrNone("x") != "x" {
		t.Errorf(`OrNone("") = %q, OrNone("x") = %q`, OrNone(""), OrNone("x"))
	}
}
