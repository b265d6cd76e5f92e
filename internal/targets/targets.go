// Package targets takes the instance out of its load balancer target groups when it is
// being interrupted and puts it back when Jenkins serves again on the same instance,
// asks its Auto Scaling group for a replacement (by detaching the instance without
// decrementing the desired capacity) while keeping it registered until the handover,
// records heartbeats on and completes its termination lifecycle action, asks EC2
// whether a lease holder is gone, and proves the IAM permissions for all of it without
// changing anything. The target groups are found once at boot: during a mass
// interruption the APIs throttle, and the deregistration must not depend on them twice.
package targets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

// DefaultCallTimeout bounds one API call (its retries included) when Options leaves
// CallTimeout zero.
const DefaultCallTimeout = 10 * time.Second

// DefaultPollInterval is how often, when Options leaves PollInterval zero, Register and
// RequestReplacement look again at a target's state, and the first pause before
// CompleteLifecycle and Heartbeat try again while Auto Scaling has not yet made the
// pending action visible. Short, because while the group's deregistration stands and the
// instance is not registered again, Jenkins gets no new requests.
const DefaultPollInterval = 500 * time.Millisecond

// maxRetryPause caps the pause between two tries of a lifecycle call.
const maxRetryPause = 5 * time.Second

// Retry policy of every call. Throttling is expected when many Spot instances are
// interrupted at once; the call's deadline, not a small attempt count, should end the
// tries, and one backoff must not eat a large part of the two-minute budget.
const (
	maxAttempts = 6
	maxBackoff  = 2 * time.Second
)

// TargetGroup is one ELBv2 target group the instance is registered in.
type TargetGroup struct {
	ARN string
	// Port the instance is registered on; 0 leaves it out of DeregisterTargets and
	// RegisterTargets, which then means the group's own port (how Auto Scaling
	// registers its instances).
	Port int32
}

// Options configures a Client.
type Options struct {
	// Region of the target groups and the Auto Scaling group; required.
	Region string
	// TargetGroups are the configured groups, deregistered and registered with their
	// Port.
	TargetGroups []TargetGroup
	// Discover adds the target groups of the instance's Auto Scaling group.
	Discover bool
	// LifecycleHook is the termination hook to complete with CONTINUE and to record
	// heartbeats on; empty for none.
	LifecycleHook string
	// RequestReplacement says that the agent asks the Auto Scaling group for a
	// replacement at a notice: CheckPermissions then proves autoscaling:DetachInstances.
	// RequestReplacement works whatever it says.
	RequestReplacement bool
	// CallTimeout bounds each API call, retries included; DefaultCallTimeout when zero.
	CallTimeout time.Duration
	// PollInterval is how often a state that Register, RequestReplacement,
	// CompleteLifecycle and Heartbeat wait for is looked at again;
	// DefaultPollInterval when zero.
	PollInterval time.Duration
	// Endpoint is one base URL for all three services (tests, simulate). Empty keeps
	// the SDK's resolution rules, AWS_ENDPOINT_URL_<SERVICE> included.
	Endpoint string
	// Credentials overrides the SDK's default credential chain when set.
	Credentials aws.CredentialsProvider
	// Logger receives what was found and done; slog.Default() when nil.
	Logger *slog.Logger
}

// Client talks to ELBv2, Auto Scaling and EC2 for one instance. Its methods are safe
// for concurrent use.
type Client struct {
	elb         *elbAPI
	asg         *asgAPI
	ec2         *ec2Query
	region      string
	configured  []TargetGroup
	discover    bool
	hook        string
	replace     bool
	callTimeout time.Duration
	poll        time.Duration
	creds       aws.CredentialsProvider
	log         *slog.Logger

	mu          sync.Mutex
	groups      []TargetGroup // configured ∪ discovered, cached by Discover
	asgName     string
	asgARN      string
	asgTGs      []string      // the group's own target groups, once known
	asgTGsKnown bool          // asgTGs was read from the group
	hookTimeout time.Duration // the hook's HeartbeatTimeout, 0 until learned
	leaving     uint64        // counts Deregister calls: registrations started before one stop
}

// New checks the options, loads the SDK configuration (credentials, retryer, endpoint
// settings) and builds the signed calls of the three services. It makes no API call.
func New(ctx context.Context, opts Options) (*Client, error) {
	if opts.Region == "" {
		return nil, errors.New("targets: region is empty; set it in the configuration or let IMDS tell it")
	}
	if opts.CallTimeout < 0 {
		return nil, fmt.Errorf("targets: call timeout %s is negative", opts.CallTimeout)
	}
	if opts.PollInterval < 0 {
		return nil, fmt.Errorf("targets: poll interval %s is negative", opts.PollInterval)
	}
	var errs []error
	seen := map[string]bool{}
	var groups []TargetGroup
	for _, tg := range opts.TargetGroups {
		if err := validateTargetGroup(tg, opts.Region); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[tg.ARN] {
			errs = append(errs, fmt.Errorf("target group %s is listed twice; keep one entry", tg.ARN))
			continue
		}
		seen[tg.ARN] = true
		groups = append(groups, tg)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("targets: %w", err)
	}

	loadOpts := []func(*config.LoadOptions) error{
		config.WithRegion(opts.Region),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = maxAttempts
				o.MaxBackoff = maxBackoff
			})
		}),
	}
	if opts.Credentials != nil {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(opts.Credentials))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("targets: load AWS configuration: %w", err)
	}

	c := &Client{
		region:      opts.Region,
		configured:  groups,
		groups:      groups,
		discover:    opts.Discover,
		hook:        opts.LifecycleHook,
		replace:     opts.RequestReplacement,
		callTimeout: opts.CallTimeout,
		poll:        opts.PollInterval,
		log:         opts.Logger,
	}
	if c.callTimeout == 0 {
		c.callTimeout = DefaultCallTimeout
	}
	if c.poll == 0 {
		c.poll = DefaultPollInterval
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.log = c.log.With("component", "targets")

	c.creds = cfg.Credentials
	c.elb = newELBAPI(opts.Region, opts.Endpoint, cfg)
	c.asg = newASGAPI(opts.Region, opts.Endpoint, cfg)
	c.ec2 = newEC2Query(opts.Region, opts.Endpoint, cfg)
	return c, nil
}

// Discover finds the instance's Auto Scaling group (from the identity's tag, else by
// asking Auto Scaling) when discovery or a lifecycle hook needs it, and caches the
// configured target groups together with the group's. With a lifecycle hook it also
// learns the hook's heartbeat timeout (DescribeLifecycleHooks), for HeartbeatInterval;
// a hook it cannot learn is logged, not returned: the safe default interval applies. An
// instance outside any group is no error. On error the configured target groups stay in
// force. It blocks for at most two or three API calls, each bounded by CallTimeout.
func (c *Client) Discover(ctx context.Context, id instance.Identity) error {
	if id.InstanceID == "" {
		return errors.New("discover target groups: the instance id is unknown")
	}
	if !c.discover && c.hook == "" {
		c.mu.Lock()
		c.asgName = id.AutoScalingGroup
		c.mu.Unlock()
		return nil
	}
	found, err := c.findGroup(ctx, id)
	if err != nil {
		// A group named by the instance tag still serves CompleteLifecycle.
		c.mu.Lock()
		c.asgName = found.name
		c.mu.Unlock()
		return err
	}
	c.mu.Lock()
	c.asgName, c.asgARN = found.name, found.arn
	c.groups = c.configured
	if c.discover {
		c.groups = mergeTargetGroups(c.configured, found.targetGroups)
	}
	if found.described {
		c.asgTGs, c.asgTGsKnown = found.targetGroups, true
	}
	arns := make([]string, len(c.groups))
	for i, tg := range c.groups {
		arns[i] = tg.ARN
	}
	c.mu.Unlock()
	c.log.Info("target groups cached", "auto_scaling_group", found.name, "target_groups", arns)

	if c.hook == "" || found.name == "" {
		return nil
	}
	timeout, err := c.describeHook(ctx, found.name)
	if err != nil {
		c.log.Warn("lifecycle hook not learned; heartbeats go at the default interval", "hook", c.hook,
			"auto_scaling_group", found.name, "interval", DefaultHeartbeatInterval, "err", err)
		return nil
	}
	c.mu.Lock()
	c.hookTimeout = timeout
	c.mu.Unlock()
	c.log.Info("lifecycle hook learned", "hook", c.hook, "auto_scaling_group", found.name,
		"heartbeat_timeout", timeout, "heartbeat_interval", heartbeatInterval(timeout))
	return nil
}

// TargetGroups returns the target groups Deregister and Register will use.
func (c *Client) TargetGroups() []TargetGroup {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]TargetGroup(nil), c.groups...)
}

// AutoScalingGroup returns the instance's Auto Scaling group name, empty when unknown or
// none.
func (c *Client) AutoScalingGroup() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.asgName
}

// group is what Auto Scaling says about the instance's group.
type group struct {
	name, arn    string
	targetGroups []string
	described    bool // DescribeAutoScalingGroups found it: targetGroups is its list
}

// findGroup resolves the instance's Auto Scaling group and, when discovering, its target
// groups. It changes nothing cached, so preflight can use it too.
func (c *Client) findGroup(ctx context.Context, id instance.Identity) (group, error) {
	g := group{name: id.AutoScalingGroup}
	if g.name == "" {
		cctx, cancel := c.callContext(ctx)
		out, err := c.asg.describeAutoScalingInstances(cctx, id.InstanceID)
		cancel()
		if err != nil {
			return g, fmt.Errorf("find auto scaling group of %s: %w", id.InstanceID, explain(err, "autoscaling:DescribeAutoScalingInstances", "*"))
		}
		for _, inst := range out {
			if inst.InstanceID == id.InstanceID {
				g.name = inst.AutoScalingGroup
			}
		}
		if g.name == "" {
			c.log.Info("instance is in no Auto Scaling group; only configured target groups apply", "instance", id.InstanceID)
			return g, nil
		}
	}
	if !c.discover {
		return g, nil
	}
	cctx, cancel := c.callContext(ctx)
	defer cancel()
	out, err := c.asg.describeAutoScalingGroups(cctx, g.name)
	if err != nil {
		return g, fmt.Errorf("describe auto scaling group %s: %w", g.name, explain(err, "autoscaling:DescribeAutoScalingGroups", "*"))
	}
	for _, asg := range out {
		if asg.Name != g.name {
			continue
		}
		g.arn = asg.ARN
		g.targetGroups = attachedTargetGroups(asg)
		g.described = true
		return g, nil
	}
	c.log.Warn("auto scaling group not found; only configured target groups apply", "auto_scaling_group", g.name)
	return g, nil
}

// attachedTargetGroups lists the group's target groups, attached the classic way or as
// traffic sources of type elbv2.
func attachedTargetGroups(asg asgGroup) []string {
	arns := slices.Clone(asg.TargetGroupARNs)
	for _, ts := range asg.TrafficSources {
		if ts.Type == "elbv2" {
			arns = append(arns, ts.Identifier)
		}
	}
	return arns
}

// mergeTargetGroups keeps the configured groups (with their ports) and adds discovered
// ones not already there, port left out.
func mergeTargetGroups(configured []TargetGroup, discovered []string) []TargetGroup {
	out := append([]TargetGroup(nil), configured...)
	seen := map[string]bool{}
	for _, tg := range configured {
		seen[tg.ARN] = true
	}
	for _, arn := range discovered {
		if arn == "" || seen[arn] {
			continue
		}
		seen[arn] = true
		out = append(out, TargetGroup{ARN: arn})
	}
	return out
}

// callContext bounds one API call, retries included.
func (c *Client) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.callTimeout)
}

// Credentials checks that the SDK's credential chain yields credentials (the instance
// role, normally), without calling any service.
func (c *Client) Credentials(ctx context.Context) error {
	if c.creds == nil {
		return errors.New("no AWS credentials provider: attach an instance profile to the instance")
	}
	ctx, cancel := context.WithTimeout(ctx, c.callTimeout)
	defer cancel()
	if _, err := c.creds.Retrieve(ctx); err != nil {
		return fmt.Errorf("aws credentials: %w", err)
	}
	return nil
}
