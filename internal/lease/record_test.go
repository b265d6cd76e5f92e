package lease

import (
	"strings"
	"testing"
	"time"
)

const goodRecord = `{"holder":"i-0abc","epoch":3,"expires":"2025-01-02T03:04:05.123456789Z","released":false,"renewed_at":"2025-01-02T03:03:35.123456789Z"}`

func TestParseRecord(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Record
		wantErr string
	}{
		{name: "good", in: goodRecord, want: Record{
			Holder: "i-0abc", Epoch: 3,
			Expires:   time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC),
			RenewedAt: time.Date(2025, 1, 2, 3, 3, 35, 123456789, time.UTC),
		}},
		{name: "offset converted to UTC", in: strings.Replace(goodRecord, "05.123456789Z", "05.123456789+01:00", 1), want: Record{
			Holder: "i-0abc", Epoch: 3,
			Expires:   time.Date(2025, 1, 2, 2, 4, 5, 123456789, time.UTC),
			RenewedAt: time.Date(2025, 1, 2, 3, 3, 35, 123456789, time.UTC),
		}},
		{name: "empty", in: "", wantErr: "EOF"},
		{name: "garbage", in: "\x00\x01lease", wantErr: "invalid character"},
		{name: "torn", in: goodRecord[:40], wantErr: "unexpected EOF"},
		{name: "trailing", in: goodRecord + "{}", wantErr: "trailing data"},
		{name: "unknown field", in: strings.Replace(goodRecord, `"epoch"`, `"owner":"x","epoch"`, 1), wantErr: "unknown field"},
		{name: "missing holder", in: `{"epoch":3,"expires":"2025-01-02T03:04:05Z","released":false,"renewed_at":"2025-01-02T03:04:05Z"}`, wantErr: "missing field holder"},
		{name: "missing released", in: `{"holder":"i-1","epoch":3,"expires":"2025-01-02T03:04:05Z","renewed_at":"2025-01-02T03:04:05Z"}`, wantErr: "missing field released"},
		{name: "missing renewed_at", in: `{"holder":"i-1","epoch":3,"expires":"2025-01-02T03:04:05Z","released":true}`, wantErr: "missing field renewed_at"},
		{name: "empty holder", in: strings.Replace(goodRecord, "i-0abc", "", 1), wantErr: "empty holder"},
		{name: "epoch zero", in: strings.Replace(goodRecord, `"epoch":3`, `"epoch":0`, 1), wantErr: "epoch 0"},
		{name: "negative epoch", in: strings.Replace(goodRecord, `"epoch":3`, `"epoch":-1`, 1), wantErr: "cannot unmarshal"},
		{name: "epoch as string", in: strings.Replace(goodRecord, `"epoch":3`, `"epoch":"3"`, 1), wantErr: "cannot unmarshal"},
		{name: "bad time", in: strings.Replace(goodRecord, "2025-01-02T03:04:05.123456789Z", "yesterday", 1), wantErr: "expires"},
		{name: "null holder", in: strings.Replace(goodRecord, `"i-0abc"`, `null`, 1), wantErr: "missing field holder"},
		{name: "array", in: `[]`, wantErr: "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRecord([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseRecord() error = %v, want it to contain %q", err, tt.wantErr)
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
		Holder: "i-1", Epoch: 1 << 60, Expires: time.Date(2030, 5, 6, 7, 8, 9, 1, time.UTC), Released: true,
		RenewedAt: time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC),
	}
	out, err := ParseRecord(in.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip = %+v, want %+v", out, in)
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add([]byte(goodRecord))
	f.Add([]byte(`{"holder":"i-1","epoch":1,"expires":"2025-01-02T03:04:05Z","released":true,"renewed_at":"2025-01-02T03:04:05Z"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(goodRecord[:30]))
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
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	skew := 2 * time.Second
	other := func(expires time.Time, released bool) *Record {
		return &Record{Holder: "i-other", Epoch: 7, Expires: expires, Released: released}
	}
	tests := []struct {
		name string
		rec  *Record
		gone tenure
		want verdict
	}{
		{"no record", nil, tenure{}, verdictTake},
		{"held by other", other(now.Add(10*time.Second), false), tenure{}, verdictWait},
		{"released by other", other(now.Add(10*time.Second), true), tenure{}, verdictTake},
		{"expired but within skew", other(now.Add(-time.Second), false), tenure{}, verdictWait},
		{"expired at skew boundary", other(now.Add(-skew), false), tenure{}, verdictWait},
		{"expired past skew", other(now.Add(-skew-time.Nanosecond), false), tenure{}, verdictTake},
		{"holder terminated", other(now.Add(time.Hour), false), tenure{"i-other", 7}, verdictTake},
		{"terminated verdict for an older epoch", other(now.Add(time.Hour), false), tenure{"i-other", 6}, verdictWait},
		{"own record", &Record{Holder: "i-me", Epoch: 4, Expires: now.Add(time.Hour)}, tenure{}, verdictAdopt},
		{"own expired record", &Record{Holder: "i-me", Epoch: 4, Expires: now.Add(-time.Hour)}, tenure{}, verdictAdopt},
		{"own released record", &Record{Holder: "i-me", Epoch: 4, Expires: now, Released: true}, tenure{}, verdictTake},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decide(tt.rec, "i-me", now, skew, tt.gone); got != tt.want {
				t.Fatalf("decide() = %v, want %v", got, tt.want)
			}
		})
	}
}
