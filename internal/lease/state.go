package lease

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// StateFile is the file, inside Options.StateDir, where the lease keeps the highest
// epoch this instance has seen and the highest whose tenure ended here, so that an
// agent restarted on the same instance never adopts a tenure that already ended (a
// fence) and never takes an epoch lower than one it saw.
const StateFile = "lease-epochs.json"

// epochs is the content of StateFile.
type epochs struct {
	Seen  uint64 `json:"seen"`
	Ended uint64 `json:"ended"`
}

// loadEpochs reads the state file; a missing file (or no state dir) is zero.
func loadEpochs(dir string) (epochs, error) {
	if dir == "" {
		return epochs{}, nil
	}
	path := filepath.Join(dir, StateFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return epochs{}, nil
	}
	if err != nil {
		return epochs{}, fmt.Errorf("lease state %s: %w", path, err)
	}
	var e epochs
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return epochs{}, fmt.Errorf("lease state %s: %s; remove it (the agent then only forgets which tenures ended on this instance)", path, jsonProblem(err))
	}
	return e, nil
}

// saveEpochs replaces the state file atomically.
func saveEpochs(dir string, e epochs) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("lease state: %w", err)
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("lease state: %w", err)
	}
	path := filepath.Join(dir, StateFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("lease state: %w", err)
	}
	_, werr := f.Write(append(data, '\n'))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("lease state %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("lease state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
