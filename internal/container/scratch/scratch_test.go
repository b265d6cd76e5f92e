package scratch

import (
	"strings"
	"testing"
)

func TestReadBuildStream(t *testing.T) {
	tests := []struct {
		name, stream, wantErr string
	}{
		{name: "success", stream: `{"stream":"Step 1/3 : FROM scratch\n"}` + "\n" + `{"aux":{"ID":"sha256:abc"}}` + "\n" + `{"stream":"Successfully tagged x:y\n"}`},
		{name: "error detail", stream: `{"stream":"Step 2/3 : COPY app /app\n"}` + "\n" + `{"errorDetail":{"message":"COPY failed: no such file"},"error":"COPY failed: no such file"}`, wantErr: "COPY failed"},
		{name: "error only", stream: `{"error":"build failed"}`, wantErr: "build failed"},
		{name: "garbage", stream: `not json`, wantErr: "read build output"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := readBuildStream(strings.NewReader(tt.stream))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
