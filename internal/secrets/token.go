package secrets

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
)

// MinRefreshInterval is the least time between two reads of the source caused by
// refreshes: a token that Jenkins refuses for another reason (a deleted user) must not
// turn every request into a read of the parameter or secret.
const MinRefreshInterval = 10 * time.Second

// Token caches a Source's value for the Jenkins client. Get reads the source once;
// with refresh (Jenkins answered 401: the token was rotated) it reads it again, at
// most once per MinRefreshInterval. Safe for concurrent use: concurrent callers share
// one read.
type Token struct {
	src Source
	log *slog.Logger
	now func() time.Time

	mu       sync.Mutex
	value    config.Secret
	readAt   time.Time
	hasValue bool
}

// NewToken returns a Token over src; log gets one line per read (never the value).
func NewToken(src Source, log *slog.Logger) *Token {
	if log == nil {
		log = slog.Default()
	}
	return &Token{src: src, log: log, now: time.Now}
}

// Get returns the token, reading the source when nothing is cached yet or when
// refresh asks for a fresh read (and the last read is older than MinRefreshInterval).
// A failed refresh returns the error and keeps the cached value for later calls.
// It fits jenkins.Options.TokenSource.
func (t *Token) Get(ctx context.Context, refresh bool) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.hasValue && (!refresh || t.now().Sub(t.readAt) < MinRefreshInterval) {
		return t.value.Reveal(), nil
	}
	v, err := t.src.Read(ctx)
	if err != nil {
		t.log.Warn("jenkins api token: read failed", "source", t.src.String(), "refresh", refresh, "err", err)
		return "", err
	}
	changed := t.hasValue && v != t.value
	t.value, t.readAt, t.hasValue = v, t.now(), true
	t.log.Info("jenkins api token read", "source", t.src.String(), "refresh", refresh, "changed", changed)
	return v.Reveal(), nil
}

// Prefetch reads the token until it succeeds or ctx ends, backing off from 1 s to
// 30 s, so that the first read does not fall in the middle of a shutdown plan. It
// returns the last error when ctx ended first, nil on success.
func (t *Token) Prefetch(ctx context.Context) error {
	wait := time.Second
	for {
		_, err := t.Get(ctx, false)
		if err == nil {
			return nil
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return err
		case <-timer.C:
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// Source returns the source the token is read from.
func (t *Token) Source() Source { return t.src }
