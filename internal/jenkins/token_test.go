package jenkins_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins"
)

// rotatingSource hands out a stale token until it is asked to refresh, as a cached
// token does after the parameter or secret was rotated.
type rotatingSource struct {
	mu        sync.Mutex
	current   string
	next      string
	nextErr   error
	reads     int
	refreshes int
}

func (s *rotatingSource) get(_ context.Context, refresh bool) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	if refresh {
		s.refreshes++
		if s.nextErr != nil {
			return "", s.nextErr
		}
		s.current = s.next
	}
	return s.current, nil
}

func (s *rotatingSource) counts() (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads, s.refreshes
}

func count(list []string, want string) int {
	n := 0
	for _, s := range list {
		if s == want {
			n++
		}
	}
	return n
}

func TestTokenSourceRotatedTokenIsReadAgain(t *testing.T) {
	srv, url := startDouble(t, nil)
	src := &rotatingSource{current: "rotated-away", next: token}
	c := newClient(t, jenkins.Options{URL: url, User: "agent", TokenSource: src.get})

	if err := c.QuietDown(testContext(t), "spot interruption"); err != nil {
		t.Fatalf("QuietDown with a rotated token = %v, want success after one refresh", err)
	}
	if !srv.QuietingDown() {
		t.Fatal("Jenkins is not quieting down")
	}
	if n := count(requestsTo(srv), "POST /quietDown"); n != 2 {
		t.Errorf("POST /quietDown sent %d times, want 2 (refused, then replayed with its form)", n)
	}
	if srv.QuietDownReason() != "spot interruption" {
		t.Errorf("replayed POST lost its form: reason %q", srv.QuietDownReason())
	}
	if _, err := c.RunningBuilds(testContext(t)); err != nil {
		t.Fatalf("RunningBuilds after the refresh: %v", err)
	}
	if _, refreshes := src.counts(); refreshes != 1 {
		t.Errorf("%d refreshes, want 1", refreshes)
	}
}

func TestTokenSourceRefusedTwiceIsAnError(t *testing.T) {
	srv, url := startDouble(t, nil)
	src := &rotatingSource{current: "wrong-1", next: "wrong-2"}
	c := newClient(t, jenkins.Options{URL: url, User: "agent", TokenSource: src.get})
	_, err := c.RunningBuilds(testContext(t))
	if err == nil || !strings.Contains(err.Error(), "rejected the credentials") || !strings.Contains(err.Error(), "api_token_ssm_parameter") {
		t.Fatalf("RunningBuilds with a wrong token = %v, want a credentials error naming the token keys", err)
	}
	if n := len(requestsTo(srv)); n != 2 {
		t.Errorf("%d requests, want 2: one retry, never a loop", n)
	}
}

func TestTokenSourceFailingRefreshKeeps401(t *testing.T) {
	_, url := startDouble(t, nil)
	src := &rotatingSource{current: "wrong", nextErr: errors.New("ssm throttled")}
	c := newClient(t, jenkins.Options{URL: url, User: "agent", TokenSource: src.get})
	err := c.QuietDown(testContext(t), "x")
	if err == nil || !strings.Contains(err.Error(), "rejected the credentials") {
		t.Fatalf("QuietDown = %v, want the 401 reported", err)
	}
}

func TestTokenSourceUnreadable(t *testing.T) {
	_, url := startDouble(t, nil)
	c := newClient(t, jenkins.Options{URL: url, User: "agent", TokenSource: func(context.Context, bool) (string, error) {
		return "", errors.New("parameter not found")
	}})
	if _, err := c.RunningBuilds(testContext(t)); err == nil || !strings.Contains(err.Error(), "jenkins api token: parameter not found") {
		t.Fatalf("RunningBuilds = %v, want the source's error", err)
	}
	// The readiness probe carries no credentials and does not read the token.
	if ready, err := c.Ready(testContext(t)); err != nil || !ready {
		t.Fatalf("Ready = %v, %v", ready, err)
	}
}

func TestTokenSourceNeedsUser(t *testing.T) {
	_, err := jenkins.New(jenkins.Options{URL: "http://127.0.0.1:8080", TokenSource: func(context.Context, bool) (string, error) { return "t", nil }})
	if err == nil || !strings.Contains(err.Error(), "jenkins.user") {
		t.Fatalf("New without a user = %v", err)
	}
}
