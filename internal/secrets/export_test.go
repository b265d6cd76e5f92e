package secrets

import "time"

// SetTokenClock replaces the clock of t (tests).
func SetTokenClock(t *Token, now func() time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.now = now
}
