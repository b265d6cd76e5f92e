package jenkinstest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
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

// openHome resumes the saved Pipelines and marks the home as this instance's.
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
	now := time.Now()
	s.mu.Lock()
	for _, p := range saved {
		b := &build{job: p.Job, number: p.Number, pipeline: true, started: now, duration: p.Remaining, slot: -1}
		s.running = append(s.running, b)
		s.resumed = append(s.resumed, s.controlRoot()+b.path())
		if p.Number > s.nextNumber[p.Job] {
			s.nextNumber[p.Job] = p.Number
		}
	}
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

// saveHome records the stop: the Pipelines to resume and what was aborted.
func (s *Server) saveHome(aborted, saved []*build) error {
	home := s.cfg.Home
	if home == "" {
		return nil
	}
	now := time.Now()
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
	s.mu.Unlock()
	for _, b := range aborted {
		st.Aborted = append(st.Aborted, root+b.path())
	}
	for _, b := range saved {
		st.Saved = append(st.Saved, root+b.path())
		var remaining time.Duration
		if b.duration > 0 {
			remaining = max(b.started.Add(b.duration).Sub(now), time.Millisecond)
		}
		pipelines = append(pipelines, SavedPipeline{Job: b.job, Number: b.number, Remaining: remaining})
	}
	if err := writeJSONFile(filepath.Join(home, PipelinesFile), pipelines); err != nil {
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
