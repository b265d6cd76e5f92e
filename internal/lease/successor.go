package lease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// SuccessorName is the file, beside the lease record, where an instance waiting on the
// lease announces itself. It is advisory: the holder only shows it and may hand over
// sooner when a ready successor waits; nothing in it can make the holder stop, renew
// or write anything.
const SuccessorName = "successor.json"

// DefaultAnnounceInterval is how often a waiting successor refreshes its announcement.
// The holder treats an announcement not refreshed for three intervals as stale.
const DefaultAnnounceInterval = 2 * time.Second

// successorMax bounds the announcement file the holder reads.
const successorMax = 4096

// announcement is the wire form of the successor record.
type announcement struct {
	InstanceID *string `json:"instance_id"`
	Since      *string `json:"since"`
	Updated    *string `json:"updated"`
	Ready      *bool   `json:"ready"`
}

func encodeAnnouncement(s status.Successor) []byte {
	id, ready := s.InstanceID, s.Ready
	since, updated := s.Since.UTC().Format(time.RFC3339Nano), s.Updated.UTC().Format(time.RFC3339Nano)
	data, _ := json.Marshal(announcement{&id, &since, &updated, &ready}) // strings and a bool
	return append(data, '\n')
}

// parseAnnouncement decodes a successor record strictly; errors never quote it.
func parseAnnouncement(data []byte) (status.Successor, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var raw announcement
	if err := dec.Decode(&raw); err != nil {
		return status.Successor{}, errors.New(jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return status.Successor{}, errors.New("trailing data")
	}
	if raw.InstanceID == nil || raw.Since == nil || raw.Updated == nil || raw.Ready == nil {
		return status.Successor{}, errors.New("missing field (instance_id, since, updated and ready are required)")
	}
	if err := checkHolder(*raw.InstanceID); err != nil {
		return status.Successor{}, fmt.Errorf("instance_id: %v", err)
	}
	since, err := time.Parse(time.RFC3339Nano, *raw.Since)
	if err != nil {
		return status.Successor{}, errors.New("since is not an RFC 3339 time")
	}
	updated, err := time.Parse(time.RFC3339Nano, *raw.Updated)
	if err != nil {
		return status.Successor{}, errors.New("updated is not an RFC 3339 time")
	}
	return status.Successor{InstanceID: *raw.InstanceID, Since: since.UTC(), Updated: updated.UTC(), Ready: *raw.Ready}, nil
}

// Announce sets whether this instance, while Acquire waits, announces itself ready to
// take over at once (home mounted and verified, image present). The announcement is
// refreshed every AnnounceInterval and at once when ready changes. It may be called
// before or during Acquire, from any goroutine.
func (l *Lease) Announce(ready bool) {
	l.mu.Lock()
	changed := l.ready != ready
	l.ready = ready
	l.mu.Unlock()
	if changed {
		select {
		case l.announceKick <- struct{}{}:
		default:
		}
	}
}

// announce keeps the announcement fresh until stop is closed; since is when the wait
// began. Each write is bounded by the interval; a failure is logged and retried.
func (l *Lease) announce(ctx context.Context, since time.Time, stop <-chan struct{}) {
	every := l.opts.AnnounceInterval
	t := time.NewTicker(every)
	defer t.Stop()
	var lastErr string
	for {
		l.mu.Lock()
		s := status.Successor{InstanceID: l.opts.HolderID, Since: since, Updated: l.opts.Clock.Now().UTC(), Ready: l.ready}
		l.mu.Unlock()
		wctx, cancel := context.WithTimeout(ctx, every)
		_, err := run(wctx, func() (struct{}, error) { return struct{}{}, l.writeAnnouncement(wctx, s) })
		cancel()
		switch {
		case err != nil && err.Error() != lastErr:
			l.log.Warn("cannot announce this instance as the lease's successor; the holder will not see it waiting", "err", err)
			lastErr = err.Error()
		case err == nil:
			lastErr = ""
		}
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		case <-l.announceKick:
		}
	}
}

// tmpName is this instance's temporary announcement file.
func (l *Lease) tmpName() string {
	id := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, l.opts.HolderID)
	return SuccessorName + "." + id + ".tmp"
}

// writeAnnouncement replaces the announcement: a temporary file of this instance's
// own, then a rename.
func (l *Lease) writeAnnouncement(ctx context.Context, s status.Successor) error {
	d, err := l.leaseDir(true)
	if err != nil {
		return err
	}
	defer d.Close()
	tmp := l.tmpName()
	f, err := openIn(d, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.Write(encodeAnnouncement(s))
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := ctx.Err(); err != nil {
		return err // abandoned: leave the announcement as it was
	}
	if err := unix.Renameat(int(d.Fd()), tmp, int(d.Fd()), SuccessorName); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return nil
}

// withdraw removes the announcement if it is this instance's (the lease was taken).
func (l *Lease) withdraw(ctx context.Context) {
	_, err := run(ctx, func() (struct{}, error) {
		d, err := l.leaseDir(false)
		if err != nil {
			return struct{}{}, err
		}
		defer d.Close()
		s, ok, err := l.readAnnouncement(d)
		if err != nil || !ok || s.InstanceID != l.opts.HolderID {
			return struct{}{}, err
		}
		if err := ctx.Err(); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, unix.Unlinkat(int(d.Fd()), SuccessorName, 0)
	})
	if err != nil {
		l.log.Debug("could not withdraw the successor announcement; it goes stale by itself", "err", err)
	}
}

// readAnnouncement reads the announcement; ok is false when there is none.
func (l *Lease) readAnnouncement(d *os.File) (status.Successor, bool, error) {
	f, err := openIn(d, SuccessorName, unix.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return status.Successor{}, false, nil
	}
	if err != nil {
		return status.Successor{}, false, err
	}
	defer f.Close()
	data, err := readAll(f, successorMax)
	if err != nil {
		return status.Successor{}, false, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	if len(data) > successorMax {
		return status.Successor{}, false, fmt.Errorf("%s is longer than %d bytes; remove it (it is advisory)", f.Name(), successorMax)
	}
	s, err := parseAnnouncement(data)
	if err != nil {
		return status.Successor{}, false, fmt.Errorf("%s: %v; remove it (it is advisory)", f.Name(), err)
	}
	return s, true, nil
}

// succObservation is the holder's view of the announcement over time.
type succObservation struct {
	s         status.Successor
	firstSeen time.Duration // boot time when this content was first read
	fresh     bool          // its first read judged it fresh
}

// Successor reads the successor's announcement. ok is false when there is none, when
// it is stale (not refreshed for three announce intervals) or when it names this
// instance. Staleness is timed on this instance's clock once the announcement has been
// read twice; at the first read the wall-clock age decides, with the allowance for skew.
// The result is also what State().Successor shows.
func (l *Lease) Successor(ctx context.Context) (status.Successor, bool, error) {
	type read struct {
		s  status.Successor
		ok bool
	}
	r, err := run(ctx, func() (read, error) {
		d, err := l.leaseDir(false)
		if errors.Is(err, unix.ENOENT) {
			return read{}, nil
		}
		if err != nil {
			return read{}, err
		}
		defer d.Close()
		s, ok, err := l.readAnnouncement(d)
		return read{s, ok}, err
	})
	if err != nil {
		l.mu.Lock()
		l.successor = nil
		l.mu.Unlock()
		return status.Successor{}, false, fmt.Errorf("read successor: %w", err)
	}
	now := readClock(l.opts.Clock)
	l.mu.Lock()
	defer l.mu.Unlock()
	fresh := false
	if r.ok && r.s.InstanceID != l.opts.HolderID {
		stale := 3 * l.opts.AnnounceInterval
		switch prev := l.succObs; {
		case prev != nil && prev.s == r.s:
			fresh = prev.fresh && now.boot-prev.firstSeen <= stale
		case prev != nil && now.boot-prev.firstSeen <= stale:
			// It changed since a read within the stale time: refreshed since then.
			l.succObs = &succObservation{s: r.s, firstSeen: now.boot, fresh: true}
			fresh = true
		default:
			age := now.wall.Sub(r.s.Updated)
			fresh = age <= stale+l.opts.ClockSkew
			l.succObs = &succObservation{s: r.s, firstSeen: now.boot, fresh: fresh}
		}
	} else {
		l.succObs = nil
	}
	if !fresh {
		l.successor = nil
		return status.Successor{}, false, nil
	}
	s := r.s
	l.successor = &s
	return s, true, nil
}
