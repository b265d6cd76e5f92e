// Package lease keeps a single writer on JENKINS_HOME. The home lives on a shared file
// system (EFS) that two controllers can mount at once during a handover; the lease is a
// small record beside the data that names the one instance allowed to run Jenkins.
//
// The design is a time-based lease with self-fencing (docs/reliability.md has the
// timelines it was checked against, and model_test.go checks it exhaustively):
//
//   - The record lives in one file, changed only under an exclusive lock on that file
//     and written through the locked descriptor (two slots with checksums, so a torn
//     write leaves the previous record). On NFSv4.1 a client whose lock the server
//     dropped gets EIO for its later writes through that descriptor, so a write cannot
//     land once another instance may hold the lock. An attempt abandoned by its caller
//     (its context ended) never writes and never changes the holder's state.
//   - The holder renews every TTL/3. Every time is taken before the first I/O of the
//     attempt, and the holder measures elapsed time on CLOCK_BOOTTIME (or the wall
//     clock if that moved further), which keeps counting through a freeze or a
//     hibernation.
//   - A successor takes the lease after a clean release, when EC2 says the holder is
//     terminated, or when it has seen the record unchanged for TTL plus the allowance
//     on its own clock. It never compares its clock with the holder's, so clock skew
//     between instances cannot make two holders.
//   - A holder that cannot renew stops its Jenkins (the fence) TTL - allowance - TTL/6
//     after the start of its last good write, before any successor may take over.
//     After a fence the tenure is over: Held stays false, and only a new Acquire (with a
//     new epoch) brings the holder back.
//
// File locks alone are not enough: EFS does not document its lock lease time, and a
// client that loses its lock state is not told until its next I/O fails.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// DirName is the directory, at the top of the home, that holds the lease files.
// Tools that copy or compare the home (migrate) leave it out.
const DirName = ".jenkins-spot-agent"

// RecordName is the file name of the lease record inside DirName. The file is also
// the lock: it is never removed or replaced while the home is in use.
const RecordName = "lease"

// Defaults for Options.
const (
	DefaultTTL          = 30 * time.Second
	DefaultClockSkew    = 2 * time.Second
	DefaultPollInterval = 250 * time.Millisecond
)

// holderCheckEvery bounds how often a waiting successor asks EC2 about the holder:
// DescribeInstances is rate limited per account, and the answer changes slowly.
const holderCheckEvery = 5 * time.Second

// holderCheckTimeout bounds one question to EC2.
const holderCheckTimeout = 10 * time.Second

// ErrLost means another holder took the lease, or its record vanished, while this
// holder believed it held it. Jenkins must not keep running; the tenure is over.
var ErrLost = errors.New("lease lost")

// ErrFenced means the holder could not renew in time (the file system hung, or the
// instance was frozen or suspended) and stopped its Jenkins through the fence. The
// tenure is over: Held stays false, and only a new Acquire (a new epoch) may start
// Jenkins again.
var ErrFenced = errors.New("lease fenced")

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
	// HolderID names this holder: the EC2 instance id (1 to 128 bytes of letters,
	// digits and . _ : / @ + -).
	HolderID string
	// TTL is how long a renewal keeps the lease (default 30s). It is renewed every TTL/3.
	TTL time.Duration
	// ClockSkew is the allowance (default 2s, under TTL/2) a successor adds to the ttl
	// before it takes a record it saw unchanged: for clock rate error, its own poll
	// delay, and the fence's run time beyond the ttl/6 the holder keeps in hand. Clock
	// offsets between instances do not enter: no instance trusts another's clock.
	ClockSkew time.Duration
	// PollInterval is how often a waiting successor re-reads the record (default
	// 250ms, so a clean release hands over well within 2s).
	PollInterval time.Duration
	// HolderTerminated, when set, is asked (at most every few seconds) whether the
	// holder instance is terminated; if so the lease is taken without waiting. It must
	// answer true only for the EC2 state "terminated": a shutting-down or stopped
	// instance may still write (or come back and write).
	HolderTerminated func(ctx context.Context, instanceID string) (bool, error)
	// StateDir, when set, is a local directory (the agent's state_dir) where the lease
	// keeps the highest epoch seen and the highest ended here (StateFile), so that an
	// agent restart never adopts a tenure that was fenced or lost. Without it the
	// lease remembers them only while the process lives.
	StateDir string
	// AnnounceInterval is how often a waiting successor refreshes its announcement
	// (default 2s); the holder treats one not refreshed for three intervals as stale.
	AnnounceInterval time.Duration
	// Logger receives the lease's logs; nil discards them.
	Logger *slog.Logger
	// Clock reads the clocks; nil means SystemClock.
	Clock Clock
}

// Lease is one instance's handle on the lease record. Its methods are safe for
// concurrent use; Hold is meant to run in its own goroutine while Jenkins runs.
type Lease struct {
	opts       Options
	log        *slog.Logger
	dir        string
	recordPath string

	announceKick chan struct{}
	loadOnce     sync.Once
	loadErr      error

	mu        sync.Mutex
	epochs    epochs // highest seen and ended; persisted in StateDir
	ten       *holding
	releasing bool              // Release is writing, or wrote, the released record
	seen      Record            // the record as last read or written
	skew      time.Duration     // successor: its clock minus the holder's renewed_at at first sight
	ready     bool              // what Announce said
	successor *status.Successor // the last fresh announcement read
	succObs   *succObservation
}

// holding is one tenure of this instance.
type holding struct {
	epoch    uint64
	lastGood instant       // clocks at the start of the last successful write
	done     chan struct{} // closed when the tenure ends
	ended    bool
}

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

// New checks the options and fills in defaults. It touches no file.
func New(opts Options) (*Lease, error) {
	if opts.Dir == "" {
		return nil, errors.New("lease: no home directory given")
	}
	if err := checkHolder(opts.HolderID); err != nil {
		return nil, fmt.Errorf("lease: holder id: %v", err)
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
	if opts.AnnounceInterval == 0 {
		opts.AnnounceInterval = DefaultAnnounceInterval
	}
	if opts.ClockSkew < 0 || opts.PollInterval < 0 || opts.AnnounceInterval < 0 {
		return nil, errors.New("lease: clock skew, poll and announce intervals must be positive")
	}
	if err := checkTiming(opts.TTL, opts.ClockSkew); err != nil {
		return nil, fmt.Errorf("lease: ttl %w", err)
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Join(opts.Dir, DirName)
	return &Lease{
		opts:         opts,
		log:          log.With("holder", opts.HolderID),
		dir:          dir,
		recordPath:   filepath.Join(dir, RecordName),
		announceKick: make(chan struct{}, 1),
	}, nil
}

// RecordPath is the path of the lease record, for messages to operators.
func (l *Lease) RecordPath() string { return l.recordPath }

// load reads the state file once.
func (l *Lease) load() error {
	l.loadOnce.Do(func() {
		e, err := loadEpochs(l.opts.StateDir)
		l.loadErr = err
		l.mu.Lock()
		l.epochs.Seen, l.epochs.Ended = max(l.epochs.Seen, e.Seen), max(l.epochs.Ended, e.Ended)
		l.mu.Unlock()
	})
	return l.loadErr
}

// noteEpochs raises the epochs kept and saves them when they grew. Called without mu.
func (l *Lease) noteEpochs(seen, ended uint64) {
	l.mu.Lock()
	grew := seen > l.epochs.Seen || ended > l.epochs.Ended
	l.epochs.Seen, l.epochs.Ended = max(l.epochs.Seen, seen), max(l.epochs.Ended, ended)
	e := l.epochs
	l.mu.Unlock()
	if grew {
		if err := saveEpochs(l.opts.StateDir, e); err != nil {
			l.log.Warn("cannot save the lease epochs; an agent restart may forget which tenure ended here", "err", err)
		}
	}
}

// acquireResult is what one attempt at acquisition decided.
type acquireResult struct {
	v     verdict
	epoch uint64
}

// Acquire takes the lease, waiting as long as ctx allows. waiting, if not nil, is
// called when Acquire first finds the lease held by another instance and whenever the
// holder, epoch or expiry changes. While it waits, this instance announces itself as
// the successor (see Announce). An unreadable record is an error, not a takeover.
//
// A record of another holder is taken when it is released, when EC2 says its holder
// is terminated, or once this instance has seen it unchanged for TTL + ClockSkew on its
// own clock. This instance's own unreleased record is adopted (same epoch) unless its
// tenure ended here; then, or when taking, the epoch is above every epoch seen.
func (l *Lease) Acquire(ctx context.Context, waiting func(status.LeaseState)) (status.LeaseState, error) {
	if err := l.load(); err != nil {
		return status.LeaseState{}, fmt.Errorf("acquire lease: %w", err)
	}
	var (
		gone       tenure
		reported   *Record
		observed   *Record
		observedAt time.Duration
		asked      tenure
		askedAt    time.Duration
		haveAsked  bool
		warnedSkew bool
		stopAnn    chan struct{}
	)
	// The announcer is not waited for: a write hung on the file system must not delay
	// the takeover. A late write naming this instance is ignored by its reader.
	stopAnnouncing := func() {
		if stopAnn != nil {
			close(stopAnn)
			stopAnn = nil
		}
	}
	defer stopAnnouncing()
	for {
		l.mu.Lock()
		e := l.epochs
		l.mu.Unlock()
		obs, obsAt, g := observed, observedAt, gone
		c, err := l.change(ctx, instant{}, func(cur *Record, start instant) (*Record, any, error) {
			vw := view{
				cur: cur, me: l.opts.HolderID, seen: e.Seen, ended: e.Ended, observed: obs,
				unchanged: start.boot - obsAt, patience: patience(cur, l.opts.TTL, l.opts.ClockSkew), gone: g,
			}
			v := decide(vw)
			switch v {
			case verdictTake:
				epoch, err := nextEpoch(cur, e.Seen)
				if err != nil {
					return nil, nil, fmt.Errorf("%w; make sure no controller runs on this home, then remove %s", err, l.recordPath)
				}
				return &Record{Holder: l.opts.HolderID, Epoch: epoch, Expires: start.wall.Add(l.opts.TTL), RenewedAt: start.wall},
					acquireResult{v, epoch}, nil
			case verdictAdopt:
				return &Record{Holder: l.opts.HolderID, Epoch: cur.Epoch, Expires: start.wall.Add(l.opts.TTL), RenewedAt: start.wall},
					acquireResult{v, cur.Epoch}, nil
			}
			return nil, acquireResult{v: v}, nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return status.LeaseState{}, l.stillHeld(ctx, observed)
			}
			return status.LeaseState{}, fmt.Errorf("acquire lease: %w", err)
		}
		res := c.extra.(acquireResult)
		if c.cur != nil {
			l.noteEpochs(c.cur.Epoch, 0)
		}
		if res.v != verdictWait {
			stopAnnouncing()
			return l.begin(ctx, c, res), nil
		}

		rec := *c.cur
		if observed == nil || !sameVersion(*observed, rec) {
			observed, observedAt = &rec, c.readAt.boot
			skew := c.readAt.wall.Sub(rec.RenewedAt)
			l.mu.Lock()
			l.skew = skew
			l.mu.Unlock()
			if d := skew.Abs(); d > l.opts.ClockSkew+l.opts.PollInterval && !rec.Released && !warnedSkew {
				warnedSkew = true
				l.log.Warn("this instance's clock differs from the lease holder's; the lease does not depend on it, but check NTP (chronyc tracking) on both",
					"clock_skew", skew.Round(time.Millisecond), "current_holder", rec.Holder)
			}
		}
		l.mu.Lock()
		l.seen = rec
		l.mu.Unlock()
		if reported == nil || reported.Holder != rec.Holder || reported.Epoch != rec.Epoch || !reported.Expires.Equal(rec.Expires) {
			if reported == nil || reported.Holder != rec.Holder || reported.Epoch != rec.Epoch {
				l.log.Info("waiting for lease", "current_holder", rec.Holder, "epoch", rec.Epoch, "expires", rec.Expires,
					"clock_skew", l.State().ClockSkew.Round(time.Millisecond),
					"takeover_after_unchanged", patience(&rec, l.opts.TTL, l.opts.ClockSkew))
			}
			r := rec
			reported = &r
			if waiting != nil {
				st := l.stateOf(rec, true) // held by the holder it names
				st.ClockSkew = l.State().ClockSkew
				waiting(st)
			}
		}
		if stopAnn == nil {
			stopAnn = make(chan struct{})
			go l.announce(ctx, l.opts.Clock.Now().UTC(), stopAnn)
		}
		cur := tenure{rec.Holder, rec.Epoch}
		now := c.readAt.boot
		if l.opts.HolderTerminated != nil && rec.Holder != l.opts.HolderID &&
			(!haveAsked || cur != asked || now-askedAt >= holderCheckEvery) {
			asked, askedAt, haveAsked = cur, now, true
			if l.holderGone(ctx, rec.Holder) {
				gone = cur
				continue // take it now, under the lock, if the tenure has not changed
			}
		}
		t := time.NewTimer(l.opts.PollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return status.LeaseState{}, l.stillHeld(ctx, observed)
		case <-t.C:
		}
	}
}

// stillHeld is Acquire's error when ctx ended.
func (l *Lease) stillHeld(ctx context.Context, rec *Record) error {
	if rec == nil {
		return fmt.Errorf("acquire lease: %w", ctx.Err())
	}
	return fmt.Errorf("acquire lease: still held by %s (epoch %d, expires %s by its clock): %w",
		rec.Holder, rec.Epoch, rec.Expires.Format(time.RFC3339), ctx.Err())
}

// begin starts the tenure that change c wrote.
func (l *Lease) begin(ctx context.Context, c change, res acquireResult) status.LeaseState {
	written := *c.wrote
	l.mu.Lock()
	if l.ten != nil && !l.ten.ended && l.ten.epoch != res.epoch {
		l.endLocked()
	}
	if l.ten == nil || l.ten.ended {
		l.ten = &holding{done: make(chan struct{})}
	}
	l.ten.epoch, l.ten.lastGood = res.epoch, c.start
	l.releasing = false
	l.seen = written
	l.skew = 0
	l.mu.Unlock()
	l.noteEpochs(res.epoch, 0)
	switch prev := c.cur; {
	case res.v == verdictAdopt:
		l.log.Info("adopting own lease", "epoch", written.Epoch, "expires", written.Expires)
	case prev != nil && prev.Holder != l.opts.HolderID:
		l.log.Info("took over lease", "epoch", written.Epoch, "previous_holder", prev.Holder,
			"previous_released", prev.Released, "previous_epoch", prev.Epoch, "expires", written.Expires)
	default:
		l.log.Info("acquired lease", "epoch", written.Epoch, "expires", written.Expires)
	}
	go func() {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.opts.AnnounceInterval)
		defer cancel()
		l.withdraw(wctx)
	}()
	return l.State()
}

// holderGone asks HolderTerminated; an error is logged and means "not known to be gone".
func (l *Lease) holderGone(ctx context.Context, holder string) bool {
	cctx, cancel := context.WithTimeout(ctx, holderCheckTimeout)
	defer cancel()
	gone, err := l.opts.HolderTerminated(cctx, holder)
	if err != nil {
		l.log.Warn("cannot tell whether the lease holder is terminated; waiting for the record to stay unchanged", "current_holder", holder, "err", err)
		return false
	}
	if gone {
		l.log.Info("lease holder is terminated; taking over without waiting", "current_holder", holder)
	}
	return gone
}

// tick is how often Hold looks at its clocks: the fence comes at most this late.
func (l *Lease) tick() time.Duration {
	return min(max(l.opts.TTL/60, 5*time.Millisecond), 250*time.Millisecond)
}

// Hold renews the lease every TTL/3 until ctx ends (then it returns nil and the tenure
// goes on: a restarted agent adopts it) or Release runs (nil too).
//
// If no renewal succeeds within TTL - ClockSkew - TTL/6 of the start of the last good
// one, measured on CLOCK_BOOTTIME (or the wall clock if it moved further, so a freeze
// or a hibernation counts), Hold calls fence once, ends the tenure and returns an error
// wrapping ErrFenced. If the record shows another holder or epoch, or vanished, it
// calls fence and returns an error wrapping ErrLost. Either way Held is false from then
// on; only a new Acquire, with a new epoch, may start Jenkins again. fence gets a
// context that ends when a successor may take over.
func (l *Lease) Hold(ctx context.Context, fence func(context.Context) error) error {
	l.mu.Lock()
	ten := l.ten
	if ten == nil || ten.ended {
		l.mu.Unlock()
		return errors.New("hold lease: not acquired; call Acquire first")
	}
	epoch := ten.epoch
	l.mu.Unlock()
	every := l.opts.TTL / 3
	retry := max(l.opts.TTL/10, time.Millisecond)
	limit := fencePoint(l.opts.TTL, l.opts.ClockSkew)

	ticker := time.NewTicker(l.tick())
	defer ticker.Stop()
	type renewal struct {
		c   change
		err error
	}
	results := make(chan renewal, 1)
	inflight, succInflight := false, false
	succResults := make(chan struct{}, 1)
	prev := readClock(l.opts.Clock)
	nextAt := prev.boot // renew at once: the caller may have spent part of the ttl
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ten.done:
			return nil
		case r := <-results:
			inflight = false
			switch {
			case errors.Is(r.err, errReleased):
				return nil
			case errors.Is(r.err, ErrLost):
				l.log.Error("LEASE LOST: another controller owns JENKINS_HOME; stopping Jenkins", "err", r.err)
				l.fence(ctx, ten, fence, r.err)
				return fmt.Errorf("hold lease: %w", r.err)
			case r.err != nil:
				if ctx.Err() != nil {
					return nil
				}
				l.log.Warn("lease renewal failed; retrying", "err", r.err,
					"fence_in", (limit - readClock(l.opts.Clock).since(l.lastGood(ten))).Round(time.Millisecond))
				nextAt = readClock(l.opts.Clock).boot + retry
			default:
				l.mu.Lock()
				if !ten.ended && r.c.start.boot > ten.lastGood.boot {
					ten.lastGood = r.c.start
					l.seen = *r.c.wrote
				}
				l.mu.Unlock()
				nextAt = r.c.start.boot + every
				if !succInflight {
					succInflight = true
					go func() {
						sctx, cancel := context.WithTimeout(ctx, every)
						defer cancel()
						if _, _, err := l.Successor(sctx); err != nil {
							l.log.Debug("cannot read the successor's announcement", "err", err)
						}
						succResults <- struct{}{}
					}()
				}
			}
		case <-succResults:
			succInflight = false
		case <-ticker.C:
		}

		now := readClock(l.opts.Clock)
		if gap := (now.boot - prev.boot) - (now.mono - prev.mono); gap > l.tick()+l.opts.ClockSkew/2 {
			l.log.Warn("the instance was suspended", "for", gap.Round(time.Millisecond))
		}
		if jump := now.wall.Sub(prev.wall) - (now.boot - prev.boot); jump > l.tick()+l.opts.ClockSkew/2 {
			l.log.Warn("the wall clock jumped forward (a freeze, or a clock step)", "by", jump.Round(time.Millisecond))
		}
		prev = now
		if since := now.since(l.lastGood(ten)); since >= limit {
			why := fmt.Errorf("%w: no renewal succeeded in %s (the limit is %s: the file system hung, or the instance was frozen or suspended)",
				ErrFenced, since.Round(time.Millisecond), limit)
			l.log.Error("LEASE NOT RENEWED IN TIME: stopping Jenkins before a successor may take over; this tenure is over",
				"epoch", epoch, "since_last_renewal", since.Round(time.Millisecond), "limit", limit)
			l.fence(ctx, ten, fence, why)
			return fmt.Errorf("hold lease: %w", why)
		}
		if !inflight && now.boot >= nextAt {
			inflight = true
			go func() {
				rctx, cancel := context.WithTimeout(ctx, every)
				defer cancel()
				c, err := l.renew(rctx, epoch)
				results <- renewal{c, err}
			}()
		}
	}
}

func (l *Lease) lastGood(ten *holding) instant {
	l.mu.Lock()
	defer l.mu.Unlock()
	return ten.lastGood
}

// fence ends the tenure and runs the fence, with a context that ends when a successor
// may take over.
func (l *Lease) fence(ctx context.Context, ten *holding, fence func(context.Context) error, why error) {
	l.mu.Lock()
	if l.ten != ten || ten.ended {
		l.mu.Unlock()
		return
	}
	last := ten.lastGood
	l.endLocked()
	epoch := ten.epoch
	l.mu.Unlock()
	l.noteEpochs(0, epoch)
	if fence == nil {
		return
	}
	left := l.opts.TTL + l.opts.ClockSkew - readClock(l.opts.Clock).since(last)
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(left, l.opts.TTL/6))
	defer cancel()
	if err := fence(fctx); err != nil {
		l.log.Error("fence failed: Jenkins may still be running without a lease; stop its container by hand", "cause", why, "err", err)
	}
}

// renew extends our tenure by TTL if the record is still ours.
func (l *Lease) renew(ctx context.Context, epoch uint64) (change, error) {
	l.mu.Lock()
	if l.ten == nil || l.ten.ended || l.releasing {
		l.mu.Unlock()
		return change{}, errReleased
	}
	l.mu.Unlock()
	// Every time the renewal writes comes from before its first I/O.
	start := readClock(l.opts.Clock)
	// Read before locking: when writes fail (a read-only or partitioned mount) this is
	// how we still learn that a successor took over.
	if rec, err := run(ctx, func() (readResult, error) {
		rec, exists, err := l.readRecord()
		return readResult{rec, exists}, err
	}); err == nil {
		if err := l.ours(&rec.rec, rec.exists, epoch); err != nil {
			return change{}, err
		}
	} else if ctx.Err() != nil {
		return change{}, fmt.Errorf("renew lease: %w", err)
	}
	c, err := l.change(ctx, start, func(cur *Record, start instant) (*Record, any, error) {
		if err := l.ours(cur, cur != nil, epoch); err != nil {
			return nil, nil, err
		}
		return &Record{Holder: l.opts.HolderID, Epoch: epoch, Expires: start.wall.Add(l.opts.TTL), RenewedAt: start.wall}, nil, nil
	})
	if err != nil {
		if errors.Is(err, ErrLost) || errors.Is(err, errReleased) {
			return c, err
		}
		return c, fmt.Errorf("renew lease: %w", err)
	}
	return c, nil
}

type readResult struct {
	rec    Record
	exists bool
}

// ours tells whether the record read is still our tenure, as ErrLost, errReleased or nil.
func (l *Lease) ours(cur *Record, exists bool, epoch uint64) error {
	if !exists {
		cur = nil
	}
	err := checkOurs(cur, l.opts.HolderID, epoch)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errRemoved):
		return fmt.Errorf("%w: the record %s was removed", ErrLost, l.recordPath)
	case errors.Is(err, errTaken):
		l.mu.Lock()
		l.seen = *cur
		l.mu.Unlock()
		return fmt.Errorf("%w: taken by %s (epoch %d, ours was %d)", ErrLost, cur.Holder, cur.Epoch, epoch)
	}
	l.mu.Lock()
	releasing := l.releasing
	l.mu.Unlock()
	if releasing {
		return errReleased
	}
	return fmt.Errorf("%w: the record was marked released by someone else", ErrLost)
}

// Held reports whether this instance holds the lease: a tenure was acquired and not
// released, lost or fenced, and its last good write is recent enough that no
// successor can have taken over. Once false after a fence or a loss, it stays false
// until a new Acquire.
func (l *Lease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heldLocked()
}

func (l *Lease) heldLocked() bool {
	ten := l.ten
	if ten == nil || ten.ended || l.releasing {
		return false
	}
	return readClock(l.opts.Clock).since(ten.lastGood) < fencePoint(l.opts.TTL, l.opts.ClockSkew)
}

// Release gives the lease up (released, expiring now) if the record is still our
// tenure, so that a waiting successor takes it at its next poll. Releasing twice, or
// without holding (never acquired, fenced or lost), does nothing. If another holder
// took the lease meanwhile, the record is left alone and the error wraps ErrLost. Call
// it only once Jenkins is stopped: a release abandoned at its deadline may still land
// (its write may be in flight on a hung mount), so from then on the tenure is no
// longer renewed and Held is false; Release may be called again. Any other failure
// leaves the tenure as it was.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	ten := l.ten
	if ten == nil || ten.ended {
		l.mu.Unlock()
		return nil
	}
	l.releasing = true
	epoch := ten.epoch
	l.mu.Unlock()
	c, err := l.change(ctx, instant{}, func(cur *Record, start instant) (*Record, any, error) {
		if err := l.ours(cur, cur != nil, epoch); err != nil {
			if errors.Is(err, errReleased) {
				return nil, nil, nil // released already
			}
			return nil, nil, err
		}
		return &Record{Holder: l.opts.HolderID, Epoch: epoch, Expires: start.wall, Released: true, RenewedAt: start.wall}, nil, nil
	})
	l.mu.Lock()
	switch {
	case err == nil:
		if c.wrote != nil {
			l.seen = *c.wrote
		} else if c.cur != nil {
			l.seen = *c.cur
		}
		if l.ten == ten {
			l.endLocked()
		}
		l.mu.Unlock()
		l.noteEpochs(0, epoch)
		l.log.Info("released lease", "epoch", epoch)
		return nil
	case errors.Is(err, ErrLost):
		if l.ten == ten {
			l.endLocked()
		}
		l.mu.Unlock()
		l.noteEpochs(0, epoch)
	case ctx.Err() != nil:
		// Abandoned while its write may be in flight on a hung mount: the release may
		// still land. The tenure is in doubt, so it is not renewed any more and Held
		// stays false (Jenkins is stopped before a release); Release can be retried.
		l.mu.Unlock()
		l.log.Warn("lease release did not finish in time and may still land; no longer renewing; call Release again", "epoch", epoch, "err", err)
	default:
		l.releasing = false
		l.mu.Unlock()
	}
	return fmt.Errorf("release lease: %w", err)
}

// endLocked ends the current tenure and wakes Hold.
func (l *Lease) endLocked() {
	if l.ten != nil && !l.ten.ended {
		l.ten.ended = true
		close(l.ten.done)
	}
	l.releasing = false
}

// State is this instance's view of the lease: Held as Held reports it, the record as
// last read or written, the successor last seen announcing itself (holder), and the
// measured clock skew (successor).
func (l *Lease) State() status.LeaseState {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.stateOf(l.seen, l.heldLocked())
	if l.successor != nil {
		s := *l.successor
		st.Successor = &s
	}
	st.ClockSkew = l.skew
	return st
}

// Peek reads the record as it is now, for status and preflight checks, without the
// lock. Held means the record keeps others out by this instance's wall clock (not
// released, not past its expiry plus the allowance): a hint for operators, not the
// rule of acquisition. No record yields a zero state.
func (l *Lease) Peek(ctx context.Context) (status.LeaseState, error) {
	r, err := run(ctx, func() (readResult, error) {
		rec, exists, err := l.readRecord()
		return readResult{rec, exists}, err
	})
	if err != nil {
		return status.LeaseState{}, fmt.Errorf("peek lease: %w", err)
	}
	if !r.exists {
		return status.LeaseState{}, nil
	}
	return l.stateOf(r.rec, r.rec.live(l.opts.Clock.Now(), l.opts.ClockSkew)), nil
}

func (l *Lease) stateOf(rec Record, held bool) status.LeaseState {
	return status.LeaseState{Held: held, Holder: rec.Holder, Epoch: rec.Epoch, Expires: rec.Expires}
}
