// Package webhook sends the agent's notable timeline events to an HTTP webhook: a
// notice, the end of a shutdown plan (margin left, builds aborted), a handover and a
// lost lease. Slack's incoming-webhook form ({"text": ...}, also understood by
// Mattermost and Rocket.Chat) or a generic JSON form.
//
// Notifications never hold up the agent: Event only puts them on a bounded queue (and
// drops them, counted, when it is full); one worker sends them, each attempt under a
// short deadline, a few attempts at most. The URL is a secret (Slack's carries its
// token): it is never logged, and errors are stripped of it.
package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// Formats of the payload.
const (
	FormatSlack = "slack"
	FormatJSON  = "json"
)

// Results passed to Options.OnResult, one per notification: the values of the
// result label of jenkins_spot_agent_webhook_notifications_total.
const (
	ResultSent    = "sent"
	ResultFailed  = "failed"
	ResultDropped = "dropped"
)

// Defaults for the zero values of Options.
const (
	DefaultTimeout  = 5 * time.Second
	DefaultAttempts = 3
	DefaultQueue    = 32
	// DefaultFlush bounds the delivery of what is still queued once Run's context
	// ends: the end of a plan is announced right before the agent exits.
	DefaultFlush = 10 * time.Second
	// retryBackoff is the pause before the second attempt; it doubles after.
	retryBackoff = 500 * time.Millisecond
)

// Options configure a Notifier.
type Options struct {
	// URL receives the POSTs; http or https. Required.
	URL config.Secret
	// Format is FormatSlack (default) or FormatJSON.
	Format string
	// Timeout bounds one attempt; DefaultTimeout when zero.
	Timeout time.Duration
	// Attempts per notification; DefaultAttempts when zero. Transport errors,
	// timeouts, 429 and 5xx are retried; other answers are final.
	Attempts int
	// Queue is how many notifications may wait; DefaultQueue when zero. Beyond it
	// Event drops them.
	Queue int
	// Flush bounds the sending of queued notifications after Run's context ended;
	// DefaultFlush when zero.
	Flush time.Duration
	// Source names this controller in the messages; the host name when empty.
	Source string
	// HTTPClient sends the requests; nil means a client of its own. Redirects are
	// not followed.
	HTTPClient *http.Client
	// OnResult sees the result of each notification (metrics).
	OnResult func(result string)
	// Logger gets one line per failed notification, never the URL; nil discards.
	Logger *slog.Logger
}

// Notifier queues and sends notifications. Event is safe for concurrent use.
type Notifier struct {
	url      string
	format   string
	timeout  time.Duration
	attempts int
	flush    time.Duration
	source   string
	http     *http.Client
	onResult func(string)
	log      *slog.Logger
	queue    chan status.Event
}

// New checks the options and returns a Notifier; Run sends what Event queues. It
// does not contact the receiver. Errors never contain the URL.
func New(opts Options) (*Notifier, error) {
	u, err := url.Parse(opts.URL.Reveal())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("webhook: the URL is not an http(s) URL: fix webhook.url_file or the webhook-url credential")
	}
	n := &Notifier{
		url:      opts.URL.Reveal(),
		format:   opts.Format,
		timeout:  opts.Timeout,
		attempts: opts.Attempts,
		flush:    opts.Flush,
		source:   opts.Source,
		onResult: opts.OnResult,
		log:      opts.Logger,
	}
	switch n.format {
	case "":
		n.format = FormatSlack
	case FormatSlack, FormatJSON:
	default:
		return nil, fmt.Errorf("webhook: format %q is neither %s nor %s", opts.Format, FormatSlack, FormatJSON)
	}
	if n.timeout <= 0 {
		n.timeout = DefaultTimeout
	}
	if n.attempts <= 0 {
		n.attempts = DefaultAttempts
	}
	if n.flush <= 0 {
		n.flush = DefaultFlush
	}
	queue := opts.Queue
	if queue <= 0 {
		queue = DefaultQueue
	}
	n.queue = make(chan status.Event, queue)
	if n.source == "" {
		n.source, _ = os.Hostname()
	}
	if n.onResult == nil {
		n.onResult = func(string) {}
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	n.log = n.log.With("component", "webhook")
	hc := &http.Client{}
	if opts.HTTPClient != nil {
		copied := *opts.HTTPClient
		hc = &copied
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	n.http = hc
	return n, nil
}

// Notable reports whether e is an event the webhook announces: a notice, the end of
// a plan, a handover or a lost lease.
func Notable(e status.Event) bool {
	switch e.Kind {
	case status.EventNotice:
		return e.Notice != nil
	case status.EventPlanDone:
		return e.Report != nil
	case status.EventHandover, status.EventLeaseLost:
		return true
	}
	return false
}

// Event queues e if it is notable and returns at once; when the queue is full, e is
// dropped and counted. It fits agent.Options.OnEvent.
func (n *Notifier) Event(e status.Event) {
	if !Notable(e) {
		return
	}
	select {
	case n.queue <- e:
	default:
		n.onResult(ResultDropped)
		n.log.Warn("webhook queue full; notification dropped", "kind", e.Kind)
	}
}

// Run sends queued notifications until ctx ends, then what is in flight and still
// queued, for at most the flush time. It returns nil.
func (n *Notifier) Run(ctx context.Context) error {
	// Deliveries outlive ctx by the flush time: the end of a plan is announced right
	// before the agent exits.
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(n.flush, cancel) })
	defer stop()
	for {
		select {
		case e := <-n.queue:
			n.deliver(dctx, e)
		case <-ctx.Done():
			for {
				select {
				case e := <-n.queue:
					n.deliver(dctx, e)
				default:
					return nil
				}
			}
		}
	}
}

// deliver sends one notification with retries and reports its result.
func (n *Notifier) deliver(ctx context.Context, e status.Event) {
	body, err := n.payload(e)
	if err != nil {
		n.onResult(ResultFailed)
		n.log.Warn("webhook notification not encoded", "kind", e.Kind, "err", err)
		return
	}
	backoff := retryBackoff
	for attempt := 1; ; attempt++ {
		retry, err := n.post(ctx, body)
		if err == nil {
			n.onResult(ResultSent)
			return
		}
		if !retry || attempt >= n.attempts || ctx.Err() != nil {
			n.onResult(ResultFailed)
			n.log.Warn("webhook notification failed", "kind", e.Kind, "attempts", attempt, "err", err)
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		backoff *= 2
	}
}

// post makes one attempt. retry says whether another attempt may help. The error
// never contains the URL.
func (n *Notifier) post(ctx context.Context, body []byte) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url, bytes.NewReader(body))
	if err != nil {
		return false, errors.New("cannot build the request")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "jenkins-spot-agent")
	resp, err := n.http.Do(req)
	if err != nil {
		// *url.Error names the URL; keep only what went wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return true, fmt.Errorf("no answer within %s", n.timeout)
		}
		return true, fmt.Errorf("post: %s", strings.ReplaceAll(err.Error(), n.url, "[webhook url]"))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("the receiver answered %s", resp.Status)
	default:
		return false, fmt.Errorf("the receiver answered %s (check the webhook URL and format)", resp.Status)
	}
}
