package efs

import (
	"math/rand/v2"
	"time"
)

// backoff returns the wait before retry attempt+1: doubling from initial, capped at
// max, then scaled by a factor in [0.5, 1) drawn from r in [0, 1) so that instances
// started together do not retry in lockstep.
func backoff(attempt int, initial, max time.Duration, r float64) time.Duration {
	d := initial
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return time.Duration(float64(d) * (0.5 + r/2))
}

func randFloat() float64 { return rand.Float64() }
