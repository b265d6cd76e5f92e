package efs

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		attempt int
		r       float64
		want    time.Duration
	}{
		{0, 0, 500 * time.Millisecond},
		{0, 0.999999, 999999 * time.Microsecond},
		{1, 0, time.Second},
		{2, 0, 2 * time.Second},
		{3, 0.5, 6 * time.Second},
		{4, 0, 7500 * time.Millisecond}, // capped at 15 s before the jitter
		{60, 0, 7500 * time.Millisecond},
		{1000, 0.5, 11250 * time.Millisecond},
	}
	for _, tt := range tests {
		got := backoff(tt.attempt, time.Second, 15*time.Second, tt.r)
		if got.Round(time.Microsecond) != tt.want {
			t.Errorf("backoff(%d, r=%v) = %v, want %v", tt.attempt, tt.r, got, tt.want)
		}
	}
}
