package lease

import (
	"context"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// BenchmarkHandover measures a clean release by one holder to the acquisition by a
// waiting successor, with the default poll interval (docs/behaviour.md promises under 2s).
func BenchmarkHandover(b *testing.B) {
	dir := b.TempDir()
	holders := [2]*Lease{
		newLease(b, dir, "i-a", func(o *Options) { o.PollInterval = DefaultPollInterval }),
		newLease(b, dir, "i-b", func(o *Options) { o.PollInterval = DefaultPollInterval }),
	}
	ctx := testenv.Context(b, 10*time.Minute)
	if _, err := holders[0].Acquire(ctx, nil); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		from, to := holders[i%2], holders[(i+1)%2]
		waiting := make(chan struct{}, 1)
		done := make(chan error, 1)
		go func() {
			_, err := to.Acquire(ctx, func(status.LeaseState) {
				select {
				case waiting <- struct{}{}:
				default:
				}
			})
			done <- err
		}()
		<-waiting
		b.StartTimer()
		if err := from.Release(ctx); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRenew measures one renewal: a read, then lock, read, write of one slot and fdatasync.
func BenchmarkRenew(b *testing.B) {
	l := newLease(b, b.TempDir(), "i-a", nil)
	ctx := context.Background()
	if _, err := l.Acquire(testenv.Context(b, time.Minute), nil); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := l.renew(ctx, 1); err != nil {
			b.Fatal(err)
		}
	}
}
