package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

// stateDir keeps, on the instance's local disk (state_dir), what must survive an agent
// restart:
//
//   - plan-latch.json: a notice that ends the instance started the shutdown plan, and
//     whether it finished. A restarted agent resumes an unfinished plan and never boots
//     Jenkins again; a finished plan is never repeated. Valid for this boot only: a
//     stopped Spot instance started again is a new boot.
//   - identity.json: the instance identity read from IMDS on this boot, so a restarted
//     agent adopts its lease and its running Jenkins without IMDS.
//   - events.json: scheduled events already acted on, by EventId, across reboots (an
//     event still listed after the reboot it announced must not drain Jenkins again).
//   - replaced.json: this instance handed JENKINS_HOME over and its group launched a
//     replacement; an instance started again later must not contend for the home.
type stateDir struct {
	dir    string
	bootID string
}

// ReadBootID returns the kernel's id of the current boot.
func ReadBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// latchRecord is the plan latch.
type latchRecord struct {
	BootID   string        `json:"boot_id"`
	Kind     instance.Kind `json:"kind"`
	Detail   string        `json:"detail"`
	EventID  string        `json:"event_id,omitempty"`
	Deadline time.Time     `json:"deadline"`
	Started  time.Time     `json:"started"`
	Replace  bool          `json:"replace,omitempty"`
	Finished time.Time     `json:"finished,omitzero"`
}

func (r *latchRecord) notice() instance.Notice {
	return instance.Notice{Kind: r.Kind, Detail: r.Detail, Seen: r.Started, EventID: r.EventID}
}

// latched reports whether a notice of this kind ends the instance and so must not be
// acted on twice. Signals and drills are operator actions: after them a new start of
// the service boots Jenkins again.
func latched(k instance.Kind) bool {
	return k != instance.KindSignal && k != instance.KindDrill
}

// latch returns the plan latch of this boot, if any.
func (s stateDir) latch() (*latchRecord, error) {
	var r latchRecord
	ok, err := s.read("plan-latch.json", &r)
	if err != nil || !ok {
		return nil, err
	}
	if r.Kind == "" || r.Started.IsZero() {
		return nil, fmt.Errorf("plan latch %s is unreadable: remove it if no shutdown plan is under way", s.path("plan-latch.json"))
	}
	if r.BootID != s.bootID {
		return nil, nil
	}
	return &r, nil
}

func (s stateDir) storeLatch(r latchRecord) error {
	r.BootID = s.bootID
	return s.write("plan-latch.json", r)
}

type identityRecord struct {
	BootID   string            `json:"boot_id"`
	Identity instance.Identity `json:"identity"`
}

// identity returns the identity cached on this boot.
func (s stateDir) identity() (instance.Identity, bool) {
	var r identityRecord
	ok, err := s.read("identity.json", &r)
	if err != nil || !ok || r.BootID != s.bootID || r.Identity.InstanceID == "" || r.Identity.Region == "" {
		return instance.Identity{}, false
	}
	return r.Identity, true
}

func (s stateDir) storeIdentity(id instance.Identity) error {
	return s.write("identity.json", identityRecord{BootID: s.bootID, Identity: id})
}

// eventRecord is a scheduled event the agent has seen.
type eventRecord struct {
	Code      string    `json:"code"`
	NotBefore time.Time `json:"not_before"`
	Seen      time.Time `json:"seen"`
	// Acted is when the plan for it started; zero while it is only scheduled.
	Acted time.Time `json:"acted,omitzero"`
}

// eventKeep is how long a scheduled event is remembered after its start.
const eventKeep = 30 * 24 * time.Hour

func (s stateDir) events() (map[string]eventRecord, error) {
	m := map[string]eventRecord{}
	if _, err := s.read("events.json", &m); err != nil {
		return nil, err
	}
	return m, nil
}

// rememberEvent records a scheduled event, forgetting those long past.
func (s stateDir) rememberEvent(id string, r eventRecord, now time.Time) error {
	m, err := s.events()
	if err != nil {
		m = map[string]eventRecord{}
	}
	for k, v := range m {
		if now.Sub(v.NotBefore) > eventKeep {
			delete(m, k)
		}
	}
	m[id] = r
	return s.write("events.json", m)
}

// replacedRecord says this instance was replaced.
type replacedRecord struct {
	At     time.Time `json:"at"`
	Notice string    `json:"notice"`
	Epoch  uint64    `json:"epoch"`
}

func (s stateDir) replacedRecord() (*replacedRecord, error) {
	var r replacedRecord
	ok, err := s.read("replaced.json", &r)
	if err != nil || !ok {
		return nil, err
	}
	return &r, nil
}

func (s stateDir) storeReplaced(r replacedRecord) error { return s.write("replaced.json", r) }

func (s stateDir) path(name string) string { return filepath.Join(s.dir, name) }

// read decodes the named file into v; ok is false when it does not exist.
func (s stateDir) read(name string, v any) (ok bool, err error) {
	data, err := os.ReadFile(s.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("state %s: %w (check state_dir)", s.path(name), err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("state %s is unreadable (%v): remove it if no shutdown plan is under way", s.path(name), err)
	}
	return true, nil
}

// write replaces the named file atomically, so a crash leaves the old or the new one.
func (s stateDir) write(name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("state: %w (check state_dir)", err)
	}
	path := s.path(name)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("state: %w (check state_dir)", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	return nil
}
