package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// ciCycles is how many cycles the soak runs when SOAK_CYCLES is not set (the test
// suite, CI): a few, to keep the suite's time.
const ciCycles = 3

// TestSoak runs the randomized fault soak: SOAK_CYCLES cycles (default 3; `make soak`
// runs 200), cycle n with the schedule drawn from SOAK_SEED+n (default: a random seed,
// printed). SOAK_REPORT names a file for the report table; once the file SOAK_STOP
// exists, the soak stops after the cycle under way and reports. A violation prints the
// cycle's schedule, timeline and agent logs, and the command that draws the same
// schedule again.
func TestSoak(t *testing.T) {
	testenv.SkipShort(t, "the fault soak runs agents, a dockerd and Jenkins containers for minutes")
	cycles, seed, err := soakSettings(os.Getenv("SOAK_CYCLES"), os.Getenv("SOAK_SEED"))
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t)
	began := time.Now()
	t.Logf("soak: %d cycle(s), seed %d (cycle n draws its schedule from seed+n)", cycles, seed)
	var results []result
	stop := os.Getenv("SOAK_STOP")
	for n := range cycles {
		if _, err := os.Stat(stop); stop != "" && err == nil {
			t.Logf("%s exists: stopping after %d cycles", stop, n)
			break
		}
		res := w.runCycle(n, seed+uint64(n))
		results = append(results, res)
		line := fmt.Sprintf("cycle %d (seed %d) %s: %s", n, res.sched.Seed, res.took.Round(time.Second), res.sched.End.Fault)
		if res.takeover > 0 {
			line += fmt.Sprintf(", takeover %s", res.takeover.Round(time.Millisecond))
		}
		var drawn []string
		for _, st := range res.sched.Steps {
			drawn = append(drawn, string(st.Fault))
		}
		if len(drawn) > 0 {
			line += "; " + strings.Join(drawn, ", ")
		}
		if len(res.failed) == 0 {
			t.Log(line + ": ok")
			if res.took > slowCycle {
				t.Logf("cycle %d was slow (%s); what it did:\n%s", n, res.took.Round(time.Second), res.timeline)
			}
			continue
		}
		t.Errorf("%s: VIOLATED\n  %s\n%s\nreproduce the schedule: SOAK_SEED=%d SOAK_CYCLES=1 make soak",
			line, strings.Join(res.details, "\n  "), res.story, res.sched.Seed)
	}
	report := reportTable(results)
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	harnessCPU := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	early := 0
	for _, r := range results {
		early += r.early
	}
	summary := fmt.Sprintf("`SOAK_CYCLES=%d SOAK_SEED=%d make soak`, %s, %s; %d cycles in %s, %d with a violation; %s; "+
		"%d stop signal(s) came before an agent process ran its own code (killed by the signal, nothing started)",
		cycles, seed, time.Now().UTC().Format("2006-01-02"), commitOf(), len(results), time.Since(began).Round(time.Second),
		failedCycles(results), durations(results), early)
	t.Logf("the harness itself (sampler, doubles, proxies) used %s of CPU", harnessCPU.Round(time.Second))
	t.Logf("soak report\n%s\n\n%s", summary, report)
	if path := os.Getenv("SOAK_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(summary+"\n\n"+report), 0o644); err != nil {
			t.Errorf("write the report: %v", err)
		}
	}
}

// soakSettings reads SOAK_CYCLES and SOAK_SEED.
func soakSettings(cyclesEnv, seedEnv string) (cycles int, seed uint64, err error) {
	cycles = ciCycles
	if cyclesEnv != "" {
		if cycles, err = strconv.Atoi(cyclesEnv); err != nil || cycles < 1 {
			return 0, 0, fmt.Errorf("SOAK_CYCLES=%q: want a positive number of cycles", cyclesEnv)
		}
	}
	if seedEnv == "" {
		return cycles, rand.Uint64() >> 1, nil // >>1: it stays positive when added to
	}
	if seed, err = strconv.ParseUint(seedEnv, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("SOAK_SEED=%q: want an unsigned decimal number (printed by an earlier run)", seedEnv)
	}
	return cycles, seed, nil
}

// slowCycle: a cycle that took longer is told in the log, although nothing failed.
const slowCycle = 60 * time.Second

// durations sums the cycles' and the takeovers' times up.
func durations(rs []result) string {
	var took, takeovers []time.Duration
	slow := 0
	for _, r := range rs {
		took = append(took, r.took)
		if r.takeover > 0 {
			takeovers = append(takeovers, r.takeover)
		}
		if r.took > slowCycle {
			slow++
		}
	}
	return fmt.Sprintf("cycle median %s, max %s (%d over %s); takeover (A's end → B serving) median %s, max %s over %d takeovers",
		median(took), maxOf(took), slow, slowCycle, median(takeovers), maxOf(takeovers), len(takeovers))
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2].Round(100 * time.Millisecond)
}

func maxOf(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return slices.Max(ds).Round(100 * time.Millisecond)
}

func failedCycles(rs []result) int {
	n := 0
	for _, r := range rs {
		if len(r.failed) > 0 {
			n++
		}
	}
	return n
}

// commitOf names the code the soak ran: the stamped binary's version, if any.
func commitOf() string {
	if v := os.Getenv("SOAK_VERSION"); v != "" {
		return v
	}
	return "this tree"
}

// reportTable is the fault table of docs/reliability.md: per fault, the cycles that
// drew it, those where it found something to hit, the cycles with a violation, and the
// invariants checked in those cycles (how often) that held.
func reportTable(rs []result) string {
	var b strings.Builder
	b.WriteString("| fault | cycles drawn | applied | cycles violated | what held (checks in those cycles) |\n|---|---|---|---|---|\n")
	for _, f := range faults {
		drawn, applied, violated := 0, 0, 0
		checks := map[string]int{}
		broken := map[string]bool{}
		for _, r := range rs {
			if !r.sched.has(f) {
				continue
			}
			drawn++
			if r.applied[f] {
				applied++
			}
			if len(r.failed) > 0 {
				violated++
			}
			for inv, k := range r.checked {
				checks[inv] += k
			}
			for inv := range r.failed {
				broken[inv] = true
			}
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s |\n", f, drawn, applied, violated, held(checks, broken))
	}
	b.WriteString("\n| invariant | checks | violations |\n|---|---|---|\n")
	for _, inv := range invariants {
		checks, violations := 0, 0
		for _, r := range rs {
			checks += r.checked[inv]
			if r.failed[inv] {
				violations++
			}
		}
		fmt.Fprintf(&b, "| %s | %d | %d |\n", inv, checks, violations)
	}
	return b.String()
}

// held lists the invariants checked, with their counts, marking those broken.
func held(checks map[string]int, broken map[string]bool) string {
	var parts []string
	for _, inv := range invariants {
		if inv == invBoot || checks[inv] == 0 {
			continue
		}
		p := fmt.Sprintf("%s (%d)", inv, checks[inv])
		if broken[inv] {
			p = "**broken:** " + p
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

// The harness's own pieces, which run in the quick loop.

func TestScheduleIsDrawnFromTheSeedAlone(t *testing.T) {
	for seed := range uint64(50) {
		a, b := drawSchedule(seed), drawSchedule(seed)
		if a.String() != b.String() {
			t.Fatalf("seed %d drew two schedules:\n%s\n%s", seed, a, b)
		}
	}
	if drawSchedule(1).String() == drawSchedule(2).String() {
		t.Error("seeds 1 and 2 drew the same schedule")
	}
}

// TestSchedulesCoverEveryFault: over 200 seeds (a `make soak`), every class is drawn
// often, every end of A's tenure too, and faults come before and after the end.
func TestSchedulesCoverEveryFault(t *testing.T) {
	count := map[fault]int{}
	before, after := 0, 0
	for seed := range uint64(200) {
		s := drawSchedule(seed)
		for _, f := range faults {
			if s.has(f) {
				count[f]++
			}
		}
		if s.End.At < endFrom || s.End.At > endTo || s.End.Target != "A" {
			t.Fatalf("seed %d: end %s out of its bounds", seed, s.End)
		}
		for i, st := range s.Steps {
			if st.At < 0 || st.At > endTo+afterEnd || (i > 0 && st.At < s.Steps[i-1].At) {
				t.Fatalf("seed %d: step %s out of bounds or out of order", seed, st)
			}
			if st.At < s.End.At {
				before++
			} else {
				after++
			}
		}
	}
	for _, f := range faults {
		if count[f] < 15 {
			t.Errorf("%s drawn in %d of 200 cycles; want at least 15", f, count[f])
		}
	}
	if before < 100 || after < 50 {
		t.Errorf("faults before the end %d, after it %d: the plan and the takeover must be hit too", before, after)
	}
}

func TestSoakSettings(t *testing.T) {
	if c, s, err := soakSettings("", "42"); err != nil || c != ciCycles || s != 42 {
		t.Errorf("defaults: %d cycles, seed %d, %v", c, s, err)
	}
	if c, _, err := soakSettings("200", ""); err != nil || c != 200 {
		t.Errorf("SOAK_CYCLES=200: %d, %v", c, err)
	}
	for _, bad := range [][2]string{{"0", ""}, {"x", ""}, {"", "-1"}, {"", "seed"}} {
		if _, _, err := soakSettings(bad[0], bad[1]); err == nil {
			t.Errorf("SOAK_CYCLES=%q SOAK_SEED=%q accepted", bad[0], bad[1])
		}
	}
}

// TestTearLeavesTheNewerRecord: the torn-record fault tears what a crash in the middle
// of a write can tear, the slot the next write replaces, so that the record still reads
// as its last good write, and a holder goes on renewing.
func TestTearLeavesTheNewerRecord(t *testing.T) {
	home := t.TempDir()
	l, err := lease.New(lease.Options{Dir: home, HolderID: "i-0aaaaaaaaaaaaaaa1", TTL: leaseTTL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := l.Acquire(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := tearRecord(home, 1); err != nil {
		t.Fatalf("tear a record written once: %v", err)
	}
	first, err := readRecord(home)
	if err != nil {
		t.Fatalf("after a tear of the unwritten slot the record must read: %v", err)
	}
	var tore []int
	for i := range 6 {
		// Another write over the torn slot: a release, then a new tenure, and so on.
		if i%2 == 0 {
			err = l.Release(ctx)
		} else {
			_, err = l.Acquire(ctx, nil)
		}
		if err != nil {
			t.Fatalf("round %d: write over the torn slot: %v", i, err)
		}
		before, err := readRecord(home)
		if err != nil {
			t.Fatalf("round %d: record unreadable before the tear: %v", i, err)
		}
		slot, err := tearRecord(home, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		tore = append(tore, slot)
		after, err := readRecord(home)
		if err != nil {
			t.Fatalf("round %d: torn slot %d made the record unreadable: %v", i, slot, err)
		}
		if after != before {
			t.Fatalf("round %d: the tear of slot %d changed the record from %+v to %+v", i, slot, before, after)
		}
	}
	if last, _ := readRecord(home); last.Seq != first.Seq+6 {
		t.Errorf("six writes over torn slots: seq %d, then %d", first.Seq, last.Seq)
	}
	if !slices.Contains(tore, 0) || !slices.Contains(tore, 1) {
		t.Errorf("tore slots %v: the older slot alternates as the holder writes", tore)
	}
}
