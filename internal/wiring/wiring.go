// Package wiring is the one composition root: it builds the agent's adapters from the
// configuration. `run`, `simulate`, `preflight`, `migrate` and the tests all wire through
// it and differ only in Endpoints: where IMDS and AWS answer, and what stands in for EFS
// and Docker on a machine that has neither.
package wiring

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs/efstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/metrics"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/secrets"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets"
)

// Endpoints points the adapters somewhere other than AWS and the instance's own EFS and
// Docker. The zero value means the real services, as `run` uses them.
type Endpoints struct {
	// IMDS is the metadata service's base URL; empty: the SDK's (169.254.169.254, or
	// AWS_EC2_METADATA_SERVICE_ENDPOINT).
	IMDS string
	// AWS is one base URL for ELBv2, Auto Scaling and EC2 (simulate's double); empty
	// keeps the SDK's resolution, AWS_ENDPOINT_URL_<SERVICE> included.
	AWS string
	// Credentials replace the SDK's credential chain (the doubles' test keys).
	Credentials aws.CredentialsProvider
	// Secrets is the base URL of SSM and Secrets Manager (tests).
	Secrets string
	// Home, when set, is a local directory that stands in for the EFS mount: it is
	// "mounted" and verified through the same marker, without root or NFS.
	Home string
	// HomeHost names the simulated host whose "mount" of Home this is: an agent
	// restarted with the same HomeHost finds the home mounted, another host does not.
	HomeHost string
	// Command replaces the image's command (simulate runs the Jenkins double in it).
	Command []string
	// Runtime replaces the Docker runtime (simulate without Docker).
	Runtime agent.Runtime
	// WrapRuntime wraps the runtime the agent drives (fault scenarios).
	WrapRuntime func(agent.Runtime) agent.Runtime
	// WrapLease wraps the lease the agent holds (simulate observes it).
	WrapLease func(agent.Lease) agent.Lease
	// GuardExecutable is the static binary the container's guard runs from; empty:
	// this executable.
	GuardExecutable string
	// CallTimeout bounds each AWS call; zero: 10 s.
	CallTimeout time.Duration
}

// Wiring is the set of adapters built from the configuration.
type Wiring struct {
	// Deps is what the agent drives.
	Deps agent.Deps
	// Docker is the Docker runtime, nil when Endpoints.Runtime replaced it.
	Docker *container.Runtime
	// IMDS is the metadata client, for preflight.
	IMDS *imds.Client
	// Jenkins is the controller's client, for preflight.
	Jenkins *jenkins.Client
	// Token reads the Jenkins API token from SSM or Secrets Manager; nil when it comes
	// from a file or there is none.
	Token *secrets.Token
}

// New builds the adapters. Only constructors run here: nothing is contacted. m may be
// nil (preflight, migrate).
func New(cfg config.Config, token config.Secret, m *metrics.Metrics, ep Endpoints, log *slog.Logger) (*Wiring, error) {
	md := imds.New(imds.Options{Endpoint: ep.IMDS, Logger: log, OnRequest: imdsRecorder(m)})
	watcher := imds.NewWatcher(md, imds.WatchOptions{PollInterval: cfg.Interruption.PollInterval.D(), Logger: log})
	w := &Wiring{IMDS: md}

	rt := ep.Runtime
	if rt == nil {
		copts, err := ContainerOptions(cfg, ep, log)
		if err != nil {
			return nil, err
		}
		d, err := container.New(copts)
		if err != nil {
			return nil, invalid("jenkins", err)
		}
		w.Docker, rt = d, d
	}
	if ep.WrapRuntime != nil {
		rt = ep.WrapRuntime(rt)
	}
	jc, tok, err := newJenkins(cfg, token, ep, md, log)
	if err != nil {
		return nil, err
	}
	w.Jenkins, w.Token = jc, tok

	// The lease may ask EC2 whether its holder is gone; that client is built with the
	// others once the region is known.
	var tc *targets.Client
	w.Deps = agent.Deps{
		Metadata: md,
		Watcher:  watcher,
		Runtime:  rt,
		Jenkins:  jc,
		NewMounter: func(id instance.Identity) (agent.Mounter, error) {
			if ep.Home != "" {
				return efstest.NewDirOn(ep.Home, cfg.EFS.FileSystemID, ep.HomeHost), nil
			}
			var occupants func(context.Context) ([]string, error)
			if w.Docker != nil {
				occupants = OccupantNames(w.Docker)
			}
			return NewMounter(cfg, id, log, occupants)
		},
		NewLease: func(id instance.Identity, home string) (agent.Lease, error) {
			if w.Docker != nil {
				// The guard in the container expects this instance to hold the lease.
				w.Docker.SetGuardHolder(id.InstanceID)
			}
			l, err := NewLease(cfg, id, home, func(ctx context.Context, instanceID string) (bool, error) {
				if tc == nil {
					return false, fmt.Errorf("no EC2 client")
				}
				return tc.InstanceTerminated(ctx, instanceID)
			}, log)
			if err != nil {
				return nil, err
			}
			if ep.WrapLease != nil {
				return ep.WrapLease(l), nil
			}
			return l, nil
		},
		NewTargets: func(ctx context.Context, id instance.Identity) (agent.Targets, error) {
			c, err := NewTargets(ctx, cfg, id, ep, log)
			tc = c
			return c, err
		},
	}
	if m != nil {
		w.Deps.Metrics = m
	}
	return w, nil
}

// imdsRecorder counts IMDS requests and their outcomes.
func imdsRecorder(m *metrics.Metrics) func(endpoint, result string) {
	return func(endpoint, result string) {
		if m == nil {
			return
		}
		m.IMDSRequest(endpoint, result)
		definite := result == "ok" || result == "not_found"
		if definite {
			m.IMDSSuccess(time.Now())
		}
		m.SetIMDSBlind(!definite)
	}
}

// newJenkins builds the controller's client, with the API token read from SSM or
// Secrets Manager when configured.
func newJenkins(cfg config.Config, token config.Secret, ep Endpoints, md *imds.Client, log *slog.Logger) (*jenkins.Client, *secrets.Token, error) {
	jopts := jenkins.Options{URL: cfg.Jenkins.URL, User: cfg.Jenkins.User, Token: token.Reveal(), Logger: log}
	// Building the SDK configuration reads files and the environment, no network.
	src, err := secrets.FromConfig(context.Background(), cfg.Jenkins, secrets.Options{
		Endpoint:    ep.Secrets,
		Credentials: ep.Credentials,
		RegionFrom: func(ctx context.Context) (string, error) {
			id, err := md.Identity(ctx)
			return id.Region, err
		},
		Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	var tok *secrets.Token
	if src != nil {
		tok = secrets.NewToken(src, log)
		jopts.TokenSource = tok.Get
	}
	jc, err := jenkins.New(jopts)
	if err != nil {
		return nil, nil, invalid("jenkins", err)
	}
	return jc, tok, nil
}

// ContainerOptions is the Jenkins container the configuration describes.
func ContainerOptions(cfg config.Config, ep Endpoints, log *slog.Logger) (container.Options, error) {
	j := cfg.Jenkins
	opts := container.Options{
		Image:           j.Image,
		Pull:            j.Pull,
		Name:            j.ContainerName,
		HomeHost:        cfg.EFS.MountPoint,
		HomeContainer:   j.HomeInContainer,
		Ports:           j.Ports,
		Env:             j.Env,
		Volumes:         j.Volumes,
		StopGrace:       j.StopGrace.D(),
		Cmd:             ep.Command,
		Logger:          log,
		NoNewPrivileges: j.NoNewPrivileges,
		CapDrop:         j.CapDrop,
		CapAdd:          j.CapAdd,
		PidsLimit:       j.PidsLimit,
		LocalCache:      j.LocalCacheDir,
		CacheUID:        j.UID,
		CacheGID:        j.GID,
	}
	if ep.Home != "" {
		opts.HomeHost = ep.Home
	}
	if j.Guard {
		exe := ep.GuardExecutable
		var err error
		if exe == "" {
			exe, err = os.Executable()
		}
		if err == nil {
			exe, err = filepath.EvalSymlinks(exe)
		}
		if err != nil {
			return container.Options{}, fmt.Errorf("jenkins.guard: cannot find this executable to run as the guard: %w (or set jenkins.guard: false)", err)
		}
		// The holder is this instance's id, known once the identity is read
		// (SetGuardHolder in NewLease).
		opts.Guard = container.GuardOptions{
			Executable: exe,
			Record:     filepath.Join(lease.DirName, lease.RecordName),
			ClockSkew:  lease.DefaultClockSkew,
		}
	}
	return opts, nil
}

// NewLease builds the lease on the home for this instance. terminated, used only with
// lease.takeover_when_holder_terminated, asks EC2 whether a holder is gone.
func NewLease(cfg config.Config, id instance.Identity, home string, terminated func(context.Context, string) (bool, error), log *slog.Logger) (*lease.Lease, error) {
	opts := lease.Options{Dir: home, HolderID: id.InstanceID, TTL: cfg.Lease.TTL.D(), StateDir: cfg.StateDir, Logger: log}
	if cfg.Lease.TakeoverWhenHolderTerminated {
		opts.HolderTerminated = terminated
	}
	return lease.New(opts)
}

// NewMounter builds the EFS mounter for this instance. occupants, when not nil, names
// the containers that may have written into the bare mount point (see
// container.Runtime.Occupants), for the error that refuses to mount over them.
func NewMounter(cfg config.Config, id instance.Identity, log *slog.Logger, occupants func(context.Context) ([]string, error)) (*efs.Mounter, error) {
	name, err := efs.DNSName(cfg.EFS.DNS, cfg.EFS.FileSystemID, id.AvailabilityZone, id.Region)
	if err != nil {
		return nil, err
	}
	var lookup efs.MountTargetLookup
	if cfg.EFS.DNS == efs.DNSModeMountTargetIP {
		c, err := efs.NewMountTargetClient(efs.MountTargetClientOptions{Region: id.Region, Logger: log})
		if err != nil {
			return nil, err
		}
		lookup = c
	}
	return efs.New(efs.Options{
		FileSystemID:     cfg.EFS.FileSystemID,
		MountPoint:       cfg.EFS.MountPoint,
		DNSName:          name,
		AvailabilityZone: id.AvailabilityZone,
		MountTargets:     lookup,
		AccessPoint:      cfg.EFS.AccessPoint,
		Type:             cfg.EFS.MountType,
		MountOptions:     cfg.EFS.MountOptions,
		Timeout:          cfg.EFS.MountTimeout.D(),
		Program:          cfg.EFS.MountProgram,
		Scope:            cfg.EFS.MountScope,
		ExpectFSTypes:    cfg.EFS.ExpectFSTypes,
		OwnerUID:         cfg.Jenkins.UID,
		OwnerGID:         cfg.Jenkins.GID,
		Occupants:        occupants,
		Logger:           log,
	})
}

// OccupantNames lists the names of the containers that clash with Jenkins.
func OccupantNames(rt *container.Runtime) func(context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		occ, err := rt.Occupants(ctx)
		if err != nil {
			return nil, err
		}
		names := make([]string, 0, len(occ))
		for _, o := range occ {
			names = append(names, o.Name)
		}
		return names, nil
	}
}

// NewTargets builds the ELBv2 and Auto Scaling client for this instance's region.
func NewTargets(ctx context.Context, cfg config.Config, id instance.Identity, ep Endpoints, log *slog.Logger) (*targets.Client, error) {
	tgs := make([]targets.TargetGroup, 0, len(cfg.TargetGroups))
	for _, tg := range cfg.TargetGroups {
		tgs = append(tgs, targets.TargetGroup{ARN: tg.ARN, Port: int32(tg.Port)})
	}
	callTimeout := ep.CallTimeout
	if callTimeout == 0 {
		callTimeout = 10 * time.Second
	}
	return targets.New(ctx, targets.Options{
		Region:             id.Region,
		TargetGroups:       tgs,
		Discover:           cfg.DiscoverTargetGroups,
		LifecycleHook:      cfg.LifecycleHook,
		RequestReplacement: cfg.Interruption.RequestReplacement,
		CallTimeout:        callTimeout,
		Endpoint:           ep.AWS,
		Credentials:        ep.Credentials,
		Logger:             log,
	})
}

// invalid is a configuration error of section from an adapter's own check, named once.
func invalid(section string, err error) error {
	msg := err.Error()
	if !strings.HasPrefix(msg, section+":") && !strings.HasPrefix(msg, section+".") {
		msg = section + ": " + msg
	}
	return &config.InvalidError{Problems: []string{msg}}
}
