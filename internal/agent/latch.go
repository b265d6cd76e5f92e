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

// latch remembers, in state_dir, that a notice which ends the instance started the
// shutdown plan, and whether the plan finished. An agent restarted mid-plan resumes it
// and never boots Jenkins again; a finished plan is never repeated. The record carries
// the kernel's boot id: after a reboot (a stopped Spot instance started again) it no
// longer applies.
type latch struct {
	path   string
	bootID string
}

type latchRecord struct {
	BootID   string        `json:"boot_id"`
	Kind     instance.Kind `json:"kind"`
	Detail   string        `json:"detail"`
	Deadline time.Time     `json:"deadline"`
	Started  time.Time     `json:"started"`
	Finished time.Time     `json:"finished,omitzero"`
}

// latched reports whether a notice of this kind ends the instance and so must not be
// acted on twice. Signals and drills are operator actions: after them a new start of
// the service boots Jenkins again.
func latched(k instance.Kind) bool {
	return k != instance.KindSignal && k != instance.KindDrill
}

// ReadBootID returns the kernel's id of the current boot.
func ReadBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// load returns the record of this boot, if any.
func (l latch) load() (*latchRecord, error) {
	data, err := os.ReadFile(l.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read plan latch: %w", err)
	}
	var r latchRecord
	if err := json.Unmarshal(data, &r); err != nil || r.Kind == "" || r.Started.IsZero() {
		return nil, fmt.Errorf("plan latch %s is unreadable (%v): remove it if no shutdown plan is under way", l.path, err)
	}
	if r.BootID != l.bootID {
		return nil, nil
	}
	return &r, nil
}

// store writes the record atomically, so a crash leaves the old or the new one.
func (l latch) store(r latchRecord) error {
	r.BootID = l.bootID
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(l.path), 0o700); err != nil {
		return fmt.Errorf("plan latch: %w (check state_dir)", err)
	}
	tmp := l.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("plan latch: %w (check state_dir)", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("plan latch: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("plan latch: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("plan latch: %w", err)
	}
	if err := os.Rename(tmp, l.path); err != nil {
		return fmt.Errorf("plan latch: %w", err)
	}
	return nil
}
