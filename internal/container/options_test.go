package container

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-connections/nat"
)

func validOptions() Options {
	return Options{
		Image:         "jenkins/jenkins:lts-jdk21",
		Name:          "jenkins",
		HomeHost:      "/jenkins_home",
		HomeContainer: "/var/jenkins_home",
		Ports:         []string{"8080:8080", "50000:50000"},
		Env:           map[string]string{"JAVA_OPTS": "-Xmx2g", "CASC_JENKINS_CONFIG": "/casc.yaml"},
		Volumes:       []string{"/etc/jenkins/casc.yaml:/casc.yaml:ro"},
		StopGrace:     30 * time.Second,
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Options)
		want   string // a fragment the operator needs to see
	}{
		{"empty image", func(o *Options) { o.Image = "" }, "jenkins.image is empty"},
		{"bad image", func(o *Options) { o.Image = "Jenkins/UPPER:x" }, "jenkins.image"},
		{"pull policy", func(o *Options) { o.Pull = "sometimes" }, "jenkins.pull \"sometimes\""},
		{"empty name", func(o *Options) { o.Name = "" }, "jenkins.container_name"},
		{"name with space", func(o *Options) { o.Name = "jen kins" }, "jenkins.container_name"},
		{"relative home", func(o *Options) { o.HomeHost = "jenkins_home" }, "absolute"},
		{"relative home in container", func(o *Options) { o.HomeContainer = "" }, "jenkins.home_in_container"},
		{"negative grace", func(o *Options) { o.StopGrace = -time.Second }, "jenkins.stop_grace"},
		{"port not a number", func(o *Options) { o.Ports = []string{"abc"} }, "jenkins.ports[0] \"abc\""},
		{"port empty host part", func(o *Options) { o.Ports = []string{"8080:8080", "8080:"} }, "jenkins.ports[1]"},
		{"port bad proto", func(o *Options) { o.Ports = []string{"8080:8080/icmp"} }, "[ip:]host:container[/proto]"},
		{"port out of range", func(o *Options) { o.Ports = []string{"70000:8080"} }, "jenkins.ports[0]"},
		{"port with space", func(o *Options) { o.Ports = []string{" 8080:8080"} }, "jenkins.ports[0]"},
		{"port bad ip", func(o *Options) { o.Ports = []string{"1.2.3:8080:8080"} }, "jenkins.ports[0]"},
		{"volume relative source", func(o *Options) { o.Volumes = []string{"casc.yaml:/casc.yaml"} }, "named volumes are not supported"},
		{"volume relative target", func(o *Options) { o.Volumes = []string{"/a:b"} }, "target"},
		{"volume bad mode", func(o *Options) { o.Volumes = []string{"/a:/b:zz"} }, "mode \"zz\""},
		{"volume one part", func(o *Options) { o.Volumes = []string{"/a"} }, "src:dst"},
		{"volume over home", func(o *Options) { o.Volumes = []string{"/x:/var/jenkins_home/"} }, "already the Jenkins home"},
		{"env key with =", func(o *Options) { o.Env = map[string]string{"A=B": "c"} }, "jenkins.env key"},
		{"reserved label", func(o *Options) { o.Labels = map[string]string{LabelManaged: "true"} }, "reserved"},
		{"volume on the agent's paths", func(o *Options) { o.Volumes = []string{"/x:/.jenkins-spot-agent/guard"} }, "reserved for the agent"},
		{"guard relative", func(o *Options) { o.Guard = GuardOptions{Executable: "jenkins-spot-agent", Record: "r"} }, "guard executable"},
		{"guard record absolute", func(o *Options) {
			o.Guard = GuardOptions{Executable: "/usr/bin/jenkins-spot-agent", Record: "/x/lease.json"}
		}, "inside the home"},
		{"guard record outside", func(o *Options) {
			o.Guard = GuardOptions{Executable: "/usr/bin/jenkins-spot-agent", Record: "../lease.json"}
		}, "inside the home"},
		{"guard skew", func(o *Options) {
			o.Guard = GuardOptions{Executable: "/usr/bin/jenkins-spot-agent", Record: "l.json", ClockSkew: -time.Second}
		}, "guard clock skew"},
		{"capability", func(o *Options) { o.CapAdd = []string{"NET_ADMIN", "chown; rm"} }, "jenkins.cap_add[1]"},
		{"capability drop", func(o *Options) { o.CapDrop = []string{""} }, "jenkins.cap_drop[0]"},
		{"pids", func(o *Options) { o.PidsLimit = -1 }, "jenkins.pids_limit"},
		{"cache relative", func(o *Options) { o.LocalCache = "cache" }, "jenkins.local_cache_dir"},
		{"cache on EFS", func(o *Options) { o.LocalCache = "/jenkins_home/cache" }, "local disk"},
		{"cache owner", func(o *Options) { o.LocalCache = "/var/cache/x"; o.CacheUID = -1 }, "jenkins.uid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := validOptions()
			tt.modify(&o)
			_, err := New(o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestValidateNormalises(t *testing.T) {
	o := validOptions()
	o.Pull = ""
	o.StopGrace = 0
	o.Volumes = []string{"/etc/x/:/x/:rw", "/a:/b:ro"}
	s, err := validate(o)
	if err != nil {
		t.Fatal(err)
	}
	if s.Pull != PullIfMissing || s.StopGrace != DefaultStopGrace {
		t.Errorf("defaults: pull %q grace %s", s.Pull, s.StopGrace)
	}
	wantBinds := []string{"/jenkins_home:/var/jenkins_home", "/etc/x:/x", "/a:/b:ro"}
	if strings.Join(s.Binds, ",") != strings.Join(wantBinds, ",") {
		t.Errorf("binds %v, want %v", s.Binds, wantBinds)
	}
	if strings.Join(s.Env, ",") != "CASC_JENKINS_CONFIG=/casc.yaml,JAVA_OPTS=-Xmx2g" {
		t.Errorf("env %v, want sorted KEY=VALUE", s.Env)
	}
	if len(s.exposed) != 2 || s.bindings["8080/tcp"][0].HostPort != "8080" {
		t.Errorf("ports: exposed %v bindings %v", s.exposed, s.bindings)
	}
}

func TestHash(t *testing.T) {
	base := func() request {
		s, err := validate(validOptions())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	h := base().hash()
	if len(h) != 64 {
		t.Fatalf("hash %q is not hex sha256", h)
	}

	// Map iteration order and port order must not matter.
	for range 20 {
		o := validOptions()
		o.Ports = []string{"50000:50000", "8080:8080"}
		s, _ := validate(o)
		if s.hash() != h {
			t.Fatal("hash depends on map or port order")
		}
	}
	// What does not shape the running container does not change the hash.
	o := validOptions()
	o.Pull = PullAlways
	o.Logger = nil
	if s, _ := validate(o); s.hash() != h {
		t.Error("pull policy changed the hash")
	}

	changes := map[string]func(*Options){
		"image":          func(o *Options) { o.Image = "jenkins/jenkins:2.500" },
		"cmd":            func(o *Options) { o.Cmd = []string{"--httpPort=8081"} },
		"env value":      func(o *Options) { o.Env["JAVA_OPTS"] = "-Xmx4g" },
		"env key":        func(o *Options) { o.Env["NEW"] = "" },
		"volume":         func(o *Options) { o.Volumes = nil },
		"volume mode":    func(o *Options) { o.Volumes = []string{"/etc/jenkins/casc.yaml:/casc.yaml"} },
		"ports":          func(o *Options) { o.Ports = o.Ports[:1] },
		"grace":          func(o *Options) { o.StopGrace = time.Minute },
		"home host":      func(o *Options) { o.HomeHost = "/mnt/other" },
		"home container": func(o *Options) { o.HomeContainer = "/home" },
		"label":          func(o *Options) { o.Labels = map[string]string{"team": "ci"} },
		"guard on":       func(o *Options) { o.Guard = guardOn() },
		"guard holder": func(o *Options) {
			o.Guard = guardOn()
			o.Guard.Holder = "i-0fedcba9876543210"
		},
		"guard record": func(o *Options) {
			o.Guard = guardOn()
			o.Guard.Record = "lease.json"
		},
		"guard skew": func(o *Options) {
			o.Guard = guardOn()
			o.Guard.ClockSkew = 3 * time.Second
		},
		"no new privileges": func(o *Options) { o.NoNewPrivileges = true },
		"cap drop":          func(o *Options) { o.CapDrop = []string{"ALL"} },
		"cap add":           func(o *Options) { o.CapAdd = []string{"CHOWN"} },
		"pids limit":        func(o *Options) { o.PidsLimit = 4096 },
		"local cache":       func(o *Options) { o.LocalCache = "/var/cache/jenkins-spot-agent" },
		"cache owner": func(o *Options) {
			o.LocalCache = "/var/cache/jenkins-spot-agent"
			o.CacheUID = 1001
		},
	}
	for name, change := range changes {
		o := validOptions()
		change(&o)
		s, err := validate(o)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s.hash() == h {
			t.Errorf("changing %s did not change the hash", name)
		}
	}
}

func TestGuardCacheAndHardeningNormalised(t *testing.T) {
	o := validOptions()
	o.Guard = GuardOptions{Executable: "/usr/bin/jenkins-spot-agent", Holder: "i-0abc1234def567890", Record: ".jenkins-spot-agent/lease.json"}
	o.CapDrop = []string{"all"}
	o.CapAdd = []string{"CAP_CHOWN", "chown", "Setuid"}
	o.LocalCache = "/var/cache/jenkins-spot-agent/"
	o.CacheUID, o.CacheGID = 1000, 1000
	o.Env["JENKINS_OPTS"] = "--httpPort=8081"
	s, err := validate(o)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.CapDrop, ",") != "ALL" || strings.Join(s.CapAdd, ",") != "CHOWN,SETUID" {
		t.Errorf("capabilities drop %v add %v", s.CapDrop, s.CapAdd)
	}
	wantBinds := []string{
		"/jenkins_home:/var/jenkins_home", "/etc/jenkins/casc.yaml:/casc.yaml:ro",
		"/usr/bin/jenkins-spot-agent:" + GuardPath + ":ro", "/var/cache/jenkins-spot-agent:" + CachePath,
	}
	if strings.Join(s.Binds, " ") != strings.Join(wantBinds, " ") {
		t.Errorf("binds %v, want %v", s.Binds, wantBinds)
	}
	want := "JENKINS_OPTS=--httpPort=8081 --webroot=" + CachePath + "/war --pluginroot=" + CachePath + "/plugins"
	if !slices.Contains(s.Env, want) {
		t.Errorf("env %v lacks %q", s.Env, want)
	}
	if !slices.Contains(s.Env, "TINI_SUBREAPER=1") {
		t.Errorf("env %v lacks TINI_SUBREAPER=1 for the image's tini under the guard", s.Env)
	}
	args := strings.Join(s.guardArgs(), " ")
	if args != GuardPath+" guard --record /var/jenkins_home/.jenkins-spot-agent/lease.json --holder i-0abc1234def567890 --skew 2s --grace 30s --" {
		t.Errorf("guard args %q", args)
	}
	if s.DockerSocket != "" {
		t.Errorf("docker socket flagged in %v", o.Volumes)
	}
}

func TestWithCacheOpts(t *testing.T) {
	w, p := "--webroot="+CachePath+"/war", "--pluginroot="+CachePath+"/plugins"
	for user, want := range map[string]string{
		"":                                  w + " " + p,
		"  --httpPort=8081 ":                "--httpPort=8081 " + w + " " + p,
		"--webroot=/tmp/war":                "--webroot=/tmp/war " + p,
		"--pluginroot=/p --httpPort=8081":   "--pluginroot=/p --httpPort=8081 " + w,
		"--webroot=/a --pluginroot=/b":      "--webroot=/a --pluginroot=/b",
		"--webrootish=1 --pluginroots=nope": "--webrootish=1 --pluginroots=nope " + w + " " + p,
	} {
		if got := withCacheOpts(user); got != want {
			t.Errorf("withCacheOpts(%q) = %q, want %q", user, got, want)
		}
	}
}

func TestDockerSocketVolumeIsFlagged(t *testing.T) {
	for v, flagged := range map[string]bool{
		"/var/run/docker.sock:/var/run/docker.sock": true,
		"/run/docker.sock:/var/run/docker.sock:ro":  true,
		"/var/run:/host/run":                        true,
		"/run/:/host/run":                           true,
		"/:/host:ro":                                true,
		"/var:/host/var":                            true,
		"/etc/jenkins/casc.yaml:/casc.yaml:ro":      false,
		"/run/user/1000:/x":                         false,
		"/var/run/docker.sock.d:/x":                 false,
	} {
		o := validOptions()
		o.Volumes = []string{v}
		var logs strings.Builder
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		r, err := New(o)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		r.Close()
		if got := strings.Contains(logs.String(), "SECURITY") && strings.Contains(logs.String(), "Docker socket"); got != flagged {
			t.Errorf("%s: warned %v, want %v; log: %s", v, got, flagged, logs.String())
		}
	}
}

// guardOn is a guard setup that differs from the base options only by being on.
func guardOn() GuardOptions {
	return GuardOptions{Executable: "/usr/bin/jenkins-spot-agent", Holder: "i-0abc1234def567890", Record: ".jenkins-spot-agent/lease.json"}
}

// TestSetGuardHolderChangesHash: the holder, given once the identity is known, is
// part of the configuration, and Start refuses a guard without one.
func TestSetGuardHolderChangesHash(t *testing.T) {
	o := validOptions()
	o.Guard = guardOn()
	o.Guard.Holder = ""
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "no holder") {
		t.Fatalf("Start without a holder = %v, want a refusal", err)
	}
	before := r.ConfigHash()
	r.SetGuardHolder("i-0abc1234def567890")
	o.Guard.Holder = "i-0abc1234def567890"
	s, _ := validate(o)
	if r.ConfigHash() == before || r.ConfigHash() != s.hash() {
		t.Fatalf("hash after SetGuardHolder %s (before %s), want that of options with the holder %s", r.ConfigHash(), before, s.hash())
	}
}

func TestGraceSecondsRoundsUp(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 0, -time.Second: 0, time.Millisecond: 1, time.Second: 1, 1500 * time.Millisecond: 2, 30 * time.Second: 30} {
		if got := graceSeconds(d); got != want {
			t.Errorf("graceSeconds(%s) = %d, want %d", d, got, want)
		}
	}
}

// FuzzPublishAgreesWithDocker: a port that the rule in package spec accepts is one that
// Docker's own parser (nat.ParsePortSpec, what the docker CLI uses for -p) accepts too,
// and publish turns it into the same exposed port and binding.
func FuzzPublishAgreesWithDocker(f *testing.F) {
	for _, s := range []string{"8080:8080", "127.0.0.1::8080", "[::1]:1:2/udp", "abc", "1-2:3-4", ":", "0:0", "8080", "00080:8080/sctp", "1.2.3.4:5:6"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		exposed, bindings, err := publish([]string{p})
		if err != nil {
			return
		}
		maps, err := nat.ParsePortSpec(p)
		if err != nil {
			t.Fatalf("publish accepted %q, Docker refuses it: %v", p, err)
		}
		if len(maps) != 1 || len(exposed) != 1 {
			t.Fatalf("publish(%q) exposes %v, Docker %v", p, exposed, maps)
		}
		m := maps[0]
		if _, ok := exposed[m.Port]; !ok || len(bindings[m.Port]) != 1 || bindings[m.Port][0] != m.Binding {
			t.Fatalf("publish(%q) = %v %v, Docker reads %s -> %+v", p, exposed, bindings, m.Port, m.Binding)
		}
	})
}

func TestCheckStatic(t *testing.T) {
	if err := checkStatic("/bin/sh"); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("checkStatic(/bin/sh) = %v, want dynamically linked", err)
	}
	if err := checkStatic("/etc/hostname"); err == nil {
		t.Error("a text file passed as an executable")
	}
	if err := checkStatic(webserverBinary(t)); err != nil {
		t.Errorf("the static test program: %v", err)
	}
}
