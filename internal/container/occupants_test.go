package container

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/go-connections/nat"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// TestOccupants creates, on the real Docker Engine, the containers an old compose file
// leaves behind, without starting them: a Jenkins with restart: always that publishes
// the agent's host port and bind-mounts the home, one that bind-mounts a directory
// inside the home, and others that clash with nothing or are the agent's own. Only
// the first two are listed.
func TestOccupants(t *testing.T) {
	if testing.Short() {
		t.Skip("creates containers on the Docker Engine")
	}
	f := newFixture(t)
	// A fixed host port that is never bound: none of these containers is started.
	port := 40000 + int(time.Now().UnixNano()%20000)
	f.opts.Ports = []string{"127.0.0.1:" + strconv.Itoa(port) + ":8080", "50000:50000"}
	home := f.opts.HomeHost
	r := f.runtime()
	ctx := testenv.Context(t, 2*time.Minute)

	create := func(name string, restart container.RestartPolicyMode, ports nat.PortMap, binds ...string) string {
		t.Helper()
		name = f.opts.Name + "-" + name
		exposed := nat.PortSet{}
		for p := range ports {
			exposed[p] = struct{}{}
		}
		_, err := f.cli.ContainerCreate(ctx, &container.Config{Image: f.opts.Image, ExposedPorts: exposed},
			&container.HostConfig{Binds: binds, PortBindings: ports, RestartPolicy: container.RestartPolicy{Name: restart}}, nil, nil, name)
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = f.cli.ContainerRemove(ctx, name, container.RemoveOptions{Force: true})
		})
		return name
	}
	jenkinsPort := nat.PortMap{"8080/tcp": {{HostPort: strconv.Itoa(port)}}}
	old := create("old-jenkins", container.RestartPolicyAlways, jenkinsPort, home+":/var/jenkins_home")
	sub := create("backup", container.RestartPolicyDisabled, nil, filepath.Join(home, "jobs")+":/jobs:ro")
	create("unrelated", container.RestartPolicyAlways, nat.PortMap{"8080/tcp": {{HostPort: strconv.Itoa(port + 1)}}}, t.TempDir()+":/data")
	create("udp", container.RestartPolicyAlways, nat.PortMap{"8080/udp": {{HostPort: strconv.Itoa(port)}}})
	create("sibling", container.RestartPolicyAlways, nil, home+"-old:/data")
	// The agent's own container, under the configured name, is never listed.
	if _, err := f.cli.ContainerCreate(ctx, &container.Config{Image: f.opts.Image}, &container.HostConfig{Binds: []string{home + ":/data"}, PortBindings: jenkinsPort}, nil, nil, f.opts.Name); err != nil {
		t.Fatal(err)
	}

	got, err := r.Occupants(ctx)
	if err != nil {
		t.Fatalf("Occupants: %v", err)
	}
	var mine []Occupant
	for _, o := range got {
		if strings.HasPrefix(o.Name, f.opts.Name) {
			mine = append(mine, o)
		}
	}
	if len(mine) != 2 || mine[0].Name != sub || mine[1].Name != old {
		t.Fatalf("Occupants = %+v, want %s and %s", mine, sub, old)
	}
	o := mine[1]
	if o.Restart != "always" || o.State != "created" || !slices.Equal(o.Ports, []string{strconv.Itoa(port) + "/tcp"}) || !slices.Equal(o.Binds, []string{home}) {
		t.Errorf("old Jenkins = %+v", o)
	}
	if s := o.String(); s != old+" (created, restart always; publishes "+strconv.Itoa(port)+"/tcp; bind-mounts "+home+")" {
		t.Errorf("String = %q", s)
	}
	if b := mine[0]; b.Restart != "no" || len(b.Ports) != 0 || !slices.Equal(b.Binds, []string{filepath.Join(home, "jobs")}) {
		t.Errorf("backup = %+v", b)
	}
}
