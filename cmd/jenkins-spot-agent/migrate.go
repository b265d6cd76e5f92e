package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/wiring"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/imds"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/migrate"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// migrateCommand copies an existing JENKINS_HOME (the old controller's) onto the EFS
// home. It mounts and verifies EFS like run does and holds the lease for the whole copy,
// so it never copies under a running Jenkins.
type migrateCommand struct {
	from     string
	to       string
	resume   bool
	noVerify bool
	holder   string
	wait     time.Duration
	workers  int
}

func (c *migrateCommand) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.from, "from", "", "the existing JENKINS_HOME to copy (required)")
	fs.StringVar(&c.to, "to", "", "copy into this directory instead of the configured EFS mount (staging; no mount check)")
	fs.BoolVar(&c.resume, "resume", false, "continue an interrupted copy into a non-empty home, skipping identical files")
	fs.BoolVar(&c.noVerify, "no-verify", false, "skip the final comparison of both trees")
	fs.StringVar(&c.holder, "holder", "", "lease holder id (default: this instance's id from IMDS, or the host name with --to)")
	fs.DurationVar(&c.wait, "wait", 0, "how long to wait for another holder to release the home (0: fail at once)")
	fs.IntVar(&c.workers, "workers", 0, "entries copied at once (0: chosen from the home's measured latency, 1 on a local disk, up to 128 on EFS)")
}

func (c *migrateCommand) run(ctx context.Context, e *env) error {
	if c.from == "" {
		return usageError{"--from DIR is required"}
	}
	if c.workers < 0 {
		return usageError{"--workers must be 0 (chosen from the measured latency) or more"}
	}
	if fi, err := os.Stat(c.from); err != nil || !fi.IsDir() {
		return fmt.Errorf("migrate: --from %s is not a readable directory", c.from)
	}
	cfg, err := e.loadConfig()
	if err != nil && c.to == "" {
		return err
	}
	home := c.to
	holder := c.holder
	if home == "" {
		ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
		id, err := imds.New(imds.Options{Endpoint: os.Getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT"), Logger: e.log}).Identity(ictx)
		cancel()
		if err != nil {
			return fmt.Errorf("migrate: %w (or pass --to DIR to copy into a plain directory)", err)
		}
		m, err := wiring.NewMounter(cfg, id, e.log, nil)
		if err != nil {
			return err
		}
		mctx, cancel := context.WithTimeout(ctx, cfg.EFS.MountTimeout.D())
		err = m.Mount(mctx)
		cancel()
		if err != nil {
			return fmt.Errorf("migrate: the EFS home is not mounted and verified: %w", err)
		}
		home = m.MountPoint()
		if holder == "" {
			holder = id.InstanceID
		}
	} else if err := os.MkdirAll(home, 0o755); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if holder == "" {
		holder, _ = os.Hostname()
	}
	// Copying keeps owners: on a home where root is squashed every chown, and the lease
	// itself, would fail with a bare EPERM. Only root can give files away at all.
	if os.Geteuid() == 0 {
		if err := efs.CheckRootAccess(ctx, home, cfg.Jenkins.UID, cfg.Jenkins.GID); err != nil {
			return fmt.Errorf("migrate: nothing copied: %w", err)
		}
	}
	// A holder id of its own: the local agent's lease (the instance id) is never adopted,
	// so a running Jenkins on this instance blocks the copy.
	holder += "/migrate"
	ttl := 30 * time.Second
	if cfg.Lease.TTL > 0 {
		ttl = cfg.Lease.TTL.D()
	}
	l, err := lease.New(lease.Options{Dir: home, HolderID: holder, TTL: ttl, Logger: e.log})
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, max(c.wait, time.Second))
	_, err = l.Acquire(actx, func(s status.LeaseState) {
		e.log.Warn("JENKINS_HOME is held by another controller", "holder", s.Holder, "expires", s.Expires)
	})
	cancel()
	if err != nil {
		return fmt.Errorf("migrate: cannot take the JENKINS_HOME lease (is Jenkins running? stop jenkins-spot-agent first): %w", err)
	}
	// The copy runs only while the lease is ours: renewals go on beside it, and a lease
	// lost, fenced or seen taken by another holder stops it at once.
	copyCtx, stopCopy := context.WithCancelCause(ctx)
	defer stopCopy(nil)
	holdCtx, stopHold := context.WithCancel(ctx)
	var watch sync.WaitGroup
	watch.Go(func() {
		err := l.Hold(holdCtx, func(context.Context) error {
			stopCopy(fmt.Errorf("%w: renewals of %s kept failing", errMigrateLeaseLost, l.RecordPath()))
			return nil
		})
		if err != nil {
			stopCopy(fmt.Errorf("%w: %v", errMigrateLeaseLost, err))
		}
	})
	watch.Go(func() { watchLease(holdCtx, l, holder, stopCopy) })
	defer func() {
		stopHold()
		watch.Wait()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := l.Release(rctx); err != nil {
			e.log.Error("releasing the lease after migrate", "err", err)
		}
	}()

	e.log.Info("migrating JENKINS_HOME", "from", c.from, "to", home, "resume", c.resume)
	rep, err := migrate.Copy(copyCtx, migrate.Options{
		From:     c.from,
		To:       home,
		Resume:   c.resume,
		Verify:   !c.noVerify,
		Exclude:  []string{efs.MarkerFile, lease.DirName},
		Workers:  c.workers,
		Progress: e.stderr,
		Logger:   e.log,
		Guard: func() error {
			if cause := context.Cause(copyCtx); cause != nil {
				return cause
			}
			if !l.Held() {
				return fmt.Errorf("%w: not renewed in time", errMigrateLeaseLost)
			}
			return nil
		},
	})
	if errors.Is(err, errMigrateLeaseLost) {
		return fmt.Errorf("%w; the copy stopped: another controller may be using the home. Make sure no Jenkins runs on it, then run migrate again with --resume", err)
	}
	if err != nil {
		return err // migrate.Copy's errors name the step and the fix
	}
	fmt.Fprintf(e.stdout, "migrated %d files, %d dirs, %d symlinks, %d hard links, %s in %s (%d already identical); %d workers for a %s round trip\n",
		rep.Files, rep.Dirs, rep.Symlinks, rep.Hardlinks, humanBytes(rep.Bytes), rep.Elapsed.Round(time.Millisecond), rep.Skipped,
		rep.Workers, rep.Latency.Round(time.Microsecond))
	return nil
}

// errMigrateLeaseLost stops a copy whose lease on the home is no longer ours.
var errMigrateLeaseLost = errors.New("the lease on JENKINS_HOME was lost during the copy")

// leaseCheckEvery is how often migrate reads the lease record during a copy: a holder
// that took the record over is noticed within this time, not only at the next renewal.
const leaseCheckEvery = time.Second

// watchLease reads the lease record every leaseCheckEvery until ctx ends, and stops the
// copy when the record names another holder or tenure than ours.
func watchLease(ctx context.Context, l *lease.Lease, holder string, stop context.CancelCauseFunc) {
	epoch := l.State().Epoch
	t := time.NewTicker(leaseCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, leaseCheckEvery)
		st, err := l.Peek(pctx)
		cancel()
		if err != nil {
			continue // a slow or failing read is the renewals' business (Hold fences)
		}
		if st.Holder != holder || st.Epoch != epoch {
			stop(fmt.Errorf("%w: %s now names %q (epoch %d), ours was %q (epoch %d)",
				errMigrateLeaseLost, l.RecordPath(), st.Holder, st.Epoch, holder, epoch))
			return
		}
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
