package efs_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/efs/efstest"
)

const (
	ctFS     = "fs-0123456789abcdef0"
	ctRegion = "us-east-1"
)

// isolateAWS keeps the machine's own AWS setup out of the SDK.
func isolateAWS(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_CONFIG_FILE":             filepath.Join(dir, "no-config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "no-credentials"),
		"AWS_PROFILE":                 "",
		"AWS_ENDPOINT_URL":            "",
		"AWS_ENDPOINT_URL_EFS":        "",
		"AWS_ACCESS_KEY_ID":           "",
		"AWS_SECRET_ACCESS_KEY":       "",
		"AWS_SESSION_TOKEN":           "",
		"AWS_EC2_METADATA_DISABLED":   "true",
	} {
		t.Setenv(k, v)
	}
}

// adapter returns the adapter pointed at srv.
func adapter(t *testing.T, srv *efstest.MountTargetServer) efs.MountTargetLookup {
	t.Helper()
	c, err := efs.NewMountTargetClient(efs.MountTargetClientOptions{Region: ctRegion, Endpoint: srv.URL(), Credentials: srv.Credentials()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// implementations are every efs.MountTargetLookup, built over one double's state.
var implementations = map[string]func(*testing.T, *efstest.MountTargetServer) efs.MountTargetLookup{
	"adapter": adapter,
	"double":  func(_ *testing.T, srv *efstest.MountTargetServer) efs.MountTargetLookup { return srv },
}

// TestMountTargetContract holds the adapter (the signed REST call through HTTP to the double)
// and the double (its own state, in process) to the same behaviour.
func TestMountTargetContract(t *testing.T) {
	isolateAWS(t)
	cases := []struct {
		name    string
		setup   func(*efstest.MountTargetServer)
		az      string
		wantIP  string
		wantErr error
		errHas  []string
	}{
		{
			name: "the zone's available mount target",
			setup: func(s *efstest.MountTargetServer) {
				s.AddMountTarget(ctFS, efs.MountTarget{AvailabilityZone: "us-east-1a", IP: "10.0.1.23"})
				s.AddMountTarget(ctFS, efs.MountTarget{AvailabilityZone: "us-east-1b", IP: "10.0.2.23"})
			},
			az: "us-east-1b", wantIP: "10.0.2.23",
		},
		{
			name: "IPv6 only",
			setup: func(s *efstest.MountTargetServer) {
				s.AddMountTarget(ctFS, efs.MountTarget{AvailabilityZone: "us-east-1a", IP: "fd00:ec2::23"})
			},
			az: "us-east-1a", wantIP: "fd00:ec2::23",
		},
		{
			name: "found on a later page",
			setup: func(s *efstest.MountTargetServer) {
				for i := range 24 {
					s.AddMountTarget(ctFS, efs.MountTarget{AvailabilityZone: fmt.Sprintf("us-east-1-lz%d", i), IP: fmt.Sprintf("10.0.%d.5", i)})
				}
				s.AddMountTarget(ctFS, efs.MountTarget{AvailabilityZone: "us-east-1f", IP: "10.0.99.5"})
			},
			az: "us-east-1f", wantIP: "10.0.99.5",
		},
		{
			name: "only other zones",
			setup: func(s *efstest.MountTargetServer) {
				s.AddMountTarget(ctFS, efs.MountTarget{AvailabilityZone: "us-east-1c", IP: "10.0.3.23"})
				s.AddMountTarget(ctFS, efs.MountTarget{AvailabilityZone: "us-east-1a", IP: "10.0.1.23"})
			},
			az: "us-east-1b", wantErr: efs.ErrNoMountTarget, errHas: []string{"us-east-1a, us-east-1c", "create one in a subnet of us-east-1b"},
		},
		{
			name:  "no mount target at all",
			setup: func(s *efstest.MountTargetServer) { s.AddFileSystem(ctFS) },
			az:    "us-east-1b", wantErr: efs.ErrNoMountTarget, errHas: []string{"it has: none"},
		},
		{
			name: "still creating",
			setup: func(s *efstest.MountTargetServer) {
				s.AddMountTarget(ctFS, efs.MountTarget{AvailabilityZone: "us-east-1a", IP: "10.0.1.23", State: "creating"})
			},
			az: "us-east-1a", wantErr: efs.ErrMountTargetNotReady, errHas: []string{"is creating"},
		},
		{
			name: "no such file system",
			setup: func(s *efstest.MountTargetServer) {
				s.AddMountTarget("fs-12345678", efs.MountTarget{AvailabilityZone: "us-east-1a", IP: "10.0.1.23"})
			},
			az: "us-east-1a", wantErr: efs.ErrFileSystemNotFound, errHas: []string{ctFS},
		},
		{
			name: "denied",
			setup: func(s *efstest.MountTargetServer) {
				s.AddMountTarget(ctFS, efs.MountTarget{AvailabilityZone: "us-east-1a", IP: "10.0.1.23"})
				s.Deny(true)
			},
			az: "us-east-1a", wantErr: efs.ErrAccessDenied, errHas: []string{"elasticfilesystem:DescribeMountTargets"},
		},
	}
	for name, impl := range implementations {
		t.Run(name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					srv := efstest.NewMountTargetServer()
					defer srv.Close()
					tc.setup(srv)
					ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
					defer cancel()
					got, err := impl(t, srv).MountTarget(ctx, ctFS, tc.az)
					if tc.wantErr != nil {
						if !errors.Is(err, tc.wantErr) {
							t.Fatalf("MountTarget = %+v, %v; want %v", got, err, tc.wantErr)
						}
						for _, w := range tc.errHas {
							if !strings.Contains(err.Error(), w) {
								t.Errorf("error %q lacks %q", err, w)
							}
						}
						return
					}
					if err != nil {
						t.Fatalf("MountTarget: %v", err)
					}
					if got.IP != tc.wantIP || got.AvailabilityZone != tc.az || got.State != "available" || !strings.HasPrefix(got.ID, "fsmt-") {
						t.Errorf("MountTarget = %+v, want %s in %s, available", got, tc.wantIP, tc.az)
					}
				})
			}
		})
	}
}

// TestMountTargetAdapterOnTheWire checks what the adapter sends and how it pages and
// retries: GET /2015-02-01/mount-targets?FileSystemId=..., signed for
// elasticfilesystem in the region, following NextMarker, retrying throttling.
func TestMountTargetAdapterOnTheWire(t *testing.T) {
	isolateAWS(t)
	srv := efstest.NewMountTargetServer()
	defer srv.Close()
	for i := range 25 {
		srv.AddMountTarget(ctFS, efs.MountTarget{AvailabilityZone: fmt.Sprintf("us-east-1-lz%d", i), IP: fmt.Sprintf("10.0.%d.5", i)})
	}
	srv.AddMountTarget(ctFS, efs.MountTarget{AvailabilityZone: "us-east-1d", IP: "10.0.4.5"})
	srv.Throttle(2)
	got, err := adapter(t, srv).MountTarget(t.Context(), ctFS, "us-east-1d")
	if err != nil || got.IP != "10.0.4.5" {
		t.Fatalf("MountTarget = %+v, %v", got, err)
	}
	calls := srv.Calls()
	var ok, throttled int
	for _, c := range calls {
		if c.Method != "GET" || c.Path != efstest.MountTargetsPath || c.Region != ctRegion || c.Query.Get("FileSystemId") != ctFS {
			t.Errorf("call %+v", c)
		}
		switch c.Code {
		case "":
			ok++
		case "ThrottlingException":
			throttled++
		default:
			t.Errorf("unexpected answer %s", c.Code)
		}
	}
	// 26 targets at 10 a page: three pages, after two throttled attempts.
	if ok != 3 || throttled != 2 {
		t.Errorf("%d pages and %d throttled calls, want 3 and 2: %+v", ok, throttled, calls)
	}
	if calls[len(calls)-1].Query.Get("Marker") == "" {
		t.Errorf("the last page was not asked for with a Marker")
	}
}

// TestMountTargetAdapterHonoursEndpointEnvironment points the adapter at the double only
// through AWS_ENDPOINT_URL_EFS and the standard credential variables, as preflight
// and run are pointed in tests and simulate.
func TestMountTargetAdapterHonoursEndpointEnvironment(t *testing.T) {
	isolateAWS(t)
	srv := efstest.NewMountTargetServer()
	defer srv.Close()
	srv.AddMountTarget(ctFS, efs.MountTarget{AvailabilityZone: "us-east-1a", IP: "10.0.1.23"})
	t.Setenv("AWS_ENDPOINT_URL_EFS", srv.URL())
	t.Setenv("AWS_ACCESS_KEY_ID", efstest.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", efstest.SecretAccessKey)
	c, err := efs.NewMountTargetClient(efs.MountTargetClientOptions{Region: ctRegion})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.MountTarget(t.Context(), ctFS, "us-east-1a"); err != nil || got.IP != "10.0.1.23" {
		t.Fatalf("MountTarget = %+v, %v", got, err)
	}
}

// TestMountTargetDoubleChecksSignatures: a request signed with another secret, or for
// another service, is refused, so the adapter's signing is really checked.
func TestMountTargetDoubleChecksSignatures(t *testing.T) {
	isolateAWS(t)
	srv := efstest.NewMountTargetServer()
	defer srv.Close()
	srv.AddMountTarget(ctFS, efs.MountTarget{AvailabilityZone: "us-east-1a", IP: "10.0.1.23"})
	c, err := efs.NewMountTargetClient(efs.MountTargetClientOptions{
		Region: ctRegion, Endpoint: srv.URL(),
		Credentials: credentials.NewStaticCredentialsProvider(efstest.AccessKeyID, "not-the-secret", ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.MountTarget(t.Context(), ctFS, "us-east-1a")
	if err == nil || !strings.Contains(err.Error(), "InvalidSignatureException") {
		t.Fatalf("MountTarget with a wrong secret = %v, want InvalidSignatureException", err)
	}
	if _, err := efs.NewMountTargetClient(efs.MountTargetClientOptions{}); err == nil {
		t.Error("a client without a region was accepted")
	}
}
