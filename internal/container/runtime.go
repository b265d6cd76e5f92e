// Package container runs the Jenkins container through the Docker Engine API.
//
// The agent, not dockerd, decides when Jenkins runs: the container is created
// with restart policy "no", so that after a reboot Jenkins never comes up on
// the bare local directory before the EFS mount is verified. The container
// carries a label with a hash of its configuration, which lets a restarted
// agent adopt its own running Jenkins instead of restarting it.
//
// Only Engine API features present in API 1.41 (Docker 20.10) are used.
package container

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

// pullReportInterval bounds how often pull progress is logged.
const pullReportInterval = 5 * time.Second

// stopMargin is kept between the daemon's SIGKILL and the caller's deadline,
// so that Stop returns with the container dead rather than abandoning a stop
// request that dockerd would keep waiting out while the caller moves on.
const stopMargin = 2 * time.Second

// ErrDaemonUnavailable means the Docker daemon could not be reached, or the
// connection to it dropped (dockerd died or is restarting). It says nothing about
// the container: ask again (Running) once the daemon answers. Every method wraps it;
// test with errors.Is, or, where this package is not imported (the agent), with
// errors.As for an error with an Unavailable() bool method that returns true.
var ErrDaemonUnavailable error = daemonUnavailable{}

type daemonUnavailable struct{}

func (daemonUnavailable) Error() string { return "docker daemon unavailable" }

// Unavailable marks the error for callers that do not import this package.
func (daemonUnavailable) Unavailable() bool { return true }

// Runtime manages one named Jenkins container. Its methods may be called
// concurrently; each asks the daemon afresh, so a Runtime holds no state
// about the container that could go stale.
type Runtime struct {
	cli *client.Client
	log *slog.Logger

	mu   sync.Mutex
	spec request // the guard holder may be set after New
	hash string  // of spec
}

// New validates opts and connects a Docker client to opts.Host (or
// DOCKER_HOST, or the default socket). It does not contact the daemon: use
// Ping for that.
func New(opts Options) (*Runtime, error) {
	s, err := validate(opts)
	if err != nil {
		return nil, err
	}
	clientOpts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if opts.Host != "" {
		clientOpts = append(clientOpts, client.WithHost(opts.Host))
	}
	cli, err := client.NewClientWithOpts(clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w: check DOCKER_HOST", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Runtime{cli: cli, spec: s, hash: s.hash(), log: log.With("container", s.Name)}
	r.warnDockerSocket()
	return r, nil
}

// warnDockerSocket says, loudly, that a volume hands Jenkins the Docker socket.
func (r *Runtime) warnDockerSocket() {
	if v := r.spec.DockerSocket; v != "" {
		r.log.Warn("SECURITY: jenkins.volumes mounts the Docker socket into the Jenkins container: "+
			"anyone who can run a job or script on this Jenkins is root on this instance and can reach its "+
			"instance role; use a separate build agent instead", "volume", v)
	}
}

// SetGuardHolder names the instance that must hold the lease for the guarded
// container to run (GuardOptions.Holder), once the identity is known. It changes the
// configuration hash. A Runtime with the guard on refuses to Start until a holder is
// set.
func (r *Runtime) SetGuardHolder(instanceID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spec.Guard.Holder = instanceID
	r.hash = r.spec.hash()
}

// current returns the spec and hash under the lock.
func (r *Runtime) current() (request, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spec, r.hash
}

// daemonGone reports whether err means the daemon is out of reach, as opposed to
// an answer from it (an API error).
func daemonGone(err error) bool {
	if err == nil {
		return false
	}
	if client.IsErrConnectionFailed(err) {
		return true
	}
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ENOENT) ||
		(errors.As(err, &ne) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded))
}

// fail wraps a failed call: what was being done, and ErrDaemonUnavailable when the
// daemon did not answer.
func (r *Runtime) fail(what string, err error) error {
	if daemonGone(err) {
		return fmt.Errorf("%s: %w: %w: is dockerd running? the agent asks again once it answers", what, ErrDaemonUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Close releases the client's connections. The container is left as it is.
func (r *Runtime) Close() error {
	return r.cli.Close()
}

// Name is the container name.
func (r *Runtime) Name() string { return r.spec.Name }

// ConfigHash is the configuration hash stored in the LabelConfigHash label of
// the container this Runtime creates.
func (r *Runtime) ConfigHash() string {
	_, h := r.current()
	return h
}

// Ping checks that the daemon answers. Errors wrap ErrDaemonUnavailable when it
// does not.
func (r *Runtime) Ping(ctx context.Context) error {
	if _, err := r.cli.Ping(ctx); err != nil {
		if daemonGone(err) {
			err = fmt.Errorf("%w: %w", ErrDaemonUnavailable, err)
		}
		return fmt.Errorf("docker ping %s: %w: is dockerd running and its socket reachable?", r.cli.DaemonHost(), err)
	}
	return nil
}

// ImagePresent reports whether the configured image is in the daemon's store.
func (r *Runtime) ImagePresent(ctx context.Context) (bool, error) {
	_, err := r.cli.ImageInspect(ctx, r.spec.Image)
	switch {
	case err == nil:
		return true, nil
	case cerrdefs.IsNotFound(err):
		return false, nil
	default:
		return false, r.fail("inspect image "+r.spec.Image, err)
	}
}

// Prepare makes the image available according to the pull policy: always
// pulls, if-missing pulls only an absent image, never fails on an absent one. It
// blocks on the pull (minutes for a first pull of the Jenkins image). Idempotent.
// Errors: an absent image with pull never, a failed pull, or the daemon
// unavailable (ErrDaemonUnavailable).
func (r *Runtime) Prepare(ctx context.Context) error {
	if r.spec.Pull != PullAlways {
		present, err := r.ImagePresent(ctx)
		if err != nil {
			return err
		}
		if present {
			return nil
		}
		if r.spec.Pull == PullNever {
			return fmt.Errorf("image %s is not present and jenkins.pull is never: load it (docker pull or docker load) or set jenkins.pull to if-missing", r.spec.Image)
		}
	}
	return r.pull(ctx)
}

func (r *Runtime) pull(ctx context.Context) error {
	start := time.Now()
	r.log.Info("pulling image", "image", r.spec.Image)
	rc, err := r.cli.ImagePull(ctx, r.spec.Image, image.PullOptions{})
	if err != nil {
		if daemonGone(err) {
			return r.fail("pull "+r.spec.Image, err)
		}
		return fmt.Errorf("pull %s: %w: check the registry is reachable and the name is right", r.spec.Image, err)
	}
	defer rc.Close()
	err = readPullStream(rc, pullReportInterval, time.Now, func(p pullProgress) {
		r.log.Info("pulling image", "image", r.spec.Image,
			"layers_done", p.LayersDone, "layers", p.Layers,
			"bytes", p.Bytes, "total_bytes", p.TotalBytes)
	})
	if err != nil {
		return fmt.Errorf("pull %s: %w", r.spec.Image, err)
	}
	r.log.Info("pulled image", "image", r.spec.Image, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// Start makes the configured container run and reports whether it adopted one
// that was already running with the same configuration (then nothing is
// restarted). A container of the same name with another configuration is
// stopped with the grace and replaced; a stopped one with the same
// configuration (after a crash, a stop, or a dockerd restart, which stops what
// ran) is started again unless its image is no longer the one the reference
// names. A same-named container without the managed label is never touched.
//
// It blocks on the daemon (inspect, and when needed stop, remove, create, start),
// not on Jenkins being ready. With the guard on it refuses to run until
// SetGuardHolder (or GuardOptions.Holder) named the holder. Errors wrap
// ErrDaemonUnavailable when the daemon does not answer; calling Start again then is
// safe.
func (r *Runtime) Start(ctx context.Context) (adopted bool, err error) {
	s, hash := r.current()
	if s.Guard.on() && s.Guard.Holder == "" {
		return false, fmt.Errorf("start container %s: the lease guard has no holder: set it (SetGuardHolder) once the instance identity is known", s.Name)
	}
	r.warnDockerSocket()
	info, err := r.cli.ContainerInspect(ctx, s.Name)
	if err != nil && !cerrdefs.IsNotFound(err) {
		return false, r.fail("inspect container "+s.Name, err)
	}
	if err == nil {
		if err := r.checkOwned(info); err != nil {
			return false, err
		}
		adopt, reuse, why := r.decide(ctx, info, hash)
		if adopt {
			r.log.Info("adopting running container", "id", shortID(info.ID))
			return true, nil
		}
		if reuse {
			if err := r.prepareCache(s); err != nil {
				return false, err
			}
			r.log.Info("starting existing container", "id", shortID(info.ID))
			if err := r.cli.ContainerStart(ctx, info.ID, container.StartOptions{}); err != nil {
				return false, r.fail("start container "+s.Name, err)
			}
			return false, nil
		}
		r.log.Info("replacing container", "id", shortID(info.ID), "reason", why)
		if err := r.stopID(ctx, info.ID, s.StopGrace); err != nil {
			return false, err
		}
		if err := r.removeID(ctx, info.ID); err != nil {
			return false, err
		}
	}
	if err := r.prepareCache(s); err != nil {
		return false, err
	}
	id, err := r.create(ctx, s, hash)
	if err != nil {
		return false, err
	}
	if err := r.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return false, r.fail("start container "+s.Name, err)
	}
	r.log.Info("started container", "id", shortID(id), "image", s.Image, "guard", s.Guard.on())
	return false, nil
}

// prepareCache makes the local cache directory and gives its war and plugins
// directories to the user Jenkins runs as. A bind-mount source that does not exist
// would be created by dockerd, owned by root, where Jenkins cannot write.
func (r *Runtime) prepareCache(s request) error {
	if s.LocalCache == "" {
		return nil
	}
	if err := os.MkdirAll(s.LocalCache, 0o755); err != nil {
		return fmt.Errorf("jenkins.local_cache_dir %s: %w", s.LocalCache, err)
	}
	// The agent's umask may be tight; Jenkins must be able to walk into the cache.
	if err := os.Chmod(s.LocalCache, 0o755); err != nil {
		return fmt.Errorf("jenkins.local_cache_dir %s: %w", s.LocalCache, err)
	}
	for _, sub := range []string{"war", "plugins"} {
		dir := filepath.Join(s.LocalCache, sub)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("jenkins.local_cache_dir %s: %w", s.LocalCache, err)
		}
		if err := os.Lchown(dir, s.CacheUID, s.CacheGID); err != nil {
			return fmt.Errorf("jenkins.local_cache_dir %s: give it to %d:%d (jenkins.uid, jenkins.gid): %w", dir, s.CacheUID, s.CacheGID, err)
		}
	}
	return nil
}

// checkOwned refuses containers the agent did not create: replacing them
// could destroy someone's work, adopting them could run Jenkins with a
// configuration nobody reviewed.
func (r *Runtime) checkOwned(info container.InspectResponse) error {
	if info.Config == nil || info.Config.Labels[LabelManaged] != "true" {
		return fmt.Errorf("a container named %s exists that this agent did not create; remove it or set jenkins.container_name", r.spec.Name)
	}
	return nil
}

// decide chooses between adopting a running container, starting a stopped one
// as it is, or replacing it (with the reason).
func (r *Runtime) decide(ctx context.Context, info container.InspectResponse, hash string) (adopt, reuse bool, why string) {
	if info.Config.Labels[LabelConfigHash] != hash {
		return false, false, "configuration changed"
	}
	st := info.State
	if st == nil {
		return false, false, "no state reported"
	}
	switch {
	case st.Paused, st.Restarting, st.Dead, st.Status == container.StateRemoving:
		return false, false, "state " + string(st.Status)
	case st.Running:
		return true, false, ""
	}
	// A stopped container is about to start anyway: if the reference now
	// names another image (a newer pull), start that one instead.
	img, err := r.cli.ImageInspect(ctx, r.spec.Image)
	if err != nil || img.ID != info.Image {
		return false, false, "image changed"
	}
	return false, true, ""
}

// create creates the container from the spec and returns its ID.
func (r *Runtime) create(ctx context.Context, s request, hash string) (string, error) {
	labels := make(map[string]string, len(s.Labels)+2)
	for k, v := range s.Labels {
		labels[k] = v
	}
	labels[LabelManaged] = "true"
	labels[LabelConfigHash] = hash
	grace := graceSeconds(s.StopGrace)
	cfg := &container.Config{
		Image:        s.Image,
		Cmd:          s.Cmd,
		Env:          s.Env,
		Labels:       labels,
		ExposedPorts: s.exposed,
		StopSignal:   "SIGTERM",
		StopTimeout:  &grace,
	}
	if s.Guard.on() {
		argv, err := r.imageCommand(ctx, s)
		if err != nil {
			return "", err
		}
		if err := checkStatic(s.Guard.Executable); err != nil {
			return "", fmt.Errorf("create container %s: guard executable: %w: it must be the agent's own static binary (CGO_ENABLED=0), or set jenkins.guard: false", s.Name, err)
		}
		// The guard runs the image's own command as its child; Cmd stays empty so
		// that dockerd adds nothing after it.
		cfg.Entrypoint = append(s.guardArgs(), argv...)
		cfg.Cmd = nil
	}
	host := &container.HostConfig{
		Binds:         s.Binds,
		PortBindings:  s.bindings,
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
		CapDrop:       s.CapDrop,
		CapAdd:        s.CapAdd,
	}
	if s.NoNewPrivileges {
		host.SecurityOpt = []string{"no-new-privileges:true"}
	}
	if s.PidsLimit > 0 {
		host.PidsLimit = &s.PidsLimit
	}
	resp, err := r.cli.ContainerCreate(ctx, cfg, host, nil, nil, s.Name)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return "", fmt.Errorf("create container %s: image %s is not present: %w: run Prepare (jenkins.pull) first", s.Name, s.Image, err)
		}
		return "", r.fail("create container "+s.Name, err)
	}
	for _, w := range resp.Warnings {
		r.log.Warn("docker create warning", "warning", w)
	}
	return resp.ID, nil
}

// checkStatic makes sure path is an executable the container can run whatever its
// image: an ELF file with no program interpreter (no dynamic loader needed).
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked", path)
		}
	}
	return nil
}

// imageCommand is what the container would run without the guard: the image's
// entrypoint followed by Options.Cmd, or else by the image's command.
func (r *Runtime) imageCommand(ctx context.Context, s request) ([]string, error) {
	img, err := r.cli.ImageInspect(ctx, s.Image)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil, fmt.Errorf("create container %s: image %s is not present: %w: run Prepare (jenkins.pull) first", s.Name, s.Image, err)
		}
		return nil, r.fail("inspect image "+s.Image, err)
	}
	var argv []string
	cmd := s.Cmd
	if img.Config != nil {
		argv = slices.Clone(img.Config.Entrypoint)
		if len(cmd) == 0 {
			cmd = img.Config.Cmd
		}
	}
	argv = append(argv, cmd...)
	if len(argv) == 0 {
		return nil, fmt.Errorf("create container %s: image %s has neither ENTRYPOINT nor CMD: nothing for the guard to run", s.Name, s.Image)
	}
	return argv, nil
}

// Stop stops the container with the given grace: SIGTERM, then SIGKILL when
// the grace runs out. If ctx has a deadline, the grace is shortened so that
// the kill happens before it. It blocks until the container has stopped.
// Idempotent: an absent or stopped container is not an error. Errors: the daemon
// unavailable (ErrDaemonUnavailable), or ctx ended first.
func (r *Runtime) Stop(ctx context.Context, grace time.Duration) error {
	return r.stopID(ctx, r.spec.Name, grace)
}

func (r *Runtime) stopID(ctx context.Context, id string, grace time.Duration) error {
	secs := graceSeconds(grace)
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl) - stopMargin; left < time.Duration(secs)*time.Second {
			// Round down: a grace cut to the deadline must not be stretched past it.
			secs = int(max(left, 0) / time.Second)
		}
	}
	start := time.Now()
	err := r.cli.ContainerStop(ctx, id, container.StopOptions{Timeout: &secs})
	switch {
	case err == nil:
		r.log.Info("stopped container", "grace", time.Duration(secs)*time.Second, "duration", time.Since(start).Round(time.Millisecond))
		return nil
	case cerrdefs.IsNotFound(err):
		return nil
	default:
		return r.fail("stop container "+r.spec.Name, err)
	}
}

// Kill sends SIGKILL at once. It is the fence of a holder that can no longer
// renew its lease, so it does not wait for Jenkins to save anything. It blocks on
// the daemon only. Idempotent: an absent or stopped container is not an error.
// Errors: the daemon unavailable (ErrDaemonUnavailable).
func (r *Runtime) Kill(ctx context.Context) error {
	err := r.cli.ContainerKill(ctx, r.spec.Name, "SIGKILL")
	if err == nil || cerrdefs.IsNotFound(err) {
		return nil
	}
	if cerrdefs.IsConflict(err) {
		// "is not running": check rather than trust the message text.
		running, ierr := r.Running(ctx)
		if ierr == nil && !running {
			return nil
		}
	}
	return r.fail("kill container "+r.spec.Name, err)
}

// Running reports whether the container exists and is running. It asks the
// daemon once; an absent container is false, not an error. Errors wrap
// ErrDaemonUnavailable when the daemon does not answer: the container's state is
// then unknown, not "stopped".
func (r *Runtime) Running(ctx context.Context) (bool, error) {
	info, err := r.cli.ContainerInspect(ctx, r.spec.Name)
	if cerrdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, r.fail("inspect container "+r.spec.Name, err)
	}
	return info.State != nil && info.State.Running, nil
}

// Wait blocks until the container is not running and returns its exit code;
// a container that is already stopped returns at once. It returns the context
// error when ctx ends first. When the connection to the daemon drops (dockerd
// killed or restarting) it returns at once with an error wrapping
// ErrDaemonUnavailable: the container may still run (live-restore) or have been
// stopped by the returning daemon; ask Running once the daemon answers again.
func (r *Runtime) Wait(ctx context.Context) (exitCode int64, err error) {
	resC, errC := r.cli.ContainerWait(ctx, r.spec.Name, container.WaitConditionNotRunning)
	select {
	case res := <-resC:
		if res.Error != nil && res.Error.Message != "" {
			return res.StatusCode, fmt.Errorf("wait for container %s: %s", r.spec.Name, res.Error.Message)
		}
		return res.StatusCode, nil
	case err := <-errC:
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, r.fail("wait for container "+r.spec.Name, err)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Remove removes the container, killing it if it runs. An absent container is
// not an error.
func (r *Runtime) Remove(ctx context.Context) error {
	return r.removeID(ctx, r.spec.Name)
}

func (r *Runtime) removeID(ctx context.Context, id string) error {
	err := r.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true})
	if err == nil || cerrdefs.IsNotFound(err) {
		return nil
	}
	return r.fail("remove container "+r.spec.Name, err)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
