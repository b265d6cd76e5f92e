package jenkins

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// computerSet is the part of GET /computer/api/json that the agent asks for with
// the tree parameter. Pointers tell "absent" from "empty": an answer without the
// computer list is not a Jenkins computer set, and is rejected rather than read as
// "no builds".
type computerSet struct {
	Computer *[]computer `json:"computer"`
}

type computer struct {
	DisplayName     string     `json:"displayName"`
	Offline         bool       `json:"offline"`
	Executors       []executor `json:"executors"`
	OneOffExecutors []executor `json:"oneOffExecutors"`
}

type executor struct {
	CurrentExecutable *executable `json:"currentExecutable"`
}

type executable struct {
	URL *string `json:"url"`
}

// ParseComputers reads the answer of
// GET /computer/api/json?tree=computer[displayName,offline,executors[idle,currentExecutable[url]],oneOffExecutors[currentExecutable[url]]]
// and returns the URLs of the builds that occupy an executor, regular or one-off
// (Pipeline runs sit on one-off executors, which busyExecutors does not count), in
// the order Jenkins lists them and without duplicates: a Pipeline inside `node {}`
// shows on both a one-off executor and a regular one, under the same URL.
//
// An executable without a URL still counts, named after its computer and executor,
// so that a busy executor is never read as idle. Anything that is not a computer set
// is an error.
func ParseComputers(body []byte) ([]string, error) {
	var set computerSet
	if err := decodeStrict(body, &set); err != nil {
		return nil, fmt.Errorf("parse computers: %w", err)
	}
	if set.Computer == nil {
		return nil, errors.New("parse computers: no computer list in the answer")
	}
	builds := []string{}
	seen := map[string]bool{}
	add := func(url string) {
		if !seen[url] {
			seen[url] = true
			builds = append(builds, url)
		}
	}
	for _, c := range *set.Computer {
		for kind, executors := range [2][]executor{c.Executors, c.OneOffExecutors} {
			for i, e := range executors {
				if e.CurrentExecutable == nil {
					continue
				}
				if u := e.CurrentExecutable.URL; u != nil && *u != "" {
					add(*u)
					continue
				}
				name := "executor"
				if kind == 1 {
					name = "one-off executor"
				}
				add(c.DisplayName + " " + name + " " + strconv.Itoa(i))
			}
		}
	}
	return builds, nil
}

// status is the part of GET /api/json that the agent reads.
type status struct {
	QuietingDown    *bool   `json:"quietingDown"`
	QuietDownReason *string `json:"quietDownReason"` // null when not quieting down
	Mode            string  `json:"mode"`
	NumExecutors    int     `json:"numExecutors"`
	UseCrumbs       bool    `json:"useCrumbs"`
}

// parseStatus reads GET /api/json; quietingDown must be there, since the agent
// decides on it.
func parseStatus(body []byte) (status, error) {
	var s status
	if err := decodeStrict(body, &s); err != nil {
		return status{}, fmt.Errorf("parse api/json: %w", err)
	}
	if s.QuietingDown == nil {
		return status{}, errors.New("parse api/json: no quietingDown field in the answer")
	}
	return s, nil
}

// crumb is the answer of GET /crumbIssuer/api/json.
type crumb struct {
	Crumb             string `json:"crumb"`
	CrumbRequestField string `json:"crumbRequestField"`
}

func parseCrumb(body []byte) (crumb, error) {
	var c crumb
	if err := decodeStrict(body, &c); err != nil {
		return crumb{}, fmt.Errorf("parse crumb: %w", err)
	}
	if c.Crumb == "" || c.CrumbRequestField == "" {
		return crumb{}, errors.New("parse crumb: crumb or crumbRequestField missing")
	}
	return c, nil
}

// whoAmI is the answer of GET /whoAmI/api/json.
type whoAmI struct {
	Name      *string `json:"name"`
	Anonymous bool    `json:"anonymous"`
}

func parseWhoAmI(body []byte) (whoAmI, error) {
	var w whoAmI
	if err := decodeStrict(body, &w); err != nil {
		return whoAmI{}, fmt.Errorf("parse whoAmI: %w", err)
	}
	if w.Name == nil {
		return whoAmI{}, errors.New("parse whoAmI: no name in the answer")
	}
	return w, nil
}

// decodeStrict decodes exactly one JSON object. Unknown fields are fine (Jenkins adds
// _class everywhere and plugins add more), but a bare null, an array, a scalar or
// trailing data are not an answer from Jenkins.
func decodeStrict(body []byte, v any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return errors.New("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}
