// Package spec holds the rules for what an operator writes about the Jenkins container
// in the configuration: jenkins.image, jenkins.container_name, jenkins.ports,
// jenkins.volumes and the names in jenkins.env. There is one rule for each, used twice:
// by config.Validate, so that a value the container adapter would refuse stops the
// agent with exit code 78 before anything is touched, and by the adapter
// (internal/container) when it builds the Docker request from the parsed values.
//
// The package imports no Docker package, so the configuration does not depend on the
// Docker client. What it accepts is a subset of what the Docker Engine accepts; the
// adapter's tests check that Docker's own parsers read every accepted value the same way.
package spec

import (
	"errors"
	"fmt"
	"net"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/distribution/reference"
)

// Image checks an image reference (jenkins.image), such as jenkins/jenkins:lts-jdk21
// or registry.example.com/jenkins@sha256:..., with the parser of the Docker
// distribution libraries. The error says what is wrong with it.
func Image(ref string) error {
	if strings.TrimSpace(ref) == "" {
		return errors.New("is empty: set an image such as jenkins/jenkins:lts-jdk21")
	}
	if _, err := reference.ParseNormalizedNamed(strings.TrimSpace(ref)); err != nil {
		return fmt.Errorf("%q is not a valid image reference (%v): write it like jenkins/jenkins:2.516.3-lts-jdk21", ref, err)
	}
	return nil
}

// containerName is the Docker Engine's rule for container names: two characters at
// least, the first a letter or digit.
var containerName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// Name checks a container name (jenkins.container_name) and returns it without the
// leading "/" that the Docker API may show. Docker's rule: letters, digits, '_', '.'
// and '-', starting with a letter or digit, at least two characters.
func Name(name string) (string, error) {
	n := strings.TrimPrefix(name, "/")
	if !containerName.MatchString(n) {
		return "", fmt.Errorf("%q is not a container name: use two or more letters, digits, '_', '.' and '-', starting with a letter or digit", name)
	}
	return n, nil
}

// Protocols a published port may use.
const (
	TCP  = "tcp"
	UDP  = "udp"
	SCTP = "sctp"
)

// Port is one published port, parsed from [ip:][host:]container[/proto].
type Port struct {
	// HostIP is the host address the port is published on, without brackets; empty
	// means every address.
	HostIP string
	// HostPort is the port on the host, 1-65535; 0 means one that Docker picks (the
	// form ip::container, used by tests that need a free port).
	HostPort int
	// ContainerPort is the port inside the container, 1-65535.
	ContainerPort int
	// Proto is tcp, udp or sctp.
	Proto string
}

// portHelp is the shape every port error ends with.
const portHelp = "use [ip:]host:container[/proto], e.g. 8080:8080 or 127.0.0.1:8080:8080/tcp"

// ParsePort parses one published port (an item of jenkins.ports) in Docker's syntax:
// container, host:container, ip:host:container or ip::container (any free host port),
// each optionally followed by /tcp, /udp or /sctp (default tcp). An IPv6 address is
// written in brackets ([::1]:8080:8080). Ports are single numbers from 1 to 65535:
// port ranges, which publish many ports at once, are refused.
func ParsePort(s string) (Port, error) {
	bad := func(why string) (Port, error) {
		return Port{}, fmt.Errorf("%q: %s: %s", s, why, portHelp)
	}
	if s == "" || strings.TrimSpace(s) != s {
		return bad("empty or surrounded by spaces")
	}
	spec, proto, hasProto := strings.Cut(s, "/")
	p := Port{Proto: TCP}
	if hasProto {
		switch proto {
		case TCP, UDP, SCTP:
			p.Proto = proto
		default:
			return bad(fmt.Sprintf("protocol %q is not tcp, udp or sctp", proto))
		}
	}
	var ip, host, container string
	if strings.HasPrefix(spec, "[") {
		end := strings.Index(spec, "]")
		if end < 0 || !strings.HasPrefix(spec[end+1:], ":") {
			return bad("an IPv6 address in brackets must be followed by :host:container")
		}
		ip = spec[1:end]
		var ok bool
		host, container, ok = strings.Cut(spec[end+2:], ":")
		if !ok {
			return bad("after the address come the host port and the container port")
		}
		if ip == "" || strings.Contains(ip, "%") || net.ParseIP(ip) == nil || !strings.Contains(ip, ":") {
			return bad(fmt.Sprintf("%q is not an IPv6 address", ip))
		}
	} else {
		parts := strings.Split(spec, ":")
		switch len(parts) {
		case 1:
			container = parts[0]
		case 2:
			host, container = parts[0], parts[1]
			if host == "" {
				return bad("the host port is empty")
			}
		case 3:
			ip, host, container = parts[0], parts[1], parts[2]
			if a := net.ParseIP(ip); a == nil || a.To4() == nil || strings.Contains(ip, ":") {
				return bad(fmt.Sprintf("%q is not an IPv4 address (write an IPv6 address in brackets)", ip))
			}
		default:
			return bad("too many colons")
		}
	}
	var err error
	if p.ContainerPort, err = portNumber(container); err != nil {
		return bad("container port " + err.Error())
	}
	if host == "" && ip == "" {
		return p, nil // container port only: exposed, published on a port Docker picks
	}
	if host != "" {
		if p.HostPort, err = portNumber(host); err != nil {
			return bad("host port " + err.Error())
		}
	}
	p.HostIP = ip
	return p, nil
}

// portNumber reads a port: 1 to 5 decimal digits, 1-65535.
func portNumber(s string) (int, error) {
	if s == "" {
		return 0, errors.New("is missing")
	}
	if len(s) > 5 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a number (ranges such as 8080-8090 are not supported)", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not between 1 and 65535", s)
	}
	return n, nil
}

// String writes the port back in the syntax ParsePort reads.
func (p Port) String() string {
	s := strconv.Itoa(p.ContainerPort) + "/" + p.Proto
	switch {
	case p.HostIP == "" && p.HostPort == 0:
		return s
	case p.HostIP == "":
		return strconv.Itoa(p.HostPort) + ":" + s
	}
	ip := p.HostIP
	if strings.Contains(ip, ":") {
		ip = "[" + ip + "]"
	}
	host := ""
	if p.HostPort != 0 {
		host = strconv.Itoa(p.HostPort)
	}
	return ip + ":" + host + ":" + s
}

// Volume is one extra bind mount, parsed from src:dst[:ro|rw].
type Volume struct {
	Source, Target string // absolute and cleaned
	ReadOnly       bool
}

// String writes the volume in Docker's bind syntax.
func (v Volume) String() string {
	if v.ReadOnly {
		return v.Source + ":" + v.Target + ":ro"
	}
	return v.Source + ":" + v.Target
}

// ParseVolume parses one extra bind mount (an item of jenkins.volumes):
// /host/path:/container/path, optionally followed by :ro or :rw. Only bind mounts of
// absolute host paths are accepted: a named volume would live on the local disk, which
// is what the agent exists to avoid. homeInContainer is jenkins.home_in_container: a
// volume there is refused, because the verified EFS home is mounted there.
func ParseVolume(v, homeInContainer string) (Volume, error) {
	if strings.ContainsRune(v, 0) {
		return Volume{}, fmt.Errorf("%q: contains a NUL byte", v)
	}
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return Volume{}, fmt.Errorf("%q: use src:dst or src:dst:ro with absolute paths", v)
	}
	m := Volume{Source: parts[0], Target: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			m.ReadOnly = true
		case "rw":
		default:
			return Volume{}, fmt.Errorf("%q: mode %q is not ro or rw", v, parts[2])
		}
	}
	if !path.IsAbs(m.Source) {
		return Volume{}, fmt.Errorf("%q: source %q must be an absolute host path (named volumes are not supported)", v, m.Source)
	}
	if !path.IsAbs(m.Target) {
		return Volume{}, fmt.Errorf("%q: target %q must be an absolute path in the container", v, m.Target)
	}
	m.Source, m.Target = path.Clean(m.Source), path.Clean(m.Target)
	if homeInContainer != "" && m.Target == path.Clean(homeInContainer) {
		return Volume{}, fmt.Errorf("%q: %s is already the Jenkins home mount (jenkins.home_in_container)", v, m.Target)
	}
	return m, nil
}

// envName is a portable environment variable name (POSIX): what a shell, the JVM
// launcher and Jenkins can all read back.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// EnvName checks the name of a container environment variable (a key of jenkins.env).
func EnvName(name string) error {
	if !envName.MatchString(name) {
		return fmt.Errorf("%q is not an environment variable name: use letters, digits and '_', not starting with a digit", name)
	}
	return nil
}
