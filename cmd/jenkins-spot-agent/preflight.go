package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/wiring"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/secrets"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets"
)

// preflightCommand checks everything run needs, with calls that change nothing, and
// prints one row per check with the fix for each failure.
type preflightCommand struct {
	timeout time.Duration
}

func (c *preflightCommand) flags(fs *flag.FlagSet) {
	fs.DurationVar(&c.timeout, "timeout", 60*time.Second, "time allowed for all checks")
}

type check = targets.Check

// errPreflight is returned when a check failed; the table says which.
var errPreflight = errors.New("preflight: some checks failed")

func (c *preflightCommand) run(ctx context.Context, e *env) error {
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	rows := preflight(ctx, cfg, wiring.Endpoints{IMDS: os.Getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")}, e)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tDETAIL\tFIX")
	failed := 0
	for _, r := range rows {
		res := "pass"
		if !r.OK {
			res = "FAIL"
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", tableCell(r.Name), res, tableCell(r.Detail), tableCell(r.Fix))
	}
	tw.Flush()
	fmt.Fprintf(e.stdout, "\n%d of %d checks passed\n", len(rows)-failed, len(rows))
	if failed > 0 {
		return errPreflight
	}
	return nil
}

// tableCell keeps a table cell on its line: joined errors hold line breaks, and a tab
// would start a new column.
func tableCell(s string) string {
	return strings.NewReplacer("\r\n", "; ", "\n", "; ", "\t", " ").Replace(s)
}

// preflight runs every check; a check that depends on a failed one is reported as failed
// with the reason, not skipped silently.
func preflight(ctx context.Context, cfg config.Config, ep wiring.Endpoints, e *env) []check {
	var rows []check
	add := func(name string, err error, detail, fix string) {
		r := check{Name: name, OK: err == nil, Detail: detail}
		if err != nil {
			r.Detail = err.Error()
			r.Fix = fix
		}
		rows = append(rows, r)
	}

	token, tokenPath, tokErr := cfg.JenkinsToken()
	w, err := wiring.New(cfg, token, nil, ep, e.log)
	if err != nil {
		add("configuration", err, "", "fix the configuration")
		return rows
	}
	add("configuration", nil, e.configPath, "")

	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	id, idErr := w.IMDS.Identity(ictx)
	cancel()
	add("imdsv2 token and identity", idErr, fmt.Sprintf("instance %s in %s", id.InstanceID, id.AvailabilityZone),
		"set the launch template's metadata options HttpEndpoint=enabled, HttpTokens=required; run on the host, not in a container (hop limit 1)")
	if idErr == nil {
		rows = append(rows, instanceChecks(ctx, cfg, id, ep, e)...)
	} else {
		// What needs the identity fails with that reason; the rest is still checked.
		add("aws, target groups, EFS", errors.New("not checked: they need the instance identity from IMDS (above)"), "", "fix IMDS first")
		rows = append(rows, mountHelperRow(cfg))
	}

	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	dockerErr := w.Docker.Ping(dctx)
	add("docker engine", dockerErr, "reachable", "install and start Docker (systemctl enable --now docker)")
	if dockerErr == nil {
		present, err := w.Docker.ImagePresent(dctx)
		detail := cfg.Jenkins.Image + " present"
		switch {
		case err != nil:
		case !present && cfg.Jenkins.Pull == "never":
			err = fmt.Errorf("%s is absent and jenkins.pull is never", cfg.Jenkins.Image)
		case !present:
			detail = cfg.Jenkins.Image + " absent; pulled at boot (pull: " + cfg.Jenkins.Pull + ")"
		}
		add("jenkins image", err, detail, "docker pull the image, or set jenkins.pull to if-missing")
		rows = append(rows, occupantsRow(dctx, cfg, w))
	}
	cancel()

	switch {
	case w.Token != nil:
		tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := w.Token.Source().Read(tctx)
		cancel()
		add("jenkins credentials", err, "token from "+w.Token.Source().String(), tokenFix(err))
	case tokErr != nil:
		add("jenkins credentials", tokErr, "", "write the API token to jenkins.api_token_file, or LoadCredential=jenkins-api-token in the unit")
	case token == "" && cfg.Jenkins.User != "":
		add("jenkins credentials", fmt.Errorf("jenkins.user %s has no API token", cfg.Jenkins.User), "", "set jenkins.api_token_file or LoadCredential=jenkins-api-token")
	case token == "":
		add("jenkins credentials", nil, "none configured: quiet-down uses the crumb flow", "")
	default:
		add("jenkins credentials", nil, "token from "+tokenPath, "")
	}

	add("state directory", writable(cfg.StateDir), cfg.StateDir, "create it and make it writable by root (StateDirectory= in the unit)")
	add("control socket directory", writable(filepath.Dir(cfg.ControlSocket)), filepath.Dir(cfg.ControlSocket), "create it (RuntimeDirectory= in the unit)")
	return rows
}

// instanceChecks are the checks that need the instance identity: its region, AWS
// credentials and permissions, the target groups, the EFS server and root access.
func instanceChecks(ctx context.Context, cfg config.Config, id instance.Identity, ep wiring.Endpoints, e *env) []check {
	var rows []check
	add := func(name string, err error, detail, fix string) {
		r := check{Name: name, OK: err == nil, Detail: detail}
		if err != nil {
			r.Detail = err.Error()
			r.Fix = fix
		}
		rows = append(rows, r)
	}
	var regionErr error
	if id.Region == "" {
		regionErr = errors.New("IMDS gave no region")
	}
	add("region", regionErr, id.Region, "check placement/region in IMDS")

	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	tc, tErr := wiring.NewTargets(tctx, cfg, id, ep, e.log)
	if tErr != nil {
		// The configured target groups do not fit this instance (another region), or
		// the SDK's configuration does not load: credentials are not the problem, and
		// no call can be proven.
		add("target groups", tErr, "", "list only target groups of region "+id.Region+" in target_groups, or fix the AWS configuration the detail names")
	} else {
		tErr = tc.Credentials(tctx)
		add("aws credentials", tErr, "instance role credentials", "attach an instance profile with packaging/iam-policy.json to the instance")
	}
	if tErr == nil {
		if err := tc.Discover(tctx, id); err != nil {
			add("target group discovery", err, "", "add autoscaling:DescribeAutoScalingInstances and DescribeAutoScalingGroups to the instance role")
		}
		rows = append(rows, tc.CheckPermissions(tctx, id)...)
		if cfg.Lease.TakeoverWhenHolderTerminated {
			rows = append(rows, tc.CheckInstanceState(tctx, id))
		}
	}
	cancel()

	rows = append(rows, efsServerRow(ctx, cfg, id, e), mountHelperRow(cfg), efsRootAccessRow(ctx, cfg, id, e))

	return rows
}

// tokenFix says what to change when the token cannot be read from AWS.
func tokenFix(err error) string {
	switch {
	case errors.Is(err, secrets.ErrNotFound):
		return "create the SecureString parameter or secret in the instance's region, or fix jenkins.api_token_ssm_parameter / api_token_secret_id"
	case errors.Is(err, secrets.ErrAccessDenied):
		return "grant ssm:GetParameter or secretsmanager:GetSecretValue on it to the instance role (packaging/iam-policy.json)"
	case errors.Is(err, secrets.ErrDecrypt):
		return "grant kms:Decrypt on the customer managed key to the instance role (aws/ssm needs none)"
	case errors.Is(err, secrets.ErrUnusable):
		return "store the Jenkins API token alone, as plain text"
	}
	return "check the route to the SSM / Secrets Manager endpoint and the instance role"
}

// mountHelperRow is the check of mountHelper.
func mountHelperRow(cfg config.Config) check {
	detail, err := mountHelper(cfg)
	if err != nil {
		return check{
			Name: "mount helper", Detail: err.Error(),
			Fix: "install nfs-common (Debian/Ubuntu) or nfs-utils (Amazon Linux); amazon-efs-utils for mount_type efs; systemd-run (systemd) for efs.mount_scope",
		}
	}
	return check{Name: "mount helper", OK: true, Detail: detail}
}

// mountHelper checks that the mount program, the kernel-side helper for the type, and
// systemd-run when the mount runs in a scope, exist. It returns what it checked.
func mountHelper(cfg config.Config) (string, error) {
	detail := cfg.EFS.MountProgram + " -t " + cfg.EFS.MountType
	if _, err := exec.LookPath(cfg.EFS.MountProgram); err != nil {
		return detail, fmt.Errorf("%s not found", cfg.EFS.MountProgram)
	}
	if cfg.EFS.MountProgram == "mount" {
		helper := "/sbin/mount." + cfg.EFS.MountType
		if _, err := os.Stat(helper); err != nil {
			return detail, fmt.Errorf("%s not found", helper)
		}
	}
	scoped := cfg.EFS.MountScope == efs.ScopeSystemdRun
	if cfg.EFS.MountScope == efs.ScopeAuto && cfg.EFS.MountType == efs.TypeEFS {
		fi, err := os.Stat("/run/systemd/system")
		scoped = err == nil && fi.IsDir()
	}
	if scoped {
		detail = "systemd-run --scope " + detail
		if _, err := exec.LookPath("systemd-run"); err != nil {
			return detail, errors.New("systemd-run not found: amazon-efs-utils' tunnel would run in the agent's cgroup, and a restart of the agent would kill it under a running Jenkins")
		}
	}
	return detail, nil
}

// efsServerRow checks what the mount goes by: the EFS DNS name, or for efs.dns
// mount-target-ip this zone's mount target through DescribeMountTargets. With mount
// type efs and a name that does not resolve, it looks the mount target up to say
// which way out there is.
func efsServerRow(ctx context.Context, cfg config.Config, id instance.Identity, e *env) check {
	fs, az := cfg.EFS.FileSystemID, id.AvailabilityZone
	mountTargetFix := func(err error) string {
		switch {
		case errors.Is(err, efs.ErrAccessDenied):
			return "add elasticfilesystem:DescribeMountTargets on the file system to the instance role (packaging/iam-policy.json)"
		case errors.Is(err, efs.ErrFileSystemNotFound):
			return "check efs.file_system_id: no such file system in " + id.Region
		default:
			return fmt.Sprintf("create a mount target for %s in %s, or wait until it is available", fs, az)
		}
	}
	lookup := func() (efs.MountTarget, error) {
		c, err := efs.NewMountTargetClient(efs.MountTargetClientOptions{Region: id.Region, Logger: e.log})
		if err != nil {
			return efs.MountTarget{}, err
		}
		lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		return c.MountTarget(lctx, fs, az)
	}
	if cfg.EFS.DNS == efs.DNSModeMountTargetIP {
		t, err := lookup()
		if err != nil {
			return check{Name: "efs mount target", Detail: err.Error(), Fix: mountTargetFix(err)}
		}
		return check{Name: "efs mount target", OK: true, Detail: fmt.Sprintf("%s %s in %s (DescribeMountTargets)", t.ID, t.IP, az)}
	}

	name, err := efs.DNSName(cfg.EFS.DNS, fs, az, id.Region)
	dnsFix := fmt.Sprintf("create a mount target for %s in %s and enable DNS hostnames in the VPC (new mount targets take up to 90 s), or set efs.dns: mount-target-ip", fs, az)
	if err != nil {
		return check{Name: "efs dns name", Detail: err.Error(), Fix: dnsFix}
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	addrs, err := net.DefaultResolver.LookupHost(dctx, name)
	cancel()
	if err == nil && len(addrs) == 0 {
		// An empty answer mounts nothing either: the mounter waits on it too.
		err = fmt.Errorf("lookup %s: no addresses", name)
	}
	if err == nil {
		return check{Name: "efs dns name", OK: true, Detail: name + " → " + strings.Join(addrs, ",")}
	}
	if _, byID := efs.FileSystemName(name, fs); cfg.EFS.MountType == efs.TypeEFS && byID {
		// Given the id, amazon-efs-utils may look the mount target up itself, but only
		// with botocore installed and ec2:DescribeAvailabilityZones granted, which
		// nothing here can prove; the agent's own lookup needs neither.
		t, lerr := lookup()
		if lerr == nil {
			return check{
				Name:   "efs dns name",
				Detail: fmt.Sprintf("%s does not resolve (%v); mount target %s %s exists in %s", name, err, t.ID, t.IP, az),
				Fix: fmt.Sprintf("set efs.dns: mount-target-ip, so that the agent mounts %s itself; or rely on amazon-efs-utils' own fallback (botocore on the instance, ec2:DescribeAvailabilityZones for the role); or %s",
					t.IP, dnsFix),
			}
		}
		err = fmt.Errorf("%w; no mount target to fall back to either: %w", err, lerr)
	}
	return check{Name: "efs dns name", Detail: err.Error(), Fix: dnsFix}
}

// efsRootAccessRow proves, on a home that is mounted and verified already, that root
// may give files to the Jenkins user; a home not mounted yet is checked by run.
func efsRootAccessRow(ctx context.Context, cfg config.Config, id instance.Identity, e *env) check {
	row := check{Name: "efs root access"}
	m, err := wiring.NewMounter(cfg, id, e.log, nil)
	if err != nil {
		row.Detail, row.Fix = err.Error(), "fix the efs section of the configuration"
		return row
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err = m.CheckRootAccess(rctx)
	switch {
	case err == nil:
		row.OK, row.Detail = true, fmt.Sprintf("root may give files on %s to %d:%d", m.MountPoint(), cfg.Jenkins.UID, cfg.Jenkins.GID)
	case errors.Is(err, efs.ErrNotMounted):
		row.OK, row.Detail = true, m.MountPoint()+" is not mounted yet: run checks it when it mounts the file system"
	case errors.Is(err, efs.ErrNoMarker):
		row.OK, row.Detail = true, m.MountPoint()+" is mounted but has never been verified by the agent (no marker yet): run checks it when it verifies the mount"
	case errors.Is(err, efs.ErrRootSquashed):
		row.Detail, row.Fix = err.Error(), efs.RootSquashFix(cfg.Jenkins.UID, cfg.Jenkins.GID)
	default:
		row.Detail, row.Fix = err.Error(), "check what is mounted at "+m.MountPoint()+" (the detail says what verification found)"
	}
	return row
}

// occupantsRow fails when another container publishes a Jenkins host port or
// bind-mounts the home: a Jenkins left by an old compose file (restart: always) comes
// up on the bare local directory at boot and takes the agent's ports.
func occupantsRow(ctx context.Context, cfg config.Config, w *wiring.Wiring) check {
	row := check{Name: "other containers on the jenkins ports or home"}
	occ, err := w.Docker.Occupants(ctx)
	if err != nil {
		row.Detail, row.Fix = err.Error(), "check that dockerd answers (docker ps -a)"
		return row
	}
	if len(occ) == 0 {
		row.OK, row.Detail = true, "none besides "+cfg.Jenkins.ContainerName
		return row
	}
	var desc, names []string
	for _, o := range occ {
		desc = append(desc, o.String())
		names = append(names, o.Name)
	}
	row.Detail = strings.Join(desc, "; ")
	row.Fix = "remove them (docker rm -f " + strings.Join(names, " ") + ") and the compose file or unit that starts them: only the agent starts Jenkins, on the verified mount"
	return row
}

// writable checks that dir exists (or can be made) and takes a file.
func writable(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".preflight-*")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}
