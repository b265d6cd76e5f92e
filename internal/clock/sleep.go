// Package clock holds the one way the agent's loops pause: a sleep that a context
// cuts short, so that no loop outlives its deadline or its shutdown.
package clock

import (
	"context"
	"time"
)

// Sleep waits d, or until ctx ends, whichever comes first. It reports whether the
// whole d passed (false: ctx ended, and the caller should return ctx.Err()). A d of
// zero or less returns true at once unless ctx has already ended.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
