package lease

import (
	"errors"
	"math"
	"time"
)

// The pure rules of the lease, kept apart from the I/O so that the model checker
// (model_test.go) explores exactly the rules the code runs.

// tenure names one holding of the lease.
type tenure struct {
	holder string
	epoch  uint64
}

// verdict is what a would-be holder may do with the record it read.
type verdict int

const (
	verdictWait  verdict = iota // someone else holds the lease, or may
	verdictTake                 // start a new tenure (a new, higher epoch)
	verdictAdopt                // our own running tenure: keep its epoch
)

func (v verdict) String() string {
	switch v {
	case verdictTake:
		return "take"
	case verdictAdopt:
		return "adopt"
	}
	return "wait"
}

// view is what a would-be holder knows when it decides, under the lock.
type view struct {
	cur *Record // the record just read; nil when there is none
	me  string
	// seen is the highest epoch this instance has seen; ended the highest epoch whose
	// tenure ended here (released, lost or fenced). Both survive agent restarts.
	seen, ended uint64
	// observed is the version of the record this successor is timing, and unchanged
	// how long (on its own clock, up to the start of this read) it has stayed so.
	observed  *Record
	unchanged time.Duration
	// patience is how long a record must stay unchanged before it is taken: the ttl
	// plus the allowance.
	patience time.Duration
	// gone is a tenure that EC2 reported terminated.
	gone tenure
}

// decide is the rule of acquisition.
//
// A record that names another holder is taken only when released, when this
// successor has seen it unchanged for a full ttl plus allowance on its own clock, or
// when EC2 says its holder is terminated. Its expiry, written by another instance's
// wall clock, is never trusted. An unreleased record of our own is adopted (the agent
// restarted; its Jenkins may still run) unless its tenure already ended here (a fence:
// then a new epoch begins at once) or an epoch above it was seen (the record went back
// in time, and the holder of that epoch may still run: it is timed like a stranger's).
func decide(v view) verdict {
	cur := v.cur
	switch {
	case cur == nil, cur.Released:
		return verdictTake
	case cur.Holder == v.me && cur.Epoch >= v.seen:
		if cur.Epoch > v.ended {
			return verdictAdopt
		}
		return verdictTake
	case v.observed != nil && sameVersion(*v.observed, *cur) && v.unchanged >= v.patience:
		return verdictTake
	case cur.Holder != v.me && v.gone.holder == cur.Holder && v.gone.epoch == cur.Epoch:
		return verdictTake
	}
	return verdictWait
}

// patience is how long a successor must see rec unchanged before it takes it: the
// holder's ttl, as the holder wrote it (expiry minus renewal time, both by the
// holder's clock, so no skew enters), plus the successor's allowance. A record that
// does not tell falls back to the successor's own ttl.
func patience(rec *Record, ttl, allowance time.Duration) time.Duration {
	if rec != nil {
		if d := rec.Expires.Sub(rec.RenewedAt); d > 0 {
			ttl = d
		}
	}
	return ttl + allowance
}

// sameVersion tells whether two reads saw the same write.
func sameVersion(a, b Record) bool {
	return a.Seq == b.Seq && a.Holder == b.Holder && a.Epoch == b.Epoch && a.Released == b.Released &&
		a.Expires.Equal(b.Expires) && a.RenewedAt.Equal(b.RenewedAt)
}

// errEpochExhausted means the next epoch would not fit its type.
var errEpochExhausted = errors.New("the lease epoch is at its maximum (18446744073709551615) and cannot grow")

// nextEpoch is the epoch of a new tenure: above the record's and above every epoch
// this instance has seen, so that no reader can mistake it for an older tenure.
func nextEpoch(cur *Record, seen uint64) (uint64, error) {
	top := seen
	if cur != nil {
		top = max(top, cur.Epoch)
	}
	if top == math.MaxUint64 {
		return 0, errEpochExhausted
	}
	return top + 1, nil
}

// fencePoint is how long after the start of its last successful write a holder stops
// Jenkins if it could not renew: ttl - allowance - ttl/6, so at ttl 30 s and allowance
// 2 s, 23 s. A successor takes over no earlier than ttl + allowance (32 s) after it saw
// that write, which came after its start; the difference (9 s) is for the fence to run.
func fencePoint(ttl, allowance time.Duration) time.Duration {
	return ttl - allowance - ttl/6
}

// checkOurs is the renewal rule: the record must still be our tenure.
func checkOurs(cur *Record, me string, epoch uint64) error {
	switch {
	case cur == nil:
		return errRemoved
	case cur.Holder != me || cur.Epoch != epoch:
		return errTaken
	case cur.Released:
		return errReleasedRecord
	}
	return nil
}

var (
	errRemoved        = errors.New("the record was removed")
	errTaken          = errors.New("another tenure holds the record")
	errReleasedRecord = errors.New("the record is marked released")
)
