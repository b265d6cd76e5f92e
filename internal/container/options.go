package container

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"regexp"
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

// Paths inside the container that the agent owns.
const (
	// GuardPath is where the agent's executable is bind-mounted, read-only, to run
	// as the container's entrypoint (the guard command).
	GuardPath = "/.jenkins-spot-agent/guard"
	// CachePath is where Options.LocalCache is bind-mounted. Jenkins unpacks its war
	// into CachePath/war and its plugins into CachePath/plugins.
	CachePath = "/.jenkins-spot-agent/cache"
)

// dockerSockets are where Docker's API socket lives on the host (/var/run is a link
// to /run on current systems).
var dockerSockets = []string{"/var/run/docker.sock", "/run/docker.sock"}

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

	// Guard wraps the image's command in the lease guard (jenkins.guard); the zero
	// value runs the image's command as it is.
	Guard GuardOptions
	// NoNewPrivileges sets the no-new-privileges security option: setuid binaries and
	// file capabilities cannot raise a process's privileges in the container
	// (jenkins.no_new_privileges).
	NoNewPrivileges bool
	// CapDrop and CapAdd change the container's capabilities: names such as CHOWN or
	// CAP_CHOWN, or ALL (jenkins.cap_drop, jenkins.cap_add). Empty leaves Docker's set.
	CapDrop, CapAdd []string
	// PidsLimit caps the processes and threads of the container (every Java thread
	// counts); 0 means no limit (jenkins.pids_limit).
	PidsLimit int64
	// LocalCache is a directory on the instance's local disk where Jenkins unpacks its
	// war (--webroot) and plugins (--pluginroot) at every start, instead of thousands
	// of small files in JENKINS_HOME on EFS (jenkins.local_cache_dir). It is created if
	// missing and bind-mounted at CachePath; JENKINS_OPTS gains the two options unless
	// jenkins.env already sets them. Empty turns it off.
	LocalCache string
	// CacheUID and CacheGID own LocalCache's war and plugins directories: the user the
	// image runs Jenkins as (1000:1000 in the official image).
	CacheUID, CacheGID int
}

// GuardOptions put the lease guard in front of the image's command. The container then
// bind-mounts Executable read-only at GuardPath and runs
//
//	GuardPath guard --record HOME/RECORD --holder HOLDER --skew SKEW --grace GRACE -- ENTRYPOINT... CMD...
//
// with the image's own entrypoint and command (or Options.Cmd), so Jenkins is stopped
// before the lease can lapse even when the agent is gone.
type GuardOptions struct {
	// Executable is the host path of a static jenkins-spot-agent binary, normally the
	// agent's own (os.Executable). Empty turns the guard off.
	Executable string
	// Holder is this instance's id, which the lease record must name. It may be given
	// later, once the identity is known, with Runtime.SetGuardHolder.
	Holder string
	// Record is the lease record's path relative to the home, e.g.
	// .jenkins-spot-agent/lease.json.
	Record string
	// ClockSkew is the lease's allowance for clock error; zero means 2s.
	ClockSkew time.Duration
}

// on reports whether the guard wraps the command.
func (g GuardOptions) on() bool { return g.Executable != "" }

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

	Guard           GuardOptions
	NoNewPrivileges bool
	CapDrop, CapAdd []string // upper case, without CAP_
	PidsLimit       int64
	LocalCache      string
	CacheUID        int
	CacheGID        int
	DockerSocket    string // the extra volume that hands Jenkins the Docker socket, if any

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
		if m.Target == "/.jenkins-spot-agent" || strings.HasPrefix(m.Target, "/.jenkins-spot-agent/") {
			errs = append(errs, fmt.Errorf("jenkins.volumes[%d] %q: /.jenkins-spot-agent is reserved for the agent", i, v))
			continue
		}
		if exposesDockerSocket(m.Source) && s.DockerSocket == "" {
			s.DockerSocket = v
		}
		s.Binds = append(s.Binds, m.String())
	}

	s.Guard = o.Guard
	if s.Guard.on() {
		if !path.IsAbs(s.Guard.Executable) {
			errs = append(errs, fmt.Errorf("guard executable %q must be an absolute path (or turn jenkins.guard off)", s.Guard.Executable))
		}
		if s.Guard.Record == "" || path.IsAbs(s.Guard.Record) || strings.HasPrefix(path.Clean(s.Guard.Record), "..") {
			errs = append(errs, fmt.Errorf("guard lease record %q must be a path inside the home, relative to it", s.Guard.Record))
		}
		if s.Guard.ClockSkew < 0 {
			errs = append(errs, fmt.Errorf("guard clock skew %s is negative", s.Guard.ClockSkew))
		} else if s.Guard.ClockSkew == 0 {
			s.Guard.ClockSkew = 2 * time.Second
		}
		s.Binds = append(s.Binds, s.Guard.Executable+":"+GuardPath+":ro")
	}

	s.NoNewPrivileges = o.NoNewPrivileges
	if s.CapDrop, err = capabilities("jenkins.cap_drop", o.CapDrop); err != nil {
		errs = append(errs, err)
	}
	if s.CapAdd, err = capabilities("jenkins.cap_add", o.CapAdd); err != nil {
		errs = append(errs, err)
	}
	if o.PidsLimit < 0 {
		errs = append(errs, fmt.Errorf("jenkins.pids_limit %d is negative: use 0 for no limit", o.PidsLimit))
	}
	s.PidsLimit = o.PidsLimit

	if o.LocalCache != "" {
		if !path.IsAbs(o.LocalCache) {
			errs = append(errs, fmt.Errorf("jenkins.local_cache_dir %q must be an absolute path (or empty to keep the war and plugins in JENKINS_HOME)", o.LocalCache))
		} else {
			s.LocalCache = path.Clean(o.LocalCache)
			if s.LocalCache == path.Clean(s.HomeHost) || strings.HasPrefix(s.LocalCache, path.Clean(s.HomeHost)+"/") {
				errs = append(errs, fmt.Errorf("jenkins.local_cache_dir %q is inside the home on EFS; it must be on the instance's local disk", o.LocalCache))
			}
		}
		if o.CacheUID < 0 || o.CacheGID < 0 {
			errs = append(errs, fmt.Errorf("cache owner %d:%d is negative (jenkins.uid, jenkins.gid)", o.CacheUID, o.CacheGID))
		}
		s.CacheUID, s.CacheGID = o.CacheUID, o.CacheGID
		s.Binds = append(s.Binds, s.LocalCache+":"+CachePath)
	}

	env := make(map[string]string, len(o.Env)+1)
	for k, v := range o.Env {
		env[k] = v
	}
	if s.LocalCache != "" {
		env["JENKINS_OPTS"] = withCacheOpts(env["JENKINS_OPTS"])
	}
	if _, set := env["TINI_SUBREAPER"]; s.Guard.on() && !set {
		// The official image's entrypoint is tini, which is no longer PID 1 under the
		// guard: as a subreaper it still reaps what Jenkins orphans, and says nothing.
		env["TINI_SUBREAPER"] = "1"
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := spec.EnvName(k); err != nil {
			errs = append(errs, fmt.Errorf("jenkins.env key %w", err))
			continue
		}
		s.Env = append(s.Env, k+"="+env[k])
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

// withCacheOpts adds --webroot and --pluginroot under CachePath to the user's
// JENKINS_OPTS, unless the user already chose where they go.
func withCacheOpts(user string) string {
	opts := strings.Fields(user)
	has := func(name string) bool {
		return slices.ContainsFunc(opts, func(o string) bool { return o == name || strings.HasPrefix(o, name+"=") })
	}
	out := strings.TrimSpace(user)
	for _, o := range []struct{ name, dir string }{{"--webroot", "war"}, {"--pluginroot", "plugins"}} {
		if has(o.name) {
			continue
		}
		if out != "" {
			out += " "
		}
		out += o.name + "=" + CachePath + "/" + o.dir
	}
	return out
}

// capNameRe is a Linux capability name without its CAP_ prefix, or ALL.
var capNameRe = regexp.MustCompile(`^[A-Z][A-Z0-9_]{1,31}$`)

// capabilities normalises capability names (CAP_ prefix dropped, upper case) and
// refuses what Docker would refuse only at create time.
func capabilities(key string, names []string) ([]string, error) {
	var out []string
	var errs []error
	for i, n := range names {
		c := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(n)), "CAP_")
		if !capNameRe.MatchString(c) {
			errs = append(errs, fmt.Errorf("%s[%d] %q is not a capability name such as CHOWN or ALL", key, i, n))
			continue
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, errors.Join(errs...)
}

// exposesDockerSocket reports whether a bind of the host path src hands the Docker
// API socket to the container: the socket itself or a directory above it.
func exposesDockerSocket(src string) bool {
	src = path.Clean(src)
	for _, sock := range dockerSockets {
		if src == sock || src == "/" || strings.HasPrefix(sock, src+"/") {
			return true
		}
	}
	return false
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
		Guard                          []string `json:",omitempty"`
		NoNewPrivileges                bool     `json:",omitempty"`
		CapDrop, CapAdd                []string `json:",omitempty"`
		PidsLimit                      int64    `json:",omitempty"`
		Cache                          string   `json:",omitempty"`
	}{
		Image: s.Image, HomeHost: s.HomeHost, HomeContainer: s.HomeContainer,
		Cmd: s.Cmd, Env: s.Env, Binds: s.Binds, Ports: ports, Labels: labels,
		StopGraceSeconds: graceSeconds(s.StopGrace),
		Guard:            s.guardArgs(),
		NoNewPrivileges:  s.NoNewPrivileges,
		CapDrop:          s.CapDrop, CapAdd: s.CapAdd,
		PidsLimit: s.PidsLimit,
	}
	if s.LocalCache != "" {
		doc.Cache = fmt.Sprintf("%s %d:%d", s.LocalCache, s.CacheUID, s.CacheGID)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		// Marshalling strings and slices of strings cannot fail.
		panic(err)
	}
	sum := sha256.Sum256(append([]byte("v1\n"), b...))
	return hex.EncodeToString(sum[:])
}

// guardArgs are the guard's arguments before "--" (nil when the guard is off). The
// holder is part of them, so a container guarded for another holder is not adopted.
func (s request) guardArgs() []string {
	if !s.Guard.on() {
		return nil
	}
	return []string{
		GuardPath, "guard",
		"--record", path.Join(s.HomeContainer, s.Guard.Record),
		"--holder", s.Guard.Holder,
		"--skew", s.Guard.ClockSkew.String(),
		"--grace", s.StopGrace.String(),
		"--",
	}
}

// graceSeconds rounds a grace period up to whole seconds, Docker's unit, so
// that a grace is never shortened.
func graceSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + time.Second - 1) / time.Second)
}
