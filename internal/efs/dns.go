package efs

import (
	"fmt"
	"regexp"
	"strings"
)

// The dns modes of the configuration; any other value is an explicit DNS name.
const (
	// DNSModeAZ names the mount target of one Availability Zone:
	// {az}.{fs}.efs.{region}.{suffix}. It keeps NFS traffic inside the zone and fails
	// loudly when the zone has no mount target, instead of crossing zones silently.
	DNSModeAZ = "az"
	// DNSModeRegional names the file system for the whole Region: {fs}.efs.{region}.{suffix};
	// Route 53 answers with the mount target of the caller's zone.
	DNSModeRegional = "regional"
	// DNSModeMountTargetIP mounts by the IP address of this zone's mount target, looked
	// up through the EFS API (DescribeMountTargets) at mount time: for VPCs without the
	// Amazon DNS server, where no EFS name resolves. Its DNSName is the zone's name,
	// which verification still accepts as a source.
	DNSModeMountTargetIP = "mount-target-ip"
)

// CheckDNSSetting reports whether s is a value the efs.dns setting accepts:
// DNSModeAZ, DNSModeRegional, DNSModeMountTargetIP, or a DNS hostname of at least two
// labels as ValidateHostname accepts it (lowercase, as the mount helper and mountinfo
// spell it). A single label is refused: it is more likely a mistyped mode than a name.
func CheckDNSSetting(s string) error {
	switch s {
	case DNSModeAZ, DNSModeRegional, DNSModeMountTargetIP:
		return nil
	}
	modes := fmt.Sprintf("use %s, %s, %s or a lowercase DNS name such as jenkins-efs.example.com", DNSModeAZ, DNSModeRegional, DNSModeMountTargetIP)
	if err := ValidateHostname(s); err != nil {
		return fmt.Errorf("%w (%s)", err, modes)
	}
	if !strings.Contains(s, ".") {
		return fmt.Errorf("%q is neither a mode nor a DNS name with a domain (%s)", s, modes)
	}
	return nil
}

var (
	fileSystemIDPattern = regexp.MustCompile(`^fs-([0-9a-f]{8}|[0-9a-f]{17})$`)
	regionPattern       = regexp.MustCompile(`^[a-z]{2,4}(-[a-z]+)+-[0-9]+$`)
	// After the region prefix: "a" for us-east-1a, "-lax-1a" for a Local Zone.
	azRestPattern = regexp.MustCompile(`^(-[a-z0-9]+)*[a-z]$`)
	labelPattern  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// DNSName returns the name to mount the file system by. mode is DNSModeAZ,
// DNSModeRegional, DNSModeMountTargetIP (which names the zone's mount target like
// DNSModeAZ; the mount itself goes by IP), or an explicit DNS name (a CNAME of the
// operator's), which is returned as is once it is known to be a hostname. az is needed
// only for DNSModeAZ and DNSModeMountTargetIP.
func DNSName(mode, fileSystemID, az, region string) (string, error) {
	switch mode {
	case DNSModeAZ, DNSModeRegional:
	case DNSModeMountTargetIP:
		mode = DNSModeAZ
	default:
		if err := CheckDNSSetting(mode); err != nil {
			return "", fmt.Errorf("efs dns name: %w", err)
		}
		return mode, nil
	}
	if err := ValidateFileSystemID(fileSystemID); err != nil {
		return "", fmt.Errorf("efs dns name: %w", err)
	}
	suffix, err := dnsSuffix(region)
	if err != nil {
		return "", fmt.Errorf("efs dns name: %w", err)
	}
	regional := fileSystemID + ".efs." + region + "." + suffix
	if mode == DNSModeRegional {
		return regional, nil
	}
	if !strings.HasPrefix(az, region) || !azRestPattern.MatchString(az[len(region):]) {
		return "", fmt.Errorf("efs dns name: availability zone %q is not a zone of region %s (want e.g. %sa)", az, region, region)
	}
	return az + "." + regional, nil
}

// ValidateFileSystemID reports whether id has the shape of an EFS file system id:
// "fs-" and 8 or 17 lowercase hex digits.
func ValidateFileSystemID(id string) error {
	if !fileSystemIDPattern.MatchString(id) {
		return fmt.Errorf("file system id %q is not fs- followed by 8 or 17 lowercase hex digits (e.g. fs-0123456789abcdef0)", id)
	}
	return nil
}

// ValidateHostname reports whether name is a DNS hostname: dot-separated labels of
// lowercase letters, digits and inner hyphens, 253 characters at most.
func ValidateHostname(name string) error {
	if name == "" {
		return fmt.Errorf("empty DNS name")
	}
	if len(name) > 253 {
		return fmt.Errorf("DNS name %.40q... is longer than 253 characters", name)
	}
	for label := range strings.SplitSeq(name, ".") {
		if !labelPattern.MatchString(label) {
			return fmt.Errorf("%q is not a DNS hostname: label %q must be 1-63 lowercase letters, digits or inner hyphens", name, label)
		}
	}
	return nil
}

// FileSystemName tells whether name is an EFS DNS name of fileSystemID
// ({fs}.efs.{region}.{suffix} or {az}.{fs}.efs.{region}.{suffix}) and, for the
// zone-specific form, which zone it names. Mount type efs gives amazon-efs-utils the
// file system id (and az=zone) instead of such a name.
func FileSystemName(name, fileSystemID string) (zone string, ok bool) {
	labels := strings.Split(strings.ToLower(strings.TrimSuffix(name, ".")), ".")
	for i := 0; i < 2 && i+3 < len(labels); i++ {
		if labels[i] == fileSystemID && labels[i+1] == "efs" {
			if i == 1 {
				zone = labels[0]
			}
			return zone, true
		}
	}
	return "", false
}

// dnsSuffix maps a region to its partition's DNS suffix. The isolated partitions are
// checked before the commercial one because their prefixes overlap (us-iso-, us-isob-).
func dnsSuffix(region string) (string, error) {
	if !regionPattern.MatchString(region) {
		return "", fmt.Errorf("region %q is not a region name (e.g. us-east-1)", region)
	}
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "amazonaws.com.cn", nil
	case strings.HasPrefix(region, "us-iso-"):
		return "c2s.ic.gov", nil
	case strings.HasPrefix(region, "us-isob-"):
		return "sc2s.sgov.gov", nil
	case strings.HasPrefix(region, "us-isof-"):
		return "csp.hci.ic.gov", nil
	case strings.HasPrefix(region, "eu-isoe-"):
		return "cloud.adc-e.uk", nil
	case strings.HasPrefix(region, "eusc-"):
		return "amazonaws.eu", nil
	default:
		return "amazonaws.com", nil
	}
}
