// Package scratch builds single-binary images FROM scratch through the Docker
// Engine's build API, for tests and for simulate, which run a static
// stand-in for Jenkins without any registry.
package scratch

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
)

// Build builds tag as an image FROM scratch holding only binaryPath,
// copied to /<base name of binaryPath>. entrypoint defaults to that path. The
// classic builder is requested because Docker 20.10 has BuildKit off by default
// and BuildKit's session protocol would be needed otherwise. No registry is
// involved, which is what lets tests and simulate run Docker offline.
func Build(ctx context.Context, cli client.APIClient, tag, binaryPath string, entrypoint []string) error {
	bin, err := os.ReadFile(binaryPath)
	if err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	name := filepath.Base(binaryPath)
	if len(entrypoint) == 0 {
		entrypoint = []string{"/" + name}
	}
	ep, err := json.Marshal(entrypoint)
	if err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	// The JSON forms keep odd file names (spaces) intact.
	cp, err := json.Marshal([]string{name, "/" + name})
	if err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	dockerfile := fmt.Sprintf("FROM scratch\nCOPY %s\nENTRYPOINT %s\n", cp, ep)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	files := []struct {
		name string
		mode int64
		body []byte
	}{
		{"Dockerfile", 0o644, []byte(dockerfile)},
		{name, 0o755, bin},
	}
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.body)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("build image %s: tar: %w", tag, err)
		}
		if _, err := tw.Write(f.body); err != nil {
			return fmt.Errorf("build image %s: tar: %w", tag, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("build image %s: tar: %w", tag, err)
	}

	resp, err := cli.ImageBuild(ctx, &buf, build.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1,
	})
	if err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	defer resp.Body.Close()
	if err := readBuildStream(resp.Body); err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	return nil
}

// readBuildStream reads the build output to its end and returns the first
// error it reports, with the output so far; the Engine answers 200 before a
// build fails.
func readBuildStream(r io.Reader) error {
	dec := json.NewDecoder(r)
	var out strings.Builder
	for {
		var m struct {
			Stream      string `json:"stream"`
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read build output: %w", err)
		}
		out.WriteString(m.Stream)
		msg := m.Error
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			msg = m.ErrorDetail.Message
		}
		if msg != "" {
			return fmt.Errorf("%s\n%s", msg, out.String())
		}
	}
}
