package lease

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"strconv"
	"time"
)

// Record is the lease as stored on the shared file system.
//
// The file holds two fixed-size slots of 512 bytes, each one line of text: a JSON
// object and its CRC-32C, padded with spaces. A write replaces the older slot in place,
// through the locked file, and never the newer one, so a torn write (a crash in the
// middle) leaves the previous record readable. The newer of the valid slots (by Seq)
// is the record. An operator reads it with `cat`.
type Record struct {
	// Holder is the instance id of the controller that holds (or last held) the lease.
	Holder string
	// Epoch counts tenures: it grows by one every time a holder takes the lease anew,
	// so a holder can tell that someone else held it in between.
	Epoch uint64
	// Expires is when the holder's claim ends by its own wall clock. Successors do not
	// trust it (they time the record themselves); it is shown to operators.
	Expires time.Time
	// Released is set by a clean release; a successor may take the lease at once.
	Released bool
	// RenewedAt is the holder's wall clock when it began the write; successors compare
	// it with their own clock to report the clock skew between instances.
	RenewedAt time.Time
	// Seq counts writes of the file: every write, renewals included, makes it one
	// larger, so a successor sees whether the record changed.
	Seq uint64
}

// Sizes of the record file.
const (
	slotSize = 512
	fileSize = 2 * slotSize
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordJSON is the wire form. Pointers let the parser tell a missing field from a
// zero one: a record written by anything but this package is refused, not guessed at.
type recordJSON struct {
	Seq       *uint64 `json:"seq"`
	Holder    *string `json:"holder"`
	Epoch     *uint64 `json:"epoch"`
	Expires   *string `json:"expires"`
	Released  *bool   `json:"released"`
	RenewedAt *string `json:"renewed_at"`
}

const crcTag = " crc32c="

// encodeSlot is the record as one slot: JSON, its checksum, spaces, a newline.
func encodeSlot(r Record) ([]byte, error) {
	seq, holder, epoch, released := r.Seq, r.Holder, r.Epoch, r.Released
	expires := r.Expires.UTC().Format(time.RFC3339Nano)
	renewed := r.RenewedAt.UTC().Format(time.RFC3339Nano)
	data, err := json.Marshal(recordJSON{&seq, &holder, &epoch, &expires, &released, &renewed})
	if err != nil {
		return nil, fmt.Errorf("encode lease record: %w", err)
	}
	line := fmt.Appendf(data, "%s%08x", crcTag, crc32.Checksum(data, castagnoli))
	if len(line) > slotSize-1 {
		return nil, fmt.Errorf("encode lease record: %d bytes, more than a slot holds (%d); use a shorter holder id", len(line), slotSize-1)
	}
	slot := bytes.Repeat([]byte{' '}, slotSize)
	copy(slot, line)
	slot[slotSize-1] = '\n'
	return slot, nil
}

// Marshal is a whole record file holding r in its first slot (the second is blank),
// in the form ParseRecord reads. It panics on a holder too long for a slot, which New
// refuses.
func (r Record) Marshal() []byte {
	slot, err := encodeSlot(r)
	if err != nil {
		panic(err.Error())
	}
	blank := bytes.Repeat([]byte{' '}, slotSize)
	blank[slotSize-1] = '\n'
	return append(slot, blank...)
}

// slotState says what one slot holds.
type slotState int

const (
	slotBlank slotState = iota // never written
	slotGood                   // a record with a good checksum
	slotBad                    // anything else: torn, or not written by this package
)

// parseSlot decodes one slot. Errors never quote the slot's content.
func parseSlot(b []byte) (Record, slotState, error) {
	if len(bytes.Trim(b, " \n\x00")) == 0 {
		return Record{}, slotBlank, nil
	}
	line := bytes.TrimRight(b, " \n")
	i := bytes.LastIndex(line, []byte(crcTag))
	if i < 0 || len(line)-i-len(crcTag) != 8 {
		return Record{}, slotBad, errors.New("no checksum at the end of the line (torn, or not written by jenkins-spot-agent)")
	}
	data := line[:i]
	want, err := strconv.ParseUint(string(line[i+len(crcTag):]), 16, 32)
	if err != nil {
		return Record{}, slotBad, errors.New("checksum is not hexadecimal")
	}
	if crc32.Checksum(data, castagnoli) != uint32(want) {
		return Record{}, slotBad, errors.New("checksum mismatch (a torn write)")
	}
	rec, err := parseJSON(data)
	if err != nil {
		return Record{}, slotBad, err
	}
	return rec, slotGood, nil
}

// parseJSON decodes the JSON of one slot strictly.
func parseJSON(data []byte) (Record, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var raw recordJSON
	if err := dec.Decode(&raw); err != nil {
		return Record{}, fmt.Errorf("not a lease record: %s", jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Record{}, errors.New("trailing data after the record")
	}
	switch {
	case raw.Seq == nil:
		return Record{}, errors.New("missing field seq")
	case raw.Holder == nil:
		return Record{}, errors.New("missing field holder")
	case raw.Epoch == nil:
		return Record{}, errors.New("missing field epoch")
	case raw.Expires == nil:
		return Record{}, errors.New("missing field expires")
	case raw.Released == nil:
		return Record{}, errors.New("missing field released")
	case raw.RenewedAt == nil:
		return Record{}, errors.New("missing field renewed_at")
	}
	if err := checkHolder(*raw.Holder); err != nil {
		return Record{}, err
	}
	if *raw.Epoch == 0 {
		return Record{}, errors.New("epoch 0 (epochs start at 1)")
	}
	expires, err := time.Parse(time.RFC3339Nano, *raw.Expires)
	if err != nil {
		return Record{}, errors.New("expires is not an RFC 3339 time")
	}
	renewed, err := time.Parse(time.RFC3339Nano, *raw.RenewedAt)
	if err != nil {
		return Record{}, errors.New("renewed_at is not an RFC 3339 time")
	}
	return Record{
		Holder:    *raw.Holder,
		Epoch:     *raw.Epoch,
		Expires:   expires.UTC(),
		Released:  *raw.Released,
		RenewedAt: renewed.UTC(),
		Seq:       *raw.Seq,
	}, nil
}

// jsonProblem describes a decoding error by position and kind, never by content.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %s has the wrong type (%s)", typ.Field, typ.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "JSON ends early"
	}
	if s := err.Error(); len(s) > 15 && s[:15] == "json: unknown f" {
		return "unknown field"
	}
	return "invalid JSON"
}

// parseFile reads a record file: the newer good slot. exists is false when nothing
// was ever written (an empty or blank file). A file with no good slot but something
// written is unreadable.
func parseFile(data []byte) (rec Record, slot int, exists bool, err error) {
	if len(data) > fileSize {
		return Record{}, 0, false, fmt.Errorf("the file is longer than %d bytes (not written by jenkins-spot-agent)", fileSize)
	}
	var (
		recs   [2]Record
		states [2]slotState
		errs   [2]error
	)
	for i := range 2 {
		lo, hi := min(i*slotSize, len(data)), min((i+1)*slotSize, len(data))
		recs[i], states[i], errs[i] = parseSlot(data[lo:hi])
	}
	switch {
	case states[0] == slotGood && states[1] == slotGood:
		if recs[0].Seq == recs[1].Seq {
			return Record{}, 0, false, fmt.Errorf("both slots have sequence %d", recs[0].Seq)
		}
		if recs[1].Seq > recs[0].Seq {
			return recs[1], 1, true, nil
		}
		return recs[0], 0, true, nil
	case states[0] == slotGood:
		return recs[0], 0, true, nil
	case states[1] == slotGood:
		return recs[1], 1, true, nil
	case states[0] == slotBlank && states[1] == slotBlank:
		return Record{}, 0, false, nil
	}
	// Even a torn first write (slot 0 bad, slot 1 blank) is refused: this package's
	// own writes are the likeliest cause, but anything else written there would be
	// handed a second writer if it were taken for no record.
	first := errs[0]
	if first == nil {
		first = errs[1]
	}
	return Record{}, 0, false, fmt.Errorf("no readable record: %v", first)
}

// ParseRecord decodes a record file (both slots) and returns its current record. A
// file with nothing written, or nothing readable, is an error naming what was wrong
// without quoting the content.
func ParseRecord(data []byte) (Record, error) {
	rec, _, exists, err := parseFile(data)
	if err != nil {
		return Record{}, fmt.Errorf("parse lease record: %w", err)
	}
	if !exists {
		return Record{}, errors.New("parse lease record: no record written yet")
	}
	return rec, nil
}

// next is the record that follows cur in the file: one more write.
func nextSeq(cur Record, exists bool) (uint64, error) {
	if !exists {
		return 1, nil
	}
	if cur.Seq == math.MaxUint64 {
		return 0, errors.New("the record's write counter is at its maximum")
	}
	return cur.Seq + 1, nil
}

// maxHolderLen bounds holder ids so that a record always fits its slot.
const maxHolderLen = 128

// checkHolder accepts instance ids, host names and the like: 1 to 128 bytes of
// letters, digits and . _ : / @ + -.
func checkHolder(h string) error {
	if h == "" {
		return errors.New("empty holder")
	}
	if len(h) > maxHolderLen {
		return fmt.Errorf("holder longer than %d bytes", maxHolderLen)
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == ':', c == '/', c == '@', c == '+', c == '-':
		default:
			return fmt.Errorf("holder has a character other than letters, digits and . _ : / @ + - (at byte %d)", i)
		}
	}
	return nil
}

// live reports whether the record keeps others out at now by the reader's wall clock,
// given the allowance. Only Peek uses it, for status: acquisition never trusts clocks
// across instances.
func (r Record) live(now time.Time, skew time.Duration) bool {
	return !r.Released && !r.Expires.Add(skew).Before(now)
}
