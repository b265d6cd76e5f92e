package efs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// MarkerFile is the name of the file, at the root of the mounted file system, that
// names the file system id. It proves that the directory Jenkins is about to use is the
// file system the configuration names, and not the local disk or another home.
const MarkerFile = ".jenkins-spot-agent-efs"

// markerMaxSize bounds what is read: an id and a newline fit in 32 bytes, so anything
// much larger is not a marker and must not be read into memory whole.
const markerMaxSize = 256

// ErrNoMarker is wrapped by a read-only verification (Mounter.CheckRootAccess) of a
// file system the agent has never verified: it has no marker yet.
var ErrNoMarker = errors.New("no marker yet")

// errNoMarker marks a home without a marker.
var errNoMarker = ErrNoMarker

// EnsureMarker checks the marker at the root of dir. Absent, it is written (the first
// verification of a fresh file system) and created is true. Naming fileSystemID, it
// passes. Naming another id, holding anything else, or being anything but a regular
// file (a symbolic link, a FIFO, a directory: the Jenkins user owns the home and
// could plant one) is an error: the directory is not provably this file system, and
// Jenkins must not start on it. Every file operation runs behind ctx's deadline (see
// ErrHomeNotAnswering): on a hung NFS mount it would never return.
func EnsureMarker(ctx context.Context, dir, fileSystemID string) (created bool, err error) {
	err = checkMarker(ctx, dir, fileSystemID)
	if !errors.Is(err, errNoMarker) {
		return false, err
	}
	if _, err := onHome(ctx, "write marker in "+dir, func() (struct{}, error) {
		return struct{}{}, writeMarker(dir, fileSystemID)
	}); err != nil {
		return false, err
	}
	return true, nil
}

// checkMarker checks the marker without writing one: errNoMarker when there is none.
func checkMarker(ctx context.Context, dir, fileSystemID string) error {
	path := filepath.Join(dir, MarkerFile)
	content, err := onHome(ctx, "read marker "+path, func() ([]byte, error) { return readMarker(path) })
	if err != nil {
		return err
	}
	id, err := ParseMarker(content)
	if err != nil {
		return fmt.Errorf("marker %s: %w; inspect the directory, and if it is the file system %s remove the marker so it is written again", path, err, fileSystemID)
	}
	if id != fileSystemID {
		return fmt.Errorf("marker %s names file system %s, but the configuration names %s: this mount point holds another file system's data; do not start Jenkins, check efs.file_system_id and the mount", path, id, fileSystemID)
	}
	return nil
}

// ParseMarker returns the file system id a marker holds: the id and one newline.
// Errors quote at most a short prefix of the content.
func ParseMarker(content []byte) (string, error) {
	s, ok := strings.CutSuffix(string(content), "\n")
	if !ok {
		return "", fmt.Errorf("holds %.32q, want a file system id and a newline", content)
	}
	if err := ValidateFileSystemID(s); err != nil {
		return "", fmt.Errorf("holds %.32q, which is not a file system id (not fs- followed by 8 or 17 lowercase hex digits)", content)
	}
	return s, nil
}

// readMarker reads the marker at path, which must be a regular file. It never follows
// a symbolic link and never opens anything else: opening a FIFO blocks, and a device
// node's open has effects of its own. The file's content never reaches an error.
func readMarker(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNoMarker
	}
	if err != nil {
		return nil, fmt.Errorf("read marker: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, notRegular(path, fi.Mode())
	}
	// O_NONBLOCK: if the file was swapped for a FIFO since the Lstat, open must not wait.
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, errNoMarker
	case errors.Is(err, unix.ELOOP):
		return nil, notRegular(path, fs.ModeSymlink)
	case err != nil:
		return nil, fmt.Errorf("read marker: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("read marker %s: %w", path, err)
	} else if !fi.Mode().IsRegular() {
		return nil, notRegular(path, fi.Mode())
	}
	b, err := io.ReadAll(io.LimitReader(f, markerMaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read marker %s: %w; it must be a regular file readable by root", path, err)
	}
	if len(b) > markerMaxSize {
		return nil, fmt.Errorf("read marker %s: larger than %d bytes, so not a marker; inspect it and remove it if this is the right file system", path, markerMaxSize)
	}
	return b, nil
}

// notRegular refuses a marker that is not a regular file, naming what it is.
func notRegular(path string, mode fs.FileMode) error {
	kind := "not a regular file"
	switch {
	case mode&fs.ModeSymlink != 0:
		kind = "a symbolic link"
	case mode.IsDir():
		kind = "a directory"
	case mode&fs.ModeNamedPipe != 0:
		kind = "a FIFO"
	case mode&fs.ModeSocket != 0:
		kind = "a socket"
	case mode&fs.ModeDevice != 0:
		kind = "a device node"
	}
	return fmt.Errorf("marker %s is %s, not a regular file: the agent neither follows nor opens it (the Jenkins user owns the home); "+
		"if this is the right file system, remove it (rm -r %s) and the agent writes the marker again", path, kind, path)
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
