package efs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// MarkerFile is the name of the file, at the root of the mounted file system, that
// names the file system id. It proves that the directory Jenkins is about to use is the
// file system the configuration names, and not the local disk or another home.
const MarkerFile = ".jenkins-spot-agent-efs"

// markerMaxSize bounds what is read: an id and a newline fit in 32 bytes, so anything
// much larger is not a marker and must not be read into memory whole.
const markerMaxSize = 256

// EnsureMarker checks the marker at the root of dir. Absent, it is written (the first
// verification of a fresh file system) and created is true. Naming fileSystemID, it
// passes. Naming another id, or holding anything else, is an error: the directory holds
// data that is not this file system's, and Jenkins must not start on it.
func EnsureMarker(dir, fileSystemID string) (created bool, err error) {
	path := filepath.Join(dir, MarkerFile)
	content, err := readMarker(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := writeMarker(dir, fileSystemID); err != nil {
			return false, err
		}
		return true, nil
	case err != nil:
		return false, err
	}
	id, err := ParseMarker(content)
	if err != nil {
		return false, fmt.Errorf("marker %s: %w; inspect the directory, and if it is the file system %s remove the marker so it is written again", path, err, fileSystemID)
	}
	if id != fileSystemID {
		return false, fmt.Errorf("marker %s names file system %s, but the configuration names %s: this mount point holds another file system's data; do not start Jenkins, check efs.file_system_id and the mount", path, id, fileSystemID)
	}
	return false, nil
}

// ParseMarker returns the file system id a marker holds: the id and one newline.
func ParseMarker(content []byte) (string, error) {
	s, ok := strings.CutSuffix(string(content), "\n")
	if !ok {
		return "", fmt.Errorf("holds %.64q, want a file system id and a newline", content)
	}
	if err := ValidateFileSystemID(s); err != nil {
		return "", fmt.Errorf("holds %.64q: %w", content, err)
	}
	return s, nil
}

func readMarker(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("read marker: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, markerMaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read marker %s: %w; it must be a regular file readable by root", path, err)
	}
	if len(b) > markerMaxSize {
		return nil, fmt.Errorf("read marker %s: larger than %d bytes, so not a marker; inspect it and remove it if this is the right file system", path, markerMaxSize)
	}
	return b, nil
}

// writeMarker writes the marker so that a reader sees either no marker or a whole one:
// a crash mid-write must not leave a truncated marker that fails every later boot.
func writeMarker(dir, fileSystemID string) (err error) {
	tmp, err := os.CreateTemp(dir, MarkerFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("write marker: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.WriteString(fileSystemID + "\n"); err != nil {
		return fmt.Errorf("write marker: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write marker: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write marker: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write marker: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, MarkerFile)); err != nil {
		return fmt.Errorf("write marker: %w", err)
	}
	// The rename is durable only once the directory itself is synced.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write marker: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write marker: sync %s: %w", dir, err)
	}
	return nil
}
