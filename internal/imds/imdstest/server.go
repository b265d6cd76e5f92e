// Package imdstest provides an in-process IMDSv2 emulator and a fault-injecting proxy
// for tests and for the simulate command, in the spirit of net/http/httptest.
//
// The emulator answers like EC2's metadata service does: sessions only (no IMDSv1),
// the token TTL echoed, X-Forwarded-For refused on token requests, 401 for a missing,
// unknown or expired token, 404 for an absent item.
package imdstest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

const (
	tokenPath      = "/latest/api/token"
	metadataPrefix = "/latest/meta-data/"
	ttlHeader      = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	tokenHeader    = "X-Aws-Ec2-Metadata-Token"
	maxTokenTTL    = 21600
)

// Server is an IMDSv2 emulator listening on 127.0.0.1. Its setters are safe to call
// while clients poll it.
type Server struct {
	srv *http.Server
	url string

	mu        sync.Mutex
	id        instance.Identity
	tokens    map[string]time.Time // token -> expiry
	action    string
	actionAt  time.Time
	rebalance time.Time
	lifecycle string
	events    []imds.ScheduledEvent
	hasEvents bool
	disabled  bool
	requests  int
}

// NewServer starts an emulator that serves id. It panics if it cannot listen on
// loopback, like httptest.NewServer.
func NewServer(id instance.Identity) *Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("imdstest: listen on 127.0.0.1: " + err.Error())
	}
	s := &Server{id: id, tokens: map[string]time.Time{}, url: "http://" + ln.Addr().String()}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(ln) //nolint:errcheck // Serve returns ErrServerClosed on Close.
	return s
}

// URL is the base URL to give the client as its endpoint.
func (s *Server) URL() string { return s.url }

// Close stops the server and drops open connections.
func (s *Server) Close() { s.srv.Close() }

// SetSpotAction makes spot/instance-action answer {"action":action,"time":t}; an empty
// action makes it 404 again.
func (s *Server) SetSpotAction(action string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.action, s.actionAt = action, t
}

// SetRebalance makes events/recommendations/rebalance answer with noticeTime t; the
// zero time makes it 404 again.
func (s *Server) SetRebalance(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rebalance = t
}

// SetTargetLifecycleState makes autoscaling/target-lifecycle-state answer st; empty
// makes it 404, as on an instance that never changed state.
func (s *Server) SetTargetLifecycleState(st string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifecycle = st
}

// SetScheduledEvents makes events/maintenance/scheduled answer with evs (an empty,
// non-nil slice answers []); nil makes it 404.
func (s *Server) SetScheduledEvents(evs []imds.ScheduledEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append([]imds.ScheduledEvent(nil), evs...)
	s.hasEvents = evs != nil
}

// SetDisabled makes every request answer 403, like an instance whose metadata
// endpoint is disabled (HttpEndpoint=disabled).
func (s *Server) SetDisabled(disabled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.disabled = disabled
}

// RevokeTokens invalidates every token handed out so far, as their expiry would.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// Clear removes every notice: all interruption items answer 404 again.
func (s *Server) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.action, s.actionAt, s.rebalance, s.lifecycle = "", time.Time{}, time.Time{}, ""
	s.events, s.hasEvents = nil, false
}

// Requests is the number of requests served so far, token requests included.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// answer is a response decided under the lock and written after it, so that a slow
// reader never holds up the setters.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	a := s.decide(r)
	for k, v := range a.header {
		w.Header()[k] = v
	}
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "text/plain")
	}
	w.WriteHeader(a.status)
	w.Write(a.body) //nolint:errcheck // the client went away; nothing to do.
}

func plain(status int) answer {
	return answer{status: status, body: []byte(http.StatusText(status) + "\n")}
}

func (s *Server) decide(r *http.Request) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if s.disabled {
		return plain(http.StatusForbidden)
	}
	if r.URL.Path == tokenPath {
		return s.issueToken(r)
	}
	item, ok := strings.CutPrefix(r.URL.Path, metadataPrefix)
	if !ok {
		return plain(http.StatusNotFound)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		a := plain(http.StatusMethodNotAllowed)
		a.header = http.Header{"Allow": {"GET, HEAD"}}
		return a
	}
	exp, known := s.tokens[r.Header.Get(tokenHeader)]
	if !known || time.Now().After(exp) {
		return plain(http.StatusUnauthorized)
	}
	body, found := s.item(item)
	if !found {
		return plain(http.StatusNotFound)
	}
	return answer{status: http.StatusOK, body: body}
}

func (s *Server) issueToken(r *http.Request) answer {
	if r.Method != http.MethodPut {
		a := plain(http.StatusMethodNotAllowed)
		a.header = http.Header{"Allow": {"PUT"}}
		return a
	}
	// IMDS refuses token requests that went through a proxy, so that a misconfigured
	// forwarder cannot hand tokens out.
	if r.Header.Get("X-Forwarded-For") != "" {
		return plain(http.StatusForbidden)
	}
	ttl, err := strconv.Atoi(r.Header.Get(ttlHeader))
	if err != nil || ttl < 1 || ttl > maxTokenTTL {
		return plain(http.StatusBadRequest)
	}
	now := time.Now()
	for t, exp := range s.tokens { // forget expired tokens so a long run stays small
		if now.After(exp) {
			delete(s.tokens, t)
		}
	}
	var raw [32]byte
	rand.Read(raw[:])
	tok := hex.EncodeToString(raw[:])
	s.tokens[tok] = now.Add(time.Duration(ttl) * time.Second)
	return answer{status: http.StatusOK, header: http.Header{ttlHeader: {strconv.Itoa(ttl)}}, body: []byte(tok)}
}

// item answers one metadata item; s.mu is held.
func (s *Server) item(item string) ([]byte, bool) {
	text := func(v string) ([]byte, bool) { return []byte(v), v != "" }
	switch item {
	case "instance-id":
		return text(s.id.InstanceID)
	case "instance-type":
		return text(s.id.InstanceType)
	case "placement/availability-zone":
		return text(s.id.AvailabilityZone)
	case "placement/availability-zone-id":
		return text(s.id.AZID)
	case "placement/region":
		return text(s.id.Region)
	case "instance-life-cycle":
		return text(s.id.Market)
	case "tags/instance/aws:autoscaling:groupName":
		return text(s.id.AutoScalingGroup)
	case "spot/instance-action":
		if s.action == "" {
			return nil, false
		}
		return mustJSON(map[string]string{"action": s.action, "time": s.actionAt.UTC().Format(time.RFC3339)}), true
	case "events/recommendations/rebalance":
		if s.rebalance.IsZero() {
			return nil, false
		}
		return mustJSON(map[string]string{"noticeTime": s.rebalance.UTC().Format(time.RFC3339)}), true
	case "autoscaling/target-lifecycle-state":
		return text(s.lifecycle)
	case "events/maintenance/scheduled":
		if !s.hasEvents {
			return nil, false
		}
		out := make([]map[string]string, 0, len(s.events))
		for _, ev := range s.events {
			m := map[string]string{
				"Code": ev.Code, "Description": ev.Description, "EventId": ev.EventID,
				"State": ev.State, "NotBefore": imds.FormatScheduledTime(ev.NotBefore),
			}
			if !ev.NotAfter.IsZero() {
				m["NotAfter"] = imds.FormatScheduledTime(ev.NotAfter)
			}
			out = append(out, m)
		}
		return mustJSON(out), true
	}
	return nil, false
}

func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "\t")
	if err != nil {
		panic("imdstest: " + err.Error())
	}
	return b
}
