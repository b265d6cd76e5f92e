package efs

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestOnHomeBoundsBlockedOperations: operations that never return are given up at the
// deadline and counted; once maxStuckOps are stuck, later ones are refused at once
// instead of adding another blocked thread; all are released when the file system
// answers again.
func TestOnHomeBoundsBlockedOperations(t *testing.T) {
	before := stuckOps.Load()
	release := make(chan struct{})
	blocked := func() (int, error) { <-release; return 1, nil }
	for i := int32(0); i < maxStuckOps-before; i++ {
		ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
		_, err := onHome(ctx, "read marker", blocked)
		cancel()
		if !errors.Is(err, ErrHomeNotAnswering) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "read marker") {
			t.Fatalf("blocked operation %d = %v, want ErrHomeNotAnswering at the deadline", i, err)
		}
	}
	ran := false
	_, err := onHome(t.Context(), "statfs", func() (int, error) { ran = true; return 0, nil })
	if !errors.Is(err, ErrHomeNotAnswering) || !strings.Contains(err.Error(), "earlier operations") || ran {
		t.Fatalf("operation beyond the bound = %v (ran %v), want a refusal without running it", err, ran)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for stuckOps.Load() != before {
		if time.Now().After(deadline) {
			t.Fatalf("stuck count %d after release, want %d", stuckOps.Load(), before)
		}
		time.Sleep(time.Millisecond)
	}
	if v, err := onHome(t.Context(), "statfs", func() (int, error) { return 7, nil }); v != 7 || err != nil {
		t.Fatalf("onHome after release = %d, %v", v, err)
	}
}
