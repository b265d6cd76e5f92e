package jenkinstest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Files the double keeps in its home.
const (
	// PIDFile holds the pid of the process that runs the double.
	PIDFile = "jenkins-double.pid"
	// StateFile holds a HomeState: which instance wrote the home, and how it stopped.
	StateFile = "jenkins-double.json"
	// PipelinesFile holds the Pipelines saved on stop, resumed on the next start.
	PipelinesFile = "jenkins-double-pipelines.json"
	// BuildsFile holds the next build number of each job and the past builds (their
	// parameters, causes and result), as Jenkins keeps them in the jobs' directories.
	BuildsFile = "jenkins-double-builds.json"
)

// HomeState is the content of StateFile.
type HomeState struct {
	Instance string    `json:"instance"`
	PID      int       `json:"pid"`
	URL      string    `json:"url,omitempty"`
	Started  time.Time `json:"started"`
	Resumed  []string  `json:"resumed,omitempty"` // Pipelines resumed at start
	Stopped  time.Time `json:"stopped,omitzero"`  // zero while running, or after a crash
	Aborted  []string  `json:"aborted,omitempty"` // freestyle builds aborted by the stop
	Saved    []string  `json:"saved,omitempty"`   // Pipelines saved by the stop
}

// SavedPipeline is one entry of PipelinesFile.
type SavedPipeline struct {
	Job    string `json:"job"`
	Number int    `json:"number"`
	// Remaining is what was left of its run; 0 runs until the next stop.
	Remaining time.Duration `json:"remaining"`
	// NodeIn is the running time left until it enters its node block; 0: none ahead.
	NodeIn time.Duration `json:"nodeIn,omitempty"`
	// InNode is true when it was inside its node block (on an executor, or parked in
	// the queue): it resumes by asking the queue for an executor again.
	InNode bool         `json:"inNode,omitempty"`
	Params []ParamValue `json:"params,omitempty"`
	Causes []Cause      `json:"causes,omitempty"`
}

// savedBuilds is the content of BuildsFile.
type savedBuilds struct {
	Next   map[string]int `json:"next"`
	Builds []savedBuild   `json:"builds"`
}

type savedBuild struct {
	Job    string       `json:"job"`
	Number int          `json:"number"`
	Result string       `json:"result"`
	Params []ParamValue `json:"params,omitempty"`
	Causes []Cause      `json:"causes,omitempty"`
}

// ReadHomeState reads the StateFile of a home.
func ReadHomeState(home string) (HomeState, error) {
	var st HomeState
	b, err := os.ReadFile(filepath.Join(home, StateFile))
	if err != nil {
		return st, fmt.Errorf("jenkins double home: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("jenkins double home: %s: %w", StateFile, err)
	}
	return st, nil
}

// ReadSavedPipelines reads the PipelinesFile of a home; none saved is an empty list.
func ReadSavedPipelines(home string) ([]SavedPipeline, error) {
	b, err := os.ReadFile(filepath.Join(home, PipelinesFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("jenkins double home: %w", err)
	}
	var saved []SavedPipeline
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, fmt.Errorf("jenkins double home: %s: %w", PipelinesFile, err)
	}
	return saved, nil
}

// openHome resumes the saved Pipelines and the build history, and marks the home as
// this instance's.
func (s *Server) openHome() error {
	home := s.cfg.Home
	if home == "" {
		return nil
	}
	if err := os.MkdirAll(home, 0o755); err != nil {
		return fmt.Errorf("jenkins double home: %w", err)
	}
	saved, err := ReadSavedPipelines(home)
	if err != nil {
		return err
	}
	var past savedBuilds
	if b, err := os.ReadFile(filepath.Join(home, BuildsFile)); err == nil {
		if err := json.Unmarshal(b, &past); err != nil {
			return fmt.Errorf("jenkins double home: %s: %w", BuildsFile, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("jenkins double home: %w", err)
	}
	now := time.Now()
	s.mu.Lock()
	for job, n := range past.Next {
		s.nextNumber[job] = max(s.nextNumber[job], n)
	}
	for _, p := range past.Builds {
		b := &build{job: p.Job, number: p.Number, pipeline: s.cfg.Jobs[p.Job].Pipeline, slot: -1, params: p.Params, causes: p.Causes, result: p.Result}
		s.history[b.path()] = b
	}
	for _, p := range saved {
		b := &build{
			job: p.Job, number: p.Number, pipeline: true, started: now, duration: p.Remaining, slot: -1,
			params: p.Params, causes: p.Causes, nodeAfter: p.NodeIn, inNode: p.InNode,
		}
		s.running = append(s.running, b)
		if b.inNode {
			b.parkedSince = now
			s.nextQueueID++
			s.queue = append(s.queue, &queueItem{id: s.nextQueueID, job: b.job, since: now, node: b})
		}
		s.resumed = append(s.resumed, s.controlRoot()+b.path())
		s.nextNumber[p.Job] = max(s.nextNumber[p.Job], p.Number)
	}
	s.advance(now)
	st := HomeState{Instance: s.instance, PID: os.Getpid(), URL: s.rootURL, Started: now, Resumed: s.resumed}
	s.mu.Unlock()
	for _, u := range st.Resumed {
		s.log.Info("pipeline resumed", "build", u)
	}
	if err := writeFile(filepath.Join(home, PIDFile), []byte(strconv.Itoa(st.PID)+"\n")); err != nil {
		return err
	}
	return writeJSONFile(filepath.Join(home, StateFile), st)
}

// saveHome records the stop at now: the Pipelines to resume, what was aborted, the
// build numbers and history.
func (s *Server) saveHome(now time.Time, aborted, saved []*build) error {
	home := s.cfg.Home
	if home == "" {
		return nil
	}
	st, err := ReadHomeState(home)
	if err != nil || st.Instance != s.instance {
		// Another instance took the home over, or it was never opened: say who stopped.
		st = HomeState{Instance: s.instance, PID: os.Getpid()}
	}
	st.Stopped = now
	st.Aborted, st.Saved = nil, nil
	pipelines := []SavedPipeline{}
	s.mu.Lock()
	root := s.controlRoot()
	past := savedBuilds{Next: maps.Clone(s.nextNumber), Builds: []savedBuild{}}
	for _, b := range s.history {
		past.Builds = append(past.Builds, savedBuild{Job: b.job, Number: b.number, Result: b.result, Params: b.params, Causes: b.causes})
	}
	s.mu.Unlock()
	slices.SortFunc(past.Builds, func(a, b savedBuild) int {
		if c := strings.Compare(a.Job, b.Job); c != 0 {
			return c
		}
		return a.Number - b.Number
	})
	for _, b := range aborted {
		st.Aborted = append(st.Aborted, root+b.path())
	}
	for _, b := range saved {
		st.Saved = append(st.Saved, root+b.path())
		act := b.active(now)
		p := SavedPipeline{Job: b.job, Number: b.number, InNode: b.inNode, Params: b.params, Causes: b.causes}
		if b.duration > 0 {
			p.Remaining = max(b.duration-act, time.Millisecond)
		}
		if b.nodeAfter > 0 && !b.inNode {
			p.NodeIn = max(b.nodeAfter-act, time.Nanosecond)
		}
		pipelines = append(pipelines, p)
	}
	if err := writeJSONFile(filepath.Join(home, PipelinesFile), pipelines); err != nil {
		return err
	}
	if err := writeJSONFile(filepath.Join(home, BuildsFile), past); err != nil {
		return err
	}
	return writeJSONFile(filepath.Join(home, StateFile), st)
}

func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("jenkins double home: %w", err)
	}
	return writeFile(path, append(b, '\n'))
}

// writeFile replaces path atomically, so a reader never sees half a file.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("jenkins double home: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("jenkins double home: %w", err)
	}
	return nil
}
