package contract

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

// Metadata tells who this instance is and what Auto Scaling means to do with it.
// Implementation: imds.Client (IMDSv2), run against amazon-ec2-metadata-mock and
// against the emulator imdstest.Server.
type Metadata interface {
	// Identity reads the instance id, region and zone (required), and the instance
	// type, zone id, market and group name (empty when the service has none). It
	// blocks until every item has answered well or ctx ends, retrying each item on
	// its own through throttling, server errors, dropped connections and stalls: give
	// it minutes at boot. Idempotent (read-only). Errors: ctx ended first (ctx's error
	// in the chain; the message names the item still missing and the last failure);
	// the service refuses for good (IMDS disabled, no IMDSv2), at once; an item that
	// keeps answering garbage (the message names it).
	Identity(ctx context.Context) (instance.Identity, error)
	// TargetLifecycleState reads the Auto Scaling state the instance is moving to
	// (InService, Warmed:Running, Warmed:Stopped, Terminated...): "" when there is none
	// yet. One request, bounded by ctx and the client's request timeout. Idempotent.
	// Errors: the request failed or the answer is not a state; never "" on a failure.
	TargetLifecycleState(ctx context.Context) (string, error)
}

// MetadataWorld is one metadata service and a Metadata reading it.
type MetadataWorld struct {
	Metadata Metadata
	// Want is the identity the service serves; LifecycleState the state it serves
	// ("" for none).
	Want           instance.Identity
	LifecycleState string
}

// MetadataHarness builds worlds for the suite.
type MetadataHarness struct {
	// New starts a service in good health.
	New func(t *testing.T) MetadataWorld
	// Flaky starts one that fails a good share of requests every way it can short of
	// refusing for good (5xx, 429, dropped connections, stalls past the request
	// timeout). Nil skips that check.
	Flaky func(t *testing.T) MetadataWorld
	// Silent returns a Metadata whose service never answers.
	Silent func(t *testing.T) Metadata
}

// TestMetadata runs the contract against the implementation the harness builds.
func TestMetadata(t *testing.T, h MetadataHarness) {
	t.Run("IdentityIsWhatTheServiceSays", func(t *testing.T) {
		w := h.New(t)
		for range 2 {
			id, err := w.Metadata.Identity(bounded(t))
			if err != nil {
				t.Fatalf("Identity: %v", err)
			}
			if id != w.Want {
				t.Fatalf("Identity = %+v, want %+v", id, w.Want)
			}
			if id.InstanceID == "" || id.Region == "" || !strings.HasPrefix(id.AvailabilityZone, id.Region) {
				t.Fatalf("Identity %+v lacks an instance id, a region or a zone in it", id)
			}
		}
	})

	t.Run("TargetLifecycleState", func(t *testing.T) {
		w := h.New(t)
		for range 2 {
			st, err := w.Metadata.TargetLifecycleState(bounded(t))
			if err != nil || st != w.LifecycleState {
				t.Fatalf("TargetLifecycleState = %q, %v; want %q", st, err, w.LifecycleState)
			}
		}
	})

	t.Run("IdentityHonoursCancel", func(t *testing.T) {
		w := h.New(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := w.Metadata.Identity(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Identity with a cancelled context = %v, want context.Canceled in the chain", err)
		}
	})

	t.Run("IdentityThroughBadWeather", func(t *testing.T) {
		if h.Flaky == nil {
			t.Skip("this harness has no flaky service")
		}
		if testing.Short() {
			t.Skip("waits through seconds of stalls")
		}
		w := h.Flaky(t)
		id, err := w.Metadata.Identity(bounded(t))
		if err != nil || id != w.Want {
			t.Fatalf("Identity through failures = %+v, %v; want %+v", id, err, w.Want)
		}
	})

	t.Run("IdentityEndsAtTheDeadline", func(t *testing.T) {
		m := h.Silent(t)
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := m.Identity(ctx)
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "instance-id") {
				t.Fatalf("Identity from a silent service = %v; want the deadline in the chain and the missing item named", err)
			}
		case <-time.After(limit):
			t.Fatal("Identity went on past its deadline")
		}
	})
}
