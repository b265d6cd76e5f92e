package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// The wire protocol: the client sends one request line, the server answers with
// JSON lines. Each line is one frame: {"status":{...}}, {"event":{...}}, or the
// final {"done":true,"error":"..."} that ends a drill or reports a refused request.

// Commands a client may send.
const (
	commandStatus = "status"
	commandDrill  = "drill"
)

// maxDrillBudget bounds a drill's budget: the Spot warning is two minutes, and a
// budget of hours is a typo that would keep builds draining all afternoon.
const maxDrillBudget = time.Hour

// request is the client's one line.
type request struct {
	Command string `json:"command"`
	Budget  string `json:"budget,omitempty"` // Go duration; empty means the agent's default
}

// command is a parsed, valid request.
type command struct {
	name   string
	budget time.Duration
}

// parseRequest validates one request line.
func parseRequest(line []byte) (command, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var r request
	if err := dec.Decode(&r); err != nil {
		return command{}, fmt.Errorf("bad request: %w", err)
	}
	if dec.More() {
		return command{}, errors.New("bad request: more than one JSON value")
	}
	switch r.Command {
	case commandStatus:
		if r.Budget != "" {
			return command{}, errors.New("bad request: budget applies to drill only")
		}
		return command{name: commandStatus}, nil
	case commandDrill:
		c := command{name: commandDrill}
		if r.Budget == "" {
			return c, nil
		}
		d, err := time.ParseDuration(r.Budget)
		if err != nil {
			return command{}, fmt.Errorf("bad request: budget: %w", err)
		}
		if d <= 0 || d > maxDrillBudget {
			return command{}, fmt.Errorf("bad request: budget %s: must be above 0 and at most %s", d, maxDrillBudget)
		}
		c.budget = d
		return c, nil
	case "":
		return command{}, errors.New("bad request: no command")
	default:
		return command{}, fmt.Errorf("bad request: unknown command %q (want status or drill)", r.Command)
	}
}

// frame is one response line as the client reads it.
type frame struct {
	Status *status.Snapshot `json:"status,omitempty"`
	Event  *status.Event    `json:"event,omitempty"`
	Done   bool             `json:"done,omitempty"`
	Error  string           `json:"error,omitempty"`
}

// doneFrame is the last line of a drill, or the answer to a refused request. The
// error is always present, empty on success.
type doneFrame struct {
	Done  bool   `json:"done"`
	Error string `json:"error"`
}

// parseFrame reads one response line and checks that it is exactly one kind of frame.
func parseFrame(line []byte) (frame, error) {
	var f frame
	if err := json.Unmarshal(line, &f); err != nil {
		return frame{}, fmt.Errorf("bad response: %w", err)
	}
	kinds := 0
	for _, set := range []bool{f.Status != nil, f.Event != nil, f.Done} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		return frame{}, fmt.Errorf("bad response: want exactly one of status, event, done in %.80q", line)
	}
	if f.Error != "" && !f.Done {
		return frame{}, errors.New("bad response: error outside a done frame")
	}
	return f, nil
}
