package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"syscall"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

const (
	// statusTimeout bounds a status query when the caller's context has no deadline.
	statusTimeout = 10 * time.Second
	// maxResponseLine bounds one response line; a status with a long timeline is
	// a few kilobytes.
	maxResponseLine = 4 << 20
)

// QueryStatus asks the agent listening on path for its status.
func QueryStatus(ctx context.Context, path string) (status.Snapshot, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, statusTimeout)
		defer cancel()
	}
	conn, err := dial(ctx, path)
	if err != nil {
		return status.Snapshot{}, err
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })()
	lines, err := send(ctx, conn, request{Command: commandStatus})
	if err != nil {
		return status.Snapshot{}, err
	}
	f, err := readFrame(lines)
	if err != nil {
		return status.Snapshot{}, err
	}
	switch {
	case f.Done:
		return status.Snapshot{}, fmt.Errorf("control: agent refused status: %s", f.Error)
	case f.Status == nil:
		return status.Snapshot{}, errors.New("control: agent answered status with something else")
	}
	return *f.Status, nil
}

// RunDrill asks the agent listening on path to run the interruption plan now,
// working to budget (zero: the agent's default), and calls emit for each event of
// the timeline as it arrives. It returns when the plan has finished, with the
// plan's error if it failed. Ending ctx stops the reporting, not the plan.
func RunDrill(ctx context.Context, path string, budget time.Duration, emit func(status.Event)) error {
	if budget < 0 || budget > maxDrillBudget {
		return fmt.Errorf("control: drill budget %s: must be between 0 and %s", budget, maxDrillBudget)
	}
	if _, ok := ctx.Deadline(); !ok {
		limit := budget
		if limit == 0 {
			limit = maxDrillBudget
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit+2*drillSlack)
		defer cancel()
	}
	conn, err := dial(ctx, path)
	if err != nil {
		return err
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })()
	req := request{Command: commandDrill}
	if budget > 0 {
		req.Budget = budget.String()
	}
	lines, err := send(ctx, conn, req)
	if err != nil {
		return err
	}
	for {
		f, err := readFrame(lines)
		if err != nil {
			return err
		}
		switch {
		case f.Event != nil:
			emit(*f.Event)
		case f.Done && f.Error != "":
			return fmt.Errorf("control: drill: %s", f.Error)
		case f.Done:
			return nil
		default:
			return errors.New("control: agent answered drill with something else")
		}
	}
}

// dial connects to the agent, naming the likely cause when nobody listens.
func dial(ctx context.Context, path string) (*net.UnixConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	switch {
	case err == nil:
		return c.(*net.UnixConn), nil
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("control: is jenkins-spot-agent running? socket %s: %w", path, err)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("control: socket %s: %w (run as root or as the agent's user)", path, err)
	default:
		return nil, fmt.Errorf("control: connect to %s: %w", path, err)
	}
}

// send writes the request and returns a scanner over the response lines. The
// connection's deadline follows ctx's; the caller also unblocks reads when ctx ends.
func send(ctx context.Context, conn *net.UnixConn, req request) (*bufio.Scanner, error) {
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return nil, fmt.Errorf("control: %w", err)
		}
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("control: encode request: %w", err)
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 0, 64<<10), maxResponseLine)
	if _, err := conn.Write(append(b, '\n')); err != nil {
		// The agent may have refused us before reading; its reason beats EPIPE.
		if f, ferr := readFrame(sc); ferr == nil && f.Error != "" {
			return nil, fmt.Errorf("control: agent refused %s: %s", req.Command, f.Error)
		}
		return nil, fmt.Errorf("control: send %s: %w", req.Command, err)
	}
	return sc, nil
}

func readFrame(sc *bufio.Scanner) (frame, error) {
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return frame{}, fmt.Errorf("control: read answer: %w", err)
		}
		return frame{}, errors.New("control: agent closed the connection without finishing; see journalctl -u jenkins-spot-agent")
	}
	f, err := parseFrame(sc.Bytes())
	if err != nil {
		return frame{}, fmt.Errorf("control: %w", err)
	}
	return f, nil
}
