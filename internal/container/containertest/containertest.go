// Package containertest builds small images for tests and simulations that
// need a real Docker Engine but no registry: a static Go binary is copied into
// an image FROM scratch through the Engine's build API.
package containertest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
)

// NewClient returns a client for DOCKER_HOST (or the default socket) that
// negotiates the API version, as the agent's own client does.
func NewClient() (*client.Client, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return cli, nil
}

// Reachable reports whether the Docker daemon answers a ping before ctx ends.
func Reachable(ctx context.Context) bool {
	cli, err := NewClient()
	if err != nil {
		return false
	}
	defer cli.Close()
	_, err = cli.Ping(ctx)
	return err == nil
}

// RequireDocker returns a client for a daemon that answers, or skips the test
// when there is none. Under CI=true a missing daemon fails the test instead,
// so that CI cannot pass by skipping.
func RequireDocker(t testing.TB) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := NewClient()
	if err == nil {
		_, err = cli.Ping(ctx)
		if err != nil {
			cli.Close()
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("docker daemon unreachable under CI=true: %v", err)
		}
		t.Skipf("docker daemon unreachable, skipping: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// StaticBinary builds the Go main package pkg (an import path, or a path
// relative to the test's directory such as ./testdata/server) with
// CGO_ENABLED=0, so that it runs in an image with no libc, and returns the
// binary's path in a temporary directory.
func StaticBinary(t testing.TB, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(strings.TrimSuffix(pkg, "/")))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := BuildStatic(ctx, pkg, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// BuildStatic builds the Go main package pkg into the file out with
// CGO_ENABLED=0, using the go command on PATH or else the one of this
// toolchain. Relative package paths are relative to the working directory.
func BuildStatic(ctx context.Context, pkg, out string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// BuildImage builds tag as an image FROM scratch holding only binaryPath,
// copied to /<base name of binaryPath>. entrypoint defaults to that path. The
// classic builder is requested because Docker 20.10 has BuildKit off by default
// and BuildKit's session protocol would be needed otherwise.
func BuildImage(ctx context.Context, cli client.APIClient, tag, binaryPath string, entrypoint []string) error {
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
	dockerfile := fmt.Sprintf("FROM scratch\nCOPY %s /%s\nENTRYPOINT %s\n", name, name, ep)

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
// error it reports; the Engine answers 200 before a build fails.
func readBuildStream(r io.Reader) error {
	dec := json.NewDecoder(r)
	var log strings.Builder
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
		log.WriteString(m.Stream)
		msg := m.Error
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			msg = m.ErrorDetail.Message
		}
		if msg != "" {
			return fmt.Errorf("%s\n%s", msg, log.String())
		}
	}
}
