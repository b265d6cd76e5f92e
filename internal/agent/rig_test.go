package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// rig is an agent wired to fakes.
type rig struct {
	j       *journal
	md      *fakeMetadata
	watch   *fakeWatcher
	mounter *fakeMounter
	lease   *fakeLease
	rt      *fakeRuntime
	jenkins *fakeJenkins
	targets *fakeTargets
	notify  *recNotifier
	cfg     config.Config
	bootID  string
	mu      sync.Mutex
	seen    []status.Event
	cursor  int // waitPhase looks after this event
}

func newRig(home, stateDir string) *rig {
	j := &journal{}
	cfg := config.Default()
	cfg.EFS.FileSystemID = "fs-12345678"
	cfg.EFS.MountPoint = home
	cfg.StateDir = stateDir
	cfg.Jenkins.StopGrace = config.Duration(2 * time.Second)
	cfg.Interruption.SafetyMargin = config.Duration(2 * time.Second)
	cfg.Jenkins.UID, cfg.Jenkins.GID = -1, -1
	return &rig{
		j:       j,
		md:      &fakeMetadata{id: instance.Identity{InstanceID: "i-0123456789abcdef0", InstanceType: "m7g.large", AvailabilityZone: "us-east-1a", Region: "us-east-1"}},
		watch:   &fakeWatcher{in: make(chan instance.Notice, 4)},
		mounter: newFakeMounter(j, home, cfg.EFS.FileSystemID),
		lease:   newFakeLease(j, "i-0123456789abcdef0"),
		rt:      newFakeRuntime(j),
		jenkins: &fakeJenkins{j: j},
		targets: &fakeTargets{j: j},
		notify:  &recNotifier{},
		cfg:     cfg,
		bootID:  "boot-1",
	}
}

// deps wires the rig's fakes; tests replace single adapters on the result.
func (r *rig) deps() Deps {
	return Deps{
		Metadata:   r.md,
		Watcher:    r.watch,
		NewMounter: func(instance.Identity) (Mounter, error) { return r.mounter, nil },
		NewLease:   func(instance.Identity, string) (Lease, error) { return r.lease, nil },
		NewTargets: func(context.Context, instance.Identity) (Targets, error) { return r.targets, nil },
		Runtime:    r.rt,
		Jenkins:    r.jenkins,
		Notifier:   r.notify,
	}
}

func (r *rig) agent(budget time.Duration) (*Agent, error) {
	return New(Options{
		Config:        r.cfg,
		Deps:          r.deps(),
		BootID:        r.bootID,
		DefaultBudget: budget,
		OnEvent: func(ev status.Event) {
			r.mu.Lock()
			r.seen = append(r.seen, ev)
			r.mu.Unlock()
		},
	})
}

// waitPhase waits for the agent to enter phase p after the phase last waited for.
func (r *rig) waitPhase(p status.Phase, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		for i := r.cursor; i < len(r.seen); i++ {
			if ev := r.seen[i]; ev.Kind == status.EventPhase && ev.Phase == p {
				r.cursor = i + 1
				r.mu.Unlock()
				return nil
			}
		}
		r.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	return errors.New("phase " + string(p) + " not reached in " + within.String() + "; phases: " + fmtPhases(r.phases()))
}

func fmtPhases(ps []status.Phase) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, " → ")
}

// eventsOf returns the events of one kind seen so far.
func (r *rig) eventsOf(k status.EventKind) []status.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []status.Event
	for _, ev := range r.seen {
		if ev.Kind == k {
			out = append(out, ev)
		}
	}
	return out
}

// phases returns the phases entered so far, in order.
func (r *rig) phases() []status.Phase {
	var out []status.Phase
	for _, ev := range r.eventsOf(status.EventPhase) {
		out = append(out, ev.Phase)
	}
	return out
}
