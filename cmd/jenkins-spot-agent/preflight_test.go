package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds/imdstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets/awstest"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// The world of the preflight and secrets tests: one instance in an Auto Scaling group
// with a termination hook, registered in one target group. The file system id differs
// from the end-to-end test's so that no name that test adds to /etc/hosts applies here.
const (
	pfInstance    = "i-0a1b2c3d4e5f60718"
	pfRegion      = "us-east-1"
	pfAZ          = "us-east-1b"
	pfFileSystem  = "fs-0badc0ffee0000001"
	pfTargetGroup = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/jenkins-pf/00112233445566ff"
	pfASG         = "jenkins-pf"
	pfHook        = "jenkins-pf-drain"
	pfUser        = "admin"

	// pfUnresolvable is an EFS name that cannot resolve and is never sent to a DNS
	// server: Go's resolver answers "no such host" for .onion names itself (RFC 7686),
	// so the failing DNS row is decided offline, at once.
	pfUnresolvable = pfFileSystem + ".efs.onion"
	// pfResolvable is an explicit efs.dns that resolves offline: an address literal
	// (a single-label name like localhost is refused by the configuration).
	pfResolvable = "127.0.0.1"
)

// pfWorld is the set of emulators a command runs against, with the environment that
// points the SDKs at them.
type pfWorld struct {
	imds  *imdstest.Server
	aws   *awstest.Server
	dir   string // short, so that socket paths stay under the 108-byte limit
	token string // the Jenkins API token written to tokenFile
	// tokenFile holds token; the config names it in jenkins.api_token_file.
	tokenFile string
	// awsSecret is the secret access key the double accepts, as put in the environment.
	awsSecret string
	// jenkinsPort is the host port of jenkins.ports; never bound by these tests, it
	// keeps the containers row clear of other tests' containers.
	jenkinsPort int
}

// pfNewWorld starts the IMDS emulator and the AWS double, writes a token file and
// points the environment at them. Docker is whatever DOCKER_HOST (or the default
// socket) says.
func pfNewWorld(t *testing.T) *pfWorld {
	t.Helper()
	dir, err := os.MkdirTemp("", "pf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	w := &pfWorld{dir: dir, token: "pf-token-" + testenv.RandomSuffix(t), jenkinsPort: 20000 + int(time.Now().UnixNano()%40000)}
	w.imds = imdstest.NewServer(instance.Identity{
		InstanceID:       pfInstance,
		AvailabilityZone: pfAZ,
		AZID:             "use1-az4",
		Region:           pfRegion,
		Market:           "spot",
	})
	t.Cleanup(w.imds.Close)
	w.aws = awstest.NewServer()
	t.Cleanup(w.aws.Close)
	w.aws.AddAutoScalingGroup(pfASG, []string{pfInstance}, []string{pfTargetGroup}, pfHook)

	w.tokenFile = filepath.Join(dir, "jenkins-token")
	pfWrite(t, w.tokenFile, w.token+"\n")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	creds, err := w.aws.Credentials().Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.awsSecret = creds.SecretAccessKey

	for k, v := range map[string]string{
		"AWS_EC2_METADATA_SERVICE_ENDPOINT":          w.imds.URL(),
		"AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2": w.aws.URL(),
		"AWS_ENDPOINT_URL_AUTO_SCALING":              w.aws.URL(),
		"AWS_ENDPOINT_URL_EC2":                       w.aws.URL(),
		"AWS_ACCESS_KEY_ID":                          creds.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY":                      creds.SecretAccessKey,
		"AWS_REGION":                                 pfRegion,
		// Nothing from the machine's own AWS setup may take part.
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_ENDPOINT_URL":            "",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "no-aws-credentials"),
		// run must not talk to a systemd that is not there.
		"NOTIFY_SOCKET":         "",
		"WATCHDOG_USEC":         "",
		"CREDENTIALS_DIRECTORY": "",
	} {
		t.Setenv(k, v)
	}
	return w
}

// pfConfig is the configuration of the world; efs.dns and efs.mount_program vary per test.
func (w *pfWorld) pfConfig(t *testing.T, dns, mountProgram, extra string) string {
	t.Helper()
	path := filepath.Join(w.dir, "config.yaml")
	pfWrite(t, path, fmt.Sprintf(`efs:
  file_system_id: %s
  mount_point: %s
  dns: %s
  mount_program: %s
  mount_timeout: 20s
jenkins:
  image: jenkins-spot-agent-pf-absent:%s
  pull: if-missing
  container_name: pf-%s
  ports: ["127.0.0.1:%d:8080"]
  url: http://127.0.0.1:1
  user: %s
  api_token_file: %s
lease:
  takeover_when_holder_terminated: true
target_groups:
  - arn: %s
    port: 8080
discover_target_groups: true
lifecycle_hook: %s
metrics:
  listen_address: ""
control_socket: %s
state_dir: %s
%s`, pfFileSystem, filepath.Join(w.dir, "home"), dns, mountProgram, testenv.RandomSuffix(t), testenv.RandomSuffix(t), w.jenkinsPort, pfUser, w.tokenFile,
		pfTargetGroup, pfHook, filepath.Join(w.dir, "run", "control.sock"), filepath.Join(w.dir, "state"), extra))
	return path
}

// pfRequireDocker needs the Docker Engine the environment points at: preflight checks
// it and its image store.
func pfRequireDocker(t *testing.T) {
	t.Helper()
	testenv.SkipShort(t, "needs Docker")
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = cli.Ping(ctx)
	}
	if err == nil {
		return
	}
	testenv.Missing(t, "Docker Engine not reachable: %v", err)
}

// pfTrue is a mount program that exists, for the mount helper row.
func pfTrue(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("true")
	if err != nil {
		t.Fatalf("no true program on PATH: %v", err)
	}
	return p
}

// pfRow is one row of the preflight table as printed.
type pfRow struct {
	name, result, detail, fix string
}

// pfRun runs one command in-process and returns its exit code and both outputs.
func pfRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut testenv.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	code := Main(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// pfTable parses the table preflight prints. Cells are found at the header's column
// offsets, counted in runes as text/tabwriter counts them.
func pfTable(t *testing.T, out string) (rows []pfRow, summary string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 3 {
		t.Fatalf("preflight printed no table:\n%s", out)
	}
	col := func(name string) int {
		i := strings.Index(lines[0], name)
		if i < 0 {
			t.Fatalf("header %q has no %s column", lines[0], name)
		}
		return len([]rune(lines[0][:i]))
	}
	result, detail, fix := col("RESULT"), col("DETAIL"), col("FIX")
	if !strings.HasPrefix(lines[0], "CHECK") {
		t.Fatalf("header %q does not start with CHECK", lines[0])
	}
	cell := func(r []rune, from, to int) string {
		if from >= len(r) {
			return ""
		}
		return strings.TrimSpace(string(r[from:min(to, len(r))]))
	}
	i := 1
	for ; i < len(lines) && lines[i] != ""; i++ {
		r := []rune(lines[i])
		rows = append(rows, pfRow{
			name:   cell(r, 0, result),
			result: cell(r, result, detail),
			detail: cell(r, detail, fix),
			fix:    cell(r, fix, len(r)),
		})
	}
	if i+2 != len(lines) {
		t.Fatalf("the table is not followed by exactly one blank line and a summary (a cell with a line break?):\n%s", out)
	}
	return rows, lines[i+1]
}

// pfFind returns the row whose name starts with prefix.
func pfFind(t *testing.T, rows []pfRow, prefix string) pfRow {
	t.Helper()
	for _, r := range rows {
		if strings.HasPrefix(r.name, prefix) {
			return r
		}
	}
	t.Fatalf("no row %q in %v", prefix, rows)
	return pfRow{}
}

// pfExpectedRows are the rows preflight prints for this world, in order.
var pfExpectedRows = []string{
	"configuration",
	"imdsv2 token and identity",
	"region",
	"aws credentials",
	"autoscaling:DescribeAutoScalingInstances",
	"autoscaling:DescribeAutoScalingGroups",
	"elasticloadbalancing:DescribeTargetHealth " + pfTargetGroup,
	"elasticloadbalancing:RegisterTargets " + pfTargetGroup,
	"elasticloadbalancing:DeregisterTargets " + pfTargetGroup,
	"autoscaling:CompleteLifecycleAction " + awstest.GroupARN(pfRegion, pfASG),
	"autoscaling:DescribeLifecycleHooks",
	"autoscaling:RecordLifecycleActionHeartbeat " + awstest.GroupARN(pfRegion, pfASG),
	"autoscaling:DetachInstances " + awstest.GroupARN(pfRegion, pfASG),
	"ec2:DescribeInstances",
	"efs dns name",
	"mount helper",
	"efs root access",
	"docker engine",
	"jenkins image",
	"other containers on the jenkins ports or home",
	"jenkins credentials",
	"state directory",
	"control socket directory",
}

func pfCheckNames(t *testing.T, rows []pfRow, want []string) {
	t.Helper()
	var got []string
	for _, r := range rows {
		got = append(got, r.name)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rows:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestPreflightAgainstEmulatorsReportsEachMissingPiece runs preflight where one
// permission is denied and the EFS name does not resolve: exactly those two rows fail,
// each with its fix, and the exit code is 1. With both put right, every row passes.
func TestPreflightAgainstEmulatorsReportsEachMissingPiece(t *testing.T) {
	pfRequireDocker(t)

	t.Run("one permission and the DNS name missing", func(t *testing.T) {
		w := pfNewWorld(t)
		w.aws.Deny("DeregisterTargets")
		cfg := w.pfConfig(t, pfUnresolvable, pfTrue(t), "")

		code, out, errOut := pfRun(t, "preflight", "--config", cfg, "--log-level", "debug")
		t.Logf("stdout:\n%s", out)
		if code != exitFailed {
			t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitFailed, errOut)
		}
		rows, summary := pfTable(t, out)
		pfCheckNames(t, rows, pfExpectedRows)

		var failed []string
		for _, r := range rows {
			switch r.result {
			case "FAIL":
				failed = append(failed, r.name)
			case "pass":
				if r.fix != "" {
					t.Errorf("passing row %q has a fix %q", r.name, r.fix)
				}
			default:
				t.Errorf("row %q: result %q is neither pass nor FAIL", r.name, r.result)
			}
		}
		wantFailed := []string{"elasticloadbalancing:DeregisterTargets " + pfTargetGroup, "efs dns name"}
		if strings.Join(failed, "|") != strings.Join(wantFailed, "|") {
			t.Errorf("failed rows %q, want %q", failed, wantFailed)
		}
		if want := fmt.Sprintf("%d of %d checks passed", len(rows)-2, len(rows)); summary != want {
			t.Errorf("summary %q, want %q", summary, want)
		}

		dereg := pfFind(t, rows, "elasticloadbalancing:DeregisterTargets")
		if !strings.Contains(dereg.fix, "elasticloadbalancing:DeregisterTargets") || !strings.Contains(dereg.fix, pfTargetGroup) {
			t.Errorf("DeregisterTargets fix %q does not name the action and the target group", dereg.fix)
		}
		if !strings.Contains(dereg.detail, "denied") {
			t.Errorf("DeregisterTargets detail %q does not say it was denied", dereg.detail)
		}
		dns := pfFind(t, rows, "efs dns name")
		if !strings.Contains(dns.fix, "mount target") || !strings.Contains(dns.fix, pfFileSystem) || !strings.Contains(dns.fix, pfAZ) {
			t.Errorf("DNS fix %q does not say to create a mount target for %s in %s", dns.fix, pfFileSystem, pfAZ)
		}
		if !strings.Contains(dns.detail, pfUnresolvable) {
			t.Errorf("DNS detail %q does not name %s", dns.detail, pfUnresolvable)
		}
		if r := pfFind(t, rows, "jenkins image"); !strings.Contains(r.detail, "absent") {
			t.Errorf("jenkins image detail %q: the image is absent and pulled at boot", r.detail)
		}
		if r := pfFind(t, rows, "jenkins credentials"); !strings.Contains(r.detail, w.tokenFile) {
			t.Errorf("jenkins credentials detail %q does not name the token file", r.detail)
		}

		// Proving the permission changed nothing: the instance is still registered.
		if st := w.aws.TargetState(pfTargetGroup, pfInstance); st != awstest.StateHealthy {
			t.Errorf("target state after preflight %q, want %q", st, awstest.StateHealthy)
		}
		if _, done := w.aws.LifecycleResult(pfASG, pfInstance); done {
			t.Error("preflight completed a lifecycle action")
		}
	})

	t.Run("everything in place", func(t *testing.T) {
		w := pfNewWorld(t)
		cfg := w.pfConfig(t, pfResolvable, pfTrue(t), "")

		code, out, errOut := pfRun(t, "preflight", "--config", cfg)
		t.Logf("stdout:\n%s", out)
		if code != exitOK {
			t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitOK, errOut)
		}
		rows, summary := pfTable(t, out)
		pfCheckNames(t, rows, pfExpectedRows)
		for _, r := range rows {
			if r.result != "pass" {
				t.Errorf("row %q: %s %s (fix: %s)", r.name, r.result, r.detail, r.fix)
			}
		}
		if want := fmt.Sprintf("%d of %d checks passed", len(rows), len(rows)); summary != want {
			t.Errorf("summary %q, want %q", summary, want)
		}
		if r := pfFind(t, rows, "efs dns name"); !strings.Contains(r.detail, pfResolvable+" → 127.0.0.1") {
			t.Errorf("DNS detail %q does not show the addresses", r.detail)
		}
		// The DeregisterTargets probe went to a port the instance is not on.
		calls := w.aws.CallsOf("DeregisterTargets")
		if len(calls) != 1 {
			t.Fatalf("%d DeregisterTargets calls, want 1", len(calls))
		}
		if p := calls[0].Params.Get("Targets.member.1.Port"); p == "" || p == "8080" {
			t.Errorf("DeregisterTargets probe on port %q; it must avoid the registered port 8080", p)
		}
	})
}

// TestPreflightTargetGroupsInAnotherRegion fails the AWS row when configured target
// groups are not in the instance's region; the table keeps one line per row even
// when the reason lists several groups.
func TestPreflightTargetGroupsInAnotherRegion(t *testing.T) {
	w := pfNewWorld(t)
	cfg := w.pfConfig(t, pfResolvable, pfTrue(t), "")
	west := []string{
		"arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/west-a/0011223344556677",
		"arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/west-b/8899aabbccddeeff",
	}
	text := strings.Replace(secRead(t, cfg), "target_groups:\n", "target_groups:\n  - arn: "+west[0]+"\n  - arn: "+west[1]+"\n", 1)
	pfWrite(t, cfg, text)

	code, out, errOut := pfRun(t, "preflight", "--config", cfg)
	t.Logf("stdout:\n%s", out)
	if code != exitFailed {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitFailed, errOut)
	}
	rows, _ := pfTable(t, out)
	r := pfFind(t, rows, "target groups")
	if r.result != "FAIL" || !strings.Contains(r.fix, "target_groups") {
		t.Fatalf("target groups row %+v: want FAIL with a fix in target_groups", r)
	}
	for _, x := range rows {
		if x.name == "aws credentials" {
			t.Errorf("an aws credentials row %+v: the credentials were never the problem", x)
		}
	}
	for _, arn := range west {
		if !strings.Contains(r.detail, arn) {
			t.Errorf("aws row detail %q does not name %s", r.detail, arn)
		}
	}
	if len(w.aws.Calls()) != 0 {
		t.Errorf("AWS was called with a refused target group list: %d calls", len(w.aws.Calls()))
	}
}

// TestPreflightDockerUnreachable fails the docker row and leaves out the image row,
// which cannot be checked without the engine.
func TestPreflightDockerUnreachable(t *testing.T) {
	w := pfNewWorld(t)
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(w.dir, "no-docker.sock"))
	cfg := w.pfConfig(t, pfResolvable, pfTrue(t), "")

	code, out, errOut := pfRun(t, "preflight", "--config", cfg)
	t.Logf("stdout:\n%s", out)
	if code != exitFailed {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitFailed, errOut)
	}
	rows, _ := pfTable(t, out)
	var want []string
	for _, n := range pfExpectedRows {
		if n != "jenkins image" && n != "other containers on the jenkins ports or home" {
			want = append(want, n)
		}
	}
	pfCheckNames(t, rows, want)
	for _, r := range rows {
		if (r.result == "FAIL") != (r.name == "docker engine") {
			t.Errorf("row %q: %s %s", r.name, r.result, r.detail)
		}
	}
	if r := pfFind(t, rows, "docker engine"); !strings.Contains(r.fix, "start Docker") {
		t.Errorf("docker fix %q does not say to start Docker", r.fix)
	}
}

// TestPreflightIMDSUnreachable fails the identity row with its fix; the checks that
// need the identity fail with that reason (AWS is not called), and the others (mount
// helper, Docker, credentials, local directories) still run, so that one run off EC2
// or with IMDS off shows everything else to fix.
func TestPreflightIMDSUnreachable(t *testing.T) {
	w := pfNewWorld(t)
	// A loopback port nobody listens on: connections are refused at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", closed)
	cfg := w.pfConfig(t, pfResolvable, pfTrue(t), "")

	code, out, errOut := pfRun(t, "preflight", "--config", cfg)
	t.Logf("stdout:\n%s", out)
	if code != exitFailed {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitFailed, errOut)
	}
	rows, summary := pfTable(t, out)
	for _, name := range []string{
		"configuration", "imdsv2 token and identity", "aws, target groups, EFS", "mount helper", "docker engine",
		"jenkins credentials", "state directory", "control socket directory",
	} {
		pfFind(t, rows, name) // the rows that need no identity are all there (the image rows need Docker)
	}
	id := pfFind(t, rows, "imdsv2")
	if id.result != "FAIL" || !strings.Contains(id.fix, "HttpTokens=required") {
		t.Errorf("identity row %+v: want FAIL with the metadata options fix", id)
	}
	if r := pfFind(t, rows, "aws, target groups"); r.result != "FAIL" || !strings.Contains(r.detail, "need the instance identity") {
		t.Errorf("row of the checks that need the identity %+v: want FAIL naming the identity", r)
	}
	failed := 0
	for _, r := range rows {
		if r.result == "FAIL" {
			failed++
		}
	}
	dockerFailed := pfFind(t, rows, "docker engine").result == "FAIL"
	if want := 2; failed != want && (!dockerFailed || failed != want+1) {
		t.Errorf("%d rows failed; want only the identity and what needs it (and Docker, if it is not here)", failed)
	}
	if want := fmt.Sprintf("%d of %d checks passed", len(rows)-failed, len(rows)); summary != want {
		t.Errorf("summary %q, want %q", summary, want)
	}
	if len(w.aws.Calls()) != 0 {
		t.Errorf("AWS was called without an identity: %d calls", len(w.aws.Calls()))
	}
}

// TestExitCodes checks the exit codes of the product contract and what each prints.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	pfWrite(t, bad, "efs:\n  file_system_id: fs-nothex\n")
	tokenFile := filepath.Join(dir, "token")
	pfWrite(t, tokenFile, "0123456789abcdef\n")
	noUser := filepath.Join(dir, "nouser.yaml")
	pfWrite(t, noUser, "efs:\n  file_system_id: fs-0123456789abcdef0\njenkins:\n  api_token_file: "+tokenFile+"\n")
	unknown := filepath.Join(dir, "unknown.yaml")
	pfWrite(t, unknown, "efs:\n  file_system_id: fs-0123456789abcdef0\n  mount_pont: /x\n")

	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		stdout     *regexp.Regexp
		stderrHas  string
		stderrNone bool
	}{
		{name: "invalid value", args: []string{"preflight", "--config", bad}, code: exitConfig, stderrHas: "efs.file_system_id"},
		{name: "unknown key", args: []string{"run", "--config", unknown}, code: exitConfig, stderrHas: "mount_pont"},
		{name: "missing file", args: []string{"preflight", "--config", filepath.Join(dir, "absent.yaml")}, code: exitConfig, stderrHas: "absent.yaml"},
		{name: "unknown command", args: []string{"frobnicate"}, code: exitUsage, stderrHas: `unknown command "frobnicate"`},
		{name: "no command", args: nil, code: exitUsage, stderrHas: "usage:"},
		{name: "help", args: []string{"--help"}, code: exitOK, stderrHas: "commands:"},
		{name: "unknown flag", args: []string{"preflight", "--no-such-flag"}, code: exitUsage, stderrHas: "no-such-flag"},
		{name: "bad log level", args: []string{"version", "--log-level", "loud"}, code: exitUsage, stderrHas: "--log-level"},
		{name: "migrate without --from", args: []string{"migrate", "--config", bad}, code: exitUsage, stderrHas: "--from"},
		// Refused by the Jenkins client's own check, named once, with the file to fix.
		{name: "token without its user", args: []string{"run", "--config", noUser}, code: exitConfig, stderrHas: "invalid " + noUser + ": jenkins: an API token needs its user"},
		// A stray argument would end the flags: the --config after it would be ignored.
		{name: "argument before a flag", args: []string{"run", "extra", "--config", unknown}, code: exitUsage, stderrHas: `unexpected argument "extra"`},
		{name: "argument after the flags", args: []string{"version", "extra"}, code: exitUsage, stderrHas: `unexpected argument "extra"`},
		{name: "simulate reads no configuration", args: []string{"simulate", "--config", bad}, code: exitUsage, stderrHas: "reads no configuration file"},
		{
			name: "version", args: []string{"version"}, code: exitOK, stderrNone: true,
			stdout: regexp.MustCompile(`^jenkins-spot-agent \S+ \(commit \S+, go\S+ \w+/\w+\)\n$`),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := pfRun(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tc.code, errOut)
			}
			if tc.stderrHas != "" && !strings.Contains(errOut, tc.stderrHas) {
				t.Errorf("stderr does not mention %q:\n%s", tc.stderrHas, errOut)
			}
			if tc.stderrNone && errOut != "" {
				t.Errorf("stderr not empty:\n%s", errOut)
			}
			if tc.stdout != nil && !tc.stdout.MatchString(out) {
				t.Errorf("stdout %q does not match %s", out, tc.stdout)
			}
		})
	}
}

func pfWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
