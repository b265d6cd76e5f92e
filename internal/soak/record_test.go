package soak

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
)

// The lease record file: two slots of slotSize bytes; a write replaces the older one.
const slotSize = 512

// recordPath is the lease record of a home.
func recordPath(home string) string {
	return filepath.Join(home, lease.DirName, lease.RecordName)
}

// readRecord reads the record of a home through the lease package's parser.
func readRecord(home string) (lease.Record, error) {
	b, err := os.ReadFile(recordPath(home))
	if err != nil {
		return lease.Record{}, err
	}
	return lease.ParseRecord(b)
}

// errNoRecord: there is no record to tear yet.
var errNoRecord = errors.New("no lease record yet")

// tearRecord tears the lease record as a crash in the middle of a write would: it takes
// the record's lock, as every writer does, and overwrites part of the slot the next write
// replaces (the older one, or the one never written) with garbage. The newer slot is left
// alone, so the record stays readable; a torn write can do no more. It returns the slot
// it tore.
func tearRecord(home string, seed uint64) (int, error) {
	f, err := os.OpenFile(recordPath(home), os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return -1, errNoRecord
	}
	if err != nil {
		return -1, err
	}
	defer f.Close()
	if err := lockRecord(f); err != nil {
		return -1, err
	}
	defer func() {
		lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: io.SeekStart}
		_ = unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
	}()
	data := make([]byte, 2*slotSize)
	n, err := f.ReadAt(data, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return -1, err
	}
	data = data[:n]
	if n == 0 {
		return -1, errNoRecord
	}
	slot := olderSlot(data)
	r := rand.New(rand.NewPCG(seed, seed>>1|1))
	// A torn write: some bytes of the slot, from somewhere in its line, are not what
	// the record says any more.
	at := slot*slotSize + r.IntN(400)
	junk := make([]byte, 8+r.IntN(96))
	for i := range junk {
		junk[i] = byte(0x21 + r.IntN(0x5e)) // printable, so that it is no blank slot either
	}
	if _, err := f.WriteAt(junk, int64(at)); err != nil {
		return -1, err
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return -1, err
	}
	return slot, nil
}

// lockWait bounds the wait for the record's lock: a writer holds it for a millisecond.
const lockWait = 2 * time.Second

// lockRecord takes the exclusive open-file-description lock every writer of the record
// takes, waiting up to lockWait.
func lockRecord(f *os.File) error {
	deadline := time.Now().Add(lockWait)
	for {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
			return fmt.Errorf("lock the lease record: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lock the lease record: still held after %s", lockWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// olderSlot is the slot the next write of the record replaces: the one that holds no
// good record, or the one with the lower write counter.
func olderSlot(data []byte) int {
	var seq [2]uint64
	var good [2]bool
	for i := range 2 {
		lo, hi := min(i*slotSize, len(data)), min((i+1)*slotSize, len(data))
		rec, err := lease.ParseRecord(alone(data[lo:hi]))
		if err == nil {
			seq[i], good[i] = rec.Seq, true
		}
	}
	switch {
	case !good[1]:
		return 1
	case !good[0]:
		return 0
	case seq[0] < seq[1]:
		return 0
	}
	return 1
}

// alone is a record file that holds slot in its first slot and nothing in the second,
// for the lease package's parser to judge one slot.
func alone(slot []byte) []byte {
	blank := bytes.Repeat([]byte{' '}, slotSize)
	blank[slotSize-1] = '\n'
	out := append([]byte{}, slot...)
	return append(out, blank...)
}
