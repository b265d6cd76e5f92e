package imds_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent/contract"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds/imdstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

var _ contract.Metadata = (*imds.Client)(nil)

// weather is the boot-time weather of the flaky check: 20 % 500, 10 % 429, 5 %
// dropped connections, 5 % stalls past the 2 s request timeout, seeded.
func weather(p *imdstest.FaultProxy) {
	p.SetChances("/latest/", 20261125,
		imdstest.Chance{Rate: 0.20, Fault: imdstest.Fault{Status: http.StatusInternalServerError}},
		imdstest.Chance{Rate: 0.10, Fault: imdstest.Fault{Status: http.StatusTooManyRequests}},
		imdstest.Chance{Rate: 0.05, Fault: imdstest.Fault{Drop: true}},
		imdstest.Chance{Rate: 0.05, Fault: imdstest.Fault{Delay: 3 * time.Second}})
}

func proxied(t *testing.T, upstream string, faults func(*imdstest.FaultProxy)) *imds.Client {
	p := imdstest.NewFaultProxy(upstream)
	t.Cleanup(p.Close)
	faults(p)
	return imds.New(imds.Options{Endpoint: p.URL()})
}

func silent(p *imdstest.FaultProxy) { p.SetFault("/latest/", imdstest.Fault{Delay: time.Hour}) }

// TestMetadataAEMM: the IMDS client against amazon-ec2-metadata-mock, the real peer,
// in an Auto Scaling group (asglifecycle: InService until a termination an hour away).
func TestMetadataAEMM(t *testing.T) {
	world := func(t *testing.T, faults func(*imdstest.FaultProxy)) contract.MetadataWorld {
		url := imdstest.StartAEMM(t, "asglifecycle", "--asg-termination-delay-sec", "3600")
		return contract.MetadataWorld{Metadata: proxied(t, url, faults), Want: aemmIdentity, LifecycleState: "InService"}
	}
	contract.TestMetadata(t, contract.MetadataHarness{
		New:    func(t *testing.T) contract.MetadataWorld { return world(t, func(*imdstest.FaultProxy) {}) },
		Flaky:  func(t *testing.T) contract.MetadataWorld { return world(t, weather) },
		Silent: func(t *testing.T) contract.Metadata { return world(t, silent).Metadata },
	})
}

// TestMetadataEmulator: the IMDS client against the emulator, a warm-pool instance
// with every identity item, the group tag included.
func TestMetadataEmulator(t *testing.T) {
	id := instance.Identity{
		InstanceID: "i-0abc1234def567890", InstanceType: "c7g.2xlarge", AvailabilityZone: "eu-west-1b",
		AZID: "euw1-az2", Region: "eu-west-1", Market: "spot", AutoScalingGroup: "jenkins-controller",
	}
	world := func(t *testing.T, faults func(*imdstest.FaultProxy)) contract.MetadataWorld {
		srv := imdstest.NewServer(id)
		t.Cleanup(srv.Close)
		srv.SetTargetLifecycleState("Warmed:Running")
		return contract.MetadataWorld{Metadata: proxied(t, srv.URL(), faults), Want: id, LifecycleState: "Warmed:Running"}
	}
	contract.TestMetadata(t, contract.MetadataHarness{
		New:    func(t *testing.T) contract.MetadataWorld { return world(t, func(*imdstest.FaultProxy) {}) },
		Flaky:  func(t *testing.T) contract.MetadataWorld { return world(t, weather) },
		Silent: func(t *testing.T) contract.Metadata { return world(t, silent).Metadata },
	})
}

// TestMetadataNoLifecycleState: an instance that never changed state (the emulator
// answers 404, as IMDS does) reads "", not an error. (AEMM cannot serve this: run
// without asglifecycle it answers Terminated.)
func TestMetadataNoLifecycleState(t *testing.T) {
	id := instance.Identity{InstanceID: "i-0abc1234def567890", AvailabilityZone: "eu-west-1b", Region: "eu-west-1"}
	world := func(t *testing.T, faults func(*imdstest.FaultProxy)) contract.MetadataWorld {
		srv := imdstest.NewServer(id)
		t.Cleanup(srv.Close)
		return contract.MetadataWorld{Metadata: proxied(t, srv.URL(), faults), Want: id}
	}
	contract.TestMetadata(t, contract.MetadataHarness{
		New:    func(t *testing.T) contract.MetadataWorld { return world(t, func(*imdstest.FaultProxy) {}) },
		Silent: func(t *testing.T) contract.Metadata { return world(t, silent).Metadata },
	})
}
