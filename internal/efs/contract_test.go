package efs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent/contract"
)

var _ contract.Mounter = (*Mounter)(nil)

// TestNSContract: the Mounter passes the agent's contract for Mounter, mounting tmpfs
// file systems for real through the mount program's stand-in (and a FUSE file system
// that can hang), inside TestRealMount's private mount namespace.
func TestNSContract(t *testing.T) {
	inNamespace(t)
	contract.TestMounter(t, contract.MounterHarness{
		New: func(t *testing.T) contract.MounterWorld {
			scriptCalls(t, 0, "")
			mp := nsMountPoint(t)
			m := nsMounter(t, mp, Options{})
			w := nsContractWorld(t, m)
			w.Reopen = func() contract.Mounter { return nsMounter(t, mp, Options{Program: m.opts.Program}) }
			w.LocalFiles = func() { writeFile("config.xml", "<hudson/>")(t, mp) }
			w.Busy = func() func() {
				f, err := os.Create(filepath.Join(mp, "build.log"))
				if err != nil {
					t.Fatal(err)
				}
				return func() { f.Close() }
			}
			w.Unreachable = func() {
				t.Setenv("EFSTEST_FAIL_TIMES", "1000000")
				t.Setenv("EFSTEST_FAIL_MESSAGE", "mount.nfs: Connection timed out")
			}
			return w
		},
		Hanging: func(t *testing.T) contract.MounterWorld {
			mp, _, srv := fuseHome(t, nil)
			// Operations left blocked by the hang return once it ends; later tests
			// count the blocked ones, so this world ends only once they have.
			before := stuckOps.Load()
			t.Cleanup(func() {
				deadline := time.Now().Add(10 * time.Second)
				for stuckOps.Load() > before && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
			})
			m := fuseMounter(t, mp)
			w := nsContractWorld(t, m)
			w.Reopen = func() contract.Mounter { return fuseMounter(t, mp) }
			w.Hang, w.Resume = srv.Hang, srv.Resume
			return w
		},
	})
}

// nsContractWorld is the world of m's mount point, seen through the mount table and
// the files at the mount point.
func nsContractWorld(t *testing.T, m *Mounter) contract.MounterWorld {
	mp := m.MountPoint()
	return contract.MounterWorld{
		Mounter:      m,
		FileSystemID: m.opts.FileSystemID,
		MountPoint:   mp,
		Mounts:       func() int { return len(mountsAt(t, mp)) },
		Marker: func() string {
			b, err := os.ReadFile(filepath.Join(mp, MarkerFile))
			if errors.Is(err, os.ErrNotExist) {
				return ""
			}
			if err != nil {
				t.Fatal(err)
			}
			if id, err := ParseMarker(b); err == nil {
				return id
			}
			return string(b)
		},
		WriteMarker: func(id string) { writeFile(MarkerFile, id+"\n")(t, mp) },
		MountForeign: func(id string) {
			mountAt(t, id+".efs.us-east-1.amazonaws.com:/", mp)
			writeFile(MarkerFile, id+"\n")(t, mp)
		},
	}
}
