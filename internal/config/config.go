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
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/spec"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
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
}

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
	hostnameLabels = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
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

	// The container's rules belong to the container adapter (package spec); checking
	// them here turns what would fail at run time into exit code 78 now.
	j := c.Jenkins
	p.check("jenkins.image", spec.Image(j.Image))
	p.oneOf("jenkins.pull", j.Pull, "always", "if-missing", "never")
	_, err := spec.Name(j.ContainerName)
	p.check("jenkins.container_name", err)
	p.absPath("jenkins.home_in_container", j.HomeInContainer)
	for i, ps := range j.Ports {
		_, err := spec.ParsePort(ps)
		p.check(fmt.Sprintf("jenkins.ports[%d]", i), err)
	}
	for _, k := range slices.Sorted(maps.Keys(j.Env)) {
		p.check("jenkins.env."+k, spec.EnvName(k))
	}
	for i, v := range j.Volumes {
		_, err := spec.ParseVolume(v, j.HomeInContainer)
		p.check(fmt.Sprintf("jenkins.volumes[%d]", i), err)
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

	// The lease's own rule: a ttl it would refuse at run time is refused here.
	p.check("lease.ttl", lease.CheckTTL(c.Lease.TTL.D()))

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
	if in.SafetyMargin.D() <= 0 {
		p.add("interruption.safety_margin", "%s must be positive: the plan must end before the termination time, and the margin is what is left for the last step to land (15s is usual)",
			in.SafetyMargin.D())
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

type problems []string

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, key+": "+fmt.Sprintf(format, args...))
}

// check adds err, if any, as the problem of key.
func (p *problems) check(key string, err error) {
	if err != nil {
		p.add(key, "%s", err.Error())
	}
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
