package soak

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// sampleEvery is how often the sampler reads /proc.
const sampleEvery = 50 * time.Millisecond

// The environment every Jenkins container of a soak run carries (jenkins.env), so that
// the sampler tells its processes from those of other tests on the machine.
const (
	envRun   = "JSA_SOAK_RUN"
	envCycle = "JSA_SOAK_CYCLE"
	envNode  = "JSA_SOAK_NODE"
)

// jenkinsProc is a live Jenkins process of a soak run, as /proc shows it.
type jenkinsProc struct {
	pid   int
	start uint64 // start time in clock ticks since boot: tells a reused pid apart
	cycle string
	node  string
	home  string // the device of its JENKINS_HOME, "" when it could not be read
}

func (p jenkinsProc) String() string {
	return fmt.Sprintf("%s's Jenkins (cycle %s, pid %d)", p.node, p.cycle, p.pid)
}

// scanJenkins lists the live Jenkins processes of run: the Jenkins double (argv[1]
// jenkins-double) started by the guard in the container, with its home's device as seen
// through /proc/PID/root. It asks the kernel, not Docker: a dockerd that is down or
// restarting must not hide a Jenkins that still runs.
func scanJenkins(run, homeInContainer string) []jenkinsProc {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	var out []jenkinsProc
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		dir := "/proc/" + name
		comm, err := os.ReadFile(dir + "/comm")
		// The double is the agent's own binary; comm is cut to 15 bytes.
		if err != nil || string(bytes.TrimSpace(comm)) != "jenkins-spot-ag" {
			continue
		}
		cmdline, err := os.ReadFile(dir + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) < 2 || args[1] != "jenkins-double" {
			continue
		}
		start, alive := procStart(pid)
		if !alive {
			continue
		}
		environ, err := os.ReadFile(dir + "/environ")
		if err != nil {
			continue
		}
		env := map[string]string{}
		for _, kv := range strings.Split(string(environ), "\x00") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
		if env[envRun] != run {
			continue
		}
		p := jenkinsProc{pid: pid, start: start, cycle: env[envCycle], node: env[envNode]}
		var st syscall.Stat_t
		if err := syscall.Stat(dir+"/root"+homeInContainer, &st); err == nil {
			p.home = strconv.FormatUint(st.Dev, 10)
		}
		out = append(out, p)
	}
	return out
}

// procStart reads a process's start time and whether it is alive (not a zombie).
func procStart(pid int) (start uint64, alive bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	rest := string(b)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 20 {
		return 0, false
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	start, err = strconv.ParseUint(f[19], 10, 64) // field 22 of stat
	return start, err == nil
}

// stillAlive reports whether p is still the same live process.
func (p jenkinsProc) stillAlive() bool {
	start, alive := procStart(p.pid)
	return alive && start == p.start
}

// sampler watches a cycle's Jenkins processes from the kernel's side until stopped.
type sampler struct {
	run, cycle, homeDev, homeInContainer string

	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	rep samples
}

// samples is what the sampler saw.
type samples struct {
	Rounds int
	// Both: two Jenkins processes alive on the home at the same moment (the first seen).
	Both string
	// Elsewhere: a Jenkins process whose home is not the EFS stand-in (the first seen).
	Elsewhere string
	// Strays: Jenkins processes of another cycle of this run (the first seen).
	Strays string
	// First and Last are when each instance's Jenkins was first and last seen alive.
	First, Last map[string]time.Time
	// Max is the most Jenkins processes of this cycle seen in one round.
	Max int
}

func startSampler(run, cycle, homeDev, homeInContainer string) *sampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sampler{
		run: run, cycle: cycle, homeDev: homeDev, homeInContainer: homeInContainer,
		cancel: cancel, done: make(chan struct{}),
		rep: samples{First: map[string]time.Time{}, Last: map[string]time.Time{}},
	}
	go func() {
		defer close(s.done)
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			s.round()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// round reads /proc once. Two processes that were both found alive in the scan and are
// both still alive after it were alive at the same moment (a process does not come
// back): that is two Jenkins at once, whatever order the scan read them in.
func (s *sampler) round() {
	at := time.Now()
	procs := scanJenkins(s.run, s.homeInContainer)
	var ours []jenkinsProc
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rep.Rounds++
	for _, p := range procs {
		if p.cycle != s.cycle {
			if s.rep.Strays == "" {
				s.rep.Strays = fmt.Sprintf("%s alive at %s during cycle %s", p, at.Format(time.StampMilli), s.cycle)
			}
			continue
		}
		ours = append(ours, p)
		if p.home != "" && p.home != s.homeDev && s.rep.Elsewhere == "" {
			s.rep.Elsewhere = fmt.Sprintf("%s at %s had its home on device %s, not on the EFS stand-in (device %s): it did not run on the verified mount",
				p, at.Format(time.StampMilli), p.home, s.homeDev)
		}
		if s.rep.First[p.node].IsZero() {
			s.rep.First[p.node] = at
		}
		s.rep.Last[p.node] = time.Now()
	}
	s.rep.Max = max(s.rep.Max, len(ours))
	if len(ours) < 2 || s.rep.Both != "" {
		return
	}
	var alive []string
	for _, p := range ours {
		if p.stillAlive() {
			alive = append(alive, p.String())
		}
	}
	if len(alive) >= 2 {
		s.rep.Both = fmt.Sprintf("at %s: %s", at.Format(time.StampMilli), strings.Join(alive, " and "))
	}
}

// stop ends the sampling and returns what it saw.
func (s *sampler) stop() samples {
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rep
}
