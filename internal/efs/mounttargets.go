package efs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go"
)

// MountTarget is one mount target of a file system, as DescribeMountTargets shows it.
type MountTarget struct {
	// ID is the mount target id, fsmt-...
	ID string
	// IP is its IPv4 address, or its IPv6 address when it has no IPv4 one.
	IP string
	// AvailabilityZone is the zone name (us-east-1a) of its subnet.
	AvailabilityZone string
	// State is its LifeCycleState: creating, available, updating, deleting, deleted, error.
	State string
}

// Errors of a MountTargetLookup. ErrMountTargetNotReady and ErrNoMountTarget may pass
// with time (a mount target being created, a stack still creating one); the other two
// need the operator.
var (
	// ErrFileSystemNotFound: the file system does not exist in the account and region.
	ErrFileSystemNotFound = errors.New("file system not found")
	// ErrAccessDenied: the caller may not call elasticfilesystem:DescribeMountTargets.
	ErrAccessDenied = errors.New("access denied")
	// ErrNoMountTarget: the file system has no mount target in the zone.
	ErrNoMountTarget = errors.New("no mount target in the availability zone")
	// ErrMountTargetNotReady: the zone's mount target exists but is not available yet.
	ErrMountTargetNotReady = errors.New("mount target not available yet")
)

// MountTargetLookup finds a file system's mount target in one Availability Zone.
// Implementations: *MountTargetClient (the EFS API) and the double in efstest; both
// pass the same contract tests.
type MountTargetLookup interface {
	// MountTarget returns the available mount target of fileSystemID in zone az. It
	// blocks for at most ctx's deadline. Errors wrap ErrFileSystemNotFound,
	// ErrAccessDenied, ErrNoMountTarget (naming the zones that have one) or
	// ErrMountTargetNotReady (naming its state), or are the API's or the network's.
	MountTarget(ctx context.Context, fileSystemID, az string) (MountTarget, error)
}

// PickMountTarget chooses the mount target of zone az among a file system's mount
// targets: the available one, or the error saying why there is none.
func PickMountTarget(fileSystemID, az string, targets []MountTarget) (MountTarget, error) {
	var zones []string
	for _, t := range targets {
		if t.AvailabilityZone != az {
			zones = append(zones, t.AvailabilityZone)
			continue
		}
		if t.State == "available" && t.IP != "" {
			return t, nil
		}
		return MountTarget{}, fmt.Errorf("mount target %s of %s in %s is %s: %w", t.ID, fileSystemID, az, t.State, ErrMountTargetNotReady)
	}
	sort.Strings(zones)
	zones = slices.Compact(zones)
	have := "none"
	if len(zones) > 0 {
		have = strings.Join(zones, ", ")
	}
	return MountTarget{}, fmt.Errorf("%s has no mount target in %s (it has: %s): %w; create one in a subnet of %s", fileSystemID, az, have, ErrNoMountTarget, az)
}

// MountTargetClientOptions configure a MountTargetClient.
type MountTargetClientOptions struct {
	// Region of the file system; required.
	Region string
	// Endpoint overrides the API's base URL (a test double). Empty keeps the SDK's
	// resolution, which honours AWS_ENDPOINT_URL_EFS.
	Endpoint string
	// Credentials override the SDK's default chain when set.
	Credentials aws.CredentialsProvider
	// CallTimeout bounds one lookup, pages and retries included; 10 s when zero.
	CallTimeout time.Duration
	// Logger receives what was found; slog.Default() when nil.
	Logger *slog.Logger
}

// MountTargetClient looks mount targets up through the EFS API (DescribeMountTargets,
// IAM action elasticfilesystem:DescribeMountTargets), as a SigV4-signed REST call. The
// SDK configuration (credentials, retryer, endpoint) is loaded at the first call, so
// that building one contacts nothing.
type MountTargetClient struct {
	opts MountTargetClientOptions

	mu  sync.Mutex
	api *efsREST
}

// NewMountTargetClient checks opts and returns a client; it makes no call.
func NewMountTargetClient(opts MountTargetClientOptions) (*MountTargetClient, error) {
	if opts.Region == "" {
		return nil, errors.New("efs mount targets: region is empty")
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &MountTargetClient{opts: opts}, nil
}

var _ MountTargetLookup = (*MountTargetClient)(nil)

func (c *MountTargetClient) client(ctx context.Context) (*efsREST, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.api != nil {
		return c.api, nil
	}
	load := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(c.opts.Region),
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = 5
				o.MaxBackoff = 2 * time.Second
			})
		}),
	}
	if c.opts.Credentials != nil {
		load = append(load, awsconfig.WithCredentialsProvider(c.opts.Credentials))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	c.api = newEFSREST(c.opts.Region, c.opts.Endpoint, cfg)
	return c.api, nil
}

// MountTarget pages through DescribeMountTargets for the file system and picks the
// zone's mount target.
func (c *MountTargetClient) MountTarget(ctx context.Context, fileSystemID, az string) (MountTarget, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.CallTimeout)
	defer cancel()
	api, err := c.client(ctx)
	if err != nil {
		return MountTarget{}, fmt.Errorf("efs DescribeMountTargets %s: %w", fileSystemID, err)
	}
	list, err := api.describeMountTargets(ctx, "FileSystemId", fileSystemID)
	if err != nil {
		return MountTarget{}, fmt.Errorf("efs DescribeMountTargets %s: %w", fileSystemID, classifyAPIError(err))
	}
	all := make([]MountTarget, 0, len(list))
	for _, d := range list {
		t := MountTarget{ID: d.MountTargetID, IP: d.IPAddress, AvailabilityZone: d.AvailabilityZoneName, State: d.LifeCycleState}
		if t.IP == "" {
			t.IP = d.IPv6Address
		}
		all = append(all, t)
	}
	t, err := PickMountTarget(fileSystemID, az, all)
	if err != nil {
		return MountTarget{}, err
	}
	c.opts.Logger.Debug("EFS mount target found", "file_system_id", fileSystemID, "mount_target", t.ID, "ip", t.IP, "az", az)
	return t, nil
}

// classifyAPIError wraps the API errors that need the operator in this package's
// sentinels, keeping the API's message.
func classifyAPIError(err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "FileSystemNotFound":
			return fmt.Errorf("%w: %s", ErrFileSystemNotFound, ae.ErrorMessage())
		case "AccessDeniedException", "AccessDenied", "UnauthorizedOperation":
			return fmt.Errorf("%w: %s; add elasticfilesystem:DescribeMountTargets on the file system to the instance role", ErrAccessDenied, ae.ErrorMessage())
		}
	}
	return err
}
