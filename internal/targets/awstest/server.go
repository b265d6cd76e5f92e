// Package awstest is an in-process double of the Elastic Load Balancing v2, Auto Scaling
// and EC2 query APIs that the targets package calls, in the way net/http/httptest
// doubles a server: one loopback HTTP server that parses the form, checks the SigV4
// signature against known test credentials, keeps target groups, Auto Scaling groups
// and instances as state, and answers with the services' own XML and error shapes.
// Faults (throttling, missing groups, denied actions, slowness) are injected per action,
// and every request is recorded with the time it arrived.
//
// The double moves on its own like the services do: deregistered targets drain and are
// gone after the deregistration delay, a detached instance is deregistered by its group
// and a replacement is launched, registered and health-checked, lifecycle actions become
// visible to CompleteLifecycleAction a little after the group shows Terminating:Wait and
// time out without heartbeats. What depends on time follows the server's clock (SetClock)
// and is brought up to date at every request and every state read; launches also run on
// a real timer, so that OnLaunch fires on time without a request.
package awstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Service versions, as sent in the form's Version field.
const (
	VersionELBv2       = "2015-12-01"
	VersionAutoScaling = "2011-01-01"
	VersionEC2         = "2016-11-15"
)

// Signing names of the services, as found in the SigV4 credential scope.
const (
	ServiceELBv2       = "elasticloadbalancing"
	ServiceAutoScaling = "autoscaling"
	ServiceEC2         = "ec2"
)

// DefaultPort is the port of every target group in the double: a target added or
// deregistered without a port is taken to be on it, as AWS takes the group's port.
const DefaultPort int32 = 8080

// DefaultDeregistrationDelay is the target groups' deregistration_delay.timeout_seconds
// default on AWS: a deregistered target stays draining this long, then is gone.
const DefaultDeregistrationDelay = 300 * time.Second

// DefaultHeartbeatTimeout is a lifecycle hook's HeartbeatTimeout default on AWS.
const DefaultHeartbeatTimeout = time.Hour

// maxGlobalTimeout caps the whole wait of a lifecycle action, heartbeats or not, on AWS;
// the other cap is 100 heartbeat timeouts.
const maxGlobalTimeout = 48 * time.Hour

// maxBody bounds a request body; query requests of these APIs are a few hundred bytes.
const maxBody = 1 << 20

// Target health states of ELBv2.
const (
	StateInitial   = "initial"
	StateHealthy   = "healthy"
	StateUnhealthy = "unhealthy"
	StateDraining  = "draining"
	StateUnused    = "unused"
)

// Target is one registered target of a target group.
type Target struct {
	ID    string
	Port  int32  // 0 means DefaultPort
	State string // healthy when empty
}

// Call is one request the server received, recorded before it was answered.
type Call struct {
	At      time.Time  // when the request arrived, before its body was read
	Service string     // signing name: elasticloadbalancing, autoscaling or ec2
	Action  string     // the form's Action
	Region  string     // from the credential scope
	Params  url.Values // the whole form, Action and Version included
	Code    string     // the error code answered; empty when the call succeeded
}

// Server is the double. Its methods are safe for concurrent use.
type Server struct {
	ts   *httptest.Server
	done chan struct{}

	mu           sync.Mutex
	now          func() time.Time
	drainDelay   time.Duration
	launchDelay  time.Duration // DetachInstances to the replacement's InService
	detachLag    time.Duration // DetachInstances to the group's DeregisterTargets
	propagation  time.Duration // Terminating:Wait to the action being completable
	targetGroups map[string]*targetGroup
	groups       map[string]*autoScalingGroup
	instances    map[string]string // id → EC2 state name
	failures     map[string][]string
	denied       map[string]bool
	delays       map[string]time.Duration
	holds        map[string]chan struct{}
	calls        []Call
	events       []event  // what the services do later on their own, in no order
	notify       []func() // callbacks due, run once the lock is released
	timers       []*time.Timer
	eventTime    time.Time // while an event runs: the time it was due
	onLaunch     func(instanceID string)
	health       HealthCheck
	healthStop   chan struct{}
	closed       bool
	closeOnce    sync.Once
}

// event is something a service does by itself at a time: the group deregistering a
// detached instance, a replacement going InService.
type event struct {
	at  time.Time
	run func()
}

type targetGroup struct {
	arn     string
	targets map[targetKey]*targetEntry
}

type targetKey struct {
	id   string
	port int32
}

type targetEntry struct {
	state       string
	drainingEnd time.Time // when a draining target is gone
	passed      int       // health checks passed in a row
	failed      int       // health checks failed in a row
}

type autoScalingGroup struct {
	name      string
	instances []string
	states    map[string]string // instance id → lifecycle state other than the derived ones
	min, max  int
	desired   int
	tgARNs    []string
	hooks     []*lifecycleHook
	pending   map[string]*lifecycleAction // instance id → its pending action
	results   map[string]string           // instance id → the result it was completed with
	timedOut  map[string]bool             // instance id → its action ran out of heartbeats
}

type lifecycleHook struct {
	name             string
	transition       string
	heartbeatTimeout time.Duration
	defaultResult    string
}

// globalTimeout is how long an action of the hook may wait at most, heartbeats or not.
func (h *lifecycleHook) globalTimeout() time.Duration {
	return min(100*h.heartbeatTimeout, maxGlobalTimeout)
}

type lifecycleAction struct {
	hook      *lifecycleHook
	token     string
	visibleAt time.Time // CompleteLifecycleAction and heartbeats find it from then on
	deadline  time.Time // the heartbeat timeout ends it here unless a heartbeat comes
	endAt     time.Time // the global timeout ends it here whatever comes
}

// NewServer starts the double on 127.0.0.1 at a random port. Close it when done.
func NewServer() *Server {
	s := &Server{
		done:         make(chan struct{}),
		now:          time.Now,
		drainDelay:   DefaultDeregistrationDelay,
		healthStop:   make(chan struct{}),
		targetGroups: map[string]*targetGroup{},
		groups:       map[string]*autoScalingGroup{},
		instances:    map[string]string{},
		failures:     map[string][]string{},
		denied:       map[string]bool{},
		delays:       map[string]time.Duration{},
		holds:        map[string]chan struct{}{},
	}
	s.ts = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	return s
}

// URL is the base URL to give the agent's calls as their endpoint.
func (s *Server) URL() string { return s.ts.URL }

// Close stops the server, its timers and its health checks; requests held by Delay or
// Hold are answered ServiceUnavailable at once, and no OnLaunch callback starts after it.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.mu.Lock()
		s.closed = true
		for _, t := range s.timers {
			t.Stop()
		}
		s.mu.Unlock()
	})
	s.ts.Close()
}

// lock takes the server's lock and brings the state up to date with the clock. The
// returned unlock releases it and then starts the callbacks that came due.
func (s *Server) lock() (unlock func()) {
	s.mu.Lock()
	s.advanceLocked()
	return func() {
		fns := s.notify
		s.notify = nil
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return
		}
		for _, f := range fns {
			go f()
		}
	}
}

// SetClock replaces the clock that draining, detaching, lifecycle propagation and
// heartbeat timeouts follow (time.Now by default), so that a test can move time on.
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// scheduleLocked runs f after d on the server's clock: now when d is not positive, else
// at the first request or state read from then on, and at the latest when a real timer
// of d fires.
func (s *Server) scheduleLocked(d time.Duration, f func()) {
	if d <= 0 {
		f()
		return
	}
	s.events = append(s.events, event{at: s.nowLocked().Add(d), run: f})
	if s.closed {
		return
	}
	s.timers = append(s.timers, time.AfterFunc(d, func() { s.lock()() }))
}

// advanceLocked runs the events that are due, earliest first and each at its own time
// (an event may schedule more), and ends the lifecycle actions whose time ran out.
func (s *Server) advanceLocked() {
	for {
		now := s.now()
		next := -1
		for i, e := range s.events {
			if !e.at.After(now) && (next < 0 || e.at.Before(s.events[next].at)) {
				next = i
			}
		}
		if next < 0 {
			break
		}
		e := s.events[next]
		s.events = slices.Delete(s.events, next, next+1)
		s.eventTime = e.at
		e.run()
		s.eventTime = time.Time{}
	}
	for _, g := range s.groups {
		s.expireLocked(g)
	}
}

// nowLocked is the server's time: the clock's, or while an event runs, the event's.
func (s *Server) nowLocked() time.Time {
	if !s.eventTime.IsZero() {
		return s.eventTime
	}
	return s.now()
}

// Credentials returns static credentials the server accepts.
func (s *Server) Credentials() aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: AccessKeyID, SecretAccessKey: SecretAccessKey, Source: "awstest"}, nil
	})
}

// AddTargetGroup creates (or extends) a target group. Targets' instances become running
// EC2 instances unless the server knows them already.
func (s *Server) AddTargetGroup(arn string, targets ...Target) {
	defer s.lock()()
	tg := s.targetGroupLocked(arn)
	for _, t := range targets {
		state := t.State
		if state == "" {
			state = StateHealthy
		}
		tg.targets[targetKey{t.ID, portOrDefault(t.Port)}] = &targetEntry{state: state}
		s.knowInstanceLocked(t.ID)
	}
}

// AddAutoScalingGroup creates (or replaces) a group with the instances, InService,
// attached target groups and a termination lifecycle hook (none when hook is empty;
// DefaultHeartbeatTimeout and CONTINUE, see SetLifecycleHook). Its desired capacity is
// the number of instances, its minimum 0 and its maximum one more. Like Auto Scaling at
// launch, it registers the instances, healthy, in the target groups (created if
// unknown), and the instances become running EC2 instances.
func (s *Server) AddAutoScalingGroup(name string, instances []string, tgARNs []string, hook string) {
	defer s.lock()()
	g := &autoScalingGroup{
		name:      name,
		instances: slices.Clone(instances),
		states:    map[string]string{},
		min:       0,
		max:       len(instances) + 1,
		desired:   len(instances),
		tgARNs:    slices.Clone(tgARNs),
		pending:   map[string]*lifecycleAction{},
		results:   map[string]string{},
		timedOut:  map[string]bool{},
	}
	if hook != "" {
		g.hooks = []*lifecycleHook{newHook(hook)}
	}
	s.groups[name] = g
	for _, id := range instances {
		s.knowInstanceLocked(id)
		for _, arn := range tgARNs {
			s.targetGroupLocked(arn).targets[targetKey{id, DefaultPort}] = &targetEntry{state: StateHealthy}
		}
	}
}

// SetInstanceState sets an instance's EC2 state name (pending, running, shutting-down,
// terminated, stopping, stopped), creating the instance if needed.
func (s *Server) SetInstanceState(id, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.instances[id] = state
}

// PendLifecycleAction puts the instance in Terminating:Wait on the group's hook, as Auto
// Scaling does when it starts terminating an instance (scale-in, instance refresh,
// Capacity Rebalancing). The action's heartbeat timeout starts now; it is completable
// after the lifecycle propagation delay (SetLifecyclePropagationDelay). A hook the group
// lacks is added with the defaults. It panics on an unknown group: that is a mistake in
// the test's setup.
func (s *Server) PendLifecycleAction(asg, hook, instance string) {
	defer s.lock()()
	g, ok := s.groups[asg]
	if !ok {
		panic("awstest: PendLifecycleAction on unknown Auto Scaling group " + asg)
	}
	h := g.hookNamed(hook)
	if h == nil {
		h = newHook(hook)
		g.hooks = append(g.hooks, h)
	}
	now := s.nowLocked()
	g.pending[instance] = &lifecycleAction{
		hook: h, token: newRequestID(),
		visibleAt: now.Add(s.propagation),
		deadline:  now.Add(h.heartbeatTimeout),
		endAt:     now.Add(h.globalTimeout()),
	}
	delete(g.results, instance)
	delete(g.timedOut, instance)
}

// SetLifecycleHook adds the termination hook to the group, or changes it: its
// HeartbeatTimeout (AWS takes 30 s to 7200 s; the double any positive duration) and its
// DefaultResult (CONTINUE or ABANDON), applied when an action runs out of heartbeats. It
// panics on an unknown group.
func (s *Server) SetLifecycleHook(asg, hook string, heartbeatTimeout time.Duration, defaultResult string) {
	defer s.lock()()
	g, ok := s.groups[asg]
	if !ok {
		panic("awstest: SetLifecycleHook on unknown Auto Scaling group " + asg)
	}
	h := g.hookNamed(hook)
	if h == nil {
		h = newHook(hook)
		g.hooks = append(g.hooks, h)
	}
	h.heartbeatTimeout, h.defaultResult = heartbeatTimeout, defaultResult
}

// SetLifecyclePropagationDelay sets how long after an action starts pending (the group
// already shows Terminating:Wait) CompleteLifecycleAction and
// RecordLifecycleActionHeartbeat still answer "No active Lifecycle Action found", as
// Auto Scaling does for a few seconds. Zero by default.
func (s *Server) SetLifecyclePropagationDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.propagation = d
}

// LifecycleResult is the result (CONTINUE or ABANDON) the instance's lifecycle action
// was completed with, or its hook's DefaultResult when it ran out of heartbeats, and
// whether it ended at all.
func (s *Server) LifecycleResult(asg, instance string) (string, bool) {
	defer s.lock()()
	g, ok := s.groups[asg]
	if !ok {
		return "", false
	}
	r, ok := g.results[instance]
	return r, ok
}

// LifecycleTimedOut reports whether the instance's lifecycle action ended because no
// heartbeat (or completion) came within the hook's heartbeat timeout, or because the
// global timeout passed.
func (s *Server) LifecycleTimedOut(asg, instance string) bool {
	defer s.lock()()
	g, ok := s.groups[asg]
	return ok && g.timedOut[instance]
}

// GroupInstances is every instance of the group with its lifecycle state (Pending,
// InService, Detaching, Terminating:Wait, Terminating:Proceed), as
// DescribeAutoScalingGroups shows it; nil for an unknown group.
func (s *Server) GroupInstances(asg string) map[string]string {
	defer s.lock()()
	g, ok := s.groups[asg]
	if !ok {
		return nil
	}
	out := make(map[string]string, len(g.instances))
	for _, id := range g.instances {
		out[id] = g.lifecycleState(id)
	}
	return out
}

// DesiredCapacity is the group's desired capacity, -1 for an unknown group.
func (s *Server) DesiredCapacity(asg string) int {
	defer s.lock()()
	g, ok := s.groups[asg]
	if !ok {
		return -1
	}
	return g.desired
}

// SetLaunchDelay sets how long a replacement launched by the group (after
// DetachInstances without decrementing the desired capacity) stays Pending before it is
// InService, running and registered in the group's target groups. Zero by default.
func (s *Server) SetLaunchDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.launchDelay = d
}

// SetDetachLag sets how long after DetachInstances answers the group deregisters the
// detached instance from its target groups. Auto Scaling does it asynchronously, so it
// can land after the instance registered itself again. Zero (at once) by default.
func (s *Server) SetDetachLag(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.detachLag = d
}

// OnLaunch sets a callback that runs, in its own goroutine, when an instance the group
// launched is InService and running: where simulate boots that instance's agent.
func (s *Server) OnLaunch(f func(instanceID string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onLaunch = f
}

// TargetState is the health state of the instance on the target group at DefaultPort,
// as DescribeTargetHealth would show it: unused when it is not registered.
func (s *Server) TargetState(arn, id string) string {
	defer s.lock()()
	tg, ok := s.targetGroups[arn]
	if !ok {
		return ""
	}
	e := s.entryLocked(tg, targetKey{id, DefaultPort})
	if e == nil {
		return StateUnused
	}
	return e.state
}

// SetDeregistrationDelay sets how long deregistered targets stay draining.
func (s *Server) SetDeregistrationDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drainDelay = d
}

// FailNext makes the next n calls of action fail with the error code (Throttling,
// TargetGroupNotFound, ValidationError, RequestLimitExceeded, InternalFailure, ...),
// after their signature was checked.
func (s *Server) FailNext(action, code string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failures[action] = append(s.failures[action], code)
	}
}

// Deny makes every call of action fail as IAM refuses it: AccessDenied (HTTP 403), or
// UnauthorizedOperation for EC2.
func (s *Server) Deny(action string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied[action] = true
}

// Delay holds every later call of action for d before it is answered, or until the
// client gives up or the server closes.
func (s *Server) Delay(action string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delays[action] = d
}

// Hold keeps every call of action waiting, after it was recorded, until release is
// called (or the client gives up, or the server closes). Tests use it to see which calls
// are in flight at the same time.
func (s *Server) Hold(action string) (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.holds[action] = ch
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.holds[action] == ch {
				delete(s.holds, action)
			}
			s.mu.Unlock()
			close(ch)
		})
	}
}

// Calls returns the requests received so far, in arrival order.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Call, len(s.calls))
	for i, c := range s.calls {
		c.Params = cloneValues(c.Params)
		out[i] = c
	}
	return out
}

// CallsOf returns the received requests of one action, in arrival order.
func (s *Server) CallsOf(action string) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.Action == action {
			out = append(out, c)
		}
	}
	return out
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

func portOrDefault(p int32) int32 {
	if p == 0 {
		return DefaultPort
	}
	return p
}

func (s *Server) targetGroupLocked(arn string) *targetGroup {
	tg, ok := s.targetGroups[arn]
	if !ok {
		tg = &targetGroup{arn: arn, targets: map[targetKey]*targetEntry{}}
		s.targetGroups[arn] = tg
	}
	return tg
}

func (s *Server) knowInstanceLocked(id string) {
	if _, ok := s.instances[id]; !ok {
		s.instances[id] = "running"
	}
}

// entryLocked returns the target's entry, dropping it once its draining has ended.
func (s *Server) entryLocked(tg *targetGroup, k targetKey) *targetEntry {
	e, ok := tg.targets[k]
	if !ok {
		return nil
	}
	if e.state == StateDraining && !s.nowLocked().Before(e.drainingEnd) {
		delete(tg.targets, k)
		return nil
	}
	return e
}

// request is one parsed call on its way through the handlers.
type request struct {
	service string
	action  string
	form    url.Values
	region  string
}

// apiError is an error answer in the service's own shape.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func validation(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "ValidationError", fmt.Sprintf(format, args...)}
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		http.Error(w, "request body unreadable or too large", http.StatusRequestEntityTooLarge)
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || r.Method != http.MethodPost {
		s.record(Call{At: arrived, Params: form, Code: "MalformedQueryString"})
		writeQueryError(w, "", &apiError{http.StatusBadRequest, "MalformedQueryString", "expected a form-encoded POST"}, newRequestID())
		return
	}
	req := request{action: form.Get("Action"), form: form}
	auth, fault := verifySignature(r, body, time.Now())
	req.region = auth.Region
	req.service = serviceOf(form.Get("Version"), auth.Service)
	idx := s.record(Call{At: arrived, Service: req.service, Action: req.action, Region: req.region, Params: form})

	var resp any
	var apiErr *apiError
	switch {
	case fault != nil:
		apiErr = authError(req.service, fault)
	case req.service == "":
		apiErr = &apiError{http.StatusBadRequest, "NoSuchVersion", fmt.Sprintf("Could not find operation %s for version %s", req.action, form.Get("Version"))}
	case auth.Service != req.service:
		apiErr = authError(req.service, &authFault{"SignatureDoesNotMatch", fmt.Sprintf("Credential should be scoped to correct service: '%s'.", req.service)})
	default:
		if s.wait(r.Context(), req.action) {
			resp, apiErr = s.answer(req)
		} else {
			// The client gave up (it will not read this) or the server is closing;
			// an empty 200 would read as success.
			apiErr = &apiError{http.StatusServiceUnavailable, "ServiceUnavailable", "the server is shutting down"}
		}
	}

	id := newRequestID()
	if apiErr != nil {
		s.setCode(idx, apiErr.code)
		if req.service == ServiceEC2 {
			writeEC2Error(w, apiErr, id)
		} else {
			writeQueryError(w, req.service, apiErr, id)
		}
		return
	}
	writeResponse(w, req.service, req.action, resp, id)
}

// answer applies injected faults, then the action.
func (s *Server) answer(req request) (any, *apiError) {
	defer s.lock()()
	if s.denied[req.action] {
		return nil, deniedError(req)
	}
	if q := s.failures[req.action]; len(q) > 0 {
		s.failures[req.action] = q[1:]
		return nil, injected(q[0])
	}
	switch req.service {
	case ServiceELBv2:
		return s.elbv2Locked(req)
	case ServiceAutoScaling:
		return s.autoScalingLocked(req)
	default:
		return s.ec2Locked(req)
	}
}

// wait holds the call while the action is held and for its delay; false when the
// client went away or the server closed.
func (s *Server) wait(ctx context.Context, action string) bool {
	s.mu.Lock()
	d, held := s.delays[action], s.holds[action]
	s.mu.Unlock()
	if held != nil {
		select {
		case <-held:
		case <-ctx.Done():
			return false
		case <-s.done:
			return false
		}
	}
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.done:
		return false
	}
}

func (s *Server) record(c Call) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, c)
	return len(s.calls) - 1
}

func (s *Server) setCode(i int, code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[i].Code = code
}

// serviceOf picks the service by the form's Version, falling back to the signing name.
func serviceOf(version, signingName string) string {
	switch version {
	case VersionELBv2:
		return ServiceELBv2
	case VersionAutoScaling:
		return ServiceAutoScaling
	case VersionEC2:
		return ServiceEC2
	case "":
		switch signingName {
		case ServiceELBv2, ServiceAutoScaling, ServiceEC2:
			return signingName
		}
	}
	return ""
}

func authError(service string, f *authFault) *apiError {
	if service == ServiceEC2 {
		return &apiError{http.StatusUnauthorized, "AuthFailure", f.code + ": " + f.message}
	}
	status := http.StatusForbidden
	return &apiError{status, f.code, f.message}
}

func deniedError(req request) *apiError {
	resource := ""
	switch {
	case req.form.Get("TargetGroupArn") != "":
		resource = " on resource: " + req.form.Get("TargetGroupArn")
	case req.action == "CompleteLifecycleAction" && req.form.Get("AutoScalingGroupName") != "":
		resource = " on resource: " + GroupARN(req.region, req.form.Get("AutoScalingGroupName"))
	}
	msg := fmt.Sprintf("User: arn:aws:sts::%s:assumed-role/jenkins-controller/i-0123456789abcdef0 is not authorized to perform: %s:%s%s because no identity-based policy allows the %s:%s action",
		accountID, req.service, req.action, resource, req.service, req.action)
	if req.service == ServiceEC2 {
		return &apiError{http.StatusForbidden, "UnauthorizedOperation", "You are not authorized to perform this operation. " + msg}
	}
	return &apiError{http.StatusForbidden, "AccessDenied", msg}
}

func injected(code string) *apiError {
	switch code {
	case "Throttling", "ThrottlingException":
		return &apiError{http.StatusBadRequest, code, "Rate exceeded"}
	case "RequestLimitExceeded":
		return &apiError{http.StatusServiceUnavailable, code, "Request limit exceeded."}
	case "ServiceUnavailable", "Unavailable":
		return &apiError{http.StatusServiceUnavailable, code, "Service is unavailable, try again later"}
	case "InternalFailure", "InternalError":
		return &apiError{http.StatusInternalServerError, code, "An internal error has occurred"}
	case "AccessDenied", "UnauthorizedOperation":
		return &apiError{http.StatusForbidden, code, "injected: not authorized"}
	}
	return &apiError{http.StatusBadRequest, code, "injected fault " + code}
}

// newRequestID returns a random UUID-shaped request id.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
