package agent

import (
	"context"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent/contract"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

// The agent's fakes pass the same contract suites as the adapters and their doubles, so
// that what the agent's tests prove holds with the real peers.

var (
	_ contract.Metadata = (*fakeMetadata)(nil)
	_ contract.Mounter  = (*fakeMounter)(nil)
	_ contract.Lease    = (*fakeLease)(nil)
	_ contract.Runtime  = (*fakeRuntime)(nil)
	_ contract.Jenkins  = (*fakeJenkins)(nil)
	_ contract.Targets  = (*fakeTargets)(nil)
)

// contractIdentity is the instance of the fakes' contract worlds.
var contractIdentity = instance.Identity{
	InstanceID: "i-0123456789abcdef0", InstanceType: "m7g.large", AvailabilityZone: "us-east-1a", AZID: "use1-az1",
	Region: "us-east-1", Market: "spot", AutoScalingGroup: "jenkins-controller",
}

func TestFakeMetadataContract(t *testing.T) {
	t.Parallel()
	contract.TestMetadata(t, contract.MetadataHarness{
		New: func(t *testing.T) contract.MetadataWorld {
			return contract.MetadataWorld{
				Metadata:       &fakeMetadata{id: contractIdentity, states: []string{"InService"}},
				Want:           contractIdentity,
				LifecycleState: "InService",
			}
		},
		Flaky: func(t *testing.T) contract.MetadataWorld {
			return contract.MetadataWorld{
				Metadata:       &fakeMetadata{id: contractIdentity, states: []string{"InService"}, failures: 20},
				Want:           contractIdentity,
				LifecycleState: "InService",
			}
		},
		Silent: func(t *testing.T) contract.Metadata { return &fakeMetadata{silent: true} },
	})
}

const contractFileSystem = "fs-0123456789abcdef0"

func TestFakeMounterContract(t *testing.T) {
	t.Parallel()
	world := func(t *testing.T) contract.MounterWorld {
		home := t.TempDir()
		m := newFakeMounter(&journal{}, home, contractFileSystem)
		h := m.host
		return contract.MounterWorld{
			Mounter:      m,
			FileSystemID: contractFileSystem,
			MountPoint:   home,
			Reopen:       func() contract.Mounter { return m.reopen(&journal{}) },
			Mounts: func() int {
				h.mu.Lock()
				defer h.mu.Unlock()
				if h.mounted == "" {
					return 0
				}
				return 1
			},
			Marker: func() string {
				h.mu.Lock()
				defer h.mu.Unlock()
				if h.mounted == "" {
					return "" // the local disk of the bare mount point
				}
				return h.markers[h.mounted]
			},
			WriteMarker: func(id string) {
				h.mu.Lock()
				defer h.mu.Unlock()
				h.markers[h.mounted] = id
			},
			MountForeign: h.mount,
			LocalFiles: func() {
				h.mu.Lock()
				defer h.mu.Unlock()
				h.localFiles = true
			},
			Busy: func() func() {
				h.mu.Lock()
				defer h.mu.Unlock()
				h.busy = true
				return func() {
					h.mu.Lock()
					defer h.mu.Unlock()
					h.busy = false
				}
			},
			Unreachable: func() {
				h.mu.Lock()
				defer h.mu.Unlock()
				h.unreachable = true
			},
			Hang:   h.hang,
			Resume: h.resume,
		}
	}
	contract.TestMounter(t, contract.MounterHarness{New: world, Hanging: world})
}

func TestFakeLeaseContract(t *testing.T) {
	t.Parallel()
	contract.TestLease(t, contract.LeaseHarness{
		New: func(t *testing.T) contract.LeaseWorld {
			home := &fakeLeaseHome{}
			return contract.LeaseWorld{
				New: func(id string) contract.Lease {
					return &fakeLease{
						j: &journal{}, home: home, id: id,
						ttl: time.Second, skew: 50 * time.Millisecond, poll: 5 * time.Millisecond, announceEvery: 20 * time.Millisecond,
					}
				},
				TakeOver: home.take,
				Corrupt: func() {
					home.mu.Lock()
					defer home.mu.Unlock()
					home.unreadable = true
				},
				Corrupted: func() bool {
					home.mu.Lock()
					defer home.mu.Unlock()
					return home.unreadable
				},
			}
		},
		Unreadable: errFakeUnreadable,
	})
}

func TestFakeRuntimeContract(t *testing.T) {
	t.Parallel()
	contract.TestRuntime(t, contract.RuntimeHarness{New: func(t *testing.T, ignoreTerm bool) contract.RuntimeWorld {
		rt := newFakeRuntime(&journal{})
		rt.ignoreTerm = ignoreTerm
		return contract.RuntimeWorld{
			Runtime:    rt,
			Reopen:     func() contract.Runtime { return rt }, // the container lives in the daemon
			Starts:     rt.startCount,
			Crash:      func() { rt.crash(3) },
			CrashCode:  3,
			DaemonDown: rt.daemonDown,
			DaemonUp:   rt.daemonUp,
		}
	}})
}

// contractJobs are the jobs every contract.JenkinsWorld has.
func contractJobs() map[string]fakeJob {
	return map[string]fakeJob{
		contract.JobFreestyle: {},
		contract.JobPipeline:  {pipeline: true},
		contract.JobNode:      {pipeline: true, node: true},
		contract.JobParams: {params: []fakeParam{
			{name: "TARGET", def: "staging"},
			{name: "DRY_RUN", def: "true", boolean: true},
			{name: "SECRET", def: "hunter2", password: true},
		}},
		contract.JobDisabled: {disabled: true},
	}
}

// fakeJenkinsWorld is the controller behind a fakeJenkins.
type fakeJenkinsWorld struct{ f *fakeJenkins }

func (w fakeJenkinsWorld) Stop(context.Context) error { w.f.stop(); return nil }

func (w fakeJenkinsWorld) Successor(*testing.T) contract.Jenkins { return w.f.successor() }

func TestFakeJenkinsContract(t *testing.T) {
	t.Parallel()
	contract.TestJenkins(t, contract.JenkinsHarness{
		New: func(t *testing.T, s contract.JenkinsSetup) (contract.Jenkins, contract.JenkinsWorld) {
			f := &fakeJenkins{j: &journal{}, jobs: contractJobs(), viewer: s.Viewer}
			if s.Loading {
				f.loadingUntil = time.Now().Add(time.Hour)
			}
			for _, b := range s.Builds {
				f.startLocked(b.Job, f.resolveLocked(b.Job, b.Params))
			}
			// Quiet-down applies once the builds started: a node block that has not got
			// its executor yet waits, parked.
			f.quieting = s.QuietingDown
			for _, ft := range s.Faults {
				left := ft.Times
				if left == 0 {
					left = -1
				}
				f.faults = append(f.faults, fakeFault{method: ft.Method, kind: ft.Kind, left: left})
			}
			return f, fakeJenkinsWorld{f}
		},
		NoAnswer: errFakeNoAnswer,
	})
}

// fakeTargetsWorld is the group and target groups behind a fakeTargets.
type fakeTargetsWorld struct{ t *fakeTargets }

func (w fakeTargetsWorld) Identity() instance.Identity { return contractIdentity }

func (w fakeTargetsWorld) Registered() bool {
	w.t.mu.Lock()
	defer w.t.mu.Unlock()
	return w.t.registered
}

func (w fakeTargetsWorld) Deregistered() bool { return !w.Registered() }

func (w fakeTargetsWorld) Replacements() int {
	w.t.mu.Lock()
	defer w.t.mu.Unlock()
	return w.t.replacements
}

func (w fakeTargetsWorld) Settle() {} // the fake group finishes a detach within the call

func (w fakeTargetsWorld) StartTermination(visibleAfter time.Duration) {
	w.t.mu.Lock()
	defer w.t.mu.Unlock()
	w.t.action = &fakeLifecycleAction{visibleAt: time.Now().Add(visibleAfter)}
}

func (w fakeTargetsWorld) LifecycleCompleted() bool {
	w.t.mu.Lock()
	defer w.t.mu.Unlock()
	return w.t.action != nil && w.t.action.completed
}

func (w fakeTargetsWorld) Heartbeats() int {
	w.t.mu.Lock()
	defer w.t.mu.Unlock()
	return w.t.heartbeats
}

func (w fakeTargetsWorld) HeartbeatTimeout() time.Duration { return fakeHeartbeatTimeout }

func TestFakeTargetsContract(t *testing.T) {
	t.Parallel()
	contract.TestTargets(t, contract.TargetsHarness{
		New: func(t *testing.T, s contract.TargetsSetup) (contract.Targets, contract.TargetsWorld) {
			// The instance serves in its configured target group from the start.
			tg := &fakeTargets{j: &journal{}, inGroup: s.InGroup, hook: s.InGroup && s.Hook, registered: true}
			return tg, fakeTargetsWorld{tg}
		},
		NoLifecycleAction: instance.ErrNoLifecycleAction,
	})
}
