package efs

import (
	"fmt"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"
)

// localProxyHost is the source host amazon-efs-utils leaves in mountinfo: with TLS it
// mounts through its stunnel proxy on loopback, so the kernel never sees the EFS name.
const localProxyHost = "127.0.0.1"

// expectation is what verification accepts at the mount point.
type expectation struct {
	mountPoint   string
	fsTypes      []string
	fileSystemID string
	dnsName      string
	// localProxy accepts 127.0.0.1:/ as the source; only right for mount type efs,
	// since for the kernel client such a source is some other NFS server.
	localProxy bool
}

// errNotMounted marks a mount point with no mountinfo entry: Mount treats it as "go
// ahead and mount", while an entry that fails the checks is a hard error.
type errNotMounted struct{ mountPoint string }

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
	if !sourceMatches(m.Source, exp) {
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

// sourceMatches accepts the name the mount was made with, any EFS name of the same
// file system (the regional or another zone's, as an operator may have mounted by
// hand), and, for amazon-efs-utils, its local proxy.
func sourceMatches(source string, exp expectation) bool {
	host, ok := strings.CutSuffix(source, ":/")
	if !ok || host == "" {
		return false
	}
	host = strings.TrimSuffix(host, ".")
	if strings.EqualFold(host, exp.dnsName) {
		return true
	}
	if exp.localProxy && host == localProxyHost {
		return true
	}
	labels := strings.Split(strings.ToLower(host), ".")
	for i := 0; i < 2 && i+3 < len(labels); i++ {
		if labels[i] == exp.fileSystemID && labels[i+1] == "efs" {
			return true
		}
	}
	return false
}

func describeSources(exp expectation) string {
	s := fmt.Sprintf("%s:/ (or another EFS name of %s)", exp.dnsName, exp.fileSystemID)
	if exp.localProxy {
		s += " or " + localProxyHost + ":/ (amazon-efs-utils TLS proxy)"
	}
	return s
}
