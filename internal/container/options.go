package container

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-connections/nat"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/spec"
)

// Pull policies accepted in Options.Pull.
const (
	PullAlways    = "always"
	PullIfMissing = "if-missing"
	PullNever     = "never"
)

// Labels the agent puts on the container it creates. The managed label is how
// the agent recognises its own container (and refuses to touch anyone else's);
// the hash label records the configuration the container was created from, so a
// restarted agent can tell whether the running container may be adopted.
const (
	LabelManaged    = "io.jenkins-spot-agent.managed"
	LabelConfigHash = "io.jenkins-spot-agent.config-hash"
	labelPrefix     = "io.jenkins-spot-agent."
)

// DefaultStopGrace is used when Options.StopGrace is zero. Docker's own default
// of 10 s is too short for a loaded Jenkins to save its Pipelines.
const DefaultStopGrace = 30 * time.Second

// Options describes the Jenkins container. Field names follow the `jenkins:`
// section of the configuration file.
type Options struct {
	// Image is the image reference, e.g. jenkins/jenkins:lts-jdk21.
	Image string
	// Pull is the pull policy: always, if-missing (default) or never.
	Pull string
	// Name is the container name (jenkins.container_name).
	Name string
	// HomeHost is the verified mount point on the host; HomeContainer is where
	// the image expects JENKINS_HOME. Both are absolute paths.
	HomeHost, HomeContainer string
	// Ports are published ports in Docker syntax: [ip:]host:container[/proto].
	Ports []string
	// Env is the container environment (JAVA_OPTS, CASC_JENKINS_CONFIG...).
	Env map[string]string
	// Volumes are extra bind mounts in Docker syntax: src:dst[:ro|rw].
	Volumes []string
	// StopGrace is the SIGTERM-to-SIGKILL grace given to the container; zero
	// means DefaultStopGrace.
	StopGrace time.Duration
	// Cmd optionally replaces the image's command (arguments to its entrypoint).
	Cmd []string
	// Labels are extra container labels; keys under io.jenkins-spot-agent. are reserved.
	Labels map[string]string
	// Logger receives progress and decisions; nil discards them.
	Logger *slog.Logger
	// Host optionally names the Docker daemon (unix:///var/run/docker.sock,
	// tcp://...); empty means DOCKER_HOST or the default unix socket.
	Host string
}

// request is the validated, normalised form of Options from which both the
// Docker create request and the configuration hash are derived.
type request struct {
	Image         string
	Pull          string
	Name          string
	HomeHost      string
	HomeContainer string
	Ports         []string // as given, validated
	Env           []string // KEY=VALUE, sorted by key
	Binds         []string // home first, then the extra volumes in order
	StopGrace     time.Duration
	Cmd           []string
	Labels        map[string]string // user labels only

	exposed  nat.PortSet
	bindings nat.PortMap
}

// validate checks Options and returns the normalised request. Errors name the
// configuration key so that an operator knows what to fix.
func validate(o Options) (request, error) {
	s := request{
		Image:         strings.TrimSpace(o.Image),
		Pull:          o.Pull,
		HomeHost:      o.HomeHost,
		HomeContainer: o.HomeContainer,
		StopGrace:     o.StopGrace,
	}
	if len(o.Cmd) > 0 {
		s.Cmd = slices.Clone(o.Cmd)
	}
	var errs []error
	if err := spec.Image(o.Image); err != nil {
		errs = append(errs, fmt.Errorf("jenkins.image %w", err))
	}
	switch s.Pull {
	case "":
		s.Pull = PullIfMissing
	case PullAlways, PullIfMissing, PullNever:
	default:
		errs = append(errs, fmt.Errorf("jenkins.pull %q: use always, if-missing or never", o.Pull))
	}
	if name, err := spec.Name(o.Name); err != nil {
		errs = append(errs, fmt.Errorf("jenkins.container_name %w", err))
	} else {
		s.Name = name
	}
	if !path.IsAbs(s.HomeHost) {
		errs = append(errs, fmt.Errorf("home on the host %q must be an absolute path (efs.mount_point)", s.HomeHost))
	}
	if !path.IsAbs(s.HomeContainer) {
		errs = append(errs, fmt.Errorf("jenkins.home_in_container %q must be an absolute path", s.HomeContainer))
	}
	if s.StopGrace < 0 {
		errs = append(errs, fmt.Errorf("jenkins.stop_grace %s is negative", s.StopGrace))
	} else if s.StopGrace == 0 {
		s.StopGrace = DefaultStopGrace
	}

	exposed, bindings, err := publish(o.Ports)
	if err != nil {
		errs = append(errs, err)
	}
	s.Ports, s.exposed, s.bindings = slices.Clone(o.Ports), exposed, bindings

	s.Binds = []string{s.HomeHost + ":" + s.HomeContainer}
	for i, v := range o.Volumes {
		m, err := spec.ParseVolume(v, s.HomeContainer)
		if err != nil {
			errs = append(errs, fmt.Errorf("jenkins.volumes[%d] %w", i, err))
			continue
		}
		s.Binds = append(s.Binds, m.String())
	}

	keys := make([]string, 0, len(o.Env))
	for k := range o.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := spec.EnvName(k); err != nil {
			errs = append(errs, fmt.Errorf("jenkins.env key %w", err))
			continue
		}
		s.Env = append(s.Env, k+"="+o.Env[k])
	}

	s.Labels = make(map[string]string, len(o.Labels))
	for k, v := range o.Labels {
		if strings.HasPrefix(k, labelPrefix) {
			errs = append(errs, fmt.Errorf("label %q: keys under %s are reserved for the agent", k, labelPrefix))
			continue
		}
		s.Labels[k] = v
	}
	if err := errors.Join(errs...); err != nil {
		return request{}, fmt.Errorf("container options: %w", err)
	}
	return s, nil
}

// publish converts the published ports (jenkins.ports), parsed by the one rule in
// package spec, to the exposed-port set and bindings of the create request.
func publish(ports []string) (nat.PortSet, nat.PortMap, error) {
	exposed, bindings := nat.PortSet{}, nat.PortMap{}
	var errs []error
	for i, ps := range ports {
		p, err := spec.ParsePort(ps)
		if err != nil {
			errs = append(errs, fmt.Errorf("jenkins.ports[%d] %w", i, err))
			continue
		}
		port := nat.Port(strconv.Itoa(p.ContainerPort) + "/" + p.Proto)
		b := nat.PortBinding{HostIP: p.HostIP}
		if p.HostPort != 0 {
			b.HostPort = strconv.Itoa(p.HostPort)
		}
		exposed[port] = struct{}{}
		bindings[port] = append(bindings[port], b)
	}
	return exposed, bindings, errors.Join(errs...)
}

// hash is a stable digest of everything that shapes the running container.
// Maps are sorted and the pull policy and name are left out: neither changes
// what runs. The "v1" prefix lets a future format change force a recreate
// rather than a false match.
func (s request) hash() string {
	labels := make([]string, 0, len(s.Labels))
	for k, v := range s.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	ports := slices.Clone(s.Ports)
	sort.Strings(ports)
	doc := struct {
		Image, HomeHost, HomeContainer string
		Cmd, Env, Binds, Ports, Labels []string
		StopGraceSeconds               int
	}{
		Image: s.Image, HomeHost: s.HomeHost, HomeContainer: s.HomeContainer,
		Cmd: s.Cmd, Env: s.Env, Binds: s.Binds, Ports: ports, Labels: labels,
		StopGraceSeconds: graceSeconds(s.StopGrace),
	}
	b, err := json.Marshal(doc)
	if err != nil {
		// Marshalling strings and slices of strings cannot fail.
		panic(err)
	}
	sum := sha256.Sum256(append([]byte("v1\n"), b...))
	return hex.EncodeToString(sum[:])
}

// graceSeconds rounds a grace period up to whole seconds, Docker's unit, so
// that a grace is never shortened.
func graceSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + time.Second - 1) / time.Second)
}
