package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/wiring"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/go-connections/nat"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/containertest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs/efstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs/efstest/fakenfs"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// pfOldJenkins creates, without starting it, the container an old compose file leaves:
// another name, restart: always, publishing the configured Jenkins host port and
// bind-mounting the mount point. Its image is built FROM scratch: it is never run.
func pfOldJenkins(t *testing.T, w *pfWorld) string {
	t.Helper()
	if testing.Short() {
		t.Skip("creates a container on the Docker Engine")
	}
	pfRequireDocker(t)
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tag := "jenkins-spot-agent-pf-old:" + testenv.RandomSuffix(t)
	placeholder := filepath.Join(t.TempDir(), "jenkins")
	pfWrite(t, placeholder, "never run\n")
	if err := containertest.BuildImage(ctx, cli, tag, placeholder, nil); err != nil {
		t.Fatalf("build image: %v", err)
	}
	name := "pf-old-jenkins-" + testenv.RandomSuffix(t)
	_, err = cli.ContainerCreate(ctx,
		&container.Config{Image: tag, ExposedPorts: nat.PortSet{"8080/tcp": {}}},
		&container.HostConfig{
			Binds:         []string{filepath.Join(w.dir, "home") + ":/var/jenkins_home"},
			PortBindings:  nat.PortMap{"8080/tcp": {{HostIP: "127.0.0.1", HostPort: strconv.Itoa(w.jenkinsPort)}}},
			RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyAlways},
		}, nil, nil, name)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cli.ContainerRemove(ctx, name, container.RemoveOptions{Force: true}); err != nil {
			t.Errorf("remove %s: %v", name, err)
		}
		if _, err := cli.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
			t.Errorf("remove image %s: %v", tag, err)
		}
	})
	return name
}

// TestPreflightForeignJenkinsContainer: a Jenkins left by an old compose file fails
// its row, named, with the command that removes it.
func TestPreflightForeignJenkinsContainer(t *testing.T) {
	w := pfNewWorld(t)
	old := pfOldJenkins(t, w)
	cfg := w.pfConfig(t, pfResolvable, pfTrue(t), "")
	code, out, errOut := pfRun(t, "preflight", "--config", cfg)
	t.Logf("stdout:\n%s", out)
	if code != exitFailed {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitFailed, errOut)
	}
	rows, _ := pfTable(t, out)
	pfCheckNames(t, rows, pfExpectedRows)
	for _, r := range rows {
		if (r.result == "FAIL") != (r.name == "other containers on the jenkins ports or home") {
			t.Errorf("row %q: %s %s", r.name, r.result, r.detail)
		}
	}
	r := pfFind(t, rows, "other containers")
	for _, want := range []string{old, "restart always", strconv.Itoa(w.jenkinsPort) + "/tcp", filepath.Join(w.dir, "home")} {
		if !strings.Contains(r.detail, want) {
			t.Errorf("detail %q lacks %q", r.detail, want)
		}
	}
	if !strings.Contains(r.fix, "docker rm -f "+old) {
		t.Errorf("fix %q does not say docker rm -f %s", r.fix, old)
	}
}

// TestRunRefusesToMountOverAForeignHome goes through run's own wiring: the bare mount
// point holds a Jenkins home that the old container wrote (no marker); the mounter
// refuses to mount over it, names the container and how to move the files away, and
// never calls the mount program.
func TestRunRefusesToMountOverAForeignHome(t *testing.T) {
	w := pfNewWorld(t)
	old := pfOldJenkins(t, w)
	calls := filepath.Join(w.dir, "mount-calls")
	program := filepath.Join(w.dir, "mount")
	pfWrite(t, program, "#!/bin/sh\necho \"$@\" >>"+calls+"\nexit 32\n")
	if err := os.Chmod(program, 0o755); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(w.dir, "home")
	if err := os.MkdirAll(filepath.Join(home, "jobs"), 0o755); err != nil {
		t.Fatal(err)
	}
	pfWrite(t, filepath.Join(home, "config.xml"), "<hudson/>")
	cfg, err := config.Load(w.pfConfig(t, pfResolvable, program, ""))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	wired, err := wiring.New(cfg, "", nil, wiring.Endpoints{IMDS: w.imds.URL()}, log)
	if err != nil {
		t.Fatal(err)
	}
	m, err := wired.Deps.NewMounter(instance.Identity{InstanceID: pfInstance, AvailabilityZone: pfAZ, Region: pfRegion})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = m.Mount(ctx)
	for _, want := range []string{"config.xml, jobs", "no marker", old, "docker rm -f " + old, "mv " + home + " " + home + ".local"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Mount = %v, want %q in it", err, want)
		}
	}
	if _, err := os.Stat(calls); err == nil {
		t.Error("the mount program was called over the local files")
	}
}

// pfMountTargets starts the EFS API double, accepting the world's credentials, and
// points AWS_ENDPOINT_URL_EFS at it.
func pfMountTargets(t *testing.T) *efstest.MountTargetServer {
	t.Helper()
	srv := efstest.NewMountTargetServer()
	t.Cleanup(srv.Close)
	srv.AllowCredentials(os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"))
	t.Setenv("AWS_ENDPOINT_URL_EFS", srv.URL())
	return srv
}

// TestPreflightMountTargetIP: with efs.dns mount-target-ip the row looks this zone's
// mount target up through the EFS API, and a denied call says which permission to add.
func TestPreflightMountTargetIP(t *testing.T) {
	w := pfNewWorld(t)
	pfRequireDocker(t)
	srv := pfMountTargets(t)
	srv.AddMountTarget(pfFileSystem, efs.MountTarget{AvailabilityZone: "us-east-1a", IP: "10.0.1.23"})
	mt := srv.AddMountTarget(pfFileSystem, efs.MountTarget{AvailabilityZone: pfAZ, IP: "10.0.2.23"})
	cfg := w.pfConfig(t, efs.DNSModeMountTargetIP, pfTrue(t), "")

	want := make([]string, len(pfExpectedRows))
	copy(want, pfExpectedRows)
	for i, n := range want {
		if n == "efs dns name" {
			want[i] = "efs mount target"
		}
	}
	code, out, errOut := pfRun(t, "preflight", "--config", cfg)
	t.Logf("stdout:\n%s", out)
	if code != exitOK {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitOK, errOut)
	}
	rows, _ := pfTable(t, out)
	pfCheckNames(t, rows, want)
	if r := pfFind(t, rows, "efs mount target"); r.result != "pass" || !strings.Contains(r.detail, mt.ID+" 10.0.2.23 in "+pfAZ) {
		t.Errorf("mount target row %+v", r)
	}

	srv.Deny(true)
	code, out, _ = pfRun(t, "preflight", "--config", cfg)
	rows, _ = pfTable(t, out)
	r := pfFind(t, rows, "efs mount target")
	if code != exitFailed || r.result != "FAIL" || !strings.Contains(r.fix, "elasticfilesystem:DescribeMountTargets") {
		t.Errorf("denied: exit %d, row %+v; want FAIL naming the permission", code, r)
	}
}

// TestPreflightEFSUtilsFallback: with mount type efs and a zone name that does not
// resolve, the row fails but names the mount target found through the EFS API, and
// the setting that makes the agent mount it.
func TestPreflightEFSUtilsFallback(t *testing.T) {
	w := pfNewWorld(t)
	srv := pfMountTargets(t)
	mt := srv.AddMountTarget(pfFileSystem, efs.MountTarget{AvailabilityZone: pfAZ, IP: "10.0.2.23"})
	// A zone's EFS name, under .onion so that it fails offline (RFC 7686) and no query
	// leaves the machine; the helper would be given the file system id for it.
	onion := pfAZ + "." + pfFileSystem + ".efs." + pfRegion + ".onion"
	text := strings.Replace(secRead(t, w.pfConfig(t, onion, pfTrue(t), "")), "  mount_timeout: 20s\n", "  mount_timeout: 20s\n  mount_type: efs\n", 1)
	cfgPath := filepath.Join(w.dir, "efs.yaml")
	pfWrite(t, cfgPath, text)
	_, out, _ := pfRun(t, "preflight", "--config", cfgPath)
	rows, _ := pfTable(t, out)
	r := pfFind(t, rows, "efs dns name")
	if r.result != "FAIL" || !strings.Contains(r.detail, "mount target "+mt.ID+" 10.0.2.23 exists in "+pfAZ) ||
		!strings.Contains(r.fix, "efs.dns: mount-target-ip") || !strings.Contains(r.fix, "ec2:DescribeAvailabilityZones") {
		t.Errorf("dns row %+v, want FAIL naming the mount target and the ways out", r)
	}
	srv.Deny(true)
	_, out, _ = pfRun(t, "preflight", "--config", cfgPath)
	rows, _ = pfTable(t, out)
	if r := pfFind(t, rows, "efs dns name"); r.result != "FAIL" || !strings.Contains(r.detail, "no mount target to fall back to") {
		t.Errorf("dns row when the lookup is denied %+v, want FAIL", r)
	}
}

// fuseSquashed serves a fresh directory at path through FUSE as an EFS that squashes
// root to nobody, under the zone's EFS name; the directory is open to all, so that
// only giving files away fails.
func fuseSquashed(t *testing.T, path, source string) (backing string) {
	t.Helper()
	if testing.Short() {
		t.Skip("mounts a FUSE file system")
	}
	if err := fakenfs.Available(); err != nil {
		testenv.Missing(t, "%v", err)
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	backing = t.TempDir()
	if err := os.Chmod(backing, 0o777); err != nil {
		t.Fatal(err)
	}
	srv, err := fakenfs.Mount(path, backing, fakenfs.Options{Squash: &fakenfs.Nobody, Source: source, Name: "efstest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Error(err)
		}
	})
	return backing
}

// TestPreflightRootSquash: on a mounted, verified home where root is squashed, the
// root access row fails with the fix.
func TestPreflightRootSquash(t *testing.T) {
	w := pfNewWorld(t)
	backing := fuseSquashed(t, filepath.Join(w.dir, "home"), pfUnresolvable+":/")
	text := strings.Replace(secRead(t, w.pfConfig(t, pfUnresolvable, pfTrue(t), "")), "  mount_timeout: 20s\n", "  mount_timeout: 20s\n  expect_fstypes: [fuse.efstest]\n", 1)
	cfgPath := filepath.Join(w.dir, "squash.yaml")
	pfWrite(t, cfgPath, text)

	// Mounted by hand and never verified by the agent: preflight writes no marker and
	// leaves the check to run.
	_, out, _ := pfRun(t, "preflight", "--config", cfgPath)
	rows, _ := pfTable(t, out)
	if r := pfFind(t, rows, "efs root access"); r.result != "pass" || !strings.Contains(r.detail, "never been verified") {
		t.Errorf("root access row before the first verification %+v", r)
	}
	if _, err := os.Lstat(filepath.Join(backing, efs.MarkerFile)); err == nil {
		t.Fatal("preflight wrote a marker")
	}

	if err := os.WriteFile(filepath.Join(backing, efs.MarkerFile), []byte(pfFileSystem+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, out, _ = pfRun(t, "preflight", "--config", cfgPath)
	t.Logf("stdout:\n%s", out)
	rows, _ = pfTable(t, out)
	r := pfFind(t, rows, "efs root access")
	if r.result != "FAIL" || !strings.Contains(r.detail, "belongs to uid 65534") ||
		!strings.Contains(r.fix, "elasticfilesystem:ClientRootAccess") || !strings.Contains(r.fix, "1000:1000") {
		t.Errorf("root access row %+v, want FAIL with the fix", r)
	}
}

// TestMigrateRefusesARootSquashedHome: migrate stops before it copies anything (or
// takes the lease) when root may not give files away on the home.
func TestMigrateRefusesARootSquashedHome(t *testing.T) {
	src := migrateSource(t)
	dst := filepath.Join(t.TempDir(), "efs-home")
	backing := fuseSquashed(t, dst, "127.0.0.1:/")
	code, out, errOut := pfRun(t, "migrate", "--from", src, "--to", dst, "--holder", "i-0123456789abcdef0", "--config", filepath.Join(t.TempDir(), "absent.yaml"))
	if code != exitFailed {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, exitFailed, out, errOut)
	}
	for _, want := range []string{"nothing copied", "elasticfilesystem:ClientRootAccess", "belongs to uid 65534"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	entries, err := os.ReadDir(backing)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != efs.AgentDir {
			t.Errorf("%s copied onto the squashed home", e.Name())
		}
	}
	if leftovers, _ := os.ReadDir(filepath.Join(backing, efs.AgentDir)); len(leftovers) != 0 {
		t.Errorf("files left in %s: %v", efs.AgentDir, leftovers)
	}
}

// TestUppercaseEFSNameIsAConfigurationError: a name the mount would refuse is caught
// before anything runs, with exit code 78.
func TestUppercaseEFSNameIsAConfigurationError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	pfWrite(t, path, "efs:\n  file_system_id: fs-0123456789abcdef0\n  dns: EFS.Example.com\n")
	code, _, errOut := pfRun(t, "run", "--config", path)
	if code != exitConfig || !strings.Contains(errOut, "efs.dns") {
		t.Fatalf("exit %d, want %d naming efs.dns; stderr:\n%s", code, exitConfig, errOut)
	}
}

// TestRootAccessProbeLivesInTheLeaseDirectory: the probe is made in the agent's own
// directory on the home, the lease's, which a fresh home may hold without counting
// as used.
func TestRootAccessProbeLivesInTheLeaseDirectory(t *testing.T) {
	if efs.AgentDir != lease.DirName {
		t.Fatalf("efs.AgentDir %q, lease.DirName %q: the probe must stay in the agent's own directory", efs.AgentDir, lease.DirName)
	}
}
