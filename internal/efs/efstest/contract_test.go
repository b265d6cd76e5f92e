package efstest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent/contract"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs"
)

var _ contract.Mounter = (*Dir)(nil)

// TestContract: the Dir double passes the agent's contract for Mounter. The directory
// is the file system itself, so it has no local disk beneath a mount to refuse files
// on, no mount target to be out of reach and nothing that can hang: those checks are
// skipped.
func TestContract(t *testing.T) {
	contract.TestMounter(t, contract.MounterHarness{New: func(t *testing.T) contract.MounterWorld {
		path := filepath.Join(t.TempDir(), "jenkins_home")
		d := NewDir(path, fsID)
		marker := filepath.Join(path, efs.MarkerFile)
		writeMarker := func(id string) {
			if err := os.MkdirAll(path, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(marker, []byte(id+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return contract.MounterWorld{
			Mounter:      d,
			FileSystemID: fsID,
			MountPoint:   path,
			Reopen:       func() contract.Mounter { return NewDir(path, fsID) },
			Mounts: func() int {
				if d.Mounted() {
					return 1
				}
				return 0
			},
			Marker: func() string {
				b, err := os.ReadFile(marker)
				if errors.Is(err, os.ErrNotExist) {
					return ""
				}
				if err != nil {
					t.Fatal(err)
				}
				if id, err := efs.ParseMarker(b); err == nil {
					return id
				}
				return string(b)
			},
			WriteMarker:  writeMarker,
			MountForeign: writeMarker, // the directory is the file system: a foreign one is its marker
		}
	}})
}
