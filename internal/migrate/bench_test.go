package migrate

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// makeJenkinsHome builds a tree shaped like a busy JENKINS_HOME: jobs with many builds
// of small files, and a few plugin archives of some megabytes. It returns the number
// of files and bytes.
func makeJenkinsHome(b *testing.B, root string, jobs, builds int) (files int, size int64) {
	b.Helper()
	add := func(rel string, data []byte) {
		p := filepath.Join(root, rel)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			b.Fatal(err)
		}
		files++
		size += int64(len(data))
	}
	buildXML := make([]byte, 1500)
	log := make([]byte, 6000)
	for j := range jobs {
		jdir := filepath.Join("jobs", fmt.Sprintf("job-%03d", j))
		if err := os.MkdirAll(filepath.Join(root, jdir, "builds"), 0o755); err != nil {
			b.Fatal(err)
		}
		add(filepath.Join(jdir, "config.xml"), buildXML[:800])
		for n := 1; n <= builds; n++ {
			bdir := filepath.Join(jdir, "builds", fmt.Sprint(n))
			if err := os.Mkdir(filepath.Join(root, bdir), 0o755); err != nil {
				b.Fatal(err)
			}
			add(filepath.Join(bdir, "build.xml"), buildXML)
			add(filepath.Join(bdir, "log"), log)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "plugins"), 0o755); err != nil {
		b.Fatal(err)
	}
	plugin := make([]byte, 8<<20)
	for i := range 8 {
		add(filepath.Join("plugins", fmt.Sprintf("plugin-%d.jpi", i)), plugin)
	}
	return files, size
}

// BenchmarkMigrateHome copies a 50,000-file home on local disk with Copy (with and
// without parallel workers, verification off and on) and with `cp -a`, for comparison.
// It only runs when asked: go test -run '^$' -bench MigrateHome -benchtime 1x -timeout 30m ./internal/migrate/
func BenchmarkMigrateHome(b *testing.B) {
	testenv.Root(b, "to keep owners")
	src := filepath.Join(b.TempDir(), "home")
	if err := os.Mkdir(src, 0o755); err != nil {
		b.Fatal(err)
	}
	files, size := makeJenkinsHome(b, src, 250, 100) // 250 + 50,000 + 8 files
	b.Logf("source: %d files, %.1f MB", files, float64(size)/1e6)

	run := func(name string, copyTree func(dst string) error) {
		b.Run(name, func(b *testing.B) {
			var total time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dst := filepath.Join(b.TempDir(), "efs")
				if err := os.Mkdir(dst, 0o755); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				b.StartTimer()
				if err := copyTree(dst); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				total += time.Since(start)
				if err := os.RemoveAll(dst); err != nil {
					b.Fatal(err)
				}
			}
			per := total.Seconds() / float64(b.N)
			b.ReportMetric(float64(files)/per, "files/s")
			b.ReportMetric(float64(size)/1e6/per, "MB/s")
		})
	}
	for _, v := range []struct {
		workers int
		verify  bool
	}{{1, false}, {8, false}, {8, true}} {
		run(fmt.Sprintf("copy/workers=%d/verify=%v", v.workers, v.verify), func(dst string) error {
			_, err := Copy(context.Background(), Options{From: src, To: dst, Workers: v.workers, Verify: v.verify})
			return err
		})
	}
	run("cp-a", func(dst string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "cp", "-a", src+"/.", dst).CombinedOutput()
		if err != nil {
			return fmt.Errorf("cp -a: %v: %s", err, out)
		}
		return nil
	})
}
