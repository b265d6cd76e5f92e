//go:build race

package lease

// raceEnabled: under the race detector the model checks its smaller configurations
// (it has no concurrency for the detector to watch, only states to count).
const raceEnabled = true
