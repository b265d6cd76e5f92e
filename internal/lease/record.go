package lease

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Record is the lease as stored on the shared file system. The file is small and
// human-readable so that an operator can see at a glance who holds the home.
type Record struct {
	// Holder is the instance id of the controller that holds (or last held) the lease.
	Holder string
	// Epoch counts tenures: it grows by one every time a holder takes the lease anew,
	// so a holder can tell that someone else held it in between.
	Epoch uint64
	// Expires is when the lease lapses unless renewed. A successor adds its clock-skew
	// allowance before it believes the expiry.
	Expires time.Time
	// Released is set by a clean release; a successor may take the lease at once.
	Released bool
	// RenewedAt is when the holder last wrote the record; for operators.
	RenewedAt time.Time
}

// recordJSON is the wire form. Pointers let the parser tell a missing field from a
// zero one: a record written by anything but this package is refused, not guessed at.
type recordJSON struct {
	Holder    *string `json:"holder"`
	Epoch     *uint64 `json:"epoch"`
	Expires   *string `json:"expires"`
	Released  *bool   `json:"released"`
	RenewedAt *string `json:"renewed_at"`
}

// ParseRecord decodes a lease record strictly: unknown or missing fields, trailing
// data, an empty holder, a zero epoch and times that are not RFC 3339 are errors.
func ParseRecord(data []byte) (Record, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var raw recordJSON
	if err := dec.Decode(&raw); err != nil {
		return Record{}, fmt.Errorf("parse lease record: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Record{}, errors.New("parse lease record: trailing data after the record")
	}
	switch {
	case raw.Holder == nil:
		return Record{}, errors.New("parse lease record: missing field holder")
	case raw.Epoch == nil:
		return Record{}, errors.New("parse lease record: missing field epoch")
	case raw.Expires == nil:
		return Record{}, errors.New("parse lease record: missing field expires")
	case raw.Released == nil:
		return Record{}, errors.New("parse lease record: missing field released")
	case raw.RenewedAt == nil:
		return Record{}, errors.New("parse lease record: missing field renewed_at")
	}
	if *raw.Holder == "" {
		return Record{}, errors.New("parse lease record: empty holder")
	}
	if *raw.Epoch == 0 {
		return Record{}, errors.New("parse lease record: epoch 0 (epochs start at 1)")
	}
	expires, err := time.Parse(time.RFC3339Nano, *raw.Expires)
	if err != nil {
		return Record{}, fmt.Errorf("parse lease record: expires: %w", err)
	}
	renewed, err := time.Parse(time.RFC3339Nano, *raw.RenewedAt)
	if err != nil {
		return Record{}, fmt.Errorf("parse lease record: renewed_at: %w", err)
	}
	return Record{
		Holder:    *raw.Holder,
		Epoch:     *raw.Epoch,
		Expires:   expires.UTC(),
		Released:  *raw.Released,
		RenewedAt: renewed.UTC(),
	}, nil
}

// Marshal encodes the record in the form ParseRecord reads, times in UTC with
// nanoseconds so that a round trip is exact.
func (r Record) Marshal() []byte {
	holder := r.Holder
	epoch := r.Epoch
	expires := r.Expires.UTC().Format(time.RFC3339Nano)
	released := r.Released
	renewed := r.RenewedAt.UTC().Format(time.RFC3339Nano)
	data, err := json.MarshalIndent(recordJSON{&holder, &epoch, &expires, &released, &renewed}, "", "  ")
	if err != nil {
		// Only strings, a number and a bool: encoding cannot fail.
		panic(fmt.Sprintf("encode lease record: %v", err))
	}
	return append(data, '\n')
}

// live reports whether the record still keeps others out at now, given the allowance
// for clock error between instances.
func (r Record) live(now time.Time, skew time.Duration) bool {
	return !r.Released && !r.Expires.Add(skew).Before(now)
}
