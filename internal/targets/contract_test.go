package targets

import (
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent/contract"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// The adapter, talking to the double, passes the agent's contract for Targets. The
// double's group deregisters a detached instance a little after DetachInstances answers,
// as Auto Scaling does, so the suite sees whether the instance stays registered.
func TestContract(t *testing.T) {
	contract.TestTargets(t, contract.TargetsHarness{
		New:               newContractWorld,
		NoLifecycleAction: ErrNoLifecycleAction,
	})
}

var _ contract.Targets = (*Client)(nil)

// contractHookTimeout is the heartbeat timeout of the contract world's hook: the 150 s
// of the project's stack.
const contractHookTimeout = 150 * time.Second

// contractWorld is the double behind one adapter, seen as the suite sees a world.
type contractWorld struct {
	t       *testing.T
	srv     *awstest.Server
	setup   contract.TargetsSetup
	initial map[string]string // the group's instances at the start
}

func newContractWorld(t *testing.T, s contract.TargetsSetup) (contract.Targets, contract.TargetsWorld) {
	srv := newServer(t)
	srv.SetDeregistrationDelay(300 * time.Millisecond)
	srv.SetDetachLag(150 * time.Millisecond)
	srv.AddTargetGroup(tgA, awstest.Target{ID: instanceID})
	opts := Options{TargetGroups: []TargetGroup{{ARN: tgA, Port: 8080}}, Discover: true, PollInterval: 20 * time.Millisecond}
	if s.InGroup {
		srv.AddAutoScalingGroup(asgName, []string{instanceID}, []string{tgB}, "")
		if s.Hook {
			srv.SetLifecycleHook(asgName, hook, contractHookTimeout, "CONTINUE")
			opts.LifecycleHook = hook
		}
	}
	w := &contractWorld{t: t, srv: srv, setup: s, initial: srv.GroupInstances(asgName)}
	return newClient(t, srv, opts), w
}

func (w *contractWorld) Identity() instance.Identity {
	return instance.Identity{InstanceID: instanceID, Region: region, AvailabilityZone: "us-east-1a"}
}

func (w *contractWorld) servedIn() []string {
	if w.setup.InGroup {
		return []string{tgA, tgB}
	}
	return []string{tgA}
}

func (w *contractWorld) Registered() bool {
	for _, arn := range w.servedIn() {
		if s := w.srv.TargetState(arn, instanceID); s == awstest.StateDraining || s == awstest.StateUnused {
			return false
		}
	}
	return true
}

func (w *contractWorld) Deregistered() bool {
	for _, arn := range w.servedIn() {
		if s := w.srv.TargetState(arn, instanceID); s != awstest.StateDraining && s != awstest.StateUnused {
			return false
		}
	}
	return true
}

func (w *contractWorld) Replacements() int {
	n := 0
	for id := range w.srv.GroupInstances(asgName) {
		if _, there := w.initial[id]; !there {
			n++
		}
	}
	return n
}

func (w *contractWorld) Settle() {
	testenv.Eventually(w.t, "the group to finish the detach", func() bool {
		return w.srv.GroupInstances(asgName)[instanceID] != "Detaching"
	})
}

func (w *contractWorld) StartTermination(visibleAfter time.Duration) {
	w.srv.SetLifecyclePropagationDelay(visibleAfter)
	w.srv.PendLifecycleAction(asgName, hook, instanceID)
}

func (w *contractWorld) LifecycleCompleted() bool {
	r, ok := w.srv.LifecycleResult(asgName, instanceID)
	return ok && r == "CONTINUE" && !w.srv.LifecycleTimedOut(asgName, instanceID)
}

func (w *contractWorld) Heartbeats() int {
	n := 0
	for _, c := range w.srv.CallsOf("RecordLifecycleActionHeartbeat") {
		if c.Code == "" && c.Params.Get("InstanceId") == instanceID {
			n++
		}
	}
	return n
}

func (w *contractWorld) HeartbeatTimeout() time.Duration { return contractHookTimeout }
