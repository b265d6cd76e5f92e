package efs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testFS = "fs-0123456789abcdef0"

func TestEnsureMarker(t *testing.T) {
	tests := []struct {
		name        string
		setup       func(t *testing.T, dir string)
		wantCreated bool
		wantErr     []string // all must appear
	}{
		{name: "fresh file system gets a marker", wantCreated: true},
		{name: "own marker passes", setup: writeFile(MarkerFile, testFS+"\n")},
		{
			name:    "foreign marker names both ids",
			setup:   writeFile(MarkerFile, "fs-12345678\n"),
			wantErr: []string{"fs-12345678", testFS, "another file system's data", "do not start Jenkins"},
		},
		{name: "no newline", setup: writeFile(MarkerFile, testFS), wantErr: []string{"want a file system id and a newline"}},
		{name: "garbage", setup: writeFile(MarkerFile, "hello world\n"), wantErr: []string{"not fs- followed by", "remove the marker"}},
		{name: "empty", setup: writeFile(MarkerFile, ""), wantErr: []string{"want a file system id"}},
		{name: "two lines", setup: writeFile(MarkerFile, testFS+"\n"+testFS+"\n"), wantErr: []string{"file system id"}},
		{name: "too large", setup: writeFile(MarkerFile, strings.Repeat("x", 4096)), wantErr: []string{"larger than 256 bytes"}},
		{
			name:    "marker is a directory",
			setup:   func(t *testing.T, dir string) { mustMkdir(t, filepath.Join(dir, MarkerFile)) },
			wantErr: []string{"read marker"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			before, _ := os.ReadFile(filepath.Join(dir, MarkerFile))
			created, err := EnsureMarker(dir, testFS)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("EnsureMarker passed, want error with %q", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				// A failed check must leave what it found alone.
				after, _ := os.ReadFile(filepath.Join(dir, MarkerFile))
				if string(after) != string(before) {
					t.Errorf("marker changed from %q to %q", before, after)
				}
				return
			}
			if err != nil {
				t.Fatalf("EnsureMarker: %v", err)
			}
			if created != tt.wantCreated {
				t.Errorf("created = %v, want %v", created, tt.wantCreated)
			}
			got, err := os.ReadFile(filepath.Join(dir, MarkerFile))
			if err != nil || string(got) != testFS+"\n" {
				t.Errorf("marker = %q, %v; want %q", got, err, testFS+"\n")
			}
			assertNoTempFiles(t, dir)
		})
	}
}

func TestEnsureMarkerReadOnlyDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes into a read-only directory; the write failure path is checked with a missing directory instead")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureMarker(dir, testFS); err == nil || !strings.Contains(err.Error(), "write marker") {
		t.Fatalf("EnsureMarker in read-only dir = %v, want write marker error", err)
	}
}

func TestEnsureMarkerMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "absent")
	if _, err := EnsureMarker(dir, testFS); err == nil || !strings.Contains(err.Error(), "write marker") {
		t.Fatalf("EnsureMarker in missing dir = %v, want write marker error", err)
	}
}

func FuzzParseMarker(f *testing.F) {
	f.Add([]byte(testFS + "\n"))
	f.Add([]byte("fs-12345678\n"))
	f.Add([]byte("fs-12345678"))
	f.Add([]byte("\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := ParseMarker(b)
		if err != nil {
			return
		}
		if ValidateFileSystemID(id) != nil || string(b) != id+"\n" {
			t.Fatalf("ParseMarker(%q) = %q, which is not the whole valid content", b, id)
		}
	})
}

func writeFile(name, content string) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
