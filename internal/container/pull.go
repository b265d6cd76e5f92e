package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// streamMessage is one JSON object of the Engine's pull or build progress
// stream. Only the fields the agent reads are declared.
type streamMessage struct {
	Status   string `json:"status"`
	ID       string `json:"id"`
	Stream   string `json:"stream"`
	Progress *struct {
		Current int64 `json:"current"`
		Total   int64 `json:"total"`
	} `json:"progressDetail"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
	// Error is the older spelling of ErrorDetail.Message; daemons still send both.
	Error string `json:"error"`
}

// err returns the error the message carries, if any.
func (m streamMessage) err() error {
	if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
		return errors.New(m.ErrorDetail.Message)
	}
	if m.Error != "" {
		return errors.New(m.Error)
	}
	return nil
}

// layerState is what is known of one layer during a pull.
type layerState struct {
	current, total int64
	done           bool
}

// pullProgress summarises a pull in progress: how many layers are complete and
// how many bytes have been downloaded out of the sizes announced so far.
type pullProgress struct {
	LayersDone, Layers int
	Bytes, TotalBytes  int64
}

// pullTracker folds the pull stream into a pullProgress. It is pure so that
// the stream format can be tested without a registry.
type pullTracker struct {
	layers map[string]*layerState
}

// apply records one message. Statuses that carry a layer ID are the per-layer
// ones; "Pulling from", "Digest:" and "Status:" lines describe the image.
func (t *pullTracker) apply(m streamMessage) error {
	if err := m.err(); err != nil {
		return err
	}
	if t.layers == nil {
		t.layers = map[string]*layerState{}
	}
	layer := func() *layerState {
		l, ok := t.layers[m.ID]
		if !ok {
			l = &layerState{}
			t.layers[m.ID] = l
		}
		return l
	}
	if m.ID == "" {
		return nil
	}
	switch m.Status {
	case "Pulling fs layer", "Waiting", "Retrying", "Verifying Checksum":
		layer()
	case "Downloading":
		l := layer()
		if m.Progress != nil {
			if m.Progress.Total > 0 {
				l.total = m.Progress.Total
			}
			if m.Progress.Current >= 0 {
				l.current = m.Progress.Current
			}
		}
	case "Download complete", "Extracting":
		l := layer()
		if l.total > 0 {
			l.current = l.total
		}
	case "Pull complete", "Already exists":
		l := layer()
		l.done = true
		if l.total > 0 {
			l.current = l.total
		}
	}
	return nil
}

// progress returns the current summary.
func (t *pullTracker) progress() pullProgress {
	var p pullProgress
	for _, l := range t.layers {
		p.Layers++
		if l.done {
			p.LayersDone++
		}
		p.Bytes += l.current
		p.TotalBytes += l.total
	}
	return p
}

// readPullStream consumes a pull stream to its end. report is called with the
// progress at most once per interval (by the now clock) and once at the end.
// An error message in the stream ends the read with that error: the Engine
// answers 200 before the pull starts, so failures only show up in the stream.
func readPullStream(r io.Reader, interval time.Duration, now func() time.Time, report func(pullProgress)) error {
	dec := json.NewDecoder(r)
	var t pullTracker
	last := now()
	for {
		var m streamMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return fmt.Errorf("read pull progress: %w", err)
		}
		if err := t.apply(m); err != nil {
			return err
		}
		if n := now(); n.Sub(last) >= interval {
			last = n
			report(t.progress())
		}
	}
	report(t.progress())
	return nil
}
