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
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
)

// DefaultPath is where the agent looks for its configuration when --config is not given.
const DefaultPath = "/etc/jenkins-spot-agent/config.yaml"

// TokenCredentialName is the systemd credential (LoadCredential=) holding the Jenkins API token.
const TokenCredentialName = "jenkins-api-token"

// SpotBudget is the warning EC2 gives before it reclaims a Spot instance. Every plan
// budget must fit in it.
const SpotBudget = 2 * time.Minute

// MinGuardedTTL is the shortest lease.ttl the lease guard (jenkins.guard) works with:
// it reads the record every second, and its fence point (ttl/12 after the agent's own)
// must leave time to stop Jenkins before the expiry minus the clock-skew allowance.
const MinGuardedTTL = 6 * time.Second

// MaxLifecycleWait is the longest an Auto Scaling lifecycle action can be kept pending
// with heartbeats.
const MaxLifecycleWait = 48 * time.Hour

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
	Webhook              Webhook       `yaml:"webhook"`
}

// WebhookCredentialName is the systemd credential (LoadCredential=) holding the
// webhook URL, which is a secret (Slack's carries its token).
const WebhookCredentialName = "webhook-url"

// Webhook configures the optional notifications (a notice, the end of a plan, a
// handover, a lost lease). It is on when its URL is found: webhook.url_file, or the
// credential webhook-url.
type Webhook struct {
	// URLFile holds the URL; empty means $CREDENTIALS_DIRECTORY/webhook-url, if any.
	URLFile string `yaml:"url_file"`
	// Format is slack ({"text": ...}, also Mattermost, Rocket.Chat, Teams workflows)
	// or json (the event's fields).
	Format string `yaml:"format"`
	// Timeout bounds one delivery attempt.
	Timeout Duration `yaml:"timeout"`
	// Attempts is how often one notification is tried (1-5).
	Attempts int `yaml:"attempts"`
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
	// AccessPoint is an EFS access point id (fsap-...), mount_type efs only.
	AccessPoint string `yaml:"access_point"`
	// MountScope is how the mount program runs: auto, systemd-run or none.
	MountScope string `yaml:"mount_scope"`
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
	// RequeueAbortedBuilds queues the builds the previous controller's stop aborted
	// again, with their parameters, once Jenkins answers.
	RequeueAbortedBuilds bool `yaml:"requeue_aborted_builds"`

	// APITokenSSMParameter names a Parameter Store SecureString holding the token (a
	// name, name:version, or ARN); read at start and again when Jenkins refuses it.
	APITokenSSMParameter string `yaml:"api_token_ssm_parameter"`
	// APITokenSecretID names a Secrets Manager secret (name or ARN) whose string is
	// the token; read like APITokenSSMParameter.
	APITokenSecretID string `yaml:"api_token_secret_id"`

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

// NoticePolicy says what an advisory notice (a rebalance recommendation, a scheduled
// event) does.
type NoticePolicy string

// Notice policies.
const (
	// PolicyNotify records the notice (metrics, status, log) and changes nothing.
	PolicyNotify NoticePolicy = "notify"
	// PolicyDrain hands JENKINS_HOME over, but only to a successor waiting ready on the
	// lease (or one asked for ahead of a scheduled stop): Jenkins is never left down on a
	// live instance with nobody to take over.
	PolicyDrain NoticePolicy = "drain"
)

// StopSignalPolicy says what the first SIGTERM or SIGINT does.
type StopSignalPolicy string

// Stop signal policies.
const (
	// StopShutdown runs the shutdown plan, then the agent exits.
	StopShutdown StopSignalPolicy = "shutdown"
	// StopLeaveRunning exits at once and leaves Jenkins running under the lease, for an
	// agent upgrade: the restarted agent adopts both before the lease lapses.
	StopLeaveRunning StopSignalPolicy = "leave-running"
)

// Interruption tunes the watcher and the shutdown plan.
type Interruption struct {
	PollInterval     Duration         `yaml:"poll_interval"`
	SafetyMargin     Duration         `yaml:"safety_margin"`
	OnRebalance      NoticePolicy     `yaml:"on_rebalance"`
	OnScheduledEvent NoticePolicy     `yaml:"on_scheduled_event"`
	OnStopSignal     StopSignalPolicy `yaml:"on_stop_signal"`
	// RequestReplacement asks the Auto Scaling group for the replacement at a Spot
	// notice, so that it boots while this controller still serves.
	RequestReplacement bool `yaml:"request_replacement"`
	// ASGMaxDrain is how long builds may run when the group itself terminates the
	// instance (scale-in, instance refresh, Capacity Rebalancing); lifecycle heartbeats
	// keep the instance meanwhile.
	ASGMaxDrain Duration `yaml:"asg_max_drain"`
	// ScheduledEventLead is how long before a scheduled instance-stop or
	// instance-retirement event the replacement is asked for.
	ScheduledEventLead Duration `yaml:"scheduled_event_lead"`
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
			MountOptions:  efs.DefaultMountOptions,
			MountTimeout:  Duration(5 * time.Minute),
			MountProgram:  "mount",
			ExpectFSTypes: []string{"nfs4"},
			MountScope:    efs.ScopeAuto,
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
			PollInterval:       Duration(time.Second),
			SafetyMargin:       Duration(15 * time.Second),
			OnRebalance:        PolicyNotify,
			OnScheduledEvent:   PolicyNotify,
			OnStopSignal:       StopShutdown,
			RequestReplacement: true,
			ASGMaxDrain:        Duration(30 * time.Minute),
			ScheduledEventLead: Duration(30 * time.Minute),
		},
		Metrics:       Metrics{ListenAddress: ":9877"},
		ControlSocket: "/run/jenkins-spot-agent/control.sock",
		StateDir:      "/var/lib/jenkins-spot-agent",
		Webhook:       Webhook{Format: "slack", Timeout: Duration(5 * time.Second), Attempts: 3},
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
	var problems []string
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		problems = yamlProblems(err, data)
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			// A syntax error: nothing was decoded, there is nothing more to check.
			return Config{}, &InvalidError{Path: path, Problems: problems}
		}
		// Unknown keys and wrong types: yaml.v3 decoded the rest, which is checked too,
		// so that every problem of the file is reported at once.
	}
	if err := cfg.Validate(); err != nil {
		var ie *InvalidError
		if !errors.As(err, &ie) {
			return Config{}, err
		}
		problems = append(problems, ie.Problems...)
	}
	if len(problems) > 0 {
		return Config{}, &InvalidError{Path: path, Problems: problems}
	}
	return cfg, nil
}

var (
	fsIDPattern  = regexp.MustCompile(`^fs-([0-9a-f]{8}|[0-9a-f]{17})$`)
	tgARNPattern = regexp.MustCompile(`^arn:aws(-cn|-us-gov|-iso|-iso-b)?:elasticloadbalancing:[a-z0-9-]+:\d{12}:targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}$`)
	capName      = regexp.MustCompile(`^[A-Z][A-Z0-9_]{1,31}$`)
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
	if filepath.IsAbs(c.EFS.MountPoint) && filepath.Clean(c.EFS.MountPoint) == "/" {
		p.add("efs.mount_point", "%q is the root directory: mount EFS on a directory of its own, like /var/lib/jenkins", c.EFS.MountPoint)
	}
	if err := efs.CheckDNSSetting(c.EFS.DNS); err != nil {
		p.add("efs.dns", "%v", err)
	}
	p.oneOf("efs.mount_type", c.EFS.MountType, efs.TypeNFS4, efs.TypeEFS)
	if err := efs.CheckMountOptions(c.EFS.MountType, c.EFS.MountOptions); err != nil {
		p.add("efs.mount_options", "%v", err)
	}
	if ap := c.EFS.AccessPoint; ap != "" {
		if err := efs.CheckAccessPoint(ap); err != nil {
			p.add("efs.access_point", "%v", err)
		} else if c.EFS.MountType != efs.TypeEFS {
			p.add("efs.access_point", "needs mount_type efs: only amazon-efs-utils mounts through an access point (accesspoint=, with tls and iam)")
		}
	}
	p.oneOf("efs.mount_scope", c.EFS.MountScope, efs.ScopeAuto, efs.ScopeSystemdRun, efs.ScopeNone)
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
		// Never the URL itself: one with user:token@ in it would print the token.
		p.add("jenkins.url", "is not an http(s) URL with a host, like http://127.0.0.1:8080 (credentials never go in it: use jenkins.user and a token source)")
	}
	if j.APITokenFile != "" && !filepath.IsAbs(j.APITokenFile) {
		p.add("jenkins.api_token_file", "must be an absolute path")
	}
	validateTokenSource(&p, j)
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
		} else if within(d, c.EFS.MountPoint) {
			p.add("jenkins.local_cache_dir", "%q is inside efs.mount_point: it must be on the instance's local disk", d)
		}
	}

	// The lease's own rule: a ttl it would refuse at run time is refused here.
	p.check("lease.ttl", lease.CheckTTL(c.Lease.TTL.D()))
	if ttl := c.Lease.TTL.D(); j.Guard && ttl > 0 && ttl < MinGuardedTTL {
		// The guard reads the record every second and must stop Jenkins between its fence
		// point and the expiry minus the clock-skew allowance.
		p.add("lease.ttl", "%s is too short for jenkins.guard: the guard in the container needs a ttl of at least %s (30s is usual)", ttl, MinGuardedTTL)
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
	if d := in.PollInterval.D(); d > 0 && d < MinPollInterval {
		p.add("interruption.poll_interval", "%s would poll IMDS so often that it throttles the agent (429s); use at least %s (1s is usual)", d, MinPollInterval)
	}
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
	p.oneOf("interruption.on_rebalance", string(in.OnRebalance), string(PolicyNotify), string(PolicyDrain))
	p.oneOf("interruption.on_scheduled_event", string(in.OnScheduledEvent), string(PolicyNotify), string(PolicyDrain))
	p.oneOf("interruption.on_stop_signal", string(in.OnStopSignal), string(StopShutdown), string(StopLeaveRunning))
	if d := in.ASGMaxDrain.D(); d < SpotBudget || d > MaxLifecycleWait {
		p.add("interruption.asg_max_drain", "%s must be between %s and %s (the lifecycle hook's longest wait)", d, SpotBudget, MaxLifecycleWait)
	}
	if d := in.ScheduledEventLead.D(); d < SpotBudget || d > 24*time.Hour {
		p.add("interruption.scheduled_event_lead", "%s must be between %s and 24h", d, SpotBudget)
	}

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
	for _, kp := range [][2]string{{"state_dir", c.StateDir}, {"control_socket", c.ControlSocket}, {"metrics.web_config_file", c.Metrics.WebConfigFile}} {
		if kp[1] != "" && c.EFS.MountPoint != "" && within(kp[1], c.EFS.MountPoint) {
			p.add(kp[0], "%q is inside efs.mount_point: it must be on the instance's local disk (the home is another instance's once it is handed over)", kp[1])
		}
	}
	validatePorts(&p, c)
	validateWebhook(&p, c.Webhook)
	return p.err()
}

// MinPollInterval is the shortest interruption.poll_interval: IMDS throttles a client
// that asks much more often than this.
const MinPollInterval = 100 * time.Millisecond

// within reports whether path is dir or below it, both made clean first.
func within(path, dir string) bool {
	path, dir = filepath.Clean(path), filepath.Clean(dir)
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// validatePorts refuses a host port that two listeners would share: Jenkins' published
// ports among themselves and with the metrics listener, which binds first, so Docker
// would fail to publish Jenkins at every start.
func validatePorts(p *problems, c *Config) {
	type use struct{ key, ip string }
	used := map[string][]use{} // by port/proto
	add := func(key, ip string, port int, proto string) {
		at := fmt.Sprintf("%d/%s", port, proto)
		for _, u := range used[at] {
			if u.ip == "" || ip == "" || u.ip == ip {
				p.add(key, "host port %s is taken by %s too", at, u.key)
				return
			}
		}
		used[at] = append(used[at], use{key, ip})
	}
	if host, port, err := net.SplitHostPort(c.Metrics.ListenAddress); err == nil {
		if n, err := strconv.Atoi(port); err == nil && n > 0 {
			add("metrics.listen_address", unspecified(host), n, "tcp")
		}
	}
	for i, ps := range c.Jenkins.Ports {
		if pm, err := spec.ParsePort(ps); err == nil && pm.HostPort > 0 {
			add(fmt.Sprintf("jenkins.ports[%d]", i), unspecified(pm.HostIP), pm.HostPort, pm.Proto)
		}
	}
}

// unspecified is ip, or "" for an address on every interface.
func unspecified(ip string) string {
	if a := net.ParseIP(ip); ip == "" || (a != nil && a.IsUnspecified()) {
		return ""
	}
	return ip
}

// Names of the token in AWS: a Parameter Store name (with an optional :version or
// :label selector) or parameter ARN, and a Secrets Manager secret name or ARN.
var (
	ssmParameterName = regexp.MustCompile(`^(arn:aws(-cn|-us-gov|-iso|-iso-b)?:ssm:[a-z0-9-]+:\d{12}:parameter/[A-Za-z0-9_.\-/]+|/?[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*)(:[A-Za-z0-9_.\-]+)?$`)
	secretID         = regexp.MustCompile(`^(arn:aws(-cn|-us-gov|-iso|-iso-b)?:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+|[A-Za-z0-9/_+=.@-]+)$`)
)

// validateTokenSource checks the token keys: at most one source, well-formed names,
// and a user for whatever token there is.
func validateTokenSource(p *problems, j Jenkins) {
	var set []string
	for _, kv := range [][2]string{
		{"jenkins.api_token_file", j.APITokenFile},
		{"jenkins.api_token_ssm_parameter", j.APITokenSSMParameter},
		{"jenkins.api_token_secret_id", j.APITokenSecretID},
	} {
		if kv[1] != "" {
			set = append(set, kv[0])
		}
	}
	if len(set) > 1 {
		p.add(set[1], "is set together with %s: set exactly one source of the Jenkins API token", strings.Join(set[:len(set)-1], " and "))
	}
	if v := j.APITokenSSMParameter; v != "" {
		name := v
		if !strings.HasPrefix(v, "arn:") {
			name, _, _ = strings.Cut(v, ":")
		}
		switch {
		case len(v) > 2048 || !ssmParameterName.MatchString(v):
			p.add("jenkins.api_token_ssm_parameter", "%q is not a Parameter Store name (/path/name, optionally :version or :label) or parameter ARN", v)
		case strings.Contains(name, "/") && !strings.HasPrefix(name, "/") && !strings.HasPrefix(v, "arn:"):
			p.add("jenkins.api_token_ssm_parameter", "%q is a path without its leading /: write /%s", v, v)
		}
	}
	if v := j.APITokenSecretID; v != "" && (len(v) > 2048 || !secretID.MatchString(v)) {
		p.add("jenkins.api_token_secret_id", "%q is not a Secrets Manager secret name or ARN", v)
	}
	if (j.APITokenSSMParameter != "" || j.APITokenSecretID != "") && j.User == "" {
		p.add("jenkins.user", "is required with an API token from AWS: the token belongs to a Jenkins user")
	}
}

func validateWebhook(p *problems, w Webhook) {
	if w.URLFile != "" && !filepath.IsAbs(w.URLFile) {
		p.add("webhook.url_file", "must be an absolute path")
	}
	p.oneOf("webhook.format", w.Format, "slack", "json")
	p.positive("webhook.timeout", w.Timeout)
	if w.Timeout.D() > 30*time.Second {
		p.add("webhook.timeout", "%s is too long for one attempt: notifications must not outlive the two-minute warning (5s is usual)", w.Timeout.D())
	}
	if w.Attempts < 1 || w.Attempts > 5 {
		p.add("webhook.attempts", "%d is not between 1 and 5", w.Attempts)
	}
}

// WebhookURL reads the webhook URL from webhook.url_file, or else from the systemd
// credential webhook-url. An empty result means no webhook. The URL is a Secret: it
// never prints itself.
func (c *Config) WebhookURL() (Secret, string, error) {
	return readSecret(c.Webhook.URLFile, WebhookCredentialName, "webhook url", "webhook.url_file")
}

// readSecret reads a secret from path, or from the systemd credential name when path
// is empty; nothing found is no error.
func readSecret(path, credential, what, key string) (Secret, string, error) {
	if path == "" {
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return "", "", nil
		}
		path = filepath.Join(dir, credential)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return "", "", nil
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", path, fmt.Errorf("%s: %w (check %s or LoadCredential=%s)", what, err, key, credential)
	}
	v := strings.TrimSpace(string(data))
	if v == "" {
		return "", path, fmt.Errorf("%s: %s is empty", what, path)
	}
	return Secret(v), path, nil
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
	for _, kp := range [][2]string{{"jenkins.api_token_file", c.Jenkins.APITokenFile}, {"webhook.url_file", c.Webhook.URLFile}} {
		if kp[1] == "" {
			continue
		}
		if fi, err := os.Stat(kp[1]); err == nil && fi.Mode().Perm()&0o077 != 0 {
			out = append(out, fmt.Sprintf("%s %q holds a secret but is readable by others (mode %04o): chmod 600 it (or use the unit's LoadCredential=)",
				kp[0], kp[1], fi.Mode().Perm()))
		}
	}
	return out
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
//
// With jenkins.api_token_ssm_parameter or jenkins.api_token_secret_id set, the token
// comes from AWS (package secrets) and JenkinsToken returns no token and no error.
func (c *Config) JenkinsToken() (Secret, string, error) {
	if c.Jenkins.APITokenSSMParameter != "" || c.Jenkins.APITokenSecretID != "" {
		return "", "", nil
	}
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
