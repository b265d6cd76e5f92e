package efs

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"
)

// expectation is what verification accepts at the mount point.
type expectation struct {
	mountPoint   string
	fsTypes      []string
	fileSystemID string
	dnsName      string
}

// sourceKind is what a mount's source says about the file system behind it.
type sourceKind int

const (
	// sourceForeign names something else: another server or another file system.
	sourceForeign sourceKind = iota
	// sourceName names the file system: the configured DNS name or another EFS name
	// of the same file system.
	sourceName
	// sourceAddress is an IP address: a mount target's (amazon-efs-utils' fallback,
	// efs.dns mount-target-ip) or 127.0.0.1, the local TLS tunnel or efs-proxy of
	// amazon-efs-utils. It says nothing about which file system is behind it; only
	// the marker can prove that.
	sourceAddress
)

// ErrNotMounted is wrapped by verification errors of a mount point where nothing is
// mounted: a plain directory on the local disk.
var ErrNotMounted = errors.New("nothing is mounted")

// errNotMounted marks a mount point with no mountinfo entry: Mount treats it as "go
// ahead and mount", while an entry that fails the checks is a hard error.
type errNotMounted struct{ mountPoint string }

// Is makes errors.Is(err, ErrNotMounted) true.
func (e errNotMounted) Is(target error) bool { return target == ErrNotMounted }

func (e errNotMounted) Error() string {
	return fmt.Sprintf("nothing is mounted at %s: it is a plain directory on the local disk, and Jenkins must not start on it; mount the file system first", e.mountPoint)
}

// checkMountTable finds the mount that is visible at exp.mountPoint and checks its
// type and source against exp. It returns the entry it judged.
func checkMountTable(infos []*mountinfo.Info, exp expectation) (*mountinfo.Info, error) {
	m := topMount(infos, exp.mountPoint)
	if m == nil {
		return nil, errNotMounted{exp.mountPoint}
	}
	if !slices.Contains(exp.fsTypes, m.FSType) {
		return m, fmt.Errorf("%s is a %s file system from %q, expected type %s: something other than EFS is mounted there; unmount it, or fix efs.expect_fstypes",
			exp.mountPoint, m.FSType, m.Source, strings.Join(exp.fsTypes, " or "))
	}
	if classifySource(m.Source, exp) == sourceForeign {
		return m, fmt.Errorf("%s is mounted from %q, expected %s: another NFS server or file system is mounted there; unmount it and check efs.file_system_id and efs.dns",
			exp.mountPoint, m.Source, describeSources(exp))
	}
	return m, nil
}

// topMount returns the mount a process sees at mountPoint. Mounts stack, and only the
// top one is visible: an entry is covered when another entry at the same point names it
// as parent. Among uncovered entries (which should be one) the last listed wins, as
// the kernel lists mounts in the order they were made.
func topMount(infos []*mountinfo.Info, mountPoint string) *mountinfo.Info {
	var at []*mountinfo.Info
	for _, m := range infos {
		if m != nil && m.Mountpoint == mountPoint {
			at = append(at, m)
		}
	}
	for i := len(at) - 1; i >= 0; i-- {
		covered := false
		for _, other := range at {
			if other != at[i] && other.Parent == at[i].ID && other.ID != at[i].ID {
				covered = true
				break
			}
		}
		if !covered {
			return at[i]
		}
	}
	// Every entry covers another (only in a corrupt table): keep the last one.
	if len(at) > 0 {
		return at[len(at)-1]
	}
	return nil
}

// classifySource says what source, as mountinfo shows it ("host:/path"), tells about
// the file system: the name the mount was made with and any EFS name of the same file
// system (the regional or another zone's, as an operator may have mounted by hand)
// name it; an IP address (IPv6 in brackets) needs the marker; anything else is foreign.
func classifySource(source string, exp expectation) sourceKind {
	host, ok := strings.CutSuffix(source, ":/")
	if !ok || host == "" {
		return sourceForeign
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		if a, err := netip.ParseAddr(host[1 : len(host)-1]); err == nil && a.Is6() {
			return sourceAddress
		}
		return sourceForeign
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		return sourceAddress
	}
	host = strings.TrimSuffix(host, ".")
	if strings.EqualFold(host, exp.dnsName) {
		return sourceName
	}
	if _, ok := FileSystemName(host, exp.fileSystemID); ok {
		return sourceName
	}
	return sourceForeign
}

func describeSources(exp expectation) string {
	return fmt.Sprintf("%s:/ (or another EFS name of %s, or a mount target or amazon-efs-utils tunnel address whose marker names it)", exp.dnsName, exp.fileSystemID)
}
