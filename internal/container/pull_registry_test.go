package container

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/enginetest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// registry is a minimal Docker Registry v2 on 127.0.0.1 serving one image
// built from a static binary. dockerd treats 127.0.0.0/8 as an insecure
// registry by default, so it pulls from it over plain HTTP, and no traffic
// leaves the machine.
type registry struct {
	host      string            // 127.0.0.1:port
	blobs     map[string][]byte // by digest
	manifest  []byte
	failBlobs bool // answer blob requests with 429, as a rate-limited hub does
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func newRegistry(t *testing.T, binary string, failBlobs bool) *registry {
	t.Helper()
	bin, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	if err := tw.WriteHeader(&tar.Header{Name: "webserver", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(bin); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(tarBuf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	layer := gz.Bytes()

	config, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": []string{"/webserver"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{digestOf(tarBuf.Bytes())}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.docker.distribution.manifest.v2+json",
		"config":        map[string]any{"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config), "digest": digestOf(config)},
		"layers":        []map[string]any{{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(layer), "digest": digestOf(layer)}},
	})
	reg := &registry{
		blobs:     map[string][]byte{digestOf(config): config, digestOf(layer): layer},
		manifest:  manifest,
		failBlobs: failBlobs,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg.host = ln.Addr().String()
	srv := &http.Server{Handler: reg, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("registry: %v", err)
		}
	})
	return reg
}

func (reg *registry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	p := r.URL.Path
	switch {
	case p == "/v2/" || p == "/v2":
		w.Write([]byte("{}"))
	case strings.Contains(p, "/manifests/"):
		w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
		w.Header().Set("Docker-Content-Digest", digestOf(reg.manifest))
		w.Header().Set("Content-Length", fmt.Sprint(len(reg.manifest)))
		if r.Method != http.MethodHead {
			w.Write(reg.manifest)
		}
	case strings.Contains(p, "/blobs/"):
		if reg.failBlobs {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit reached"}]}`))
			return
		}
		b, ok := reg.blobs[p[strings.LastIndex(p, "/")+1:]]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b)
	default:
		http.NotFound(w, r)
	}
}

// pullFixture returns options for an image that only the local registry has.
func pullFixture(t *testing.T, failBlobs bool) Options {
	cli := enginetest.RequireDocker(t)
	reg := newRegistry(t, webserverBinary(t), failBlobs)
	ref := reg.host + "/jsa-test/webserver:" + testenv.RandomSuffix(t)
	t.Cleanup(func() {
		_, _ = cli.ImageRemove(testenv.Context(t, 30*time.Second), ref, image.RemoveOptions{Force: true, PruneChildren: true})
	})
	return Options{
		Image: ref, Name: "jsa-test-pull", HomeHost: "/tmp", HomeContainer: "/data",
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
}

func TestPrepareIfMissingPullsThenReuses(t *testing.T) {
	opts := pullFixture(t, false)
	opts.Pull = PullIfMissing
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if present, err := r.ImagePresent(testenv.Context(t, 30*time.Second)); err != nil || present {
		t.Fatalf("ImagePresent before pull = %v, %v; want false", present, err)
	}
	if err := r.Prepare(testenv.Context(t, 2*time.Minute)); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	if present, err := r.ImagePresent(testenv.Context(t, 30*time.Second)); err != nil || !present {
		t.Fatalf("ImagePresent after pull = %v, %v; want true", present, err)
	}
	// Present now: pull never must be satisfied without contacting anyone.
	opts.Pull = PullNever
	r2, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if err := r2.Prepare(testenv.Context(t, 30*time.Second)); err != nil {
		t.Fatalf("Prepare with pull never after the pull: %v", err)
	}
}

func TestPrepareAlwaysSurfacesStreamError(t *testing.T) {
	opts := pullFixture(t, true)
	opts.Pull = PullAlways
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = r.Prepare(testenv.Context(t, 2*time.Minute))
	if err == nil || !strings.Contains(err.Error(), "rate limit") {
		t.Fatalf("Prepare = %v, want the registry's rate-limit error", err)
	}
	t.Logf("Prepare error as an operator sees it: %v", err)
}
