package lease

import (
	"time"

	"golang.org/x/sys/unix"
)

// Clock reads the three clocks the lease needs. Safety rests on elapsed time measured
// by one instance on its own clocks, never on two instances agreeing on the time.
type Clock interface {
	// Now is the wall clock (CLOCK_REALTIME): written into the record for operators
	// and for the expiry that older readers and status show.
	Now() time.Time
	// Monotonic is CLOCK_MONOTONIC: it never jumps, and it stops while the instance
	// is suspended (hibernated).
	Monotonic() time.Duration
	// Boottime is CLOCK_BOOTTIME: like Monotonic, but it keeps counting while the
	// instance is suspended, so it measures the real time that others see pass.
	Boottime() time.Duration
}

// SystemClock is the Clock of the running system.
type SystemClock struct{}

// Now returns time.Now.
func (SystemClock) Now() time.Time { return time.Now() }

// Monotonic returns CLOCK_MONOTONIC.
func (SystemClock) Monotonic() time.Duration { return clockRead(unix.CLOCK_MONOTONIC) }

// Boottime returns CLOCK_BOOTTIME.
func (SystemClock) Boottime() time.Duration { return clockRead(unix.CLOCK_BOOTTIME) }

func clockRead(id int32) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(id, &ts); err != nil {
		// Both clocks exist on every Linux this runs on (2.6.39+).
		panic("lease: clock_gettime: " + err.Error())
	}
	return time.Duration(ts.Nano())
}

// instant is one reading of all three clocks.
type instant struct {
	wall time.Time // without Go's monotonic reading: Sub compares wall clocks
	mono time.Duration
	boot time.Duration
}

func readClock(c Clock) instant {
	return instant{wall: c.Now().Round(0).UTC(), mono: c.Monotonic(), boot: c.Boottime()}
}

// since is the time elapsed from then to now as the worst of the clocks that keep
// counting through a suspend: CLOCK_BOOTTIME, or the wall clock if it moved further
// forward (a hypervisor pause that stopped even CLOCK_BOOTTIME shows as a wall-clock
// step once NTP corrects the clock). A wall clock that went back is ignored.
func (now instant) since(then instant) time.Duration {
	return max(now.boot-then.boot, now.wall.Sub(then.wall))
}
