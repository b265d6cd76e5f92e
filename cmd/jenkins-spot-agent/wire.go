package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/metrics"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/secrets"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets"
)

// endpoints points the adapters somewhere other than AWS: simulate and the tests use
// emulators on loopback. The zero value means the real services.
type endpoints struct {
	IMDS        string
	AWS         string
	Credentials aws.CredentialsProvider
	// Secrets is the base URL of SSM and Secrets Manager (tests); empty keeps the
	// SDK's resolution, AWS_ENDPOINT_URL_SSM and AWS_ENDPOINT_URL_SECRETS_MANAGER included.
	Secrets string
}

// wiring is the set of real adapters built from the configuration.
type wiring struct {
	deps    agent.Deps
	runtime *container.Runtime
	imds    *imds.Client
	jenkins *jenkins.Client
	// token reads the Jenkins API token from SSM or Secrets Manager; nil when it
	// comes from a file or there is none.
	token *secrets.Token
}

// wire builds the real adapters. Only constructors run here: nothing is contacted.
func wire(cfg config.Config, token config.Secret, m *metrics.Metrics, ep endpoints, log *slog.Logger) (*wiring, error) {
	md := imds.New(imds.Options{
		Endpoint: ep.IMDS,
		Logger:   log,
		OnRequest: func(endpoint, result string) {
			if m == nil {
				return
			}
			m.IMDSRequest(endpoint, result)
			definite := result == "ok" || result == "not_found"
			if definite {
				m.IMDSSuccess(time.Now())
			}
			m.SetIMDSBlind(!definite)
		},
	})
	watcher := imds.NewWatcher(md, imds.WatchOptions{PollInterval: cfg.Interruption.PollInterval.D(), Logger: log})

	copts, err := containerOptions(cfg, log)
	if err != nil {
		return nil, err
	}
	rt, err := container.New(copts)
	if err != nil {
		return nil, &config.InvalidError{Problems: []string{"jenkins: " + err.Error()}}
	}
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
		return nil, err
	}
	var tok *secrets.Token
	if src != nil {
		tok = secrets.NewToken(src, log)
		jopts.TokenSource = tok.Get
	}
	jc, err := jenkins.New(jopts)
	if err != nil {
		return nil, &config.InvalidError{Problems: []string{"jenkins: " + err.Error()}}
	}

	// The lease may ask EC2 whether its holder is gone; that client is built with the
	// others once the region is known.
	var tc *targets.Client
	deps := agent.Deps{
		Metadata: md,
		Watcher:  watcher,
		Runtime:  rt,
		Jenkins:  jenkins.V1{Client: jc}, // until the agent takes Ready and []jenkins.Build
		NewMounter: func(id instance.Identity) (agent.Mounter, error) {
			return newMounter(cfg, id, log, occupantNames(rt))
		},
		NewLease: func(id instance.Identity, home string) (agent.Lease, error) {
			// The guard in the container expects this instance to hold the lease.
			rt.SetGuardHolder(id.InstanceID)
			opts := lease.Options{Dir: home, HolderID: id.InstanceID, TTL: cfg.Lease.TTL.D(), Logger: log}
			if cfg.Lease.TakeoverWhenHolderTerminated {
				opts.HolderTerminated = func(ctx context.Context, instanceID string) (bool, error) {
					if tc == nil {
						return false, fmt.Errorf("no EC2 client")
					}
					return tc.InstanceTerminated(ctx, instanceID)
				}
			}
			return lease.New(opts)
		},
		NewTargets: func(ctx context.Context, id instance.Identity) (agent.Targets, error) {
			c, err := newTargets(ctx, cfg, id, ep, log)
			tc = c
			return c, err
		},
	}
	if m != nil {
		deps.Metrics = m
	}
	return &wiring{deps: deps, runtime: rt, imds: md, jenkins: jc, token: tok}, nil
}

func containerOptions(cfg config.Config, log *slog.Logger) (container.Options, error) {
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
		Logger:          log,
		NoNewPrivileges: j.NoNewPrivileges,
		CapDrop:         j.CapDrop,
		CapAdd:          j.CapAdd,
		PidsLimit:       j.PidsLimit,
		LocalCache:      j.LocalCacheDir,
		CacheUID:        j.UID,
		CacheGID:        j.GID,
	}
	if j.Guard {
		exe, err := os.Executable()
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

// newMounter builds the EFS mounter for this instance. occupants, when not nil, names
// the containers that may have written into the bare mount point (see
// container.Runtime.Occupants), for the error that refuses to mount over them.
func newMounter(cfg config.Config, id instance.Identity, log *slog.Logger, occupants func(context.Context) ([]string, error)) (*efs.Mounter, error) {
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

// occupantNames lists the names of the containers that clash with Jenkins.
func occupantNames(rt *container.Runtime) func(context.Context) ([]string, error) {
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

func newTargets(ctx context.Context, cfg config.Config, id instance.Identity, ep endpoints, log *slog.Logger) (*targets.Client, error) {
	tgs := make([]targets.TargetGroup, 0, len(cfg.TargetGroups))
	for _, tg := range cfg.TargetGroups {
		tgs = append(tgs, targets.TargetGroup{ARN: tg.ARN, Port: int32(tg.Port)})
	}
	return targets.New(ctx, targets.Options{
		Region:        id.Region,
		TargetGroups:  tgs,
		Discover:      cfg.DiscoverTargetGroups,
		LifecycleHook: cfg.LifecycleHook,
		CallTimeout:   10 * time.Second,
		Endpoint:      ep.AWS,
		Credentials:   ep.Credentials,
		Logger:        log,
	})
}
