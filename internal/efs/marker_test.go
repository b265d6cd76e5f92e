package efs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
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
			wantErr: []string{"is a directory, not a regular file", "rm -r "},
		},
		{
			// Even a link to a good marker is refused: the agent never follows links there.
			name: "marker is a symbolic link to a good marker",
			setup: func(t *testing.T, dir string) {
				good := filepath.Join(t.TempDir(), "good")
				writeFile(filepath.Base(good), testFS+"\n")(t, filepath.Dir(good))
				mustSymlink(t, good, filepath.Join(dir, MarkerFile))
			},
			wantErr: []string{"is a symbolic link, not a regular file", "neither follows nor opens"},
		},
		{
			name:    "marker is a dangling symbolic link",
			setup:   func(t *testing.T, dir string) { mustSymlink(t, "/nonexistent/marker", filepath.Join(dir, MarkerFile)) },
			wantErr: []string{"is a symbolic link"},
		},
		{
			// A FIFO would block an open for reading until a writer comes: it is refused
			// without being opened.
			name: "marker is a FIFO",
			setup: func(t *testing.T, dir string) {
				if err := unix.Mkfifo(filepath.Join(dir, MarkerFile), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: []string{"is a FIFO, not a regular file"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			before := readIfRegular(t, filepath.Join(dir, MarkerFile))
			created, err := EnsureMarker(t.Context(), dir, testFS)
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
				after := readIfRegular(t, filepath.Join(dir, MarkerFile))
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
	if _, err := EnsureMarker(t.Context(), dir, testFS); err == nil || !strings.Contains(err.Error(), "write marker") {
		t.Fatalf("EnsureMarker in read-only dir = %v, want write marker error", err)
	}
}

func TestEnsureMarkerMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "absent")
	if _, err := EnsureMarker(t.Context(), dir, testFS); err == nil || !strings.Contains(err.Error(), "write marker") {
		t.Fatalf("EnsureMarker in missing dir = %v, want write marker error", err)
	}
}

// TestMarkerErrorsKeepSecretsOut points the marker at a file only root may read, as
// the Jenkins user (who owns the home) could: nothing of its content may reach the
// error, which ends up in logs and the status. A regular file of garbage is quoted
// by a short prefix only.
func TestMarkerErrorsKeepSecretsOut(t *testing.T) {
	const secret = "root:$6$s3cr3t-hash-that-must-not-leak$"
	secretFile := filepath.Join(t.TempDir(), "shadow")
	writeFile(filepath.Base(secretFile), secret+"\n")(t, filepath.Dir(secretFile))

	dir := t.TempDir()
	mustSymlink(t, secretFile, filepath.Join(dir, MarkerFile))
	_, err := EnsureMarker(t.Context(), dir, testFS)
	if err == nil || strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "root:") {
		t.Fatalf("EnsureMarker through a link to a secret = %v, want a refusal without the content", err)
	}

	long := strings.Repeat("A", 40) + "TAIL-THAT-MUST-NOT-SHOW"
	dir2 := t.TempDir()
	writeFile(MarkerFile, long+"\n")(t, dir2)
	_, err = EnsureMarker(t.Context(), dir2, testFS)
	if err == nil || strings.Contains(err.Error(), "TAIL") || !strings.Contains(err.Error(), `"AAAA`) {
		t.Fatalf("EnsureMarker on a long garbage marker = %v, want a short quoted prefix only", err)
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

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// readIfRegular reads path if it is a regular file: tests compare what a failed check
// left, without opening FIFOs or following links.
func readIfRegular(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	if !fi.Mode().IsRegular() {
		return "<" + fi.Mode().String() + ">"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
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
