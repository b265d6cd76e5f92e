package migrate

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/containertest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs/efstest/latencyfs"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

var (
	benchFiles     = flag.Int("migrate.files", 50_000, "BenchmarkMigrateEFS: entries in the generated home")
	benchLatencies = flag.String("migrate.latencies", "0,1ms,3ms", "BenchmarkMigrateEFS: delays per request of the target, comma-separated; 0 is the local disk")
	benchToolList  = flag.String("migrate.tools", "migrate,migrate-1,cp,rsync,parallel", "BenchmarkMigrateEFS: tools to run (migrate-1 runs on the local disk only)")
	benchSweep     = flag.String("migrate.sweep", "32,64,128,256", "BenchmarkMigrateEFS: worker counts to run migrate --workers N with on each slow target (empty: none)")
	benchTogether  = flag.Bool("migrate.together", true, "BenchmarkMigrateEFS: run cp -a and rsync on the slow targets side by side, before the others")
	benchTimeout   = flag.Duration("migrate.timeout", 90*time.Minute, "BenchmarkMigrateEFS: limit for one tool's run")
)

// benchRow is one line of the table.
type benchRow struct {
	tool     string
	latency  string
	files    int
	seconds  float64
	requests int64 // requests the target served; -1 on the local disk
	delay    time.Duration
	diffs    []string
	note     string
}

// BenchmarkMigrateEFS copies one generated JENKINS_HOME (50,000 entries, about 140 MB)
// from the local disk onto targets of increasing latency, with `migrate` (its worker
// count chosen from the measured latency, verification included in its time) and with
// what an operator would use instead: `cp -a`, `rsync -aH`, and `cp -a` of each job in
// parallel (GNU parallel, 32 at once). Latency 0 is the local disk; others are a FUSE
// loopback that answers every request after that delay, as EFS does over the network.
// cp -a and rsync on the slow targets wait on one request at a time, so they run side
// by side, before the others (-migrate.together=false runs everything in turn). It prints
// a table; each tool's copy is then checked against the source (not timed). Needs root,
// /dev/fuse, cp, rsync and parallel. Run it with `make bench-migrate`.
func BenchmarkMigrateEFS(b *testing.B) {
	testenv.Root(b, "mounts a FUSE file system")
	if err := latencyfs.Available(); err != nil {
		testenv.Missing(b, "%v", err)
	}
	for _, tool := range []struct{ name, pkg string }{{"cp", "coreutils"}, {"rsync", "rsync"}, {"parallel", "parallel"}} {
		testenv.Tool(b, tool.name, tool.pkg)
	}
	bin := containertest.AgentBinary(b, "../../cmd/jenkins-spot-agent")
	src := filepath.Join(b.TempDir(), "old-home")
	if err := os.Mkdir(src, 0o755); err != nil {
		b.Fatal(err)
	}
	shape := makeJenkinsHome(b, src, *benchFiles, 1)
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("source: %d entries (%d symlinks, %d extra hard-link names), %d directories, %.1f MB; %d CPUs, load %s",
		shape.Files, shape.Symlinks, shape.Hardlinks, shape.Dirs, float64(shape.Bytes)/1e6, runtime.NumCPU(), load)

	tools := map[string]bool{}
	for _, t := range strings.Split(*benchToolList, ",") {
		tools[strings.TrimSpace(t)] = true
	}
	type run struct {
		delay time.Duration
		tool  benchTool
	}
	var now, later []run
	for _, l := range strings.Split(*benchLatencies, ",") {
		delay, err := time.ParseDuration(strings.TrimSpace(l))
		if err != nil {
			b.Fatalf("-migrate.latencies: %v", err)
		}
		all := benchTools(src, bin)
		if delay > 0 && *benchSweep != "" {
			for _, n := range strings.Split(*benchSweep, ",") {
				n = strings.TrimSpace(n)
				all = append(all, benchTool{"migrate-" + n, func(ctx context.Context, dst string) *exec.Cmd {
					return exec.CommandContext(ctx, bin, "migrate", "--from", src, "--to", dst, "--holder", "bench", "--config", "/nonexistent", "--workers", n)
				}})
			}
		}
		for _, t := range all {
			switch {
			case strings.HasPrefix(t.name, "migrate-") && t.name != "migrate-1" && delay > 0:
				now = append(now, run{delay, t}) // the sweep
			case !tools[t.name] || (t.name == "migrate-1" && delay > 0):
			case delay > 0 && *benchTogether && (t.name == "cp" || t.name == "rsync"):
				later = append(later, run{delay, t})
			default:
				now = append(now, run{delay, t})
			}
		}
	}
	// cp -a and rsync first: they wait on one request at a time for most of the hour,
	// then the tools that keep the CPUs busy.
	results := make([]benchRow, len(later))
	errs := make([]error, len(later))
	var wg sync.WaitGroup
	for i, r := range later {
		wg.Go(func() {
			results[i], errs[i] = benchRun(r.delay, r.tool, src)
			results[i].files = shape.Files
			if errs[i] == nil {
				printRow(results[i])
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	rows := results
	for _, r := range now {
		row, err := benchRun(r.delay, r.tool, src)
		if err != nil {
			b.Fatal(err)
		}
		row.files = shape.Files
		rows = append(rows, row)
		printRow(row)
	}
	rank := func(tool string) int {
		if i := slices.Index([]string{"migrate", "migrate-1", "parallel", "cp", "rsync"}, tool); i >= 0 {
			return i
		}
		return 5 // the sweep, in its order
	}
	slices.SortStableFunc(rows, func(x, y benchRow) int {
		return cmp.Or(cmp.Compare(x.delay, y.delay), cmp.Compare(rank(x.tool), rank(y.tool)))
	})
	load, _ = os.ReadFile("/proc/loadavg")
	fmt.Printf("\nload at the end: %s\n", load)
	fmt.Print(benchTable(rows))
}

type benchTool struct {
	name string
	cmd  func(ctx context.Context, dst string) *exec.Cmd
}

// benchTools are the commands compared: migrate as operators run it, and the usual
// alternatives.
func benchTools(src, bin string) []benchTool {
	return []benchTool{
		{"migrate", func(ctx context.Context, dst string) *exec.Cmd {
			return exec.CommandContext(ctx, bin, "migrate", "--from", src, "--to", dst, "--holder", "bench", "--config", "/nonexistent")
		}},
		{"migrate-1", func(ctx context.Context, dst string) *exec.Cmd {
			return exec.CommandContext(ctx, bin, "migrate", "--from", src, "--to", dst, "--holder", "bench", "--config", "/nonexistent", "--workers", "1")
		}},
		{"cp", func(ctx context.Context, dst string) *exec.Cmd {
			return exec.CommandContext(ctx, "cp", "-a", src+"/.", dst+"/")
		}},
		{"rsync", func(ctx context.Context, dst string) *exec.Cmd {
			return exec.CommandContext(ctx, "rsync", "-aH", src+"/", dst+"/")
		}},
		{"parallel", func(ctx context.Context, dst string) *exec.Cmd {
			script := `set -e; cd "$1"; mkdir "$2/jobs"
ls -A | grep -vx jobs | parallel -j 32 cp -a {} "$2/"
ls -A jobs | parallel -j 32 cp -a jobs/{} "$2/jobs/"
chown --reference=jobs "$2/jobs"; chmod --reference=jobs "$2/jobs"; touch -r jobs "$2/jobs"
chown --reference=. "$2"; chmod --reference=. "$2"`
			return exec.CommandContext(ctx, "bash", "-c", script, "parallel-cp", src, dst)
		}},
	}
}

func printRow(r benchRow) {
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("  %s at %s: %.1f s, %d requests, %d differences %s (load %s)\n", r.tool, r.latency, r.seconds, r.requests, len(r.diffs), r.note,
		strings.Join(strings.Fields(string(load))[:3], " "))
}

// benchRun copies src onto a fresh target with delay per request, and checks the result.
func benchRun(delay time.Duration, t benchTool, src string) (row benchRow, err error) {
	tool, cmd := t.name, t.cmd
	base, err := os.MkdirTemp("", "migrate-bench-")
	if err != nil {
		return row, err
	}
	defer os.RemoveAll(base)
	backing, dst := filepath.Join(base, "backing"), filepath.Join(base, "mnt")
	row = benchRow{tool: tool, latency: "local disk", requests: -1, delay: delay}
	if err := os.Mkdir(backing, 0o755); err != nil {
		return row, err
	}
	var home *latencyfs.Home
	if delay > 0 {
		row.latency = delay.String()
		if err := os.Mkdir(dst, 0o755); err != nil {
			return row, err
		}
		if home, err = latencyfs.Mount(backing, dst, delay); err != nil {
			return row, err
		}
		defer func() {
			if uerr := home.Unmount(); err == nil {
				err = uerr
			}
		}()
	} else {
		dst = backing
	}
	ctx, cancel := context.WithTimeout(context.Background(), *benchTimeout)
	defer cancel()
	c := cmd(ctx, dst)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	start := time.Now()
	if err := c.Run(); err != nil {
		return row, fmt.Errorf("%s at %s: %v\n%s", tool, row.latency, err, tail(out.String(), 2000))
	}
	row.seconds = time.Since(start).Seconds()
	if home != nil {
		row.requests = home.Requests()
	}
	if strings.HasPrefix(tool, "migrate") {
		if i := strings.Index(out.String(), "workers="); i >= 0 {
			row.note = strings.Fields(out.String()[i:])[0]
		}
	}
	diffs, err := VerifyTree(context.Background(), src, backing, []string{lease.DirName})
	if err != nil {
		return row, fmt.Errorf("checking %s's copy: %v", tool, err)
	}
	row.diffs = diffs
	return row, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// benchTable formats the rows as the Markdown table kept in docs/benchmarks.md.
func benchTable(rows []benchRow) string {
	var sb strings.Builder
	sb.WriteString("\n| tool | latency | files | seconds | files/s | speedup vs cp -a | requests/file | differences |\n|---|---|---|---|---|---|---|---|\n")
	cp := map[string]float64{}
	for _, r := range rows {
		if r.tool == "cp" {
			cp[r.latency] = r.seconds
		}
	}
	names := map[string]string{"migrate": "`migrate`", "migrate-1": "`migrate --workers 1`", "cp": "`cp -a`", "rsync": "`rsync -aH`", "parallel": "`parallel -j 32 cp -a` per job"}
	for _, r := range rows {
		speed, reqs, diffs := "", "", "none"
		if s, ok := cp[r.latency]; ok {
			speed = fmt.Sprintf("%.1f×", s/r.seconds)
		}
		if r.requests >= 0 {
			reqs = fmt.Sprintf("%.1f", float64(r.requests)/float64(r.files))
		}
		if len(r.diffs) > 0 {
			diffs = fmt.Sprintf("%d (%s)", len(r.diffs), r.diffs[0])
		}
		name, ok := names[r.tool]
		if !ok && strings.HasPrefix(r.tool, "migrate-") {
			name = "`migrate --workers " + strings.TrimPrefix(r.tool, "migrate-") + "`"
		}
		if r.note != "" {
			name += " (" + r.note + ")"
		}
		fmt.Fprintf(&sb, "| %s | %s | %d | %.1f | %.0f | %s | %s | %s |\n", name, r.latency, r.files, r.seconds,
			float64(r.files)/r.seconds, speed, reqs, diffs)
	}
	return sb.String()
}
