package container

import (
	"strings"
	"testing"
	"time"
)

// A pull stream in the shape dockerd sends it: one JSON object per line.
const pullStream = `{"status":"Pulling from jenkins/jenkins","id":"lts-jdk21"}
{"status":"Pulling fs layer","progressDetail":{},"id":"aaa"}
{"status":"Already exists","progressDetail":{},"id":"bbb"}
{"status":"Pulling fs layer","progressDetail":{},"id":"ccc"}
{"status":"Waiting","progressDetail":{},"id":"ccc"}
{"status":"Downloading","progressDetail":{"current":100,"total":1000},"progress":"[>   ]","id":"aaa"}
{"status":"Downloading","progressDetail":{"current":500,"total":1000},"progress":"[==> ]","id":"aaa"}
{"status":"Downloading","progressDetail":{"current":10,"total":50},"id":"ccc"}
{"status":"Verifying Checksum","progressDetail":{},"id":"aaa"}
{"status":"Download complete","progressDetail":{},"id":"aaa"}
{"status":"Extracting","progressDetail":{"current":32768,"total":1000},"id":"aaa"}
{"status":"Pull complete","progressDetail":{},"id":"aaa"}
{"status":"Digest: sha256:0123"}
{"status":"Status: Downloaded newer image for jenkins/jenkins:lts-jdk21"}
`

func TestReadPullStream(t *testing.T) {
	tests := []struct {
		name    string
		stream  string
		want    pullProgress
		wantErr string
	}{
		{
			name:   "complete pull",
			stream: pullStream,
			// aaa done (1000 of 1000), bbb already there, ccc at 10 of 50.
			want: pullProgress{LayersDone: 2, Layers: 3, Bytes: 1010, TotalBytes: 1050},
		},
		{
			name:    "error in stream",
			stream:  `{"status":"Pulling fs layer","id":"aaa"}` + "\n" + `{"errorDetail":{"message":"toomanyrequests: rate limit"},"error":"toomanyrequests: rate limit"}`,
			wantErr: "toomanyrequests",
		},
		{
			name:    "old error spelling only",
			stream:  `{"error":"manifest unknown"}`,
			wantErr: "manifest unknown",
		},
		{
			name:    "truncated stream",
			stream:  `{"status":"Downloading","id":"a`,
			wantErr: "read pull progress",
		},
		{name: "empty stream", stream: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var last pullProgress
			reports := 0
			err := readPullStream(strings.NewReader(tt.stream), time.Hour, time.Now, func(p pullProgress) {
				last = p
				reports++
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if reports != 1 || last != tt.want {
				t.Fatalf("reports %d, last %+v; want 1 final report %+v", reports, last, tt.want)
			}
		})
	}
}

func TestReadPullStreamThrottlesReports(t *testing.T) {
	// A fake clock that advances one second per message: with a 5s interval a
	// 14-message stream gives 2 interim reports and the final one.
	var now time.Time
	clock := func() time.Time { now = now.Add(time.Second); return now }
	reports := 0
	if err := readPullStream(strings.NewReader(pullStream), 5*time.Second, clock, func(pullProgress) { reports++ }); err != nil {
		t.Fatal(err)
	}
	if reports != 3 {
		t.Fatalf("%d reports, want 3", reports)
	}
}

func FuzzReadPullStream(f *testing.F) {
	f.Add(pullStream)
	f.Add(`{"status":"Downloading","progressDetail":{"current":-5,"total":-1},"id":"x"}`)
	f.Add(`{"error":"x"}`)
	f.Add(`[1,2]`)
	f.Fuzz(func(t *testing.T, s string) {
		_ = readPullStream(strings.NewReader(s), 0, time.Now, func(p pullProgress) {
			if p.LayersDone > p.Layers || p.Layers < 0 {
				t.Fatalf("impossible progress %+v", p)
			}
		})
	})
}
