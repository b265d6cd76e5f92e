// Package lease keeps a single writer on JENKINS_HOME. The home lives on a shared file
// system (EFS) that two controllers can mount at once during a handover; the lease is a
// small record beside the data that names the one instance allowed to run Jenkins.
//
// The design is a time-based lease with self-fencing. The record is changed only under
// an exclusive byte-range lock and replaced atomically. The holder renews it every
// TTL/3; a successor takes it after a clean release, after the expiry plus an allowance
// for clock error, or when EC2 says the holder is gone. A holder that cannot renew
// stops its Jenkins (the fence) before the lease can lapse, so by the time a successor
// may take over, the old writer is already gone. File locks alone are not enough: EFS
// does not document its lock lease time, and a client that loses its lock state is
// not told until its next I/O fails.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/clock"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// DirName is the directory, at the top of the home, that holds the lease files.
// Tools that copy or compare the home (migrate) leave it out.
const DirName = ".jenkins-spot-agent"

// RecordName is the file name of the lease record inside DirName.
const RecordName = "lease.json"

// lockName is the lock file beside the record. It is never removed: removing a lock
// file lets two writers lock two different inodes.
const lockName = "lease.lock"

// Defaults for Options.
const (
	DefaultTTL          = 30 * time.Second
	DefaultClockSkew    = 2 * time.Second
	DefaultPollInterval = 250 * time.Millisecond
)

// MaxTTL is the longest ttl CheckTTL accepts: a holder that crashes without releasing
// blocks its successor for up to a ttl.
const MaxTTL = 10 * time.Minute

// CheckTTL is the rule for the configured ttl (lease.ttl), which the agent uses with
// the default clock-skew allowance DefaultClockSkew: the ttl must be more than twice
// the allowance (so more than 4s) and at most MaxTTL. config.Validate calls it, so a
// ttl the lease would refuse at run time stops the agent before anything is touched.
// The error says what to change.
func CheckTTL(ttl time.Duration) error {
	if err := checkTiming(ttl, DefaultClockSkew); err != nil {
		return err
	}
	if ttl > MaxTTL {
		return fmt.Errorf("%s is too long: a holder that crashes would block its successor that long (at most %s; 30s is usual)", ttl, MaxTTL)
	}
	return nil
}

// checkTiming is the rule that New applies to every lease. The fence point (ttl - skew
// - ttl/6 after a renewal) must come after the first renewal retry (ttl/3), or a
// single slow write would stop Jenkins: the skew allowance must be under ttl/2.
func checkTiming(ttl, skew time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("%s must be positive (30s is usual)", ttl)
	}
	if skew >= ttl/2 {
		return fmt.Errorf("%s is too short: the allowance for clock error between instances (%s) must be under half the ttl, so the ttl must be more than %s (30s is usual)", ttl, skew, 2*skew)
	}
	return nil
}

// holderCheckEvery bounds how often a waiting successor asks EC2 about the holder:
// DescribeInstances is rate limited per account, and the answer changes slowly.
const holderCheckEvery = 5 * time.Second

// holderCheckTimeout bounds one question to EC2.
const holderCheckTimeout = 10 * time.Second

// ErrLost means another holder took the lease, or its record vanished, while this
// holder believed it held it. Jenkins must not keep running.
var ErrLost = errors.New("lease lost")

// ErrUnreadable means the record exists but cannot be parsed. It is never overwritten
// automatically, because that could hand the home to a second writer.
var ErrUnreadable = errors.New("lease record unreadable")

// errReleased tells the holding loop that Release ran, so renewing must stop.
var errReleased = errors.New("lease released")

// Options configure a Lease.
type Options struct {
	// Dir is the home (the mounted file system). It must exist; the lease directory
	// is created inside it.
	Dir string
	// HolderID names this holder: the EC2 instance id.
	HolderID string
	// TTL is how long a renewal keeps the lease (default 30s). It is renewed every TTL/3.
	TTL time.Duration
	// ClockSkew is the allowance for clock error between instances (default 2s). A
	// successor waits until expiry plus ClockSkew; it must be under TTL/2.
	ClockSkew time.Duration
	// PollInterval is how often a waiting successor re-reads the record (default
	// 250ms, so a clean release hands over well within 2s).
	PollInterval time.Duration
	// HolderTerminated, when set, is asked (at most every few seconds) whether the
	// holder instance is terminated; if so the lease is taken without waiting for expiry.
	HolderTerminated func(ctx context.Context, instanceID string) (bool, error)
	// Logger receives the lease's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock used for the record's times; nil means time.Now.
	Now func() time.Time
}

// Lease is one holder's handle on the lease record. Its methods are safe for
// concurrent use; Hold is meant to run in its own goroutine while Jenkins runs.
type Lease struct {
	opts       Options
	log        *slog.Logger
	dir        string
	recordPath string
	lockPath   string

	mu        sync.Mutex
	held      bool          // a tenure was acquired and not released or lost
	releasing bool          // Release is writing, or wrote, the released record
	fenced    bool          // fence ran and no renewal succeeded since
	epoch     uint64        // our tenure
	renewedAt time.Time     // our clock just before the last successful write
	seen      Record        // the record as last read or written
	done      chan struct{} // closed when the current tenure ends (released or lost)
}

// New checks the options and fills in defaults. It touches no file.
func New(opts Options) (*Lease, error) {
	if opts.Dir == "" {
		return nil, errors.New("lease: no home directory given")
	}
	if opts.HolderID == "" {
		return nil, errors.New("lease: no holder id given")
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.ClockSkew == 0 {
		opts.ClockSkew = DefaultClockSkew
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.TTL < 0 || opts.ClockSkew < 0 || opts.PollInterval < 0 {
		return nil, errors.New("lease: ttl, clock skew and poll interval must be positive")
	}
	if err := checkTiming(opts.TTL, opts.ClockSkew); err != nil {
		return nil, fmt.Errorf("lease: ttl %w", err)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Join(opts.Dir, DirName)
	return &Lease{
		opts:       opts,
		log:        log.With("holder", opts.HolderID),
		dir:        dir,
		recordPath: filepath.Join(dir, RecordName),
		lockPath:   filepath.Join(dir, lockName),
	}, nil
}

// RecordPath is the path of the lease record, for messages to operators.
func (l *Lease) RecordPath() string { return l.recordPath }

// tenure names one holding of the lease.
type tenure struct {
	holder string
	epoch  uint64
}

// verdict is what a would-be holder may do with the record it read.
type verdict int

const (
	verdictWait  verdict = iota // someone else holds a live lease
	verdictTake                 // start a new tenure (epoch+1)
	verdictAdopt                // our own unreleased record: keep its epoch
)

// decide is the pure rule of acquisition. rec is nil when there is no record. gone
// names a tenure that EC2 reported terminated.
func decide(rec *Record, me string, now time.Time, skew time.Duration, gone tenure) verdict {
	switch {
	case rec == nil:
		return verdictTake
	case rec.Holder == me && !rec.Released:
		// The agent restarted on the same instance: its Jenkins may still be running
		// under this tenure, so keep it rather than wait for ourselves.
		return verdictAdopt
	case !rec.live(now, skew):
		return verdictTake
	case gone.holder == rec.Holder && gone.epoch == rec.Epoch:
		return verdictTake
	}
	return verdictWait
}

// Acquire takes the lease, waiting as long as ctx allows. waiting, if not nil, is
// called when Acquire first finds the lease held by another instance and whenever the
// holder or the expiry changes. An unreadable record is an error, not a takeover.
func (l *Lease) Acquire(ctx context.Context, waiting func(status.LeaseState)) (status.LeaseState, error) {
	if fi, err := os.Stat(l.opts.Dir); err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		return status.LeaseState{}, fmt.Errorf("acquire lease: home %s: %v; is the file system mounted?", l.opts.Dir, err)
	}
	if err := os.Mkdir(l.dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return status.LeaseState{}, fmt.Errorf("acquire lease: %w", err)
	}
	var (
		gone     tenure
		reported *Record
		askedAt  time.Time
		asked    tenure
	)
	for {
		var (
			rec     Record
			v       verdict
			written Record
			now     time.Time
		)
		err := l.do(ctx, func(ctx context.Context) error {
			unlock, err := lockExclusive(ctx, l.lockPath)
			if err != nil {
				return err
			}
			defer unlock()
			cur, exists, err := readRecord(l.recordPath)
			if err != nil {
				return err
			}
			now = l.opts.Now().UTC()
			var curp *Record
			if exists {
				curp = &cur
			}
			rec = cur
			v = decide(curp, l.opts.HolderID, now, l.opts.ClockSkew, gone)
			if v == verdictWait {
				return nil
			}
			written = Record{Holder: l.opts.HolderID, Epoch: cur.Epoch + 1, Expires: now.Add(l.opts.TTL), RenewedAt: now}
			if v == verdictAdopt {
				written.Epoch = cur.Epoch
			}
			return writeRecord(l.recordPath, written)
		})
		if err != nil {
			return status.LeaseState{}, fmt.Errorf("acquire lease: %w", err)
		}
		if v != verdictWait {
			l.mu.Lock()
			if !l.held {
				l.done = make(chan struct{})
			}
			l.held, l.releasing, l.fenced = true, false, false
			l.epoch, l.renewedAt, l.seen = written.Epoch, now, written
			l.mu.Unlock()
			switch {
			case v == verdictAdopt:
				l.log.Info("adopting own lease", "epoch", written.Epoch, "expires", written.Expires)
			case rec.Holder != "" && rec.Holder != l.opts.HolderID:
				l.log.Info("took over lease", "epoch", written.Epoch, "previous_holder", rec.Holder,
					"previous_released", rec.Released, "previous_expires", rec.Expires, "expires", written.Expires)
			default:
				l.log.Info("acquired lease", "epoch", written.Epoch, "expires", written.Expires)
			}
			return l.stateOf(written, true), nil
		}

		l.mu.Lock()
		l.seen = rec
		l.mu.Unlock()
		if reported == nil || reported.Holder != rec.Holder || reported.Epoch != rec.Epoch || !reported.Expires.Equal(rec.Expires) {
			r := rec
			reported = &r
			l.log.Info("waiting for lease", "current_holder", rec.Holder, "epoch", rec.Epoch, "expires", rec.Expires)
			if waiting != nil {
				waiting(l.stateOf(rec, true))
			}
		}
		cur := tenure{rec.Holder, rec.Epoch}
		if l.opts.HolderTerminated != nil && (cur != asked || time.Since(askedAt) >= holderCheckEvery) {
			asked, askedAt = cur, time.Now()
			if l.holderGone(ctx, rec.Holder) {
				gone = cur
				continue // take it now, under the lock, if the record has not changed
			}
		}
		if !clock.Sleep(ctx, l.opts.PollInterval) {
			return status.LeaseState{}, fmt.Errorf("acquire lease: still held by %s (epoch %d, expires %s): %w",
				rec.Holder, rec.Epoch, rec.Expires.Format(time.RFC3339), ctx.Err())
		}
	}
}

// holderGone asks HolderTerminated; an error is logged and means "not known to be gone".
func (l *Lease) holderGone(ctx context.Context, holder string) bool {
	cctx, cancel := context.WithTimeout(ctx, holderCheckTimeout)
	defer cancel()
	gone, err := l.opts.HolderTerminated(cctx, holder)
	if err != nil {
		l.log.Warn("cannot tell whether the lease holder is terminated; waiting for expiry", "current_holder", holder, "err", err)
		return false
	}
	if gone {
		l.log.Info("lease holder is terminated; taking over without waiting for expiry", "current_holder", holder)
	}
	return gone
}

// Hold renews the lease every TTL/3 until ctx ends (then it returns nil) or Release
// runs (nil too). When renewals keep failing, fence is called once, before the lease
// can lapse (TTL - ClockSkew - TTL/6 after the last good renewal), and renewing goes
// on: a renewal that succeeds again clears the fence and Held is true again. If the
// record shows another holder or epoch, fence is called (if it was not already) and
// Hold returns an error wrapping ErrLost.
func (l *Lease) Hold(ctx context.Context, fence func(context.Context) error) error {
	l.mu.Lock()
	held, done := l.held, l.done
	l.mu.Unlock()
	if !held {
		return errors.New("hold lease: not acquired; call Acquire first")
	}
	every := l.opts.TTL / 3
	retry := max(l.opts.TTL/10, time.Millisecond)

	// Renew at once: the caller may have spent part of the TTL since Acquire.
	renew := time.NewTimer(0)
	defer renew.Stop()
	fenceTimer := time.NewTimer(l.untilFence())
	defer fenceTimer.Stop()
	results := make(chan error, 1)
	inflight := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-done:
			return nil
		case <-renew.C:
			// A renewal runs in its own goroutine: on a hard NFS mount a write can
			// hang in the kernel, and the fence timer must still fire.
			if !inflight {
				inflight = true
				go func() {
					rctx, cancel := context.WithTimeout(ctx, every)
					defer cancel()
					results <- l.renew(rctx)
				}()
			}
		case err := <-results:
			inflight = false
			switch {
			case errors.Is(err, errReleased):
				return nil
			case errors.Is(err, ErrLost):
				l.log.Error("LEASE LOST: another controller owns JENKINS_HOME; stopping Jenkins", "err", err)
				l.fenceOnce(ctx, fence, err)
				l.mu.Lock()
				l.endLocked()
				l.mu.Unlock()
				return fmt.Errorf("hold lease: %w", err)
			case err != nil:
				if ctx.Err() != nil {
					return nil
				}
				l.log.Warn("lease renewal failed; retrying", "err", err, "fence_in", l.untilFence().Round(time.Millisecond))
				renew.Reset(retry)
			default:
				renew.Reset(every)
				fenceTimer.Reset(l.untilFence())
			}
		case <-fenceTimer.C:
			l.mu.Lock()
			fenced := l.fenced
			l.mu.Unlock()
			if !fenced {
				l.log.Error("LEASE NOT RENEWED IN TIME: stopping Jenkins before the lease lapses; will keep trying to renew",
					"epoch", l.State().Epoch, "ttl", l.opts.TTL)
				l.fenceOnce(ctx, fence, errors.New("lease renewal failing"))
			}
		}
	}
}

// fenceOnce calls fence unless it already ran for the current failure.
func (l *Lease) fenceOnce(ctx context.Context, fence func(context.Context) error, why error) {
	l.mu.Lock()
	if l.fenced {
		l.mu.Unlock()
		return
	}
	l.fenced = true
	l.mu.Unlock()
	if fence == nil {
		return
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.opts.TTL)
	defer cancel()
	if err := fence(fctx); err != nil {
		l.log.Error("fence failed: Jenkins may still be running without a lease; stop its container by hand", "cause", why, "err", err)
	}
}

// untilFence is the time left before the fence point of the current renewal.
func (l *Lease) untilFence() time.Duration {
	l.mu.Lock()
	at := l.fenceAtLocked()
	l.mu.Unlock()
	return max(at.Sub(l.opts.Now()), 0)
}

// fenceAtLocked is the moment Jenkins must be stopped if no renewal succeeds: early
// enough that it is gone before any successor may believe the lease lapsed.
func (l *Lease) fenceAtLocked() time.Time {
	return l.renewedAt.Add(l.opts.TTL - l.opts.ClockSkew - l.opts.TTL/6)
}

// renew extends our tenure by TTL if the record is still ours.
func (l *Lease) renew(ctx context.Context) error {
	l.mu.Lock()
	if !l.held || l.releasing {
		l.mu.Unlock()
		return errReleased
	}
	epoch := l.epoch
	l.mu.Unlock()
	return l.do(ctx, func(ctx context.Context) error {
		// Read before locking: when writes fail (a read-only or partitioned mount)
		// this is how we still learn that a successor took over.
		if rec, exists, err := readRecord(l.recordPath); err == nil {
			if err := l.checkOurs(rec, exists, epoch); err != nil {
				return err
			}
		}
		unlock, err := lockExclusive(ctx, l.lockPath)
		if err != nil {
			return fmt.Errorf("renew lease: %w", err)
		}
		defer unlock()
		rec, exists, err := readRecord(l.recordPath)
		if err != nil {
			return fmt.Errorf("renew lease: %w", err)
		}
		if err := l.checkOurs(rec, exists, epoch); err != nil {
			return err
		}
		now := l.opts.Now().UTC()
		next := Record{Holder: l.opts.HolderID, Epoch: epoch, Expires: now.Add(l.opts.TTL), RenewedAt: now}
		if err := writeRecord(l.recordPath, next); err != nil {
			return fmt.Errorf("renew lease: %w", err)
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.held && l.epoch == epoch {
			if l.fenced {
				l.log.Warn("lease renewed again after fencing; Jenkins may be started again", "epoch", epoch)
			}
			l.renewedAt, l.seen, l.fenced = now, next, false
		}
		return nil
	})
}

// checkOurs tells whether rec is still our tenure.
func (l *Lease) checkOurs(rec Record, exists bool, epoch uint64) error {
	switch {
	case !exists:
		return fmt.Errorf("%w: the record %s was removed", ErrLost, l.recordPath)
	case rec.Holder != l.opts.HolderID || rec.Epoch != epoch:
		l.mu.Lock()
		l.seen = rec
		l.mu.Unlock()
		return fmt.Errorf("%w: taken by %s (epoch %d, ours was %d)", ErrLost, rec.Holder, rec.Epoch, epoch)
	case rec.Released:
		l.mu.Lock()
		releasing := l.releasing
		l.mu.Unlock()
		if releasing {
			return errReleased
		}
		return fmt.Errorf("%w: the record was marked released by someone else", ErrLost)
	}
	return nil
}

// Held reports whether this holder holds the lease, has not been fenced, and renewed
// recently enough that no successor can have taken it.
func (l *Lease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heldLocked()
}

func (l *Lease) heldLocked() bool {
	return l.held && !l.releasing && !l.fenced && l.opts.Now().Before(l.fenceAtLocked())
}

// Release gives the lease up (released, expiring now) if the record is still our
// tenure, so that a waiting successor takes it at its next poll. Releasing twice, or
// without having acquired, does nothing. If another holder took the lease meanwhile,
// the record is left alone and the error wraps ErrLost.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	if !l.held {
		l.mu.Unlock()
		return nil
	}
	l.releasing = true
	epoch := l.epoch
	l.mu.Unlock()
	var written Record
	err := l.do(ctx, func(ctx context.Context) error {
		unlock, err := lockExclusive(ctx, l.lockPath)
		if err != nil {
			return err
		}
		defer unlock()
		rec, exists, err := readRecord(l.recordPath)
		if err != nil {
			return err
		}
		if err := l.checkOurs(rec, exists, epoch); err != nil {
			if errors.Is(err, errReleased) {
				written = rec
				return nil
			}
			return err
		}
		now := l.opts.Now().UTC()
		written = Record{Holder: l.opts.HolderID, Epoch: epoch, Expires: now, Released: true, RenewedAt: now}
		return writeRecord(l.recordPath, written)
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.endLocked()
		l.seen = written
		l.log.Info("released lease", "epoch", epoch)
		return nil
	case errors.Is(err, ErrLost):
		l.endLocked()
	default:
		l.releasing = false
	}
	return fmt.Errorf("release lease: %w", err)
}

// endLocked ends the current tenure and wakes Hold.
func (l *Lease) endLocked() {
	if l.held {
		l.held = false
		close(l.done)
	}
}

// State is this holder's view of the lease: Held as Held reports it, and the record as
// last read or written.
func (l *Lease) State() status.LeaseState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return status.LeaseState{Held: l.heldLocked(), Holder: l.seen.Holder, Epoch: l.seen.Epoch, Expires: l.seen.Expires}
}

// Peek reads the record as it is now, for status and preflight checks. Held means the
// record keeps others out (not released, not expired). No record yields a zero state.
func (l *Lease) Peek(ctx context.Context) (status.LeaseState, error) {
	var (
		rec    Record
		exists bool
	)
	err := l.do(ctx, func(context.Context) error {
		var err error
		rec, exists, err = readRecord(l.recordPath)
		return err
	})
	if err != nil {
		return status.LeaseState{}, fmt.Errorf("peek lease: %w", err)
	}
	if !exists {
		return status.LeaseState{}, nil
	}
	return l.stateOf(rec, rec.live(l.opts.Now(), l.opts.ClockSkew)), nil
}

func (l *Lease) stateOf(rec Record, held bool) status.LeaseState {
	return status.LeaseState{Held: held, Holder: rec.Holder, Epoch: rec.Epoch, Expires: rec.Expires}
}

// do runs file I/O in its own goroutine so that the caller gets control back when ctx
// ends even if the file system hangs (EFS is mounted "hard"). fn must not touch the
// caller's variables after ctx ends; the results it sets are read only on success.
func (l *Lease) do(ctx context.Context, fn func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
