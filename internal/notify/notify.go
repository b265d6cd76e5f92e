// Package notify tells systemd how the agent is doing: READY=1 when Jenkins
// answers, STATUS= at each phase change, EXTEND_TIMEOUT_USEC= during long starts and
// stops, and WATCHDOG=1 only while the agent's own loops make progress.
//
// Outside systemd (NOTIFY_SOCKET unset: a terminal, simulate, tests) every method
// is a no-op, so callers never need to ask.
package notify

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends state changes to systemd over NOTIFY_SOCKET. It is safe for
// concurrent use: each message is one datagram.
type Notifier struct {
	logger  *slog.Logger
	enabled bool
}

// New returns a Notifier for the socket named in NOTIFY_SOCKET, or one that does
// nothing when the variable is unset.
func New(logger *slog.Logger) *Notifier {
	return &Notifier{logger: logger, enabled: os.Getenv("NOTIFY_SOCKET") != ""}
}

// Ready tells systemd that start-up is finished (Type=notify), with a status line.
func (n *Notifier) Ready(status string) error {
	return n.send("ready", daemon.SdNotifyReady+"\n"+statusLine(status))
}

// Status sets the one-line status that `systemctl status` shows.
func (n *Notifier) Status(s string) error {
	return n.send("status", statusLine(s))
}

// ExtendTimeout asks systemd to wait d more for the next message while starting or
// stopping. It opens a window from now; it does not add to the unit's timeout, so
// a long wait must call it again before d runs out.
func (n *Notifier) ExtendTimeout(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("notify: extend timeout by %s: must be positive", d)
	}
	return n.send("extend timeout", fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", d.Microseconds()))
}

// Stopping tells systemd that the agent is shutting down, with a status line.
func (n *Notifier) Stopping(status string) error {
	return n.send("stopping", daemon.SdNotifyStopping+"\n"+statusLine(status))
}

// Watchdog sends one keep-alive ping.
func (n *Notifier) Watchdog() error {
	return n.send("watchdog", daemon.SdNotifyWatchdog)
}

// WatchdogInterval returns the unit's WatchdogSec= when systemd watches this
// process, and false when it does not (or its settings cannot be read, which is
// logged).
func (n *Notifier) WatchdogInterval() (time.Duration, bool) {
	if !n.enabled {
		return 0, false
	}
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.logger.Warn("systemd watchdog settings unreadable; not pinging", "err", err)
		return 0, false
	}
	return d, d > 0
}

// RunWatchdog pings the watchdog at half its interval until ctx ends, but only
// while healthy reports true: a wedged agent must be restarted by systemd rather than
// kept alive by a timer that still ticks. (The agent's healthy is its own progress, not
// its sight of IMDS: a blind agent still holds the fence, and a restart would not cure
// the blindness.) It returns at once when systemd does not watch this process.
func (n *Notifier) RunWatchdog(ctx context.Context, healthy func() bool) {
	interval, ok := n.WatchdogInterval()
	if !ok {
		return
	}
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	withholding := false
	for {
		if healthy() {
			if withholding {
				n.logger.Info("agent healthy again; resuming systemd watchdog pings")
				withholding = false
			}
			if err := n.Watchdog(); err != nil {
				n.logger.Warn("systemd watchdog ping failed", "err", err)
			}
		} else if !withholding {
			n.logger.Warn("agent unhealthy; withholding systemd watchdog pings so systemd restarts it",
				"watchdog", interval)
			withholding = true
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (n *Notifier) send(what, state string) error {
	if !n.enabled {
		return nil
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("notify %s: %w", what, err)
	}
	return nil
}

// statusLine returns the STATUS= assignment for s. A newline in s would start a
// new assignment (READY=1 from a status text), so line breaks become spaces.
func statusLine(s string) string {
	return "STATUS=" + strings.Join(strings.Fields(s), " ")
}
