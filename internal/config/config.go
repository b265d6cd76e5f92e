// Package config loads and validates the agent's YAML configuration: built-in defaults,
// then the file, then validation that names every offending key. Nothing outside this
// package is touched until Load has returned without error.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultPath is where the agent looks for its configuration when --config is not given.
const DefaultPath = "/etc/jenkins-spot-agent/config.yaml"

// TokenCredentialName is the systemd credential (LoadCredential=) holding the Jenkins API token.
const TokenCredentialName = "jenkins-api-token"

// SpotBudget is the warning EC2 gives before it reclaims a Spot instance. Every plan
// budget must fit in it.
const SpotBudget = 2 * time.Minute

// Duration is a time.Duration written as a Go duration string ("30s") in YAML.
type Duration time.Duration

// UnmarshalYAML accepts Go duration strings only; a bare number is ambiguous and refused.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 30s", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (write it like 30s, 5m or 1m30s)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration back as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Config is the whole file. Field names mirror the YAML keys of the product contract.
type Config struct {
	EFS                  EFS           `yaml:"efs"`
	Jenkins              Jenkins       `yaml:"jenkins"`
	Lease                Lease         `yaml:"lease"`
	TargetGroups         []TargetGroup `yaml:"target_groups"`
	DiscoverTargetGroups bool          `yaml:"discover_target_groups"`
	LifecycleHook        string        `yaml:"lifecycle_hook"`
	Interruption         Interruption  `yaml:"interruption"`
	Metrics              Metrics       `yaml:"metrics"`
	ControlSocket        string        `yaml:"control_socket"`
	StateDir             string        `yaml:"state_dir"`
}

// EFS says which file system holds JENKINS_HOME and how to mount it.
type EFS struct {
	FileSystemID  string   `yaml:"file_system_id"`
	MountPoint    string   `yaml:"mount_point"`
	DNS           string   `yaml:"dns"`
	MountType     string   `yaml:"mount_type"`
	MountOptions  string   `yaml:"mount_options"`
	MountTimeout  Duration `yaml:"mount_timeout"`
	MountProgram  string   `yaml:"mount_program"`
	ExpectFSTypes []string `yaml:"expect_fstypes"`
}

// Jenkins describes the controller container and how the agent reaches it.
type Jenkins struct {
	Image           string            `yaml:"image"`
	Pull            string            `yaml:"pull"`
	ContainerName   string            `yaml:"container_name"`
	HomeInContainer string            `yaml:"home_in_container"`
	Ports           []string          `yaml:"ports"`
	Env             map[string]string `yaml:"env"`
	Volumes         []string          `yaml:"volumes"`
	URL             string            `yaml:"url"`
	User            string            `yaml:"user"`
	APITokenFile    string            `yaml:"api_token_file"`
	ReadyTimeout    Duration          `yaml:"ready_timeout"`
	StopGrace       Duration          `yaml:"stop_grace"`
	UID             int               `yaml:"uid"`
	GID             int               `yaml:"gid"`
	// Guard runs the lease guard (this binary, bind-mounted read-only) as the
	// container's entrypoint, so Jenkins stops before the lease lapses even when the
	// agent is gone.
	Guard bool `yaml:"guard"`
	// NoNewPrivileges, CapDrop, CapAdd and PidsLimit harden the container.
	NoNewPrivileges bool     `yaml:"no_new_privileges"`
	CapDrop         []string `yaml:"cap_drop"`
	CapAdd          []string `yaml:"cap_add"`
	PidsLimit       int64    `yaml:"pids_limit"`
	// LocalCacheDir is a local-disk directory for the unpacked war and plugins
	// (--webroot, --pluginroot); empty keeps them in JENKINS_HOME on EFS.
	LocalCacheDir string `yaml:"local_cache_dir"`
}

// DefaultCapAdd is what the Jenkins container keeps of Docker's default capabilities
// after jenkins.cap_drop [ALL]: enough for an image that starts as root, fixes the
// ownership of its files and steps down to its user. The official image runs as uid
// 1000 and needs none of them. Dropped: NET_RAW (forged packets), MKNOD, SYS_CHROOT,
// SETFCAP, SETPCAP, NET_BIND_SERVICE and AUDIT_WRITE.
var DefaultCapAdd = []string{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID"}

// dockerSockets are where the Docker API socket lives on the host.
var dockerSockets = []string{"/var/run/docker.sock", "/run/docker.sock"}

// Lease tunes the single-writer lease on JENKINS_HOME.
type Lease struct {
	TTL                          Duration `yaml:"ttl"`
	TakeoverWhenHolderTerminated bool     `yaml:"takeover_when_holder_terminated"`
}

// TargetGroup is one ELBv2 target group the instance is deregistered from.
type TargetGroup struct {
	ARN  string `yaml:"arn"`
	Port int    `yaml:"port"`
}

// Interruption tunes the watcher and the shutdown plan.
type Interruption struct {
	PollInterval     Duration `yaml:"poll_interval"`
	SafetyMargin     Duration `yaml:"safety_margin"`
	OnRebalance      string   `yaml:"on_rebalance"`
	OnScheduledEvent string   `yaml:"on_scheduled_event"`
	OnStopSignal     string   `yaml:"on_stop_signal"`
}

// Metrics says where Prometheus scrapes the agent.
type Metrics struct {
	ListenAddress string `yaml:"listen_address"`
	WebConfigFile string `yaml:"web_config_file"`
}

// Default returns the configuration with every built-in default and no file system id.
func Default() Config {
	return Config{
		EFS: EFS{
			MountPoint:    "/jenkins_home",
			DNS:           "az",
			MountType:     "nfs4",
			MountOptions:  "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport",
			MountTimeout:  Duration(5 * time.Minute),
			MountProgram:  "mount",
			ExpectFSTypes: []string{"nfs4"},
		},
		Jenkins: Jenkins{
			Image:           "jenkins/jenkins:lts-jdk21",
			Pull:            "if-missing",
			ContainerName:   "jenkins",
			HomeInContainer: "/var/jenkins_home",
			Ports:           []string{"8080:8080", "50000:50000"},
			Env:             map[string]string{},
			URL:             "http://127.0.0.1:8080",
			ReadyTimeout:    Duration(10 * time.Minute),
			StopGrace:       Duration(30 * time.Second),
			UID:             1000,
			GID:             1000,
			Guard:           true,
			NoNewPrivileges: true,
			CapDrop:         []string{"ALL"},
			CapAdd:          append([]string(nil), DefaultCapAdd...),
			PidsLimit:       8192,
			LocalCacheDir:   "/var/cache/jenkins-spot-agent",
		},
		Lease:                Lease{TTL: Duration(30 * time.Second)},
		DiscoverTargetGroups: true,
		Interruption: Interruption{
			PollInterval:     Duration(time.Second),
			SafetyMargin:     Duration(15 * time.Second),
			OnRebalance:      "notify",
			OnScheduledEvent: "notify",
			OnStopSignal:     "shutdown",
		},
		Metrics:       Metrics{ListenAddress: ":9877"},
		ControlSocket: "/run/jenkins-spot-agent/control.sock",
		StateDir:      "/var/lib/jenkins-spot-agent",
	}
}

// InvalidError is a configuration that cannot be used. Main maps it to exit code 78.
type InvalidError struct {
	Path     string
	Problems []string
}

func (e *InvalidError) Error() string {
	where := "configuration"
	if e.Path != "" {
		where = e.Path
	}
	if len(e.Problems) == 1 {
		return fmt.Sprintf("invalid %s: %s", where, e.Problems[0])
	}
	return fmt.Sprintf("invalid %s:\n  - %s", where, strings.Join(e.Problems, "\n  - "))
}

// IsInvalid reports whether err is (or wraps) an invalid configuration.
func IsInvalid(err error) bool {
	var ie *InvalidError
	return errors.As(err, &ie)
}

// Load reads, decodes and validates the file at path on top of the defaults.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, &InvalidError{Path: path, Problems: []string{fmt.Sprintf("cannot read it: %v (pass --config PATH)", err)}}
	}
	return Parse(path, data)
}

// Parse decodes YAML on top of the defaults and validates the result. Unknown keys and
// wrong types are errors, as are impossible values.
func Parse(path string, data []byte) (Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, &InvalidError{Path: path, Problems: yamlProblems(err)}
	}
	if err := cfg.Validate(); err != nil {
		var ie *InvalidError
		if errors.As(err, &ie) {
			ie.Path = path
		}
		return Config{}, err
	}
	return cfg, nil
}

func yamlProblems(err error) []string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		out := make([]string, 0, len(te.Errors))
		for _, e := range te.Errors {
			out = append(out, strings.Replace(e, "not found in type", "is not a known key of", 1))
		}
		return out
	}
	return []string{err.Error()}
}

var (
	fsIDPattern    = regexp.MustCompile(`^fs-([0-9a-f]{8}|[0-9a-f]{17})$`)
	tgARNPattern   = regexp.MustCompile(`^arn:aws(-cn|-us-gov|-iso|-iso-b)?:elasticloadbalancing:[a-z0-9-]+:\d{12}:targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}$`)
	containerName  = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	hostnameLabels = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	portSpec       = regexp.MustCompile(`^(([0-9.]+|\[[0-9a-fA-F:]+\]):)?(\d{1,5}:)?\d{1,5}(/(tcp|udp|sctp))?$`)
	envName        = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	capName        = regexp.MustCompile(`^[A-Z][A-Z0-9_]{1,31}$`)
)

// Validate checks every value and returns an *InvalidError listing each problem with its key.
func (c *Config) Validate() error {
	var p problems
	if c.EFS.FileSystemID == "" {
		p.add("efs.file_system_id", "is required (the id of the EFS file system holding JENKINS_HOME, like fs-0123456789abcdef0)")
	} else if !fsIDPattern.MatchString(c.EFS.FileSystemID) {
		p.add("efs.file_system_id", "%q is not an EFS file system id (fs- followed by 8 or 17 hex digits)", c.EFS.FileSystemID)
	}
	p.absPath("efs.mount_point", c.EFS.MountPoint)
	if c.EFS.MountPoint == "/" {
		p.add("efs.mount_point", "must not be /")
	}
	switch dns := c.EFS.DNS; {
	case dns == "az", dns == "regional":
	case !hostnameLabels.MatchString(strings.ToLower(dns)):
		p.add("efs.dns", "%q is neither az, regional nor a DNS name", dns)
	}
	p.oneOf("efs.mount_type", c.EFS.MountType, "nfs4", "efs")
	if strings.ContainsAny(c.EFS.MountOptions, " \t\n") {
		p.add("efs.mount_options", "must be one comma-separated word without spaces")
	}
	p.positive("efs.mount_timeout", c.EFS.MountTimeout)
	if c.EFS.MountProgram == "" {
		p.add("efs.mount_program", "must not be empty")
	}
	if len(c.EFS.ExpectFSTypes) == 0 {
		p.add("efs.expect_fstypes", "must list at least one file system type (nfs4 for EFS)")
	}

	j := c.Jenkins
	if j.Image == "" {
		p.add("jenkins.image", "must not be empty")
	}
	p.oneOf("jenkins.pull", j.Pull, "always", "if-missing", "never")
	if !containerName.MatchString(j.ContainerName) {
		p.add("jenkins.container_name", "%q is not a valid container name", j.ContainerName)
	}
	p.absPath("jenkins.home_in_container", j.HomeInContainer)
	for i, ps := range j.Ports {
		if !portSpec.MatchString(ps) {
			p.add(fmt.Sprintf("jenkins.ports[%d]", i), "%q is not [ip:]host:container[/proto]", ps)
		}
	}
	for k := range j.Env {
		if !envName.MatchString(k) {
			p.add("jenkins.env."+k, "is not a valid environment variable name")
		}
	}
	for i, v := range j.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || !filepath.IsAbs(parts[0]) || !filepath.IsAbs(parts[1]) ||
			(len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw") {
			p.add(fmt.Sprintf("jenkins.volumes[%d]", i), "%q is not /host/path:/container/path[:ro]", v)
		}
	}
	if u, err := url.Parse(j.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.add("jenkins.url", "%q is not an http(s) URL", j.URL)
	}
	if j.APITokenFile != "" && !filepath.IsAbs(j.APITokenFile) {
		p.add("jenkins.api_token_file", "must be an absolute path")
	}
	p.positive("jenkins.ready_timeout", j.ReadyTimeout)
	p.positive("jenkins.stop_grace", j.StopGrace)
	if j.UID < 0 || j.GID < 0 {
		p.add("jenkins.uid/gid", "must not be negative")
	}
	for key, caps := range map[string][]string{"jenkins.cap_drop": j.CapDrop, "jenkins.cap_add": j.CapAdd} {
		for i, c := range caps {
			if !capName.MatchString(strings.TrimPrefix(strings.ToUpper(c), "CAP_")) {
				p.add(fmt.Sprintf("%s[%d]", key, i), "%q is not a capability name such as CHOWN, or ALL", c)
			}
		}
	}
	if j.PidsLimit < 0 {
		p.add("jenkins.pids_limit", "%d is negative: use 0 for no limit", j.PidsLimit)
	} else if j.PidsLimit > 0 && j.PidsLimit < 256 {
		p.add("jenkins.pids_limit", "%d is too low for a JVM (every thread counts); use 0 for no limit or at least 256", j.PidsLimit)
	}
	if d := j.LocalCacheDir; d != "" {
		if !filepath.IsAbs(d) {
			p.add("jenkins.local_cache_dir", "%q must be an absolute path, or empty to keep the war and plugins in JENKINS_HOME", d)
		} else if mp := filepath.Clean(c.EFS.MountPoint); filepath.Clean(d) == mp || strings.HasPrefix(filepath.Clean(d), mp+"/") {
			p.add("jenkins.local_cache_dir", "%q is inside efs.mount_point: it must be on the instance's local disk", d)
		}
	}

	if c.Lease.TTL.D() < 3*time.Second {
		p.add("lease.ttl", "%s is too short: renewals every ttl/3 need at least 3s (30s is usual)", c.Lease.TTL.D())
	} else if c.Lease.TTL.D() > 10*time.Minute {
		p.add("lease.ttl", "%s is too long: a crashed holder would block a successor that long", c.Lease.TTL.D())
	}

	for i, tg := range c.TargetGroups {
		key := fmt.Sprintf("target_groups[%d]", i)
		if !tgARNPattern.MatchString(tg.ARN) {
			p.add(key+".arn", "%q is not a target group ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID)", tg.ARN)
		}
		if tg.Port < 0 || tg.Port > 65535 {
			p.add(key+".port", "%d is not a port", tg.Port)
		}
	}

	in := c.Interruption
	p.positive("interruption.poll_interval", in.PollInterval)
	if in.PollInterval.D() > 30*time.Second {
		p.add("interruption.poll_interval", "%s would eat most of the two-minute warning; AWS advises 5s at most", in.PollInterval.D())
	}
	if in.SafetyMargin.D() < 0 {
		p.add("interruption.safety_margin", "must not be negative")
	}
	if spent := in.SafetyMargin.D() + j.StopGrace.D() + in.PollInterval.D(); spent >= SpotBudget {
		p.add("interruption.safety_margin", "%s plus jenkins.stop_grace %s and poll_interval %s leaves nothing of the %s Spot warning; lower them",
			in.SafetyMargin.D(), j.StopGrace.D(), in.PollInterval.D(), SpotBudget)
	}
	p.oneOf("interruption.on_rebalance", in.OnRebalance, "notify", "drain")
	p.oneOf("interruption.on_scheduled_event", in.OnScheduledEvent, "notify", "drain")
	p.oneOf("interruption.on_stop_signal", in.OnStopSignal, "shutdown", "leave-running")

	if c.Metrics.ListenAddress != "" {
		if _, port, err := net.SplitHostPort(c.Metrics.ListenAddress); err != nil {
			p.add("metrics.listen_address", "%q is not host:port (use :9877, or empty to disable)", c.Metrics.ListenAddress)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			p.add("metrics.listen_address", "%q has no valid port", c.Metrics.ListenAddress)
		}
	}
	if c.Metrics.WebConfigFile != "" && !filepath.IsAbs(c.Metrics.WebConfigFile) {
		p.add("metrics.web_config_file", "must be an absolute path")
	}
	p.absPath("control_socket", c.ControlSocket)
	p.absPath("state_dir", c.StateDir)
	return p.err()
}

// Warnings lists what the configuration allows but an operator should know is
// dangerous; the agent logs each at load. Today: a volume that hands Jenkins the
// Docker socket (the socket itself, or a directory above it), which makes everyone who
// can run a job or a script on Jenkins root on the instance.
func (c *Config) Warnings() []string {
	var out []string
	for i, v := range c.Jenkins.Volumes {
		src, _, _ := strings.Cut(v, ":")
		src = filepath.Clean(src)
		for _, sock := range dockerSockets {
			if src == sock || src == "/" || strings.HasPrefix(sock, src+"/") {
				out = append(out, fmt.Sprintf("jenkins.volumes[%d] %q mounts the Docker socket into the Jenkins container: "+
					"anyone who can run a job or script on Jenkins is root on this instance and can use its instance role; "+
					"run builds that need Docker on a separate agent instead", i, v))
				break
			}
		}
	}
	return out
}

type problems []string

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, key+": "+fmt.Sprintf(format, args...))
}

func (p *problems) oneOf(key, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	p.add(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
}

func (p *problems) positive(key string, d Duration) {
	if d <= 0 {
		p.add(key, "must be a positive duration")
	}
}

func (p *problems) absPath(key, v string) {
	if !filepath.IsAbs(v) {
		p.add(key, "%q must be an absolute path", v)
	}
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return &InvalidError{Problems: p}
}

// Secret is a credential read from a file. It never prints itself.
type Secret string

// String hides the value from fmt.
func (Secret) String() string { return "[redacted]" }

// LogValue hides the value from slog.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// GoString hides the value from %#v.
func (Secret) GoString() string { return "[redacted]" }

// MarshalText hides the value from encoders (JSON, slog's JSON handler inside structs).
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Reveal returns the value, for the one place that sends it.
func (s Secret) Reveal() string { return string(s) }

// JenkinsToken reads the Jenkins API token from jenkins.api_token_file, or else from the
// systemd credential directory. An empty result means no token is configured.
func (c *Config) JenkinsToken() (Secret, string, error) {
	path := c.Jenkins.APITokenFile
	if path == "" {
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return "", "", nil
		}
		path = filepath.Join(dir, TokenCredentialName)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return "", "", nil
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", path, fmt.Errorf("jenkins api token: %w (check jenkins.api_token_file or LoadCredential=%s)", err, TokenCredentialName)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", path, fmt.Errorf("jenkins api token: %s is empty", path)
	}
	return Secret(tok), path, nil
}
