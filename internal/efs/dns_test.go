package efs

import (
	"strings"
	"testing"
)

func TestDNSName(t *testing.T) {
	const fs = "fs-0123456789abcdef0"
	tests := []struct {
		mode, fs, az, region string
		want                 string
		wantErr              string
	}{
		{mode: "az", fs: fs, az: "us-east-1a", region: "us-east-1", want: "us-east-1a.fs-0123456789abcdef0.efs.us-east-1.amazonaws.com"},
		{mode: "regional", fs: fs, az: "us-east-1a", region: "us-east-1", want: "fs-0123456789abcdef0.efs.us-east-1.amazonaws.com"},
		{mode: "regional", fs: "fs-12345678", region: "eu-west-1", want: "fs-12345678.efs.eu-west-1.amazonaws.com"},
		{mode: "az", fs: fs, az: "cn-north-1b", region: "cn-north-1", want: "cn-north-1b.fs-0123456789abcdef0.efs.cn-north-1.amazonaws.com.cn"},
		{mode: "regional", fs: fs, region: "cn-northwest-1", want: "fs-0123456789abcdef0.efs.cn-northwest-1.amazonaws.com.cn"},
		{mode: "regional", fs: fs, region: "us-iso-east-1", want: "fs-0123456789abcdef0.efs.us-iso-east-1.c2s.ic.gov"},
		{mode: "regional", fs: fs, region: "us-isob-east-1", want: "fs-0123456789abcdef0.efs.us-isob-east-1.sc2s.sgov.gov"},
		{mode: "regional", fs: fs, region: "us-gov-west-1", want: "fs-0123456789abcdef0.efs.us-gov-west-1.amazonaws.com"},
		{mode: "az", fs: fs, az: "us-west-2-lax-1a", region: "us-west-2", want: "us-west-2-lax-1a.fs-0123456789abcdef0.efs.us-west-2.amazonaws.com"},
		// An explicit name is used as is, whatever the other arguments say.
		{mode: "jenkins-home.internal.example.com", fs: "", az: "", region: "", want: "jenkins-home.internal.example.com"},
		{mode: "10.0.1.25", want: "10.0.1.25"},
		// mount-target-ip mounts by IP; its name is the zone's, which verification accepts.
		{mode: "mount-target-ip", fs: fs, az: "us-east-1a", region: "us-east-1", want: "us-east-1a.fs-0123456789abcdef0.efs.us-east-1.amazonaws.com"},
		{mode: "efs", fs: fs, region: "us-east-1", wantErr: "neither a mode nor a DNS name with a domain"},

		{mode: "az", fs: fs, az: "us-east-1", region: "us-east-1", wantErr: "availability zone"},
		{mode: "az", fs: fs, az: "", region: "us-east-1", wantErr: "availability zone"},
		{mode: "az", fs: fs, az: "eu-west-1a", region: "us-east-1", wantErr: "not a zone of region us-east-1"},
		{mode: "az", fs: fs, az: "us-east-1a.evil", region: "us-east-1", wantErr: "availability zone"},
		{mode: "regional", fs: "fs-0123", region: "us-east-1", wantErr: "8 or 17"},
		{mode: "regional", fs: "fs-0123456789ABCDEF0", region: "us-east-1", wantErr: "lowercase hex"},
		{mode: "regional", fs: "0123456789abcdef0", region: "us-east-1", wantErr: "file system id"},
		{mode: "regional", fs: "fs-0123456789abcdef", region: "us-east-1", wantErr: "file system id"},
		{mode: "regional", fs: fs, region: "", wantErr: "region"},
		{mode: "regional", fs: fs, region: "us-east", wantErr: "region"},
		{mode: "regional", fs: fs, region: "US-EAST-1", wantErr: "region"},
		{mode: "regional", fs: fs, region: "us-east-1.evil.com", wantErr: "region"},
		{mode: "", fs: fs, region: "us-east-1", wantErr: "empty DNS name"},
		{mode: "AZ", fs: fs, region: "us-east-1", wantErr: "not a DNS hostname"},
		{mode: "efs.example.com:/", wantErr: "not a DNS hostname"},
		{mode: "-bad.example.com", wantErr: "not a DNS hostname"},
		{mode: "a..b", wantErr: "not a DNS hostname"},
		{mode: "trailing.dot.", wantErr: "not a DNS hostname"},
		{mode: strings.Repeat("a", 64) + ".com", wantErr: "not a DNS hostname"},
		{mode: strings.Repeat("abcdefgh.", 30) + "com", wantErr: "longer than 253"},
	}
	for _, tt := range tests {
		got, err := DNSName(tt.mode, tt.fs, tt.az, tt.region)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("DNSName(%q, %q, %q, %q) = %q, %v; want error containing %q", tt.mode, tt.fs, tt.az, tt.region, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("DNSName(%q, %q, %q, %q) = %q, %v; want %q", tt.mode, tt.fs, tt.az, tt.region, got, err, tt.want)
		}
	}
}

func TestCheckDNSSetting(t *testing.T) {
	for s, want := range map[string]string{
		"az": "", "regional": "", "mount-target-ip": "", "jenkins-efs.corp.example": "", "10.0.1.25": "",
		"EFS.Example.com":  "is not a DNS hostname",
		"Az":               "is not a DNS hostname",
		"zone":             "neither a mode nor a DNS name with a domain",
		"mount_target_ip":  "is not a DNS hostname",
		"efs.example.com:": "is not a DNS hostname",
		"":                 "empty DNS name",
	} {
		err := CheckDNSSetting(s)
		if (want == "") != (err == nil) || (err != nil && (!strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "mount-target-ip"))) {
			t.Errorf("CheckDNSSetting(%q) = %v, want %q and the accepted modes", s, err, want)
		}
	}
}

// FuzzDNSName checks that whatever DNSName returns is a hostname that names the file
// system (or is the explicit name given).
func FuzzDNSName(f *testing.F) {
	f.Add("az", "fs-0123456789abcdef0", "us-east-1a", "us-east-1")
	f.Add("regional", "fs-12345678", "", "cn-north-1")
	f.Add("efs.example.com", "", "", "")
	f.Add("az", "fs-12345678", "us-east-1a.x", "us-east-1")
	f.Fuzz(func(t *testing.T, mode, fs, az, region string) {
		got, err := DNSName(mode, fs, az, region)
		if err != nil {
			return
		}
		if herr := ValidateHostname(got); herr != nil {
			t.Fatalf("DNSName(%q, %q, %q, %q) = %q, not a hostname: %v", mode, fs, az, region, got, herr)
		}
		switch mode {
		case DNSModeAZ:
			if !strings.HasPrefix(got, az+"."+fs+".efs."+region+".") {
				t.Fatalf("az name %q does not start with zone, id and region", got)
			}
		case DNSModeRegional:
			if !strings.HasPrefix(got, fs+".efs."+region+".") {
				t.Fatalf("regional name %q does not start with id and region", got)
			}
		default:
			if got != mode {
				t.Fatalf("explicit name %q came back as %q", mode, got)
			}
		}
	})
}
