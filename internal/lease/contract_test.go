package lease

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent/contract"
)

var _ contract.Lease = (*Lease)(nil)

// tornRecord is what a write cut short, or an operator's edit, leaves in the record.
var tornRecord = []byte(`{"holder":"i-z","epoch":4,"exp`)

// The lease on a local directory passes the agent's contract for Lease. A ttl of 2 s
// keeps the wait for an abandoned lease short and every other step far from the fence
// point; announcements are refreshed every 50 ms, so one goes stale within a second.
func TestContract(t *testing.T) {
	contract.TestLease(t, contract.LeaseHarness{
		New: func(t *testing.T) contract.LeaseWorld {
			dir := homeDir(t)
			open := func(id string, mod func(*Options)) *Lease {
				return newLease(t, dir, id, func(o *Options) {
					o.TTL, o.ClockSkew, o.AnnounceInterval = 2*time.Second, 100*time.Millisecond, 50*time.Millisecond
					if mod != nil {
						mod(o)
					}
				})
			}
			record := filepath.Join(dir, DirName, RecordName)
			return contract.LeaseWorld{
				New: func(id string) contract.Lease { return open(id, nil) },
				TakeOver: func(id string) {
					l := open(id, func(o *Options) {
						o.HolderTerminated = func(context.Context, string) (bool, error) { return true, nil }
					})
					if _, err := l.Acquire(ctxFor(t, time.Minute), nil); err != nil {
						t.Fatalf("take over as %s: %v", id, err)
					}
				},
				Corrupt: func() {
					if err := os.MkdirAll(filepath.Dir(record), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(record, tornRecord, 0o644); err != nil {
						t.Fatal(err)
					}
				},
				Corrupted: func() bool {
					b, err := os.ReadFile(record)
					return err == nil && bytes.Equal(b, tornRecord)
				},
			}
		},
		Unreadable: ErrUnreadable,
	})
}

// homeDir is a fresh home, removed when the test ends. An announcement abandoned at its
// deadline may still be written (the lease does not wait for it, so that a hung file
// system cannot delay a takeover), so removal tries again for a while.
func homeDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "lease-contract-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 100 {
			if err = os.RemoveAll(dir); err == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("remove %s: %v", dir, err)
	})
	return dir
}
