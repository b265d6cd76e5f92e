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
	"fmt"
	"log/slog"
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

// Runtime manages one named Jenkins container. Its methods may be called
// concurrently; each asks the daemon afresh, so a Runtime holds no state
// about the container that could go stale.
type Runtime struct {
	cli  *client.Client
	spec request
	hash string
	log  *slog.Logger
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
	return &Runtime{cli: cli, spec: s, hash: s.hash(), log: log.With("container", s.Name)}, nil
}

// Close releases the client's connections. The container is left as it is.
func (r *Runtime) Close() error {
	return r.cli.Close()
}

// Name is the container name.
func (r *Runtime) Name() string { return r.spec.Name }

// ConfigHash is the configuration hash stored in the LabelConfigHash label of
// the container this Runtime creates.
func (r *Runtime) ConfigHash() string { return r.hash }

// Ping checks that the daemon answers.
func (r *Runtime) Ping(ctx context.Context) error {
	if _, err := r.cli.Ping(ctx); err != nil {
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
		return false, fmt.Errorf("inspect image %s: %w", r.spec.Image, err)
	}
}

// Prepare makes the image available according to the pull policy: always
// pulls, if-missing pulls only an absent image, never fails on an absent one.
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
// configuration is started again unless its image is no longer the one the
// reference names. A same-named container without the managed label is never
// touched.
func (r *Runtime) Start(ctx context.Context) (adopted bool, err error) {
	info, err := r.cli.ContainerInspect(ctx, r.spec.Name)
	if err != nil && !cerrdefs.IsNotFound(err) {
		return false, fmt.Errorf("inspect container %s: %w", r.spec.Name, err)
	}
	if err == nil {
		if err := r.checkOwned(info); err != nil {
			return false, err
		}
		adopt, reuse, why := r.decide(ctx, info)
		if adopt {
			r.log.Info("adopting running container", "id", shortID(info.ID))
			return true, nil
		}
		if reuse {
			r.log.Info("starting existing container", "id", shortID(info.ID))
			if err := r.cli.ContainerStart(ctx, info.ID, container.StartOptions{}); err != nil {
				return false, fmt.Errorf("start container %s: %w", r.spec.Name, err)
			}
			return false, nil
		}
		r.log.Info("replacing container", "id", shortID(info.ID), "reason", why)
		if err := r.stopID(ctx, info.ID, r.spec.StopGrace); err != nil {
			return false, err
		}
		if err := r.removeID(ctx, info.ID); err != nil {
			return false, err
		}
	}
	id, err := r.create(ctx)
	if err != nil {
		return false, err
	}
	if err := r.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return false, fmt.Errorf("start container %s: %w", r.spec.Name, err)
	}
	r.log.Info("started container", "id", shortID(id), "image", r.spec.Image)
	return false, nil
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
func (r *Runtime) decide(ctx context.Context, info container.InspectResponse) (adopt, reuse bool, why string) {
	if info.Config.Labels[LabelConfigHash] != r.hash {
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
func (r *Runtime) create(ctx context.Context) (string, error) {
	s := r.spec
	labels := make(map[string]string, len(s.Labels)+2)
	for k, v := range s.Labels {
		labels[k] = v
	}
	labels[LabelManaged] = "true"
	labels[LabelConfigHash] = r.hash
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
	host := &container.HostConfig{
		Binds:         s.Binds,
		PortBindings:  s.bindings,
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
	}
	resp, err := r.cli.ContainerCreate(ctx, cfg, host, nil, nil, s.Name)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return "", fmt.Errorf("create container %s: image %s is not present: %w: run Prepare (jenkins.pull) first", s.Name, s.Image, err)
		}
		return "", fmt.Errorf("create container %s: %w", s.Name, err)
	}
	for _, w := range resp.Warnings {
		r.log.Warn("docker create warning", "warning", w)
	}
	return resp.ID, nil
}

// Stop stops the container with the given grace: SIGTERM, then SIGKILL when
// the grace runs out. If ctx has a deadline, the grace is shortened so that
// the kill happens before it. An absent or stopped container is not an error.
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
		return fmt.Errorf("stop container %s: %w", r.spec.Name, err)
	}
}

// Kill sends SIGKILL at once. It is the fence of a holder that can no longer
// renew its lease, so it does not wait for Jenkins to save anything. An absent
// or stopped container is not an error.
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
	return fmt.Errorf("kill container %s: %w", r.spec.Name, err)
}

// Running reports whether the container exists and is running.
func (r *Runtime) Running(ctx context.Context) (bool, error) {
	info, err := r.cli.ContainerInspect(ctx, r.spec.Name)
	if cerrdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("inspect container %s: %w", r.spec.Name, err)
	}
	return info.State != nil && info.State.Running, nil
}

// Wait blocks until the container is not running and returns its exit code;
// a container that is already stopped returns at once. It returns the context
// error when ctx ends first.
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
		return 0, fmt.Errorf("wait for container %s: %w", r.spec.Name, err)
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
	return fmt.Errorf("remove container %s: %w", r.spec.Name, err)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
