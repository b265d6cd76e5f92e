package lease

import (
	"bytes"
	"hash/crc32"
	"math"
	"strings"
	"testing"
	"time"
)

var goodRec = Record{
	Holder: "i-0abc", Epoch: 3, Seq: 9,
	Expires:   time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC),
	RenewedAt: time.Date(2025, 1, 2, 3, 3, 35, 123456789, time.UTC),
}

func slotOf(t testing.TB, r Record) []byte {
	t.Helper()
	b, err := encodeSlot(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withCRC makes a slot of arbitrary JSON with a correct checksum, as a writer that is
// not this package could.
func withCRC(json string) []byte { return slotOfRaw([]byte(json)) }

func slotOfRaw(data []byte) []byte {
	line := append([]byte{}, data...)
	line = append(line, []byte(crcTag)...)
	line = append(line, []byte(hex8(crc(data)))...)
	slot := bytes.Repeat([]byte{' '}, slotSize)
	copy(slot, line)
	slot[slotSize-1] = '\n'
	return slot
}

func TestParseRecord(t *testing.T) {
	later := goodRec
	later.Seq, later.Expires = 10, goodRec.Expires.Add(10*time.Second)
	blank := bytes.Repeat([]byte{' '}, slotSize)
	good, next := slotOf(t, goodRec), slotOf(t, later)
	torn := append(append([]byte{}, next[:100]...), bytes.Repeat([]byte{0}, slotSize-100)...)
	flipped := append([]byte{}, next...)
	flipped[20] ^= 1
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	okJSON := `{"seq":1,"holder":"i-1","epoch":3,"expires":"2025-01-02T03:04:05Z","released":false,"renewed_at":"2025-01-02T03:04:05Z"}`
	tests := []struct {
		name    string
		in      []byte
		want    Record
		wantErr string
	}{
		{name: "first slot only", in: good, want: goodRec},
		{name: "first slot and blank", in: cat(good, blank), want: goodRec},
		{name: "newer in second slot", in: cat(good, next), want: later},
		{name: "newer in first slot", in: cat(next, good), want: later},
		{name: "torn newer write keeps the older", in: cat(good, torn), want: goodRec},
		{name: "flipped bit keeps the older", in: cat(flipped, good), want: goodRec},
		{
			name: "offset converted to UTC", in: withCRC(strings.Replace(okJSON, "05Z\",\"released", "05+01:00\",\"released", 1)),
			want: Record{Holder: "i-1", Epoch: 3, Seq: 1, Expires: time.Date(2025, 1, 2, 2, 4, 5, 0, time.UTC), RenewedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)},
		},
		{name: "empty", in: nil, wantErr: "no record written"},
		{name: "blank", in: cat(blank, blank), wantErr: "no record written"},
		{name: "torn alone", in: torn, wantErr: "no readable record"},
		{name: "garbage", in: []byte("\x00\x01lease"), wantErr: "no checksum"},
		{name: "old single JSON", in: []byte(`{"holder":"i-z","epoch":4,"expires":"2025-01-02T03:04:05Z","released":false,"renewed_at":"2025-01-02T03:04:05Z"}`), wantErr: "no checksum"},
		{name: "too long", in: cat(good, good, []byte("x")), wantErr: "longer than 1024"},
		{name: "same seq twice", in: cat(good, good), wantErr: "both slots have sequence 9"},
		{name: "bad checksum", in: flipped, wantErr: "checksum mismatch"},
		{name: "trailing", in: withCRC(okJSON + "{}"), wantErr: "trailing data"},
		{name: "unknown field", in: withCRC(strings.Replace(okJSON, `"epoch"`, `"owner":"x","epoch"`, 1)), wantErr: "unknown field"},
		{name: "missing seq", in: withCRC(strings.Replace(okJSON, `"seq":1,`, "", 1)), wantErr: "missing field seq"},
		{name: "missing holder", in: withCRC(strings.Replace(okJSON, `"holder":"i-1",`, "", 1)), wantErr: "missing field holder"},
		{name: "missing released", in: withCRC(strings.Replace(okJSON, `"released":false,`, "", 1)), wantErr: "missing field released"},
		{name: "empty holder", in: withCRC(strings.Replace(okJSON, `"i-1"`, `""`, 1)), wantErr: "empty holder"},
		{name: "holder with a quote", in: withCRC(strings.Replace(okJSON, `"i-1"`, `"i-\"1"`, 1)), wantErr: "character other than"},
		{name: "epoch zero", in: withCRC(strings.Replace(okJSON, `"epoch":3`, `"epoch":0`, 1)), wantErr: "epoch 0"},
		{name: "negative epoch", in: withCRC(strings.Replace(okJSON, `"epoch":3`, `"epoch":-1`, 1)), wantErr: "field epoch has the wrong type"},
		{name: "epoch as string", in: withCRC(strings.Replace(okJSON, `"epoch":3`, `"epoch":"3"`, 1)), wantErr: "field epoch has the wrong type"},
		{name: "bad time", in: withCRC(strings.Replace(okJSON, `"expires":"2025-01-02T03:04:05Z"`, `"expires":"yesterday"`, 1)), wantErr: "expires is not an RFC 3339 time"},
		{name: "array", in: withCRC(`[]`), wantErr: "wrong type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRecord(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseRecord() error = %v, want it to contain %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "yesterday") || strings.Contains(err.Error(), "owner") || strings.Contains(err.Error(), "i-z") {
					t.Fatalf("error %q quotes the file's content", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRecord() error = %v", err)
			}
			if got != tt.want {
				t.Fatalf("ParseRecord() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRecordRoundTrip(t *testing.T) {
	in := Record{
		Holder: "i-0123456789abcdef0/migrate", Epoch: math.MaxUint64, Seq: math.MaxUint64,
		Expires: time.Date(2030, 5, 6, 7, 8, 9, 1, time.UTC), Released: true, RenewedAt: time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC),
	}
	data := in.Marshal()
	if len(data) != fileSize {
		t.Fatalf("file is %d bytes, want %d", len(data), fileSize)
	}
	out, err := ParseRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip = %+v, want %+v", out, in)
	}
	long := in
	long.Holder = strings.Repeat("x", maxHolderLen)
	if _, err := encodeSlot(long); err != nil {
		t.Fatalf("the longest holder id does not fit a slot: %v", err)
	}
}

func TestNextSeqAndEpochRefuseToWrap(t *testing.T) {
	if _, err := nextSeq(Record{Seq: math.MaxUint64}, true); err == nil {
		t.Fatal("nextSeq at the maximum wrapped instead of failing")
	}
	if _, err := nextEpoch(&Record{Epoch: math.MaxUint64}, 0); err == nil || !strings.Contains(err.Error(), "maximum") {
		t.Fatalf("nextEpoch at the maximum = %v, want a clear error", err)
	}
	if _, err := nextEpoch(&Record{Epoch: 1}, math.MaxUint64); err == nil {
		t.Fatal("nextEpoch above the highest seen epoch wrapped")
	}
	if e, err := nextEpoch(&Record{Epoch: 4}, 7); err != nil || e != 8 {
		t.Fatalf("nextEpoch(4, seen 7) = %d, %v; want 8 (above every epoch seen)", e, err)
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add(goodRec.Marshal())
	f.Add(append(slotOfRaw([]byte(`{}`)), goodRec.Marshal()[:slotSize]...))
	f.Add(goodRec.Marshal()[:30])
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := ParseRecord(data)
		if err != nil {
			return
		}
		if rec.Holder == "" || rec.Epoch == 0 {
			t.Fatalf("accepted an invalid record: %+v", rec)
		}
		again, err := ParseRecord(rec.Marshal())
		if err != nil {
			t.Fatalf("re-parse of marshalled record: %v", err)
		}
		if again != rec {
			t.Fatalf("round trip changed the record: %+v != %+v", again, rec)
		}
	})
}

func TestDecide(t *testing.T) {
	ttl, skew := 30*time.Second, 2*time.Second
	pat := ttl + skew
	other := &Record{Holder: "i-other", Epoch: 7, Seq: 3, Expires: time.Unix(1030, 0), RenewedAt: time.Unix(1000, 0)}
	renewed := *other
	renewed.Seq = 4
	released := *other
	released.Released = true
	mine := &Record{Holder: "i-me", Epoch: 4, Seq: 3}
	minePast := &Record{Holder: "i-me", Epoch: 4, Seq: 3, Released: true}
	tests := []struct {
		name string
		v    view
		want verdict
	}{
		{"no record", view{}, verdictTake},
		{"held by other, first look", view{cur: other}, verdictWait},
		{"released by other", view{cur: &released}, verdictTake},
		{"unchanged for less than ttl+allowance", view{cur: other, observed: other, unchanged: pat - time.Nanosecond}, verdictWait},
		{"unchanged for ttl+allowance", view{cur: other, observed: other, unchanged: pat}, verdictTake},
		{"renewed since observed", view{cur: &renewed, observed: other, unchanged: time.Hour}, verdictWait},
		{"holder terminated", view{cur: other, gone: tenure{"i-other", 7}}, verdictTake},
		{"terminated verdict for an older epoch", view{cur: other, gone: tenure{"i-other", 6}}, verdictWait},
		{"own record", view{cur: mine, seen: 4}, verdictAdopt},
		{"own record, nothing seen", view{cur: mine}, verdictAdopt},
		{"own record whose tenure ended here (fenced)", view{cur: mine, seen: 4, ended: 4}, verdictTake},
		{"own record below an epoch seen", view{cur: mine, seen: 5}, verdictWait},
		{"own record below an epoch seen, unchanged long enough", view{cur: mine, seen: 5, observed: mine, unchanged: pat}, verdictTake},
		{"own record below an epoch seen, EC2 about us", view{cur: mine, seen: 5, gone: tenure{"i-me", 4}}, verdictWait},
		{"own released record", view{cur: minePast}, verdictTake},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.v.me = "i-me"
			tt.v.patience = pat
			if got := decide(tt.v); got != tt.want {
				t.Fatalf("decide() = %v, want %v", got, tt.want)
			}
		})
	}
	// The successor waits the ttl the holder wrote, not its own.
	if got := patience(other, time.Hour, skew); got != 30*time.Second+skew {
		t.Fatalf("patience = %s, want the holder's 30s + %s", got, skew)
	}
	if got := patience(&released, ttl, skew); got != pat {
		t.Fatalf("patience for a record without a ttl = %s, want own %s", got, pat)
	}
}

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func hex8(v uint32) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		out[i] = digits[v&0xf]
		v >>= 4
	}
	return string(out)
}
