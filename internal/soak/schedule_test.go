package soak

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// fault is a class of fault the soak draws.
type fault string

// The fault classes. The first three end A's tenure; every cycle has exactly one of them.
const (
	faultNotice      fault = "Spot interruption notice"
	faultStop        fault = "stop signal (SIGTERM)"
	faultKillGone    fault = "A's agent SIGKILL, not restarted"
	faultBGone       fault = "B's agent SIGKILL, not restarted"
	faultKillRestart fault = "A's agent SIGKILL, restarted"
	faultBRestart    fault = "B's agent SIGKILL, restarted"
	faultDockerd     fault = "dockerd SIGKILL and restart"
	faultIMDSDark    fault = "IMDS dark"
	faultIMDSChaos   fault = "IMDS chaotic"
	faultJenkinsHang fault = "Jenkins hung"
	faultJenkins503  fault = "Jenkins answering 503"
	faultThrottling  fault = "ELB and Auto Scaling throttling"
	faultTornLease   fault = "torn lease record"
)

// faults lists every class in the order of the report.
var faults = []fault{
	faultNotice, faultStop, faultKillGone, faultKillRestart, faultBRestart, faultBGone, faultDockerd, faultIMDSDark,
	faultIMDSChaos, faultJenkinsHang, faultJenkins503, faultThrottling, faultTornLease,
}

// The compressed world of a cycle, as simulate compresses it: a 6 s lease, a 25 s
// notice budget, a 3 s safety margin and a 5 s stop grace.
const (
	leaseTTL     = 6 * time.Second
	leaseSkew    = 2 * time.Second // the lease's allowance for clock error
	noticeBudget = 25 * time.Second
	safetyMargin = 3 * time.Second
	stopGrace    = 5 * time.Second
	// restartDelay is systemd's RestartSec=5s, compressed like the lease.
	restartDelay = time.Second
)

// Bounds of the schedule.
const (
	// endFrom and endTo bound the moment A's tenure ends, counted from when the faults
	// begin (A serving, B waiting on the lease).
	endFrom = 2 * time.Second
	endTo   = 8 * time.Second
	// afterEnd is how long after the end faults may still come: they then hit the
	// shutdown plan and the takeover.
	afterEnd = 6 * time.Second
)

// throttled are the AWS actions a throttling burst may hit.
var throttled = []string{
	"RegisterTargets", "DeregisterTargets", "DescribeTargetHealth", "DescribeAutoScalingInstances",
	"DescribeAutoScalingGroups", "DetachInstances", "CompleteLifecycleAction",
}

// step is one fault at one moment of a cycle.
type step struct {
	// At is when it strikes, counted from when the faults begin.
	At    time.Duration
	Fault fault
	// Target is the instance it hits, "A" or "B"; empty for what both share (dockerd,
	// AWS, the lease record).
	Target string
	// For is how long it lasts; for a kill that is restarted, the time until the restart.
	For time.Duration
	// Calls is how many calls of Action fail (throttling).
	Calls  int
	Action string
	// Drop makes dark IMDS close connections; otherwise it swallows requests.
	Drop bool
	// Seed feeds what the fault itself draws: the chaotic proxy's faults, the tear.
	Seed uint64
}

func (s step) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "+%-6s %s", s.At.Round(time.Millisecond), s.Fault)
	if s.Target != "" {
		fmt.Fprintf(&b, " on %s", s.Target)
	}
	switch s.Fault {
	case faultKillRestart, faultBRestart:
		fmt.Fprintf(&b, ", restarted %s later", s.For.Round(time.Millisecond))
	case faultThrottling:
		fmt.Fprintf(&b, ": the next %d %s calls", s.Calls, s.Action)
	case faultIMDSDark:
		how := "requests swallowed"
		if s.Drop {
			how = "connections dropped"
		}
		fmt.Fprintf(&b, " for %s (%s)", s.For.Round(time.Millisecond), how)
	case faultDockerd, faultIMDSChaos, faultJenkinsHang, faultJenkins503:
		fmt.Fprintf(&b, " for %s", s.For.Round(time.Millisecond))
	}
	return b.String()
}

// schedule is everything a cycle does, drawn from its seed alone: the same seed gives
// the same schedule (the timing of the processes it hits is the machine's).
type schedule struct {
	Seed uint64
	// Builds started on A before the faults: 0 none, 1 a freestyle build, 2 that and a
	// Pipeline (saved at the stop, resumed by B).
	Builds int
	// End ends A's tenure: a Spot notice, a stop signal, or a kill without restart.
	End step
	// Steps are the other faults, by time.
	Steps []step
}

// drawSchedule draws a cycle's schedule from seed.
func drawSchedule(seed uint64) schedule {
	r := rand.New(rand.NewPCG(seed, 0x736f616b)) // "soak"
	between := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(r.Int64N(int64(hi-lo)+1))
	}
	pick := func(pA float64) string {
		if r.Float64() < pA {
			return "A"
		}
		return "B"
	}
	s := schedule{Seed: seed, Builds: r.IntN(3)}
	end := step{At: between(endFrom, endTo), Target: "A"}
	switch x := r.Float64(); {
	case x < 0.5:
		end.Fault = faultNotice
	case x < 0.75:
		end.Fault = faultStop
	default:
		end.Fault = faultKillGone
	}
	s.End = end
	last := end.At + afterEnd
	// Each class at most once per cycle, each with its own chance, so that most cycles
	// overlap two or three faults.
	chance := func(p float64) bool { return r.Float64() < p }
	if chance(0.35) {
		st := step{At: between(0, last), Fault: faultKillRestart, Target: pick(0.6)}
		if st.Target == "B" {
			st.Fault = faultBRestart
		}
		if chance(0.7) {
			// Back within the lease: it adopts its lease and its running Jenkins.
			st.For = between(0, 2*time.Second)
		} else {
			// Back after the lease lapsed: the successor may hold it by then.
			st.For = between(leaseTTL+leaseSkew, leaseTTL+leaseSkew+3*time.Second)
		}
		s.Steps = append(s.Steps, st)
	}
	if chance(0.1) {
		// The successor dies for good: nobody takes over, and A must not wait for it
		// beyond its stop time.
		s.Steps = append(s.Steps, step{At: between(0, last), Fault: faultBGone, Target: "B"})
	}
	if chance(0.25) {
		s.Steps = append(s.Steps, step{At: between(0, last), Fault: faultDockerd, For: between(0, 3*time.Second)})
	}
	if chance(0.3) {
		s.Steps = append(s.Steps, step{At: between(0, last), Fault: faultIMDSDark, Target: pick(0.6), For: between(time.Second, 5*time.Second), Drop: chance(0.5)})
	}
	if chance(0.3) {
		s.Steps = append(s.Steps, step{At: between(0, last), Fault: faultIMDSChaos, Target: pick(0.6), For: between(2*time.Second, 10*time.Second), Seed: r.Uint64()})
	}
	if chance(0.25) {
		s.Steps = append(s.Steps, step{At: between(0, last), Fault: faultJenkinsHang, Target: pick(0.7), For: between(time.Second, 6*time.Second)})
	}
	if chance(0.25) {
		s.Steps = append(s.Steps, step{At: between(0, last), Fault: faultJenkins503, Target: pick(0.7), For: between(time.Second, 6*time.Second)})
	}
	if chance(0.35) {
		s.Steps = append(s.Steps, step{At: between(0, last), Fault: faultThrottling, Calls: 1 + r.IntN(6), Action: throttled[r.IntN(len(throttled))]})
	}
	if chance(0.35) {
		s.Steps = append(s.Steps, step{At: between(0, last), Fault: faultTornLease, Seed: r.Uint64()})
	}
	slices.SortStableFunc(s.Steps, func(a, b step) int { return int(a.At - b.At) })
	return s
}

// has reports whether the schedule draws f (as its end or as a fault).
func (s schedule) has(f fault) bool {
	return s.End.Fault == f || slices.ContainsFunc(s.Steps, func(st step) bool { return st.Fault == f })
}

func (s schedule) String() string {
	var b strings.Builder
	builds := [...]string{"no builds", "a freestyle build", "a freestyle build and a Pipeline"}[s.Builds]
	fmt.Fprintf(&b, "seed %d, %s on A; end: %s", s.Seed, builds, s.End)
	for _, st := range s.Steps {
		fmt.Fprintf(&b, "\n    %s", st)
	}
	return b.String()
}
