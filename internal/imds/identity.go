package imds

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/clock"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
)

// Identity retry policy. A booting instance may meet a metadata service that throttles,
// fails or stalls for a while; each item is retried on its own, so one good answer per
// item is enough, however the failures fall.
const (
	// DefaultIdentityTimeout bounds Identity when the caller's context has no deadline.
	DefaultIdentityTimeout = 5 * time.Minute
	// identityBackoffMin and identityBackoffMax bound the wait between two attempts at
	// one item: doubling from the minimum, with jitter over the upper half.
	identityBackoffMin = 100 * time.Millisecond
	identityBackoffMax = 2 * time.Second
	// garbageLimit is how many answers that do not look like the item (or a 404 on a
	// required item) are accepted before Identity gives up on it: a proxy may garble an
	// answer now and then, a service that always does is not EC2's.
	garbageLimit = 3
)

var (
	instanceIDRe = regexp.MustCompile(`^i-([0-9a-f]{8}|[0-9a-f]{17})$`)
	regionRe     = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
	// The AZ is the region plus a letter, or, for Local and Wavelength Zones, the
	// region plus a dashed suffix (us-west-2-lax-1a).
	azSuffixRe     = regexp.MustCompile(`^([a-z]|-[a-z0-9]+(-[a-z0-9]+)*[a-z])$`)
	azRe           = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+([a-z]|-[a-z0-9]+(-[a-z0-9]+)*[a-z])$`)
	azIDRe         = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*-az[0-9]+$`)
	lifecycleRe    = regexp.MustCompile(`^[a-z][a-z-]{0,31}$`)
	instanceTypeRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}\.[a-z0-9][a-z0-9-]{0,31}$`)
)

// identityItem is one metadata item of the identity.
type identityItem struct {
	path     string
	dst      func(*instance.Identity) *string
	required bool
	// check tells a plausible answer from garbage, on the item alone.
	check func(string) error
}

var identityItems = []identityItem{
	{pathInstanceID, func(id *instance.Identity) *string { return &id.InstanceID }, true, matches(instanceIDRe, "i- followed by 8 or 17 hex digits")},
	{pathRegion, func(id *instance.Identity) *string { return &id.Region }, true, matches(regionRe, "a region name like us-east-1")},
	{pathAZ, func(id *instance.Identity) *string { return &id.AvailabilityZone }, true, matches(azRe, "a zone name like us-east-1a")},
	{pathInstanceType, func(id *instance.Identity) *string { return &id.InstanceType }, false, matches(instanceTypeRe, "an instance type like m7g.large")},
	{pathAZID, func(id *instance.Identity) *string { return &id.AZID }, false, matches(azIDRe, "a zone id like use1-az6")},
	{pathLifecycle, func(id *instance.Identity) *string { return &id.Market }, false, matches(lifecycleRe, "spot or on-demand")},
	{pathASGTag, func(id *instance.Identity) *string { return &id.AutoScalingGroup }, false, checkGroupName},
}

func matches(re *regexp.Regexp, want string) func(string) error {
	return func(s string) error {
		if !re.MatchString(s) {
			return fmt.Errorf("%s is not %s", quoteShort(s), want)
		}
		return nil
	}
}

func checkGroupName(g string) error {
	if g == "" || len(g) > 255 || strings.ContainsFunc(g, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("%s is not a valid auto scaling group name", quoteShort(g))
	}
	return nil
}

// Identity reads who this instance is: instance id, region and zone (required),
// instance type, zone id, life cycle and Auto Scaling group name (optional: a 404 leaves
// them empty; EC2 serves all but the group name on every instance). The group name comes from the instance tag aws:autoscaling:groupName,
// which IMDS serves only when the launch template enables instance metadata tags.
//
// Each item is read on its own and retried with backoff and jitter until it answers:
// throttling (429), server errors, dropped connections and stalls (each request has its
// own deadline, Options.RequestTimeout) cost one attempt, not the whole identity. It
// blocks until every item has answered or ctx ends (DefaultIdentityTimeout when ctx has
// no deadline): give it minutes at boot. Errors:
//   - ctx ended: the error names the item still missing, the attempts made and the last
//     failure, and wraps ctx's error;
//   - IMDS disabled (403), no IMDSv2 token (404/405 on the token request) or a rejected
//     request (400): at once, since asking again cannot help;
//   - an item that answers garbage (or 404 when required) three times: the error names
//     the item and the value;
//   - values that disagree (a zone outside the region): at once.
//
// Safe for concurrent use; idempotent.
func (c *Client) Identity(ctx context.Context) (instance.Identity, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultIdentityTimeout)
		defer cancel()
	}
	var id instance.Identity
	for _, it := range identityItems {
		v, err := c.readItem(ctx, it)
		if err != nil {
			return instance.Identity{}, fmt.Errorf("read instance identity: %w", err)
		}
		*it.dst(&id) = v
	}
	if err := ValidateIdentity(id); err != nil {
		return instance.Identity{}, fmt.Errorf("read instance identity from %s: %w", c.endpoint, err)
	}
	return id, nil
}

// readItem reads one identity item, retrying until it gets a plausible answer.
func (c *Client) readItem(ctx context.Context, it identityItem) (string, error) {
	start := time.Now()
	attempts, garbage := 0, 0
	var last error
	for {
		attempts++
		body, found, err := c.get(ctx, it.path, c.timeout)
		switch {
		case err == nil && !found && !it.required:
			return "", nil
		case err == nil && !found:
			garbage++
			last = fmt.Errorf("%s not found (404) at %s: the metadata service does not look like EC2's", it.path, c.endpoint)
		case err == nil:
			v := strings.TrimSpace(string(body))
			cerr := it.check(v)
			if cerr == nil {
				return v, nil
			}
			garbage++
			last = fmt.Errorf("%s: %w", it.path, cerr)
		default:
			var re *requestError
			if errors.As(err, &re) && re.permanent() {
				return "", err
			}
			last = err
		}
		if garbage >= garbageLimit {
			return "", fmt.Errorf("%w (%d answers like it; is something between the agent and IMDS rewriting answers?)", last, garbage)
		}
		if ctx.Err() != nil || !clock.Sleep(ctx, identityBackoff(attempts)) {
			return "", &identityTimeout{path: it.path, attempts: attempts, waited: time.Since(start), last: last, ctx: ctx.Err()}
		}
	}
}

// identityTimeout is an identity item that did not answer well before the deadline.
type identityTimeout struct {
	path     string
	attempts int
	waited   time.Duration
	last     error
	ctx      error
}

func (e *identityTimeout) Error() string {
	return fmt.Sprintf("%s: no good answer in %s (%d attempts): the metadata service stayed away until the deadline; last error: %v",
		e.path, e.waited.Round(time.Millisecond), e.attempts, e.last)
}

func (e *identityTimeout) Unwrap() []error { return []error{e.ctx, e.last} }

// identityBackoff is the wait after the n-th (1-based) failed attempt at one item:
// doubling from identityBackoffMin up to identityBackoffMax, spread over its upper half
// so that instances booting together do not ask in step.
func identityBackoff(n int) time.Duration {
	d := min(identityBackoffMin<<min(n-1, 10), identityBackoffMax)
	return d/2 + rand.N(d/2+1)
}

// permanent reports whether asking again cannot help: IMDS is disabled (403), the
// service offers no IMDSv2 token (404 or 405 on the token request), or it rejects the
// request itself (400).
func (e *requestError) permanent() bool {
	switch {
	case e.status == http.StatusForbidden, e.status == http.StatusBadRequest:
		return true
	case e.token && (e.status == http.StatusNotFound || e.status == http.StatusMethodNotAllowed):
		return true
	}
	return false
}

// ValidateIdentity checks that an identity is well formed: an instance id, a region,
// and an availability zone inside that region. Empty optional fields (instance type
// included, for identities built by hand) pass.
func ValidateIdentity(id instance.Identity) error {
	if !instanceIDRe.MatchString(id.InstanceID) {
		return fmt.Errorf("instance id %s is not i- followed by 8 or 17 hex digits", quoteShort(id.InstanceID))
	}
	if !regionRe.MatchString(id.Region) {
		return fmt.Errorf("region %s is not a region name like us-east-1", quoteShort(id.Region))
	}
	rest, ok := strings.CutPrefix(id.AvailabilityZone, id.Region)
	if !ok || !azSuffixRe.MatchString(rest) {
		return fmt.Errorf("availability zone %s is not a zone of region %s", quoteShort(id.AvailabilityZone), id.Region)
	}
	if id.AZID != "" && !azIDRe.MatchString(id.AZID) {
		return fmt.Errorf("availability zone id %s is not like use1-az6", quoteShort(id.AZID))
	}
	if id.Market != "" && !lifecycleRe.MatchString(id.Market) {
		return fmt.Errorf("instance life cycle %s is not like spot or on-demand", quoteShort(id.Market))
	}
	if id.InstanceType != "" && !instanceTypeRe.MatchString(id.InstanceType) {
		return fmt.Errorf("instance type %s is not like m7g.large", quoteShort(id.InstanceType))
	}
	if g := id.AutoScalingGroup; g != "" {
		if err := checkGroupName(g); err != nil {
			return err
		}
	}
	return nil
}

// TargetLifecycleState reads autoscaling/target-lifecycle-state once: the Auto Scaling
// state this instance is moving to (InService, Warmed:Running, Warmed:Stopped,
// Terminated...). It is "" with no error when IMDS answers 404, as it does on an
// instance that never changed state (one launched outside a group, or just launched).
// One request (plus a fresh token after a 401) within Options.RequestTimeout; the
// caller decides whether to ask again. Errors: the request failed (see Identity for the
// kinds) or the answer is not a lifecycle state.
func (c *Client) TargetLifecycleState(ctx context.Context) (string, error) {
	body, found, err := c.get(ctx, pathTargetLifecycleState, c.timeout)
	if err != nil {
		return "", fmt.Errorf("read target lifecycle state: %w", err)
	}
	if !found {
		return "", nil
	}
	return ParseTargetLifecycleState(body)
}
