package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const minimal = "efs:\n  file_system_id: fs-0123456789abcdef0\n"

func TestMinimalFileTakesDefaults(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EFS.MountPoint != "/jenkins_home" || cfg.Jenkins.StopGrace.D() != 30*time.Second ||
		cfg.Interruption.PollInterval.D() != time.Second || cfg.Lease.TTL.D() != 30*time.Second ||
		!cfg.DiscoverTargetGroups || cfg.Jenkins.UID != 1000 {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

func TestFullFileParses(t *testing.T) {
	doc := `efs:
  file_system_id: fs-12345678
  mount_point: /srv/jh
  dns: regional
  mount_type: efs
  mount_timeout: 90s
  mount_program: /usr/local/bin/m
  expect_fstypes: [nfs4, tmpfs]
  mount_options: tls,iam,nosuid,nodev
  access_point: fsap-0123456789abcdef0
  mount_scope: systemd-run
jenkins:
  image: example/jenkins:1
  pull: never
  ports: ["127.0.0.1:8080:8080", "50000:50000/tcp"]
  env: {JAVA_OPTS: -Xmx2g}
  volumes: [/etc/casc.yaml:/casc.yaml:ro]
  url: https://127.0.0.1:8443
  stop_grace: 20s
lease:
  ttl: 45s
  takeover_when_holder_terminated: true
target_groups:
  - arn: arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/jenkins/0123456789abcdef
    port: 8080
discover_target_groups: false
lifecycle_hook: drain
interruption:
  poll_interval: 2s
  safety_margin: 10s
  on_rebalance: drain
  on_stop_signal: leave-running
metrics:
  listen_address: "127.0.0.1:9100"
`
	cfg, err := Parse("c.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EFS.AccessPoint != "fsap-0123456789abcdef0" || cfg.EFS.MountScope != "systemd-run" {
		t.Fatalf("efs keys parsed wrongly: %+v", cfg.EFS)
	}
	if cfg.EFS.DNS != "regional" || cfg.Jenkins.Env["JAVA_OPTS"] != "-Xmx2g" || cfg.TargetGroups[0].Port != 8080 ||
		cfg.Interruption.OnRebalance != "drain" || cfg.Lease.TTL.D() != 45*time.Second || cfg.DiscoverTargetGroups {
		t.Fatalf("parsed wrongly: %+v", cfg)
	}
}

func TestInvalidConfigNamesTheKey(t *testing.T) {
	cases := []struct {
		name, doc, want string
	}{
		{"missing fs id", "efs: {}\n", "efs.file_system_id: is required"},
		{"bad fs id", "efs: {file_system_id: fs-xyz}\n", "efs.file_system_id"},
		{"unknown key", minimal + "jenkins:\n  imgae: x\n", "jenkins.imgae (line 4) is not a known key; did you mean jenkins.image?"},
		{"unknown top key", minimal + "lifecycle: x\n", "lifecycle (line 3) is not a known key"},
		{"typo in a section", minimal + "interruption:\n  safety_margn: 10s\n", "interruption.safety_margn (line 4) is not a known key; did you mean interruption.safety_margin?"},
		{"typo in a list item", minimal + "target_groups:\n  - arn: arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/j/0123456789abcdef\n    prot: 8080\n", "target_groups[].prot (line 5) is not a known key; did you mean target_groups[].port?"},
		{"token inline", minimal + "jenkins:\n  api_token: x\n", "jenkins.api_token (line 4) is not a known key: secrets never sit in the file"},
		{"wrong type", minimal + "jenkins:\n  uid: one\n", "jenkins.uid (line 4): cannot unmarshal"},
		{"map for a string", minimal + "jenkins:\n  image:\n    name: x\n", "jenkins.image (line 5): cannot unmarshal !!map"},
		{"bare number duration", minimal + "lease:\n  ttl: 30\n", "is not a duration"},
		{"bad duration", minimal + "jenkins:\n  stop_grace: soon\n", "is not a duration"},
		{"margin over budget", minimal + "interruption:\n  safety_margin: 2m\n", "interruption.safety_margin"},
		{"margin plus grace over budget", minimal + "interruption:\n  safety_margin: 60s\njenkins:\n  stop_grace: 60s\n", "leaves nothing"},
		{"negative margin", minimal + "interruption:\n  safety_margin: -1s\n", "interruption.safety_margin: -1s must be positive"},
		{"zero margin", minimal + "interruption:\n  safety_margin: 0s\n", "the plan must end before the termination time"},
		{"ttl the lease refuses", minimal + "lease:\n  ttl: 3s\n", "lease.ttl: 3s is too short"},
		{"ttl too long", minimal + "lease:\n  ttl: 11m\n", "lease.ttl: 11m0s is too long"},
		{"one-letter container name", minimal + "jenkins:\n  container_name: j\n", "jenkins.container_name"},
		{"port out of range", minimal + "jenkins:\n  ports: [\"70000:8080\"]\n", "jenkins.ports[0]: \"70000:8080\": host port"},
		{"port range", minimal + "jenkins:\n  ports: [\"9000-9001:9000-9001\"]\n", "ranges"},
		{"bad image", minimal + "jenkins:\n  image: Jenkins/UPPER:x\n", "jenkins.image"},
		{"bad env name", minimal + "jenkins:\n  env: {A.B: x}\n", "jenkins.env.A.B"},
		{"volume over the home", minimal + "jenkins:\n  volumes: [\"/x:/var/jenkins_home\"]\n", "already the Jenkins home"},
		{"pull policy", minimal + "jenkins:\n  pull: sometimes\n", "jenkins.pull"},
		{"mount type", minimal + "  mount_type: nfs3\n", "efs.mount_type"},
		{"relative mount point", minimal + "  mount_point: jh\n", "efs.mount_point"},
		{"bad port", minimal + "jenkins:\n  ports: [\"80:80:80:80\"]\n", "jenkins.ports[0]"},
		{"bad volume", minimal + "jenkins:\n  volumes: [\"casc.yaml\"]\n", "jenkins.volumes[0]"},
		{"bad url", minimal + "jenkins:\n  url: 127.0.0.1:8080\n", "jenkins.url"},
		{"bad capability", minimal + "jenkins:\n  cap_add: [CHOWN, \"net admin\"]\n", "jenkins.cap_add[1]"},
		{"negative pids limit", minimal + "jenkins:\n  pids_limit: -1\n", "jenkins.pids_limit"},
		{"tiny pids limit", minimal + "jenkins:\n  pids_limit: 10\n", "too low for a JVM"},
		{"relative cache", minimal + "jenkins:\n  local_cache_dir: cache\n", "jenkins.local_cache_dir"},
		{"cache on EFS", minimal + "jenkins:\n  local_cache_dir: /jenkins_home/.cache\n", "local disk"},
		{"guard not a bool", minimal + "jenkins:\n  guard: sometimes\n", "cannot unmarshal"},
		{"short ttl", minimal + "lease:\n  ttl: 1s\n", "lease.ttl"},
		{"bad arn", minimal + "target_groups:\n  - arn: nope\n", "target_groups[0].arn"},
		{"on_stop_signal", minimal + "interruption:\n  on_stop_signal: ignore\n", "interruption.on_stop_signal"},
		{"listen", minimal + "metrics:\n  listen_address: 9877\n", "metrics.listen_address"},
		{"dns", minimal + "  dns: \"not a name\"\n", "efs.dns"},
		// Caught here, not at mount time: the helper and mountinfo spell names lowercase.
		{"dns in capitals", minimal + "  dns: EFS.Example.com\n", "efs.dns: \"EFS.Example.com\" is not a DNS hostname"},
		{"dns single label", minimal + "  dns: zone\n", "efs.dns"},
		{"access point with nfs4", minimal + "  access_point: fsap-0123456789abcdef0\n", "efs.access_point: needs mount_type efs"},
		{"malformed access point", minimal + "  mount_type: efs\n  access_point: fsap-1\n", "efs.access_point"},
		{"mount scope", minimal + "  mount_scope: cgroup\n", "efs.mount_scope"},
		{"option the agent sets", minimal + "  mount_type: efs\n  mount_options: tls,az=us-east-1a\n", "efs.mount_options: mount option az is set by the agent"},
		{"tls with nfs4", minimal + "  mount_options: nfsvers=4.1,tls\n", "efs.mount_options: mount option tls needs mount type efs"},
		{"spaces in options", minimal + "  mount_options: \"hard, nosuid\"\n", "efs.mount_options"},
		{"poll", minimal + "interruption:\n  poll_interval: 0s\n", "interruption.poll_interval"},
		{"poll too often", minimal + "interruption:\n  poll_interval: 1ms\n", "interruption.poll_interval: 1ms would poll IMDS so often"},
		{"mount point // is the root", minimal + "  mount_point: //\n", "efs.mount_point: \"//\" is the root directory"},
		{"mount point dot-dot to the root", minimal + "  mount_point: /jenkins_home/../\n", "is the root directory"},
		{"state on EFS", minimal + "state_dir: /jenkins_home/state\n", "state_dir: \"/jenkins_home/state\" is inside efs.mount_point"},
		{"control socket on EFS", minimal + "control_socket: /jenkins_home/ctl.sock\n", "control_socket: \"/jenkins_home/ctl.sock\" is inside efs.mount_point"},
		{"metrics on Jenkins' port", minimal + "metrics:\n  listen_address: 127.0.0.1:8080\n", "jenkins.ports[0]: host port 8080/tcp is taken by metrics.listen_address"},
		{"host port twice", minimal + "jenkins:\n  ports: [\"8080:8080\", \"8080:9090\"]\n", "jenkins.ports[1]: host port 8080/tcp is taken by jenkins.ports[0]"},
		{"metrics port published", minimal + "jenkins:\n  ports: [\"8080:8080\", \"9877:9877\"]\n", "jenkins.ports[1]: host port 9877/tcp is taken by metrics.listen_address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("site.yaml", []byte(tc.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			if !IsInvalid(err) {
				t.Fatalf("not an InvalidError: %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "site.yaml") {
				t.Fatalf("error %q does not name %q and the file", err, tc.want)
			}
		})
	}
}

// A jenkins.url that is refused is not echoed: with user:token@ in it, the error would
// print the token to the journal.
func TestBadJenkinsURLNeverPrintsIt(t *testing.T) {
	for _, u := range []string{"ftp://admin:11aabbccSECRETTOKEN@127.0.0.1:8080", "http://admin:11aabbccSECRETTOKEN@"} {
		_, err := Parse("site.yaml", []byte(minimal+"jenkins:\n  url: "+u+"\n"))
		if err == nil || !strings.Contains(err.Error(), "jenkins.url") {
			t.Fatalf("url %q: %v; want refused, naming jenkins.url", u, err)
		}
		if strings.Contains(err.Error(), "SECRETTOKEN") {
			t.Errorf("the error prints the token: %v", err)
		}
	}
}

// Ports on different addresses, or protocols, do not clash.
func TestPortsThatDoNotClash(t *testing.T) {
	for _, doc := range []string{
		minimal + "jenkins:\n  ports: [\"127.0.0.1:8080:8080\", \"10.0.0.5:8080:8080\"]\n",
		minimal + "jenkins:\n  ports: [\"8080:8080\", \"8080:8080/udp\"]\n",
		minimal + "metrics:\n  listen_address: 127.0.0.2:8080\njenkins:\n  ports: [\"127.0.0.1:8080:8080\"]\n",
		minimal + "metrics:\n  listen_address: \"\"\njenkins:\n  ports: [\"9877:9877\"]\n",
	} {
		if _, err := Parse("c.yaml", []byte(doc)); err != nil {
			t.Errorf("Parse(%q): %v", doc, err)
		}
	}
}

func TestEFSSettingsAccepted(t *testing.T) {
	for _, doc := range []string{
		minimal + "  dns: mount-target-ip\n",
		minimal + "  dns: mount-target-ip\n  mount_type: efs\n",
		minimal + "  dns: jenkins-efs.corp.example\n",
		minimal + "  mount_type: efs\n  mount_options: tls\n  access_point: fsap-0123456789abcdef0\n  mount_scope: none\n",
	} {
		if _, err := Parse("c.yaml", []byte(doc)); err != nil {
			t.Errorf("Parse(%q): %v", doc, err)
		}
	}
	d := Default()
	if !strings.HasSuffix(d.EFS.MountOptions, ",nosuid,nodev") || d.EFS.MountScope != "auto" || d.EFS.AccessPoint != "" {
		t.Errorf("efs defaults: %+v", d.EFS)
	}
}

// Unknown keys and wrong types do not hide the other problems of the file.
func TestUnknownKeysAndBadValuesReportedTogether(t *testing.T) {
	_, err := Parse("c", []byte("efs:\n  file_system_id: fs-XYZ\ninterruption:\n  safety_margn: 10s\n  safety_margin: -1s\njenkins:\n  uid: one\n"))
	for _, want := range []string{"efs.file_system_id", "interruption.safety_margn", "interruption.safety_margin: -1s", "jenkins.uid"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %s", err, want)
		}
	}
}

func TestAllProblemsReportedAtOnce(t *testing.T) {
	_, err := Parse("c", []byte("efs: {}\njenkins:\n  pull: x\n  stop_grace: 0s\n"))
	for _, key := range []string{"efs.file_system_id", "jenkins.pull", "jenkins.stop_grace"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("error %v lacks %s", err, key)
		}
	}
}

func TestMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !IsInvalid(err) || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("got %v", err)
	}
}

func TestTokenFromFileAndCredentials(t *testing.T) {
	dir := t.TempDir()
	cfg := Default()
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	if tok, _, err := cfg.JenkinsToken(); err != nil || tok != "" {
		t.Fatalf("no token configured: got %q %v", tok, err)
	}
	if err := os.WriteFile(filepath.Join(dir, TokenCredentialName), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	tok, path, err := cfg.JenkinsToken()
	if err != nil || tok.Reveal() != "s3cret" || path != filepath.Join(dir, TokenCredentialName) {
		t.Fatalf("credential: %q %q %v", tok.Reveal(), path, err)
	}
	if s := fmt.Sprint(tok); strings.Contains(s, "s3cret") {
		t.Fatalf("secret printed: %s", s)
	}
	cfg.Jenkins.APITokenFile = filepath.Join(dir, "missing")
	if _, _, err := cfg.JenkinsToken(); err == nil || !strings.Contains(err.Error(), "api_token_file") {
		t.Fatalf("missing token file: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Jenkins.APITokenFile = empty
	if _, _, err := cfg.JenkinsToken(); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty token file: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte("efs: {file_system_id: fs-12345678}\nlease: {ttl: 10s}\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f", data)
		if err == nil {
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("Parse accepted what Validate refuses: %v", verr)
			}
		} else if !IsInvalid(err) {
			t.Fatalf("error is not InvalidError: %v", err)
		}
	})
}

// The shipped example documents every key with its default: it must load, and it must
// say what Default says.
func TestPackagedExampleMatchesDefaults(t *testing.T) {
	cfg, err := Load("../../packaging/config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.EFS.FileSystemID = cfg.EFS.FileSystemID
	want.TargetGroups = cfg.TargetGroups
	want.LifecycleHook = cfg.LifecycleHook
	if fmt.Sprintf("%+v", cfg) != fmt.Sprintf("%+v", want) {
		t.Fatalf("example and defaults differ:\nexample  %+v\ndefaults %+v", cfg, want)
	}
}

func TestTokenSourceFromAWS(t *testing.T) {
	good := []string{
		"jenkins:\n  user: admin\n  api_token_ssm_parameter: /jenkins/api-token\n",
		"jenkins:\n  user: admin\n  api_token_ssm_parameter: jenkins-api-token\n",
		"jenkins:\n  user: admin\n  api_token_ssm_parameter: /jenkins/api-token:3\n",
		"jenkins:\n  user: admin\n  api_token_ssm_parameter: arn:aws:ssm:eu-west-1:123456789012:parameter/jenkins/api-token\n",
		"jenkins:\n  user: admin\n  api_token_secret_id: jenkins/api-token\n",
		"jenkins:\n  user: admin\n  api_token_secret_id: arn:aws:secretsmanager:eu-west-1:123456789012:secret:jenkins/api-token-AbCdEf\n",
	}
	for _, doc := range good {
		cfg, err := Parse("site.yaml", []byte(minimal+doc))
		if err != nil {
			t.Errorf("%q refused: %v", doc, err)
			continue
		}
		// The file and the credential directory are not read then.
		t.Setenv("CREDENTIALS_DIRECTORY", t.TempDir())
		if err := os.WriteFile(filepath.Join(os.Getenv("CREDENTIALS_DIRECTORY"), TokenCredentialName), []byte("from-file"), 0o600); err != nil {
			t.Fatal(err)
		}
		if tok, _, err := cfg.JenkinsToken(); tok != "" || err != nil {
			t.Errorf("%q: JenkinsToken = %v, %v; want nothing (the token comes from AWS)", doc, tok, err)
		}
	}
	bad := []struct{ doc, want string }{
		{"jenkins:\n  user: admin\n  api_token_file: /etc/t\n  api_token_ssm_parameter: /jenkins/t\n", "jenkins.api_token_ssm_parameter: is set together with jenkins.api_token_file"},
		{"jenkins:\n  user: admin\n  api_token_ssm_parameter: /jenkins/t\n  api_token_secret_id: t\n", "jenkins.api_token_secret_id: is set together with jenkins.api_token_ssm_parameter"},
		{"jenkins:\n  user: admin\n  api_token_file: /etc/t\n  api_token_ssm_parameter: /j/t\n  api_token_secret_id: t\n", "is set together with jenkins.api_token_file and jenkins.api_token_ssm_parameter"},
		{"jenkins:\n  user: admin\n  api_token_ssm_parameter: jenkins/api-token\n", "without its leading /"},
		{"jenkins:\n  user: admin\n  api_token_ssm_parameter: \"has space\"\n", "is not a Parameter Store name"},
		{"jenkins:\n  user: admin\n  api_token_secret_id: \"bad#id\"\n", "jenkins.api_token_secret_id"},
		{"jenkins:\n  api_token_ssm_parameter: /jenkins/t\n", "jenkins.user: is required with an API token from AWS"},
		{"jenkins:\n  api_token_secret_id: t\n", "jenkins.user: is required"},
	}
	for _, tc := range bad {
		_, err := Parse("site.yaml", []byte(minimal+tc.doc))
		if err == nil || !IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.doc, err, tc.want)
		}
	}
}

func TestWebhook(t *testing.T) {
	cfg, err := Parse("c", []byte(minimal+"webhook:\n  format: json\n  timeout: 2s\n  attempts: 2\n"))
	if err != nil || cfg.Webhook.Format != "json" || cfg.Webhook.Timeout.D() != 2*time.Second || cfg.Webhook.Attempts != 2 {
		t.Fatalf("parsed %+v, %v", cfg.Webhook, err)
	}
	for doc, want := range map[string]string{
		"webhook:\n  format: teams\n":          "webhook.format",
		"webhook:\n  timeout: 1m\n":            "webhook.timeout: 1m0s is too long",
		"webhook:\n  attempts: 0\n":            "webhook.attempts",
		"webhook:\n  url_file: relative\n":     "webhook.url_file: must be an absolute path",
		"webhook:\n  url: https://x.invalid\n": "webhook.url (line 4) is not a known key; it is a secret, so the file names where it is: webhook.url_file",
	} {
		if _, err := Parse("c", []byte(minimal+doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", doc, err, want)
		}
	}

	dir := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	if u, _, err := cfg.WebhookURL(); u != "" || err != nil {
		t.Fatalf("no webhook configured: %v %v", u, err)
	}
	const url = "https://hooks.example.invalid/services/T0/B0/secret-part"
	if err := os.WriteFile(filepath.Join(dir, WebhookCredentialName), []byte(url+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	u, path, err := cfg.WebhookURL()
	if err != nil || u.Reveal() != url || path != filepath.Join(dir, WebhookCredentialName) {
		t.Fatalf("from the credential: %v %q %v", u, path, err)
	}
	if strings.Contains(fmt.Sprint(u), "secret-part") {
		t.Fatal("the URL prints itself")
	}
	cfg.Webhook.URLFile = filepath.Join(dir, "missing")
	if _, _, err := cfg.WebhookURL(); err == nil || !strings.Contains(err.Error(), "webhook.url_file") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestContainerHardeningDefaultsAndOverrides(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	j := cfg.Jenkins
	if !j.Guard || !j.NoNewPrivileges || strings.Join(j.CapDrop, ",") != "ALL" ||
		strings.Join(j.CapAdd, ",") != strings.Join(DefaultCapAdd, ",") || j.PidsLimit != 8192 ||
		j.LocalCacheDir != "/var/cache/jenkins-spot-agent" {
		t.Fatalf("defaults: %+v", j)
	}
	cfg, err = Parse("c.yaml", []byte(minimal+"jenkins:\n  guard: false\n  no_new_privileges: false\n  cap_drop: []\n  cap_add: []\n  pids_limit: 0\n  local_cache_dir: \"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	j = cfg.Jenkins
	if j.Guard || j.NoNewPrivileges || len(j.CapDrop) != 0 || len(j.CapAdd) != 0 || j.PidsLimit != 0 || j.LocalCacheDir != "" {
		t.Fatalf("everything turned off, got %+v", j)
	}
	if DefaultCapAdd[0] != "CHOWN" {
		t.Fatal("a parse changed the shared default list")
	}
}

func TestDockerSocketVolumeWarns(t *testing.T) {
	for v, warn := range map[string]bool{
		"/var/run/docker.sock:/var/run/docker.sock": true,
		"/run/docker.sock:/var/run/docker.sock:ro":  true,
		"/var/run:/host/run":                        true,
		"/:/host:ro":                                true,
		"/etc/jenkins/casc.yaml:/casc.yaml:ro":      false,
		"/run/user:/x":                              false,
	} {
		cfg, err := Parse("c.yaml", []byte(minimal+fmt.Sprintf("jenkins:\n  volumes: [%q]\n", v)))
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		w := cfg.Warnings()
		if got := len(w) == 1 && strings.Contains(w[0], "Docker socket") && strings.Contains(w[0], "jenkins.volumes[0]"); got != warn {
			t.Errorf("%s: warnings %q, want a Docker socket warning: %v", v, w, warn)
		}
	}
}

// The guard needs a ttl it can work with; without it, the lease's own floor applies.
func TestGuardedTTL(t *testing.T) {
	if _, err := Parse("c", []byte(minimal+"lease:\n  ttl: 5s\n")); err == nil || !strings.Contains(err.Error(), "too short for jenkins.guard") {
		t.Fatalf("ttl 5s with the guard: %v", err)
	}
	if _, err := Parse("c", []byte(minimal+"lease:\n  ttl: 5s\njenkins:\n  guard: false\n")); err != nil {
		t.Fatalf("ttl 5s without the guard: %v", err)
	}
	if _, err := Parse("c", []byte(minimal+"lease:\n  ttl: 6s\n")); err != nil {
		t.Fatalf("ttl 6s with the guard: %v", err)
	}
}

// A secret in a file others can read is logged as dangerous at every load.
func TestReadableSecretFileWarns(t *testing.T) {
	dir := t.TempDir()
	for mode, warn := range map[os.FileMode]bool{0o600: false, 0o400: false, 0o640: true, 0o644: true} {
		path := filepath.Join(dir, fmt.Sprintf("token-%04o", mode))
		if err := os.WriteFile(path, []byte("0123456789abcdef\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		cfg, err := Parse("c.yaml", []byte(minimal+"jenkins:\n  user: admin\n  api_token_file: "+path+"\n"))
		if err != nil {
			t.Fatalf("%04o: %v", mode, err)
		}
		w := cfg.Warnings()
		if got := len(w) == 1 && strings.Contains(w[0], "jenkins.api_token_file") && strings.Contains(w[0], "chmod 600"); got != warn {
			t.Errorf("mode %04o: warnings %q, want a warning: %v", mode, w, warn)
		}
		if strings.Contains(strings.Join(w, " "), "0123456789abcdef") {
			t.Errorf("a warning holds the secret itself: %q", w)
		}
	}
}
