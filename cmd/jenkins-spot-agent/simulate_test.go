package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/simulate"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

func TestSimulateRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"simulate", "--launch-delay", "0s"},
		{"simulate", "--launch-delay", "-1s"},
		{"simulate", "--budget", "10s"},
		{"simulate", "--docker", "sometimes"},
	} {
		var out, errOut bytes.Buffer
		if code := Main(context.Background(), args, &out, &errOut); code != exitUsage {
			t.Errorf("%q: exit %d, want %d (usage); stderr %s", args, code, exitUsage, errOut.String())
		}
	}
}

// The closing table shows the replacement, the successor's announcement as the holder
// saw it, and with --compare both orders side by side with the goal judged for each.
func TestSimulateSummaryShowsBothOrders(t *testing.T) {
	since := time.Date(2026, 11, 29, 10, 0, 8, 150e6, time.UTC)
	at := &simulate.Summary{
		Order: simulate.OrderAtNotice, LaunchDelay: 8 * time.Second,
		ReplacementAsked: 150 * time.Millisecond, ReplacementUp: 8200 * time.Millisecond,
		Successor:      &status.Successor{InstanceID: "i-0bbbbbbbbbbbbbbb2", Since: since, Ready: true},
		SuccessorReady: 8300 * time.Millisecond, HandoverBegan: 27 * time.Second,
		SuccessorStart: 1500 * time.Millisecond, Unreachable: 2100 * time.Millisecond, LongestGap: 2 * time.Second,
		Margin: 12 * time.Second,
	}
	after := &simulate.Summary{
		Order: simulate.OrderAfterTermination, LaunchDelay: 8 * time.Second,
		ReplacementUp: 48 * time.Second, HandoverBegan: 26 * time.Second,
		SuccessorStart: 1600 * time.Millisecond, Unreachable: 24 * time.Second, LongestGap: 24 * time.Second,
		Margin: 12 * time.Second,
	}
	at.Compared = after
	var out bytes.Buffer
	printSummary(&env{stdout: &out}, at, 40*time.Second)
	got := out.String()
	for _, want := range []string{
		"replacement at the notice; the group launches it, which takes 8s",
		"replacement asked for (notice → DetachInstances)",
		"i-0bbbbbbbbbbbbbbb2 waiting since 10:00:08.150, ready: true; seen ready 8.3s after the notice",
		"successor's own start (container start → Jenkins answers)",
		"2.1s, longest gap 2s",
		"met (2.1s vs 1.5s + 2s)",
		"side by side (launch delay 8s)",
		"replacement after termination",
		"not met (24s vs 1.6s + 2s); the successor was not ready before the handover",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	if line := lineWith(got, "replacement asked for"); !strings.Contains(line, "never") {
		t.Errorf("the comparison's line %q does not say the order without request_replacement never asked", line)
	}
}

// lineWith is the last line of s that contains sub.
func lineWith(s, sub string) string {
	var found string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			found = l
		}
	}
	return found
}

// `simulate --compare` end to end, with the in-process Jenkins stand-in: both orders
// rehearsed, the table printed, exit 0.
func TestSimulateCompareCommand(t *testing.T) {
	testenv.SkipShort(t, "two whole failover rehearsals")
	var out, errOut bytes.Buffer
	args := []string{"simulate", "--compare", "--docker", "never", "--notice-after", "2s", "--budget", "25s", "--launch-delay", "4s"}
	code := Main(context.Background(), args, &out, &errOut)
	if code != exitOK {
		t.Fatalf("%q: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out.String(), errOut.String())
	}
	got := out.String()
	for _, want := range []string{
		"simulate: run 1 of 2: replacement at the notice",
		"simulate: run 2 of 2: replacement after termination",
		"[A] request_replacement ok",
		"simulate: termination time: EC2 reclaims A",
		"side by side (launch delay 4s)",
		"Jenkins unreachable, total (notice → successor answers)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
