package soak

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/control"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds/imdstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"
)

// The invariants checked after every cycle.
const (
	invOneWriter = "never two Jenkins on one home"
	invVerified  = "never Jenkins on an unverified mount"
	invNotice    = "every notice acted on"
	invInTime    = "every plan done before deadline − safety_margin"
	invStop      = "the agent ends (exit 0) on a stop signal"
	invFence     = "the fence outlives a killed agent"
	invTakeover  = "the successor takes over"
	invBoot      = "boots without faults" // a cycle that cannot even start says so
)

// invariants lists them in the order of the report.
var invariants = []string{invOneWriter, invVerified, invNotice, invInTime, invStop, invFence, invTakeover, invBoot}

// Bounds of a cycle's waits. They only stop a cycle that would otherwise hang; they are
// far above what a cycle takes.
const (
	bootLimit     = 90 * time.Second
	takeoverSlack = 45 * time.Second
	// stopBudget is the budget of a plan started by a stop signal (`run`'s default).
	stopBudget = 2 * time.Minute
	// stopLimit is systemd's TimeoutStopSec=150s.
	stopLimit = 150 * time.Second
)

// cycle is one run of the schedule against a fresh pair of instances and a fresh home.
type cycle struct {
	w     *world
	n     int
	sched schedule
	dir   string
	efs   string // the EFS stand-in, a tmpfs both instances bind at their mount points
	dev   string // its device number
	aws   *awstest.Server
	a, b  *node

	applied map[fault]bool  // the faults that found something to hit
	checked map[string]int  // invariant → how many times it was checked
	failed  map[string]bool // invariant → violated
	details []string        // what was violated, for the report
	log     []string        // what the cycle did, with times

	noticeAt, termination time.Time // the Spot notice given to A
	fenceBy               time.Time // the expiry of the record A left when killed for good
	startedAt             time.Time
	record                string // the lease record at the end, for the story
	early                 int    // stop signals that came before an agent ran its own code
}

// result is what a cycle reports.
type result struct {
	n        int
	sched    schedule
	applied  map[fault]bool
	checked  map[string]int
	failed   map[string]bool
	details  []string
	story    string // the cycle told in full, when it failed
	timeline string // the schedule and what the cycle did
	took     time.Duration
	takeover time.Duration // A's end → B serving; 0 when there was none
	early    int           // stop signals that came before an agent ran its own code
}

func (c *cycle) say(format string, args ...any) {
	c.log = append(c.log, fmt.Sprintf("%s %s", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...)))
}

func (c *cycle) check(inv string, ok bool, format string, args ...any) {
	c.checked[inv]++
	if ok {
		return
	}
	c.failed[inv] = true
	c.details = append(c.details, inv+": "+fmt.Sprintf(format, args...))
}

// runCycle runs cycle n of the schedule drawn from seed, checks the invariants and
// cleans up. Everything it waits for is bounded.
func (w *world) runCycle(n int, seed uint64) result {
	c := &cycle{
		w: w, n: n, sched: drawSchedule(seed), dir: filepath.Join(w.dir, "c"+strconv.Itoa(n)),
		applied: map[fault]bool{}, checked: map[string]int{}, failed: map[string]bool{}, startedAt: time.Now(),
	}
	var takeover time.Duration
	if err := c.setUp(); err != nil {
		c.check(invBoot, false, "set up: %v", err)
	} else {
		takeover = c.play()
	}
	if rec, err := readRecord(c.efs); err == nil {
		c.record = fmt.Sprintf("%+v", rec)
	} else {
		c.record = err.Error()
	}
	c.tearDown()
	res := result{
		n: n, sched: c.sched, applied: c.applied, checked: c.checked, failed: c.failed, details: c.details,
		took: time.Since(c.startedAt), takeover: takeover, early: c.early,
	}
	res.timeline = fmt.Sprintf("schedule: %s\n    %s", c.sched, strings.Join(c.log, "\n    "))
	if len(c.failed) > 0 {
		res.story = c.describe()
	}
	return res
}

// setUp makes the cycle's home, its AWS double and its two instances.
func (c *cycle) setUp() error {
	c.efs = filepath.Join(c.dir, "efs")
	if err := os.MkdirAll(c.efs, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", efsSource, c.efs).CombinedOutput(); err != nil {
		return fmt.Errorf("mount the EFS stand-in: %v: %s", err, out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(c.efs, &st); err != nil {
		return err
	}
	c.dev = strconv.FormatUint(st.Dev, 10)
	c.aws = awstest.NewServer()
	idA, idB := fmt.Sprintf("i-0a%015x", c.n), fmt.Sprintf("i-0b%015x", c.n)
	c.aws.AddTargetGroup(targetGroupARN, awstest.Target{ID: idA, Port: 8080})
	c.aws.AddAutoScalingGroup(groupName, []string{idA, idB}, []string{targetGroupARN}, hookName)
	var err error
	if c.a, err = c.newNode("A", idA); err != nil {
		return err
	}
	c.b, err = c.newNode("B", idB)
	return err
}

func (c *cycle) newNode(name, id string) (*node, error) {
	n := &node{
		c: c, name: name,
		id: instance.Identity{
			InstanceID: id, InstanceType: "m5.large", AvailabilityZone: "us-east-1a", AZID: "use1-az6",
			Region: "us-east-1", Market: "spot", AutoScalingGroup: groupName,
		},
		dir:       filepath.Join(c.dir, name),
		hook:      fmt.Sprintf("/%d/%s", c.n, name),
		container: fmt.Sprintf("jsa-soak-%s-c%d-%s", c.w.run, c.n, strings.ToLower(name)),
	}
	n.mountPoint = filepath.Join(n.dir, "home")
	n.socket = filepath.Join(n.dir, "control.sock")
	n.config = filepath.Join(n.dir, "config.yaml")
	n.log = filepath.Join(n.dir, "agent.log")
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return nil, err
	}
	n.imds = imdstest.NewServer(n.id)
	n.imdsProxy = imdstest.NewFaultProxy(n.imds.URL())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	n.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	n.jenkinsProxy = imdstest.NewFaultProxy("http://127.0.0.1:" + strconv.Itoa(n.port))
	return n, n.writeConfig()
}

// agentEnv is the environment of an agent process: none of this process's AWS, proxy
// or systemd settings, the estate's endpoints, and the private dockerd.
func (c *cycle) agentEnv(n *node) []string {
	creds, _ := c.aws.Credentials().Retrieve(context.Background())
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "AWS_"), strings.HasPrefix(name, "DOCKER_"),
			name == "NOTIFY_SOCKET", name == "WATCHDOG_USEC", name == "WATCHDOG_PID", name == "CREDENTIALS_DIRECTORY",
			strings.EqualFold(name, "HTTP_PROXY"), strings.EqualFold(name, "HTTPS_PROXY"),
			strings.EqualFold(name, "NO_PROXY"), strings.EqualFold(name, "ALL_PROXY"):
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"AWS_EC2_METADATA_SERVICE_ENDPOINT="+n.imdsProxy.URL(),
		"AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2="+c.aws.URL(),
		"AWS_ENDPOINT_URL_AUTO_SCALING="+c.aws.URL(),
		"AWS_ENDPOINT_URL_EC2="+c.aws.URL(),
		"AWS_ACCESS_KEY_ID="+creds.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY="+creds.SecretAccessKey,
		"AWS_REGION=us-east-1",
		"AWS_CONFIG_FILE="+filepath.Join(c.dir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(c.dir, "no-aws-credentials"),
		"DOCKER_HOST="+c.w.daemon.Host(),
		"NO_PROXY=127.0.0.1,localhost",
		"JSA_SOAK_EFS="+c.efs,
	)
}

// status asks an agent for its status; false when it does not answer.
func (n *node) status() (status.Snapshot, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := control.QueryStatus(ctx, n.socket)
	return st, err == nil
}

// waitFor polls the agent's status until cond holds, for at most limit.
func (n *node) waitFor(limit time.Duration, cond func(status.Snapshot) bool) (status.Snapshot, bool) {
	deadline := time.Now().Add(limit)
	var last status.Snapshot
	for time.Now().Before(deadline) {
		if st, ok := n.status(); ok {
			last = st
			if cond(st) {
				return st, true
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return last, false
}

// play runs the cycle: A serving, B waiting, the schedule, the outcome, the stop. It
// returns the time from A's end to B serving (0 without a takeover).
func (c *cycle) play() time.Duration {
	a, b := c.a, c.b
	a.start()
	if st, ok := a.waitFor(bootLimit, func(s status.Snapshot) bool { return s.Phase == status.PhaseServing }); !ok {
		c.check(invBoot, false, "A did not reach serving within %s before any fault (phase %q)", bootLimit, st.Phase)
		c.stopAll()
		return 0
	}
	c.say("A serving")
	c.startBuilds()
	b.start()
	if st, ok := b.waitFor(bootLimit, func(s status.Snapshot) bool { return s.Phase == status.PhaseWaitingForLease }); !ok {
		c.check(invBoot, false, "B did not wait on the lease within %s before any fault (phase %q)", bootLimit, st.Phase)
		c.stopAll()
		return 0
	}
	c.say("B waits on the lease")
	c.check(invBoot, true, "")
	smp := startSampler(c.w.run, strconv.Itoa(c.n), c.dev, homeInContainer)

	endAt := c.runSchedule()
	var takeover time.Duration
	if ended := !endAt.IsZero(); ended && !b.isGone() {
		limit := c.takeoverLimit(endAt)
		st, ok := b.waitFor(limit, func(s status.Snapshot) bool {
			return s.Phase == status.PhaseServing && s.Lease.Held && s.Lease.Holder == b.id.InstanceID
		})
		c.check(invTakeover, ok, "B did not serve within %s of A's end (B's phase %q, lease %+v)", limit.Round(time.Second), st.Phase, st.Lease)
		if ok {
			takeover = time.Since(endAt)
			c.say("B serving, %s after A's end", takeover.Round(time.Millisecond))
		}
	}
	if !c.noticeAt.IsZero() && !a.isGone() {
		limit := time.Until(c.termination.Add(30 * time.Second))
		l, ok := waitLatch(a, limit)
		c.check(invNotice, ok && l.Kind == instance.KindSpotTerminate && !l.Finished.IsZero(),
			"A's shutdown plan for the Spot notice given at %s did not finish: latch %+v", c.noticeAt.Format(time.StampMilli), l)
		if ok && !l.Finished.IsZero() {
			by := l.Deadline.Add(-safetyMargin)
			c.check(invInTime, !l.Finished.After(by), "A's plan for the Spot notice finished at %s, after deadline %s − safety margin %s",
				l.Finished.Format(time.StampMilli), l.Deadline.Format(time.StampMilli), safetyMargin)
		}
	}
	c.stopAll()
	rep := smp.stop()
	c.judgeSamples(rep)
	c.judgeReports()
	return takeover
}

// takeoverLimit is how long after A's end B may legitimately take to serve: A's plan
// may drain until its stop time (a Jenkins that cannot list its builds is waited for
// until then), or, after a kill, B waits out the ttl and the allowance from its last
// sight of the record; then B starts Jenkins. takeoverSlack covers B's own start and
// the faults the schedule puts there.
func (c *cycle) takeoverLimit(endAt time.Time) time.Duration {
	switch c.sched.End.Fault {
	case faultNotice:
		return c.termination.Sub(endAt) - safetyMargin + takeoverSlack
	case faultStop:
		return stopBudget - safetyMargin + takeoverSlack
	}
	return leaseTTL + leaseSkew + leaseTTL/3 + takeoverSlack
}

// waitLatch waits until the node's plan latch says the plan finished.
func waitLatch(n *node, limit time.Duration) (latch, bool) {
	deadline := time.Now().Add(limit)
	var l latch
	var ok bool
	for {
		l, ok = n.latch()
		if ok && !l.Finished.IsZero() {
			return l, true
		}
		if time.Now().After(deadline) {
			return l, ok
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startBuilds starts the schedule's builds on A, straight at its Jenkins.
func (c *cycle) startBuilds() {
	jobs := []string{freestyleJob, pipelineJob}[:c.sched.Builds]
	for _, job := range jobs {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://127.0.0.1:"+strconv.Itoa(c.a.port)+"/job/"+job+"/build", nil)
		req.SetBasicAuth(jenkinsUser, c.w.token)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err != nil {
			c.say("could not start build %s: %v", job, err)
			continue
		}
		resp.Body.Close()
		c.say("build %s started on A: %d", job, resp.StatusCode)
	}
}

// op is one timed action of the schedule.
type op struct {
	at   time.Duration
	what string
	do   func()
}

// runSchedule plays the schedule and returns when A's tenure ended (zero if the end
// found nothing to end). Every fault is lifted before it returns.
func (c *cycle) runSchedule() (endAt time.Time) {
	var ops []op
	add := func(at time.Duration, what string, do func()) { ops = append(ops, op{at, what, do}) }
	nodeOf := func(name string) *node {
		if name == "A" {
			return c.a
		}
		return c.b
	}
	end := c.sched.End
	switch end.Fault {
	case faultNotice:
		add(end.At, "Spot notice to A", func() {
			if c.a.isGone() {
				return
			}
			c.noticeAt = time.Now()
			c.termination = c.noticeAt.Add(noticeBudget)
			c.a.imds.SetSpotAction("terminate", c.termination)
			c.aws.PendLifecycleAction(groupName, hookName, c.a.id.InstanceID)
			c.applied[faultNotice] = true
			endAt = c.noticeAt
		})
	case faultStop:
		add(end.At, "SIGTERM to A", func() {
			if c.a.isGone() {
				return
			}
			// With no process (a restart pending after a kill), the stop cancels the
			// restart, as systemctl stop does: A's tenure ends all the same.
			c.applied[faultStop] = true
			endAt = time.Now()
			if r := c.a.term(); r != nil {
				endAt = r.termAt
			}
		})
	case faultKillGone:
		add(end.At, "SIGKILL to A, no restart", func() {
			if c.a.isGone() {
				return
			}
			c.a.kill(true) // with no process (a restart pending), it is never restarted
			c.applied[faultKillGone] = true
			endAt = time.Now()
			if rec, err := readRecord(c.efs); err == nil && rec.Holder == c.a.id.InstanceID && !rec.Released {
				c.fenceBy = rec.Expires
			}
		})
	}
	for _, st := range c.sched.Steps {
		switch st.Fault {
		case faultKillRestart, faultBRestart:
			n := nodeOf(st.Target)
			killed := false
			add(st.At, "SIGKILL to "+n.name, func() { killed = n.kill(false) })
			add(st.At+st.For, "restart "+n.name, func() {
				if killed && n.restart() {
					c.applied[st.Fault] = true
				}
			})
		case faultBGone:
			n := nodeOf(st.Target)
			add(st.At, "SIGKILL to "+n.name+", no restart", func() {
				if n.kill(true) {
					c.applied[faultBGone] = true
				}
			})
		case faultDockerd:
			add(st.At, "SIGKILL to dockerd", func() { c.w.daemon.Kill(); c.applied[faultDockerd] = true })
			add(st.At+st.For, "dockerd starts again", func() { c.w.daemon.Start() })
		case faultIMDSDark:
			n := nodeOf(st.Target)
			f := imdstest.Fault{Delay: time.Hour}
			if st.Drop {
				f = imdstest.Fault{Drop: true}
			}
			add(st.At, "IMDS of "+n.name+" dark", func() { n.imdsProxy.SetFault("/", f); c.applied[faultIMDSDark] = true })
			add(st.At+st.For, "IMDS of "+n.name+" back", n.imdsProxy.ClearFaults)
		case faultIMDSChaos:
			n := nodeOf(st.Target)
			add(st.At, "IMDS of "+n.name+" chaotic", func() {
				n.imdsProxy.SetChances("/", st.Seed, flakyIMDS()...)
				c.applied[faultIMDSChaos] = true
			})
			add(st.At+st.For, "IMDS of "+n.name+" back", n.imdsProxy.ClearFaults)
		case faultJenkinsHang:
			n := nodeOf(st.Target)
			add(st.At, "Jenkins of "+n.name+" hangs", func() {
				n.jenkinsProxy.SetFault("/", imdstest.Fault{Delay: time.Hour})
				c.applied[faultJenkinsHang] = true
			})
			add(st.At+st.For, "Jenkins of "+n.name+" answers again", n.jenkinsProxy.ClearFaults)
		case faultJenkins503:
			n := nodeOf(st.Target)
			add(st.At, "Jenkins of "+n.name+" answers 503", func() {
				n.jenkinsProxy.SetFault("/", imdstest.Fault{Status: http.StatusServiceUnavailable})
				c.applied[faultJenkins503] = true
			})
			add(st.At+st.For, "Jenkins of "+n.name+" answers again", n.jenkinsProxy.ClearFaults)
		case faultThrottling:
			add(st.At, fmt.Sprintf("%d %s calls throttled", st.Calls, st.Action), func() {
				c.aws.FailNext(st.Action, "Throttling", st.Calls)
				c.applied[faultThrottling] = true
			})
		case faultTornLease:
			add(st.At, "lease record torn", func() {
				slot, err := tearRecord(c.efs, st.Seed)
				if err != nil {
					c.say("lease record not torn: %v", err)
					return
				}
				c.say("lease record: slot %d torn", slot)
				c.applied[faultTornLease] = true
			})
		}
	}
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].at < ops[j].at })
	begin := time.Now()
	for _, o := range ops {
		if d := time.Until(begin.Add(o.at)); d > 0 {
			time.Sleep(d)
		}
		c.say("%s", o.what)
		o.do()
	}
	// Nothing stays broken beyond the schedule.
	for _, n := range []*node{c.a, c.b} {
		n.imdsProxy.ClearFaults()
		n.jenkinsProxy.ClearFaults()
	}
	c.w.reapOrphans()
	return endAt
}

// flakyIMDS is bad weather on IMDS: a fifth of the requests fail with 500, a tenth are
// throttled, one in twenty loses its connection and one in twenty stalls for 3 s.
func flakyIMDS() []imdstest.Chance {
	return []imdstest.Chance{
		{Rate: 0.20, Fault: imdstest.Fault{Status: http.StatusInternalServerError}},
		{Rate: 0.10, Fault: imdstest.Fault{Status: http.StatusTooManyRequests}},
		{Rate: 0.05, Fault: imdstest.Fault{Drop: true}},
		{Rate: 0.05, Fault: imdstest.Fault{Delay: 3 * time.Second}},
	}
}

// stopAll is the end of the instances' life: a stop signal to every agent that runs
// (as at shutdown), each of which must end with exit 0 within TimeoutStopSec.
func (c *cycle) stopAll() {
	type stopping struct {
		n *node
		r *agentRun
	}
	var ss []stopping
	for _, n := range []*node{c.a, c.b} {
		n.mu.Lock()
		n.stopping = true
		n.mu.Unlock()
		if r := n.term(); r != nil {
			ss = append(ss, stopping{n, r})
		}
	}
	deadline := time.Now().Add(stopLimit)
	for _, s := range ss {
		select {
		case <-s.r.done:
		case <-time.After(time.Until(deadline)):
		}
	}
	for _, n := range []*node{c.a, c.b} {
		for _, r := range n.allRuns() {
			if r.termAt.IsZero() || r.killed {
				continue
			}
			if r.alive() {
				c.check(invStop, false, "%s's agent process %d still runs %s after SIGTERM", n.name, r.n, stopLimit)
				_ = r.cmd.Process.Signal(syscall.SIGKILL)
				<-r.done
				continue
			}
			if r.signaled(syscall.SIGTERM) && r.wroteNothing(n.log) {
				// The signal came before the process ran any code of its own (its
				// runtime and packages were still initialising): nothing started, and
				// no process can catch a signal then. systemd counts it as a clean
				// stop. The window after that is TestRunStopSignalWhileStartingRunsThePlan's.
				c.early++
				c.say("%s's agent process %d got SIGTERM %s after its start, before its own code ran", n.name, r.n, r.termAt.Sub(r.started).Round(time.Millisecond))
				continue
			}
			c.check(invStop, r.state.ExitCode() == 0, "%s's agent process %d ended with %s after SIGTERM, want exit 0", n.name, r.n, r.how())
		}
	}
}

// judgeSamples checks what the sampler saw, and that no Jenkins outlived its agents by
// more than the lease: the guard in the container stops it.
func (c *cycle) judgeSamples(rep samples) {
	c.check(invOneWriter, rep.Both == "", "two Jenkins alive at once %s", rep.Both)
	c.check(invVerified, rep.Elsewhere == "", "%s", rep.Elsewhere)
	c.check(invFence, rep.Strays == "", "a Jenkins of another cycle: %s", rep.Strays)
	if !c.fenceBy.IsZero() {
		last := rep.Last["A"]
		c.check(invFence, !last.After(c.fenceBy),
			"A was killed holding the lease; its Jenkins was still alive at %s, after the record's expiry %s", last.Format(time.StampMilli), c.fenceBy.Format(time.StampMilli))
	}
	// Every agent has ended now; a Jenkins they left must be stopped by its guard
	// before the last record's ttl is out.
	limit := time.Now().Add(leaseTTL + stopGrace + 2*time.Second)
	var left []jenkinsProc
	for {
		left = left[:0]
		for _, p := range scanJenkins(c.w.run, homeInContainer) {
			if p.cycle == strconv.Itoa(c.n) {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(limit) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.check(invFence, len(left) == 0, "Jenkins still alive %s after every agent ended: %v", leaseTTL+stopGrace+2*time.Second, left)
	c.say("sampler: %d rounds, at most %d Jenkins at once; A's first/last %s/%s, B's first/last %s/%s", rep.Rounds, rep.Max,
		stamp(rep.First["A"]), stamp(rep.Last["A"]), stamp(rep.First["B"]), stamp(rep.Last["B"]))
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Format("15:04:05.000")
}

// judgeReports checks every shutdown plan the agents reported (webhook, json form):
// done before its deadline minus the safety margin.
func (c *cycle) judgeReports() {
	for _, n := range []*node{c.a, c.b} {
		for _, m := range c.w.hooks.messages(n.hook) {
			if m.Kind != status.EventPlanDone || m.Report == nil {
				continue
			}
			c.say("%s plan report: %s", n.name, m.Text)
			margin := time.Duration(m.Report.MarginSeconds * float64(time.Second))
			c.check(invInTime, margin >= safetyMargin, "%s's plan for %s ended %s before its deadline, less than the safety margin %s: %s",
				n.name, m.Report.Notice, margin.Round(time.Millisecond), safetyMargin, m.Text)
		}
	}
}

// tearDown removes what the cycle made, and checks that nothing was ever written to the
// bare mount points (a Jenkins on an unverified mount writes there).
func (c *cycle) tearDown() {
	for _, n := range []*node{c.a, c.b} {
		if n == nil {
			continue
		}
		n.mu.Lock()
		n.stopping, n.gone = true, true
		n.mu.Unlock()
		if r := n.current(); r != nil {
			_ = r.cmd.Process.Signal(syscall.SIGKILL)
			<-r.done
		}
	}
	if err := c.w.removeContainers(fmt.Sprintf("jsa-soak-%s-c%d-", c.w.run, c.n)); err != nil {
		c.say("remove containers: %v", err)
	}
	for _, n := range []*node{c.a, c.b} {
		if n == nil {
			continue
		}
		if err := unmountAll(n.mountPoint); err != nil {
			c.say("%v", err)
		}
		entries, err := os.ReadDir(n.mountPoint)
		if err == nil {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			c.check(invVerified, len(names) == 0, "the bare mount point of %s holds %v: something wrote to the local disk instead of the EFS home", n.name, names)
		}
		n.imdsProxy.Close()
		n.jenkinsProxy.Close()
		n.imds.Close()
	}
	if c.aws != nil {
		c.aws.Close()
	}
	if c.efs != "" {
		if err := unmountAll(c.efs); err != nil {
			c.say("%v", err)
		}
	}
	c.w.reapOrphans()
	if len(c.failed) == 0 && os.Getenv("SOAK_KEEP") == "" {
		_ = os.RemoveAll(c.dir)
	}
}

// unmountAll unmounts everything mounted at path, plainly, and lazily only when a
// plain unmount keeps failing (the soak must go on; it says so).
func unmountAll(path string) error {
	for range 20 {
		infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
		if err != nil || len(infos) == 0 {
			return err
		}
		if err := unix.Unmount(path, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	return fmt.Errorf("unmount %s: busy; detached it", path)
}

// describe is the cycle's story for a failure message: the schedule, what it did, the
// notes on each agent and the end of each agent's log.
func (c *cycle) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "schedule: %s\ntimeline:\n", c.sched)
	for _, l := range c.log {
		fmt.Fprintf(&b, "    %s\n", l)
	}
	for _, n := range []*node{c.a, c.b} {
		if n == nil {
			continue
		}
		n.mu.Lock()
		notes := slices.Clone(n.notes)
		n.mu.Unlock()
		for _, r := range n.allRuns() {
			how := "running"
			if !r.alive() {
				how = r.how()
			}
			fmt.Fprintf(&b, "%s agent process %d: started %s, %s\n", n.name, r.n, r.started.Format("15:04:05.000"), how)
		}
		for _, note := range notes {
			fmt.Fprintf(&b, "%s: %s\n", n.name, note)
		}
		fmt.Fprintf(&b, "%s's agent log (%s), last lines:\n%s\n", n.name, n.log, tail(n.log))
	}
	fmt.Fprintf(&b, "lease record at the end: %s\n", c.record)
	return b.String()
}

// tailLines is how much of an agent's log a failure shows.
const tailLines = 40

// tail returns the last lines of a file.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > tailLines {
		lines = lines[len(lines)-tailLines:]
	}
	return strings.Join(lines, "\n")
}
