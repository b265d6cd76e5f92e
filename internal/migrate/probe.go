package migrate

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// MaxAutoWorkers bounds the worker count chosen from the latency: past it the client's
// CPU, not the round trips, sets the pace (and an NFS session has a bounded number of
// request slots).
const MaxAutoWorkers = 128

// probeRounds is how many times the probe is timed; the median is kept.
const probeRounds = 5

// squashProbeOwner is the owner the probe file is given: root may give a file away only
// when the file system does not squash it.
const squashProbeOwner = 65534

// WorkersFor is the number of entries to copy at once for a target whose metadata
// operations take latency each (one round trip on EFS). On a local disk (well under
// 100 µs an operation) the copy is bound by the CPU and one worker is fastest; on a
// network file system each worker spends most of its time waiting for replies, so
// enough workers are kept busy to hide the latency: one per 8 µs of it (12 at 100 µs,
// 125 at 1 ms), at most MaxAutoWorkers. The factor and the bound are measured: see the
// worker sweep of BenchmarkMigrateEFS in docs/benchmarks.md.
func WorkersFor(latency time.Duration) int {
	if latency < 100*time.Microsecond {
		return 1
	}
	return min(max(int(latency/(8*time.Microsecond)), 4), MaxAutoWorkers)
}

// probeTarget measures the target's latency and proves that root keeps owners there: it
// creates a file, gives it away (as root), changes its mode and removes it, a few times,
// and returns the median time of the mode change (one metadata round trip). dir is the target's descriptor, to its
// name for messages.
func probeTarget(dir int, name string) (time.Duration, error) {
	probe := partialPrefix + "probe"
	var rounds []time.Duration
	for range probeRounds {
		if err := unix.Unlinkat(dir, probe, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return 0, fmt.Errorf("probe %s: %w", name, err)
		}
		fd, err := unix.Openat(dir, probe, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return 0, fmt.Errorf("probe %s: cannot create a file: %w", name, err)
		}
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		if err == nil && os.Geteuid() == 0 {
			if st.Uid != 0 {
				err = fmt.Errorf("%w: a file root creates in %s belongs to uid %d", ErrRootSquashed, name, st.Uid)
			} else if cerr := unix.Fchown(fd, squashProbeOwner, squashProbeOwner); cerr != nil {
				err = fmt.Errorf("%w: root cannot give a file away in %s: %v", ErrRootSquashed, name, cerr)
			}
		}
		// A chmod is one round trip on any file system (a chown may cost more).
		start := time.Now()
		if err == nil {
			err = unix.Fchmod(fd, 0o640)
		}
		elapsed := time.Since(start)
		_ = unix.Close(fd)
		if uerr := unix.Unlinkat(dir, probe, 0); err == nil && uerr != nil {
			err = uerr
		}
		if errors.Is(err, ErrRootSquashed) {
			return 0, fmt.Errorf("%w; migrate must keep the owners of the old home. Allow root access "+
				"(elasticfilesystem:ClientRootAccess in the file system policy, or mount without an access point "+
				"that sets a POSIX user), then run it again", err)
		}
		if err != nil {
			return 0, fmt.Errorf("probe %s: %w", name, err)
		}
		rounds = append(rounds, elapsed)
	}
	slices.Sort(rounds)
	return rounds[len(rounds)/2], nil
}
