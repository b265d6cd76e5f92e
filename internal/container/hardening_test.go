package container

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHardeningOnRealEngine: no-new-privileges, the capability set and the pids limit
// reach the container, as Docker reports them and as the process inside sees them.
func TestHardeningOnRealEngine(t *testing.T) {
	f := newFixture(t)
	f.opts.NoNewPrivileges = true
	f.opts.CapDrop = []string{"ALL"}
	f.opts.CapAdd = []string{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID"}
	f.opts.PidsLimit = 256
	r := f.runtime()
	mustStart(t, r)
	f.waitStarts(1)

	info := f.inspect()
	hc := info.HostConfig
	if !slices.Contains(hc.SecurityOpt, "no-new-privileges:true") {
		t.Errorf("security options %v lack no-new-privileges", hc.SecurityOpt)
	}
	if strings.Join(hc.CapDrop, ",") != "ALL" || len(hc.CapAdd) != 7 {
		t.Errorf("cap drop %v add %v", hc.CapDrop, hc.CapAdd)
	}
	if hc.PidsLimit == nil || *hc.PidsLimit != 256 {
		t.Errorf("pids limit %v, want 256", hc.PidsLimit)
	}

	_, status := f.get("/status")
	field := func(name string) string {
		for _, line := range strings.Split(status, "\n") {
			if v, ok := strings.CutPrefix(line, name+":"); ok {
				return strings.TrimSpace(v)
			}
		}
		t.Fatalf("no %s in /proc/self/status:\n%s", name, status)
		return ""
	}
	if got := field("NoNewPrivs"); got != "1" {
		t.Errorf("NoNewPrivs = %s inside the container, want 1", got)
	}
	// CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6, SETUID 7.
	want := uint64(1<<0 | 1<<1 | 1<<3 | 1<<4 | 1<<5 | 1<<6 | 1<<7)
	bnd, err := strconv.ParseUint(field("CapBnd"), 16, 64)
	if err != nil || bnd != want {
		t.Errorf("CapBnd = %#x (%v), want %#x: NET_RAW, MKNOD, SYS_CHROOT... must be gone", bnd, err, want)
	}
	// The limit is enforced by the pids cgroup of the container.
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/pids/docker", info.ID, "pids.max")); err == nil {
		if got := strings.TrimSpace(string(b)); got != "256" {
			t.Errorf("pids.max = %s, want 256", got)
		}
	} else {
		t.Logf("cgroup v1 pids file not found (%v); relying on Docker's report", err)
	}
}

// TestLocalCacheOnRealEngine: the war and plugin directories are on the local cache,
// owned by the Jenkins user, and JENKINS_OPTS sends Jenkins there, after the user's
// own options.
func TestLocalCacheOnRealEngine(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "cache")
	f := newFixture(t, "-dir", CachePath+"/war")
	f.opts.LocalCache = cache
	f.opts.CacheUID, f.opts.CacheGID = 1000, 1000
	f.opts.Env["JENKINS_OPTS"] = "--httpKeepAliveTimeout=30000"
	r := f.runtime()
	mustStart(t, r)

	// The program writes its trace into CachePath/war: it shows up on the host.
	warDir := filepath.Join(cache, "war")
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join(warDir, "starts")); err == nil {
			break
		}
		if i > 600 {
			t.Fatalf("nothing written through the cache mount into %s", warDir)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, sub := range []string{"war", "plugins"} {
		st, err := os.Stat(filepath.Join(cache, sub))
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if sys.Uid != 1000 || sys.Gid != 1000 {
			t.Errorf("%s owned by %d:%d, want 1000:1000", sub, sys.Uid, sys.Gid)
		}
	}
	info := f.inspect()
	if !slices.Contains(info.HostConfig.Binds, cache+":"+CachePath) {
		t.Errorf("binds %v lack the cache", info.HostConfig.Binds)
	}
	want := "--httpKeepAliveTimeout=30000 --webroot=" + CachePath + "/war --pluginroot=" + CachePath + "/plugins"
	if code, got := f.get("/env?name=JENKINS_OPTS"); code != http.StatusOK || got != want {
		t.Errorf("JENKINS_OPTS in the container = %q, want %q", got, want)
	}

	// Turning the cache off is a configuration change: the container is recreated.
	before := info.ID
	f.opts.LocalCache = ""
	if mustStart(t, f.runtime()) {
		t.Fatal("adopted a container whose cache setting changed")
	}
	if f.inspect().ID == before {
		t.Fatal("container not recreated")
	}
}
