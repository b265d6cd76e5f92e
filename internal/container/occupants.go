package container

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/container"
	dmount "github.com/docker/docker/api/types/mount"
	"github.com/docker/go-connections/nat"
)

// Occupant is a container other than the agent's own that would clash with the
// Jenkins container: it publishes one of Jenkins' host ports, or bind-mounts the home.
// A Jenkins left by an old compose file (restart: always) is one: at boot dockerd
// starts it on the bare local mount point, and the agent's Jenkins then cannot bind
// its ports.
type Occupant struct {
	// Name is the container name, without Docker's leading slash.
	Name string
	// ID is the short container id.
	ID string
	// Image is the image it was created from.
	Image string
	// State is its state: created, running, exited...
	State string
	// Restart is its restart policy: no, always, unless-stopped, on-failure.
	Restart string
	// Ports are the clashing host ports, as "8080/tcp".
	Ports []string
	// Binds are its bind-mount sources that are the home or lie inside it.
	Binds []string
}

// String describes the occupant for an operator: name, state, restart policy and clash.
func (o Occupant) String() string {
	var what []string
	if len(o.Ports) > 0 {
		what = append(what, "publishes "+strings.Join(o.Ports, ", "))
	}
	if len(o.Binds) > 0 {
		what = append(what, "bind-mounts "+strings.Join(o.Binds, ", "))
	}
	return fmt.Sprintf("%s (%s, restart %s; %s)", o.Name, o.State, o.Restart, strings.Join(what, "; "))
}

// Occupants lists, through the Engine API, every container (running or not) other
// than the one named jenkins.container_name that publishes a configured Jenkins host
// port (same port and protocol, on any address) or bind-mounts the home
// (efs.mount_point) or a directory inside it. It changes nothing.
func (r *Runtime) Occupants(ctx context.Context) ([]Occupant, error) {
	ours := hostPorts(r.spec.bindings)
	home := path.Clean(r.spec.HomeHost)
	list, err := r.cli.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var out []Occupant
	for _, c := range list {
		name := ""
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		if name == r.spec.Name {
			continue
		}
		info, err := r.cli.ContainerInspect(ctx, c.ID)
		if err != nil {
			// Removed in between: it occupies nothing any more.
			continue
		}
		o := Occupant{Name: name, ID: shortID(c.ID), Image: c.Image, State: c.State, Restart: "no"}
		if info.HostConfig != nil {
			if p := string(info.HostConfig.RestartPolicy.Name); p != "" {
				o.Restart = p
			}
			for _, hp := range hostPorts(info.HostConfig.PortBindings) {
				if slices.Contains(ours, hp) && !slices.Contains(o.Ports, hp) {
					o.Ports = append(o.Ports, hp)
				}
			}
		}
		for _, src := range bindSources(info) {
			if (src == home || strings.HasPrefix(src, home+"/")) && !slices.Contains(o.Binds, src) {
				o.Binds = append(o.Binds, src)
			}
		}
		if len(o.Ports) > 0 || len(o.Binds) > 0 {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b Occupant) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// hostPorts returns the fixed host ports of bindings as "PORT/PROTO"; a binding
// without a host port (Docker picks one) clashes with nothing.
func hostPorts(bindings nat.PortMap) []string {
	var out []string
	for p, bs := range bindings {
		for _, b := range bs {
			if b.HostPort == "" || b.HostPort == "0" {
				continue
			}
			hp := b.HostPort + "/" + p.Proto()
			if !slices.Contains(out, hp) {
				out = append(out, hp)
			}
		}
	}
	slices.Sort(out)
	return out
}

// bindSources returns the host paths a container bind-mounts: from its mounts as
// Docker resolved them, and from its configuration (a container never started may
// have only the latter).
func bindSources(info container.InspectResponse) []string {
	var out []string
	for _, m := range info.Mounts {
		if m.Type == dmount.TypeBind && m.Source != "" {
			out = append(out, path.Clean(m.Source))
		}
	}
	if info.HostConfig != nil {
		for _, b := range info.HostConfig.Binds {
			if src, _, ok := strings.Cut(b, ":"); ok && path.IsAbs(src) {
				out = append(out, path.Clean(src))
			}
		}
		for _, m := range info.HostConfig.Mounts {
			if m.Type == dmount.TypeBind && m.Source != "" {
				out = append(out, path.Clean(m.Source))
			}
		}
	}
	return out
}
