package main

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// footprintSamples is how many times the serving agent's RSS is read, 100 ms apart.
const footprintSamples = 20

// logFootprint reads the serving agent's resident set size footprintSamples times and
// its Go memory figures from its own /metrics, and logs one line that `make bench`
// prints: "agent footprint while serving: RSS min..max kB (median), Go heap in use, Go
// runtime total".
func logFootprint(t *testing.T, pid int, metricsAddr string) {
	t.Helper()
	var rss []int
	for i := 0; i < footprintSamples; i++ {
		v, err := vmRSS(pid)
		if err != nil {
			t.Errorf("agent RSS: %v", err)
			return
		}
		kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		if err != nil {
			t.Errorf("agent RSS %q: %v", v, err)
			return
		}
		rss = append(rss, kb)
		time.Sleep(100 * time.Millisecond)
	}
	sort.Ints(rss)
	anon, file := smapsRollup(pid)
	mem := scrapeGauges(t, metricsAddr, "go_memstats_heap_inuse_bytes", "go_memstats_sys_bytes", "go_memstats_stack_inuse_bytes")
	t.Logf("agent footprint while serving: RSS %d..%d kB (median %d kB, %d samples; anonymous %d kB, file-backed %d kB); Go heap in use %.1f MB, stacks %.1f MB, Go runtime total (sys) %.1f MB",
		rss[0], rss[len(rss)-1], rss[len(rss)/2], len(rss), anon, file,
		mem["go_memstats_heap_inuse_bytes"]/1e6, mem["go_memstats_stack_inuse_bytes"]/1e6, mem["go_memstats_sys_bytes"]/1e6)
}

// smapsRollup returns the anonymous and file-backed (the binary's own pages) parts of
// a process's RSS in kB; zeros when the kernel does not tell.
func smapsRollup(pid int) (anon, file int) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0, 0
	}
	var rss int
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "Rss:":
			rss = v
		case "Anonymous:":
			anon = v
		}
	}
	return anon, rss - anon
}

// scrapeGauges reads unlabelled samples from the agent's /metrics.
func scrapeGauges(t *testing.T, addr string, names ...string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("scrape: %v", err)
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		for _, n := range names {
			if f[0] == n {
				v, _ := strconv.ParseFloat(f[1], 64)
				out[n] = v
			}
		}
	}
	return out
}
