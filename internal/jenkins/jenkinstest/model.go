package jenkinstest

import (
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// build is one build, running or past.
type build struct {
	job      string
	number   int
	pipeline bool
	started  time.Time
	duration time.Duration // active time it runs; 0: until the controller stops
	slot     int           // regular executor: the freestyle build, or the Pipeline's node block; -1 none
	queueID  int           // the queue item it came from; 0 when resumed
	params   []ParamValue
	causes   []Cause
	result   string // "" while running

	// A Pipeline's node block: it is entered at nodeAfter of active time, and then
	// needs a regular executor. While it waits in the queue (parkedSince set) the run
	// makes no progress; paused sums those waits.
	nodeAfter   time.Duration
	inNode      bool
	paused      time.Duration
	parkedSince time.Time
}

// path is the build's URL relative to the root, as Jenkins' Run.getUrl gives it.
func (b *build) path() string { return jobPath(b.job) + strconv.Itoa(b.number) + "/" }

// active is how long the build has run, waits of its node block excluded.
func (b *build) active(now time.Time) time.Duration {
	if !b.parkedSince.IsZero() {
		now = b.parkedSince
	}
	return now.Sub(b.started) - b.paused
}

// jobPath is a job's URL relative to the root: job/NAME/ per folder level, each name
// escaped the way Jenkins' Util.rawEncode does for the characters a name can hold.
func jobPath(fullName string) string {
	var b strings.Builder
	for _, seg := range strings.Split(fullName, "/") {
		b.WriteString("job/")
		b.WriteString(url.PathEscape(seg))
		b.WriteString("/")
	}
	return b.String()
}

// queueItem is a build waiting for an executor or for the end of quiet-down, or the
// node block of a running Pipeline (node set) waiting for a regular executor.
type queueItem struct {
	id     int
	job    string
	params []ParamValue
	causes []Cause
	since  time.Time
	node   *build
}

// resolveParams gives the values a build of job gets from the request's params:
// each definition takes its value from params, else its default. A job without
// definitions gets none, whatever is asked.
func resolveParams(job Job, params map[string]string) []ParamValue {
	var out []ParamValue
	for _, d := range job.Params {
		v, ok := params[d.Name]
		if !ok {
			v = d.Default
		}
		if d.Kind == ParamBoolean {
			b, _ := strconv.ParseBool(v)
			v = strconv.FormatBool(b)
		}
		out = append(out, ParamValue{Name: d.Name, Value: v, Kind: d.Kind})
	}
	return out
}

// schedule queues a build of job, or folds causes into an item of the same job with
// the same parameters that already waits (created false), as Jenkins' Queue.schedule2
// does; then it lets advance start what can run. It returns the path of the build when
// it started, "" when it waits, and the queue item's id. Callers hold mu.
func (s *Server) schedule(job string, params map[string]string, causes []Cause, now time.Time) (buildPath string, queueID int, created bool, err error) {
	j, ok := s.cfg.Jobs[job]
	if !ok {
		return "", 0, false, fmt.Errorf("jenkins double: no job %q", job)
	}
	values := resolveParams(j, params)
	for _, q := range s.queue {
		if q.node == nil && q.job == job && slices.Equal(q.params, values) {
			q.causes = append(q.causes, causes...)
			return "", q.id, false, nil
		}
	}
	s.nextQueueID++
	id := s.nextQueueID
	s.queue = append(s.queue, &queueItem{id: id, job: job, params: values, causes: causes, since: now})
	s.advance(now)
	for _, q := range s.queue {
		if q.id == id {
			return "", id, true, nil
		}
	}
	for _, b := range s.running {
		if b.queueID == id {
			return b.path(), id, true, nil
		}
	}
	return "", id, true, nil
}

// advance ends the builds whose time is up, sends Pipelines that reach their node
// block into the queue, and starts what can run: nothing in quiet-down; node blocks
// and freestyle builds on a free regular executor; Pipelines at once on a one-off
// executor. serve calls it every 10 ms and every look calls it too. Callers hold mu.
func (s *Server) advance(now time.Time) {
	kept := s.running[:0]
	for _, b := range s.running {
		if !b.parkedSince.IsZero() {
			kept = append(kept, b)
			continue
		}
		act := b.active(now)
		reachesNode := b.nodeAfter > 0 && !b.inNode && (b.duration == 0 || b.nodeAfter < b.duration)
		if reachesNode && act >= b.nodeAfter {
			b.inNode = true
			b.parkedSince = b.started.Add(b.paused + b.nodeAfter)
			s.nextQueueID++
			s.queue = append(s.queue, &queueItem{id: s.nextQueueID, job: b.job, since: b.parkedSince, node: b})
			s.log.Info("pipeline waits for a node", "build", b.path())
			kept = append(kept, b)
			continue
		}
		if b.duration > 0 && act >= b.duration {
			b.result, b.slot = ResultSuccess, -1
			s.history[b.path()] = b
			s.log.Info("build finished", "build", b.path())
			continue
		}
		kept = append(kept, b)
	}
	clear(s.running[len(kept):])
	s.running = kept
	if s.quieting {
		return
	}
	busy := map[int]bool{}
	for _, b := range s.running {
		if b.slot >= 0 {
			busy[b.slot] = true
		}
	}
	freeSlot := func() int {
		for i := 0; i < s.executors; i++ {
			if !busy[i] {
				busy[i] = true
				return i
			}
		}
		return -1
	}
	waiting := s.queue[:0]
	for _, q := range s.queue {
		if q.node != nil {
			slot := freeSlot()
			if slot < 0 {
				waiting = append(waiting, q)
				continue
			}
			b := q.node
			b.slot = slot
			b.paused += now.Sub(b.parkedSince)
			b.parkedSince = time.Time{}
			s.log.Info("pipeline got a node", "build", b.path())
			continue
		}
		job := s.cfg.Jobs[q.job]
		slot := -1
		if !job.Pipeline {
			if slot = freeSlot(); slot < 0 {
				waiting = append(waiting, q)
				continue
			}
		}
		s.nextNumber[q.job]++
		b := &build{
			job: q.job, number: s.nextNumber[q.job], pipeline: job.Pipeline, started: now, duration: job.Duration,
			slot: slot, queueID: q.id, params: q.params, causes: q.causes, nodeAfter: job.NodeAfter,
		}
		if !job.Pipeline {
			b.nodeAfter = 0
		}
		s.running = append(s.running, b)
		s.log.Info("build started", "build", b.path(), "pipeline", b.pipeline)
	}
	clear(s.queue[len(waiting):])
	s.queue = waiting
	sort.SliceStable(s.running, func(i, j int) bool { return s.running[i].started.Before(s.running[j].started) })
}

// findBuild returns the running or past build of job number n, or nil. Callers hold mu.
func (s *Server) findBuild(job string, n int) *build {
	for _, b := range s.running {
		if b.job == job && b.number == n {
			return b
		}
	}
	return s.history[jobPath(job)+strconv.Itoa(n)+"/"]
}
