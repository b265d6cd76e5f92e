package container_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container"
)

// TestConfigAndContainerAgree: every value of the jenkins section that the
// configuration accepts, the container adapter accepts, and every value the adapter
// refuses, the configuration refuses first (exit code 78 before anything is touched,
// instead of a failure at run time and a restart loop).
func TestConfigAndContainerAgree(t *testing.T) {
	name := func(v string) func(*config.Jenkins) { return func(j *config.Jenkins) { j.ContainerName = v } }
	ports := func(v ...string) func(*config.Jenkins) { return func(j *config.Jenkins) { j.Ports = v } }
	volumes := func(v ...string) func(*config.Jenkins) { return func(j *config.Jenkins) { j.Volumes = v } }
	env := func(k string) func(*config.Jenkins) {
		return func(j *config.Jenkins) { j.Env = map[string]string{k: "v"} }
	}
	image := func(v string) func(*config.Jenkins) { return func(j *config.Jenkins) { j.Image = v } }
	pull := func(v string) func(*config.Jenkins) { return func(j *config.Jenkins) { j.Pull = v } }
	cases := map[string]func(*config.Jenkins){
		// Docker needs container names of two characters at least.
		"name jenkins": name("jenkins"), "name j": name("j"), "name j1": name("j1"), "name /jenkins": name("/jenkins"),
		"name _jenkins": name("_jenkins"), "name jen.kins-2_x": name("jen.kins-2_x"), "name with space": name("jen kins"),
		"name empty": name(""),

		"ports default": ports("8080:8080", "50000:50000"), "ports ip": ports("127.0.0.1:8080:8080/tcp"),
		"ports any host port": ports("127.0.0.1::8080"), "ports ipv6": ports("[::1]:8080:8080"), "ports container only": ports("8080"),
		"ports udp": ports("53:53/udp"), "ports out of range": ports("70000:8080"), "ports zero": ports("0:8080"),
		"ports icmp": ports("8080:8080/icmp"), "ports range": ports("9000-9001:9000-9001"), "ports bad ip": ports("1.2.3:80:80"),
		"ports empty host": ports(":8080"), "ports empty container": ports("8080:"), "ports four parts": ports("80:80:80:80"),
		"ports space": ports(" 8080:8080"), "ports upper proto": ports("8080:8080/TCP"), "ports unbracketed ipv6": ports("::1:80:80"),

		"volume ro": volumes("/etc/casc.yaml:/casc.yaml:ro"), "volume rw": volumes("/a:/b:rw"),
		"volume named": volumes("casc.yaml:/casc.yaml"), "volume relative target": volumes("/a:b"),
		"volume bad mode": volumes("/a:/b:zz"), "volume one part": volumes("/a"), "volume over home": volumes("/x:/var/jenkins_home/"),
		"volume over moved home":        func(j *config.Jenkins) { j.HomeInContainer = "/srv/home"; j.Volumes = []string{"/x:/srv/home"} },
		"volume at old home after move": func(j *config.Jenkins) { j.HomeInContainer = "/srv/home"; j.Volumes = []string{"/x:/var/jenkins_home"} },

		"env JAVA_OPTS": env("JAVA_OPTS"), "env with =": env("A=B"), "env digit first": env("1A"), "env dot": env("A.B"),
		"env underscore": env("_X"), "env empty": env(""),

		"image lts": image("jenkins/jenkins:lts-jdk21"), "image registry": image("registry.example.com:5000/ci/jenkins:2.516.3"),
		"image upper": image("Jenkins/UPPER:x"), "image empty tag": image("jenkins/jenkins:"), "image empty": image(""),

		"pull always": pull("always"), "pull never": pull("never"), "pull sometimes": pull("sometimes"),
	}
	for what, modify := range cases {
		t.Run(what, func(t *testing.T) {
			cfg := config.Default()
			cfg.EFS.FileSystemID = "fs-0123456789abcdef0"
			modify(&cfg.Jenkins)
			cfgErr := cfg.Validate()
			rt, ctrErr := container.New(container.Options{
				Image: cfg.Jenkins.Image, Pull: cfg.Jenkins.Pull, Name: cfg.Jenkins.ContainerName,
				HomeHost: cfg.EFS.MountPoint, HomeContainer: cfg.Jenkins.HomeInContainer,
				Ports: cfg.Jenkins.Ports, Env: cfg.Jenkins.Env, Volumes: cfg.Jenkins.Volumes,
				StopGrace: cfg.Jenkins.StopGrace.D(),
				Host:      "unix://" + filepath.Join(t.TempDir(), "absent.sock"),
			})
			if rt != nil {
				_ = rt.Close()
			}
			if (cfgErr == nil) != (ctrErr == nil) {
				t.Fatalf("the configuration says %v; the container adapter says %v", cfgErr, ctrErr)
			}
			if cfgErr != nil && (!config.IsInvalid(cfgErr) || !strings.Contains(cfgErr.Error(), "jenkins.")) {
				t.Errorf("the configuration's error is not an invalid configuration naming the key: %v", cfgErr)
			}
		})
	}
}
