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
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/targets"
)

// endpoints points the adapters somewhere other than AWS: simulate and the tests use
// emulators on loopback. The zero value means the real services.
type endpoints struct {
	IMDS        string
	AWS         string
	Credentials aws.CredentialsProvider
}

// wiring is the set of real adapters built from the configuration.
type wiring struct {
	deps    agent.Deps
	runtime *container.Runtime
	imds    *imds.Client
	jenkins *jenkins.Client
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
			if result == "ok" || result == "not_found" {
				m.IMDSSuccess(time.Now())
			}
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
	jc, err := jenkins.New(jenkins.Options{URL: cfg.Jenkins.URL, User: cfg.Jenkins.User, Token: token.Reveal(), Logger: log})
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
		Jenkins:  jc,
		NewMounter: func(id instance.Identity) (agent.Mounter, error) {
			return newMounter(cfg, id, log)
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
	return &wiring{deps: deps, runtime: rt, imds: md, jenkins: jc}, nil
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

func newMounter(cfg config.Config, id instance.Identity, log *slog.Logger) (*efs.Mounter, error) {
	name, err := efs.DNSName(cfg.EFS.DNS, cfg.EFS.FileSystemID, id.AvailabilityZone, id.Region)
	if err != nil {
		return nil, err
	}
	return efs.New(efs.Options{
		FileSystemID:  cfg.EFS.FileSystemID,
		MountPoint:    cfg.EFS.MountPoint,
		DNSName:       name,
		Type:          cfg.EFS.MountType,
		MountOptions:  cfg.EFS.MountOptions,
		Timeout:       cfg.EFS.MountTimeout.D(),
		Program:       cfg.EFS.MountProgram,
		ExpectFSTypes: cfg.EFS.ExpectFSTypes,
		Logger:        log,
	})
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
