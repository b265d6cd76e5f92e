package migrate

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// homeShape says what makeJenkinsHome built.
type homeShape struct {
	Files     int // regular files, symlinks and extra hard-link names
	Dirs      int
	Symlinks  int
	Hardlinks int // extra names of an inode already counted
	Bytes     int64
}

// jenkinsUID owns the generated home, as the jenkins user owns a real one.
const jenkinsUID = 1000

// makeJenkinsHome builds, in the empty directory root, a tree shaped like a busy
// JENKINS_HOME with about files entries, the same for the same seed: top-level
// configuration, secrets, users and nodes; plugins as .jpi archives and their exploded
// directories; and jobs with their config.xml and builds of build.xml, log and
// changelog.xml, the lastSuccessfulBuild-style symlinks, and artifacts hard-linked
// across jobs. Sizes are drawn from realistic ranges (about 2.8 kB an entry); owners are
// jenkins (uid 1000) but for a few root-only secrets; times are in the past, with
// nanoseconds.
func makeJenkinsHome(t testing.TB, root string, files int, seed uint64) homeShape {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	blob := make([]byte, 4<<20)
	for i := range blob {
		blob[i] = "<>/= \nabcdefghijklmnopqrstuvwxyz0123456789"[rng.IntN(42)]
	}
	var shape homeShape
	var paths []string // everything made, for the times
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mkdir := func(rel string, mode uint32) {
		p := filepath.Join(root, rel)
		must(os.Mkdir(p, 0o700))
		must(unix.Chmod(p, mode))
		must(os.Lchown(p, jenkinsUID, jenkinsUID))
		paths = append(paths, p)
		shape.Dirs++
	}
	file := func(rel string, size int, mode uint32, uid int) {
		p := filepath.Join(root, rel)
		var data []byte
		for len(data) < size {
			off := rng.IntN(len(blob) - 1)
			data = append(data, blob[off:min(len(blob), off+size-len(data))]...)
		}
		must(os.WriteFile(p, data, 0o600))
		must(os.Lchown(p, uid, uid))
		must(unix.Chmod(p, mode))
		paths = append(paths, p)
		shape.Files++
		shape.Bytes += int64(size)
	}
	symlink := func(target, rel string) {
		p := filepath.Join(root, rel)
		must(os.Symlink(target, p))
		must(os.Lchown(p, jenkinsUID, jenkinsUID))
		paths = append(paths, p)
		shape.Files++
		shape.Symlinks++
	}
	hardlink := func(first, rel string) {
		must(os.Link(filepath.Join(root, first), filepath.Join(root, rel)))
		shape.Files++
		shape.Hardlinks++
	}
	between := func(lo, hi int) int { return lo + rng.IntN(hi-lo+1) }

	must(unix.Chmod(root, 0o755))
	must(os.Lchown(root, jenkinsUID, jenkinsUID))
	for _, n := range []string{
		"config.xml", "credentials.xml", "hudson.model.UpdateCenter.xml", "jenkins.model.JenkinsLocationConfiguration.xml",
		"nodeMonitors.xml", "queue.xml", "identity.key.enc", "secret.key", "secret.key.not-so-secret",
	} {
		file(n, between(200, 6000), 0o644, jenkinsUID)
	}
	mkdir("secrets", 0o700)
	for _, n := range []string{"master.key", "hudson.util.Secret", "initialAdminPassword", "jenkins.model.Jenkins.crumbSalt"} {
		file("secrets/"+n, between(32, 300), 0o600, jenkinsUID)
	}
	file("secrets/root-only.key", 64, 0o600, 0) // left by an operator's script
	mkdir("users", 0o755)
	for u := range 10 {
		mkdir(fmt.Sprintf("users/user%d", u), 0o755)
		file(fmt.Sprintf("users/user%d/config.xml", u), between(800, 3000), 0o644, jenkinsUID)
	}
	mkdir("nodes", 0o755)
	for n := range 3 {
		mkdir(fmt.Sprintf("nodes/agent-%d", n), 0o755)
		file(fmt.Sprintf("nodes/agent-%d/config.xml", n), between(500, 1500), 0o644, jenkinsUID)
	}
	mkdir("userContent", 0o755)
	file("userContent/shared-tools.jar", 200_000, 0o644, jenkinsUID)

	mkdir("plugins", 0o755)
	for p := range 40 {
		name := fmt.Sprintf("plugins/plugin-%02d", p)
		file(name+".jpi", between(40_000, 800_000), 0o644, jenkinsUID)
		mkdir(name, 0o755)
		mkdir(name+"/META-INF", 0o755)
		file(name+"/META-INF/MANIFEST.MF", between(500, 1500), 0o644, jenkinsUID)
		mkdir(name+"/WEB-INF", 0o755)
		mkdir(name+"/WEB-INF/lib", 0o755)
		for j := range 6 {
			file(fmt.Sprintf("%s/WEB-INF/lib/lib-%d.jar", name, j), between(2_000, 80_000), 0o644, jenkinsUID)
		}
		file(name+"/.timestamp2", 13, 0o644, jenkinsUID)
	}

	mkdir("jobs", 0o755)
	jobs := max(files/200, 3)
	for j := 0; shape.Files < files; j++ {
		job := fmt.Sprintf("jobs/job-%03d", j)
		mkdir(job, 0o755)
		file(job+"/config.xml", between(1_500, 12_000), 0o644, jenkinsUID)
		file(job+"/nextBuildNumber", 3, 0o644, jenkinsUID)
		mkdir(job+"/builds", 0o755)
		left := files - shape.Files
		perJob := max(left/max(jobs-j, 1), 6)
		builds := max((perJob-3)/3, 1)
		for n := 1; n <= builds && shape.Files+3 <= files; n++ {
			b := fmt.Sprintf("%s/builds/%d", job, n)
			mkdir(b, 0o755)
			file(b+"/build.xml", between(1_000, 4_000), 0o644, jenkinsUID)
			file(b+"/log", min(500+int(rng.ExpFloat64()*3_500), 60_000), 0o644, jenkinsUID)
			file(b+"/changelog.xml", between(200, 1_000), 0o644, jenkinsUID)
			if n == 1 && j%5 == 0 && shape.Files+1 <= files {
				mkdir(b+"/archive", 0o755)
				hardlink("userContent/shared-tools.jar", b+"/archive/shared-tools.jar")
			}
		}
		for _, l := range []struct{ name, target string }{{"lastSuccessfulBuild", fmt.Sprint(builds)}, {"lastStableBuild", fmt.Sprint(builds)}, {"lastFailedBuild", "-1"}} {
			if shape.Files < files {
				symlink(l.target, job+"/builds/"+l.name)
			}
		}
	}
	// Times last, children before their directories.
	base := time.Date(2023, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := len(paths) - 1; i >= 0; i-- {
		m := base.Add(time.Duration(rng.Int64N(int64(3*365*24*time.Hour))) + time.Duration(rng.IntN(1e9)))
		ts := []unix.Timespec{unix.NsecToTimespec(m.Add(time.Hour).UnixNano()), unix.NsecToTimespec(m.UnixNano())}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], ts, unix.AT_SYMLINK_NOFOLLOW))
	}
	return shape
}

func TestMakeJenkinsHomeShape(t *testing.T) {
	testenv.Root(t, "needs root")
	a, b := t.TempDir(), t.TempDir()
	sa := makeJenkinsHome(t, a, 2000, 7)
	sb := makeJenkinsHome(t, b, 2000, 7)
	if sa != sb || sa.Files != 2000 || sa.Symlinks == 0 || sa.Hardlinks == 0 {
		t.Fatalf("shapes %+v and %+v; want the same, 2000 files, some symlinks and hard links", sa, sb)
	}
	t.Logf("%+v", sa)
}
