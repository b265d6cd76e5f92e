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
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/docker/go-connections/nat"
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

// spec is the validated, normalised form of Options from which both the
// Docker create request and the configuration hash are derived.
type spec struct {
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

// containerName is what Docker accepts as a container name.
var containerName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// validate checks Options and returns the normalised spec. Errors name the
// configuration key so that an operator knows what to fix.
func validate(o Options) (spec, error) {
	s := spec{
		Image:         strings.TrimSpace(o.Image),
		Pull:          o.Pull,
		Name:          strings.TrimPrefix(o.Name, "/"),
		HomeHost:      o.HomeHost,
		HomeContainer: o.HomeContainer,
		StopGrace:     o.StopGrace,
	}
	if len(o.Cmd) > 0 {
		s.Cmd = slices.Clone(o.Cmd)
	}
	var errs []error
	if s.Image == "" {
		errs = append(errs, errors.New("jenkins.image is empty: set an image such as jenkins/jenkins:lts-jdk21"))
	} else if _, err := reference.ParseNormalizedNamed(s.Image); err != nil {
		errs = append(errs, fmt.Errorf("jenkins.image %q is not a valid image reference: %w", s.Image, err))
	}
	switch s.Pull {
	case "":
		s.Pull = PullIfMissing
	case PullAlways, PullIfMissing, PullNever:
	default:
		errs = append(errs, fmt.Errorf("jenkins.pull %q: use always, if-missing or never", o.Pull))
	}
	if !containerName.MatchString(s.Name) {
		errs = append(errs, fmt.Errorf("jenkins.container_name %q: use letters, digits, '_', '.' and '-', starting with a letter or digit", o.Name))
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

	exposed, bindings, err := parsePorts(o.Ports)
	if err != nil {
		errs = append(errs, err)
	}
	s.Ports, s.exposed, s.bindings = slices.Clone(o.Ports), exposed, bindings

	s.Binds = []string{s.HomeHost + ":" + s.HomeContainer}
	for i, v := range o.Volumes {
		m, err := parseVolume(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("jenkins.volumes[%d]: %w", i, err))
			continue
		}
		if m.Target == path.Clean(s.HomeContainer) {
			errs = append(errs, fmt.Errorf("jenkins.volumes[%d] %q: %s is already the Jenkins home mount", i, v, m.Target))
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
		if k == "" || strings.ContainsAny(k, "=\x00") {
			errs = append(errs, fmt.Errorf("jenkins.env key %q: names cannot be empty or contain '='", k))
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
		return spec{}, fmt.Errorf("container options: %w", err)
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

// parsePorts validates port specs in Docker syntax and converts them to the
// exposed-port set and bindings of the create request.
func parsePorts(ports []string) (nat.PortSet, nat.PortMap, error) {
	exposed, bindings := nat.PortSet{}, nat.PortMap{}
	var errs []error
	for i, p := range ports {
		if strings.TrimSpace(p) != p || p == "" {
			errs = append(errs, fmt.Errorf("jenkins.ports[%d] %q: use [ip:]host:container[/proto], e.g. 8080:8080", i, p))
			continue
		}
		maps, err := nat.ParsePortSpec(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("jenkins.ports[%d] %q: %v: use [ip:]host:container[/proto], e.g. 8080:8080 or 127.0.0.1:8080:8080/tcp", i, p, err))
			continue
		}
		for _, m := range maps {
			exposed[m.Port] = struct{}{}
			bindings[m.Port] = append(bindings[m.Port], m.Binding)
		}
	}
	return exposed, bindings, errors.Join(errs...)
}

// mount is one extra bind mount.
type mount struct {
	Source, Target string
	ReadOnly       bool
}

func (m mount) String() string {
	if m.ReadOnly {
		return m.Source + ":" + m.Target + ":ro"
	}
	return m.Source + ":" + m.Target
}

// parseVolume parses src:dst[:ro|rw]. Only bind mounts of absolute host paths
// are accepted: named volumes would live on the local disk, which is what the
// agent exists to avoid.
func parseVolume(v string) (mount, error) {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return mount{}, fmt.Errorf("%q: use src:dst or src:dst:ro with absolute paths", v)
	}
	m := mount{Source: parts[0], Target: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			m.ReadOnly = true
		case "rw":
		default:
			return mount{}, fmt.Errorf("%q: mode %q is not ro or rw", v, parts[2])
		}
	}
	if !path.IsAbs(m.Source) {
		return mount{}, fmt.Errorf("%q: source %q must be an absolute host path (named volumes are not supported)", v, m.Source)
	}
	if !path.IsAbs(m.Target) {
		return mount{}, fmt.Errorf("%q: target %q must be an absolute path in the container", v, m.Target)
	}
	if strings.ContainsRune(v, 0) {
		return mount{}, fmt.Errorf("%q: contains a NUL byte", v)
	}
	m.Source, m.Target = path.Clean(m.Source), path.Clean(m.Target)
	return m, nil
}

// hash is a stable digest of everything that shapes the running container.
// Maps are sorted and the pull policy and name are left out: neither changes
// what runs. The "v1" prefix lets a future format change force a recreate
// rather than a false match.
func (s spec) hash() string {
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
func (s spec) guardArgs() []string {
	if !s.Guard.on() {
		return nil
	}
	return []string{GuardPath, "guard",
		"--record", path.Join(s.HomeContainer, s.Guard.Record),
		"--holder", s.Guard.Holder,
		"--skew", s.Guard.ClockSkew.String(),
		"--grace", s.StopGrace.String(),
		"--"}
}

// graceSeconds rounds a grace period up to whole seconds, Docker's unit, so
// that a grace is never shortened.
func graceSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + time.Second - 1) / time.Second)
}
