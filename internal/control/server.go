// Package control is the agent's control socket: `jenkins-spot-agent status` and
// `jenkins-spot-agent drill` talk to the running agent through it.
//
// It is a Unix stream socket with mode 0600 (its directory is created 0700 when
// missing), and the server also checks each peer's uid (SO_PEERCRED): only root
// and the agent's own user may ask for a drill, which stops Jenkins.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// Agent is what the control socket needs from the running agent.
type Agent interface {
	// Status returns a snapshot of the agent's state.
	Status() status.Snapshot
	// Drill runs the interruption plan now, as if a notice of kind drill had
	// arrived, working to budget (zero: the agent's default). It calls emit for
	// each timeline event as it happens, possibly from several goroutines, and
	// returns when the plan has finished.
	Drill(ctx context.Context, budget time.Duration, emit func(status.Event)) error
}

const (
	// requestTimeout bounds how long a client may take to send its request.
	requestTimeout = 10 * time.Second
	// writeTimeout bounds each response line; a client that stops reading is dropped.
	writeTimeout = 10 * time.Second
	// drillSlack is added to a drill's budget for the server's own deadline: the
	// plan has its own deadlines, this one only catches a plan that never returns.
	drillSlack = time.Minute
	// maxRequest bounds the request line.
	maxRequest = 4096
	// maxConns bounds concurrent connections; status is cheap, but not free.
	maxConns = 16
	// probeTimeout bounds the check whether an existing socket still answers.
	probeTimeout = 2 * time.Second
)

// Server serves the control socket.
type Server struct {
	path   string
	ln     *net.UnixListener
	agent  Agent
	logger *slog.Logger

	// allow decides whether a peer uid may use the socket.
	allow          func(uid uint32) bool
	requestTimeout time.Duration

	conns     chan struct{} // semaphore of maxConns
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Listen creates the control socket at path for a and returns a Server that
// answers on it once Serve runs. It creates a missing parent directory with mode
// 0700, replaces a stale socket left by a dead agent, and refuses to start when
// another agent answers on path.
func Listen(path string, a Agent, logger *slog.Logger) (*Server, error) {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("control: create socket directory %s: %w", dir, err)
		}
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("control: another agent is running (socket %s was just created): %w", path, err)
		}
		return nil, fmt.Errorf("control: listen on %s: %w (check control_socket)", path, err)
	}
	// The socket is created with the umask's mode; narrow it at once. The peer
	// check below covers the moment in between.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control: chmod %s: %w", path, err)
	}
	own := uint32(os.Getuid())
	return &Server{
		path:           path,
		ln:             ln,
		agent:          a,
		logger:         logger,
		allow:          func(uid uint32) bool { return peerAllowed(uid, own) },
		requestTimeout: requestTimeout,
		conns:          make(chan struct{}, maxConns),
	}, nil
}

// removeStale removes a socket at path that nobody answers on, the remains of an
// agent that died without cleaning up.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("control: %s exists and is not a socket; move it away or change control_socket", path)
	}
	d := net.Dialer{Timeout: probeTimeout}
	c, err := d.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("control: another agent is running (it answers on %s); stop it first", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control: cannot tell whether %s is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("control: remove stale socket: %w", err)
	}
	return nil
}

// peerAllowed is the access rule: root, or the user the agent runs as.
func peerAllowed(peer, own uint32) bool { return peer == 0 || peer == own }

// Serve answers connections until ctx ends or Close is called, then waits for the
// connections in progress (a drill's context ends with ctx) and returns nil. The
// socket file is removed when it stops.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = s.Close() })
	defer stop()
	defer s.wg.Wait()
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off instead of spinning.
			s.logger.Warn("control socket accept failed", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		select {
		case s.conns <- struct{}{}:
		default:
			s.refuse(conn, "agent busy: too many control connections; try again")
			conn.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.conns }()
			defer conn.Close()
			s.handle(ctx, conn)
		}()
	}
}

// Close stops accepting connections and removes the socket file. Connections in
// progress continue; Serve waits for them.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if err := s.ln.Close(); err != nil {
			s.closeErr = fmt.Errorf("control: close %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

func (s *Server) handle(ctx context.Context, conn *net.UnixConn) {
	uid, err := peerUID(conn)
	if err != nil {
		s.logger.Warn("control socket: cannot identify peer; dropping it", "err", err)
		return
	}
	// The request is read even from a refused peer, so that the refusal is not
	// lost to a connection reset when we close with its request unread.
	line, err := s.readRequest(conn)
	if err != nil {
		s.logger.Debug("control socket: no request", "err", err)
		return
	}
	if !s.allow(uid) {
		s.logger.Warn("control socket: refused peer", "uid", uid)
		s.refuse(conn, fmt.Sprintf("permission denied: uid %d may not use the control socket; run as root", uid))
		return
	}
	cmd, err := parseRequest(line)
	if err != nil {
		s.refuse(conn, err.Error())
		return
	}

	switch cmd.name {
	case commandStatus:
		st := s.agent.Status()
		if err := writeFrame(conn, frame{Status: &st}); err != nil {
			s.logger.Debug("control socket: status not delivered", "err", err)
		}
	case commandDrill:
		s.drill(ctx, conn, cmd.budget)
	}
}

// readRequest reads the one request line, bounded in size and time. A request
// cut short by the client closing its side still counts.
func (s *Server) readRequest(conn *net.UnixConn) ([]byte, error) {
	if err := conn.SetReadDeadline(time.Now().Add(s.requestTimeout)); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(io.LimitReader(conn, maxRequest)).ReadBytes('\n')
	if err != nil && (!errors.Is(err, io.EOF) || len(line) == 0) {
		return nil, err
	}
	return line, nil
}

// drill runs the plan and streams its events. The plan does not depend on the
// client: one that disconnects stops getting events, and the plan goes on,
// because a half-run plan would leave Jenkins in quiet-down with nobody to finish.
func (s *Server) drill(ctx context.Context, conn *net.UnixConn, budget time.Duration) {
	limit := budget
	if limit == 0 {
		limit = maxDrillBudget
	}
	ctx, cancel := context.WithTimeout(ctx, limit+drillSlack)
	defer cancel()

	s.logger.Info("drill requested over the control socket", "budget", budget)
	var mu sync.Mutex
	open := true
	emit := func(ev status.Event) {
		mu.Lock()
		defer mu.Unlock()
		if !open {
			return
		}
		if err := writeFrame(conn, frame{Event: &ev}); err != nil {
			s.logger.Warn("drill client went away; the drill goes on", "err", err)
			open = false
		}
	}
	err := s.agent.Drill(ctx, budget, emit)

	mu.Lock()
	defer mu.Unlock()
	wasOpen := open
	open = false // late events from a straggling step are dropped
	done := doneFrame{Done: true}
	if err != nil {
		done.Error = err.Error()
	}
	if wasOpen {
		_ = writeLine(conn, done)
	}
}

func (s *Server) refuse(conn *net.UnixConn, msg string) {
	if err := writeLine(conn, doneFrame{Done: true, Error: msg}); err != nil {
		s.logger.Debug("control socket: refusal not delivered", "err", err)
	}
}

func writeFrame(conn *net.UnixConn, f frame) error { return writeLine(conn, f) }

func writeLine(conn *net.UnixConn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	if err := conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	_, err = conn.Write(append(b, '\n'))
	return err
}

// peerUID returns the uid of the process at the other end of conn.
func peerUID(conn *net.UnixConn) (uint32, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return cred.Uid, nil
}
