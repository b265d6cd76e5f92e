package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
)

// buildAEMM builds the amazon-ec2-metadata-mock tool of go.mod into dir.
func buildAEMM(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "aemm")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build amazon-ec2-metadata-mock: %v\n%s", err, b)
	}
	return out
}

// process is a subprocess of the test whose exit can be awaited by many.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited
	err  error         // its exit, once done is closed
}

// startProcess starts cmd with its output in logPath and kills it (by its pid) in
// Cleanup unless it has exited already.
func startProcess(t *testing.T, cmd *exec.Cmd, logPath string) *process {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not die after SIGKILL", filepath.Base(cmd.Path), cmd.Process.Pid)
		}
	})
	return p
}

// exited reports whether the process has exited, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// waitPort waits until something accepts TCP connections on addr.
func waitPort(t *testing.T, addr string, timeout time.Duration, p *process) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if ok, err := p.exited(); ok {
			t.Fatalf("process meant to listen on %s exited: %v", addr, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after %s: %v", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const hostsFile = "/etc/hosts"

// addHostsLine appends line to /etc/hosts and, in Cleanup, removes exactly the text it
// added, leaving every other byte of the file as it then is. The file is rewritten in
// place: it may be a bind mount, which a rename would not replace.
func addHostsLine(t *testing.T, line string) {
	t.Helper()
	orig, err := os.ReadFile(hostsFile)
	if err != nil {
		t.Fatal(err)
	}
	added := line + "\n"
	if len(orig) > 0 && !bytes.HasSuffix(orig, []byte("\n")) {
		added = "\n" + added
	}
	f, err := os.OpenFile(hostsFile, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, werr := f.WriteString(added)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		t.Fatalf("add %q to %s: %v", line, hostsFile, err)
	}
	t.Cleanup(func() {
		now, err := os.ReadFile(hostsFile)
		if err != nil {
			t.Errorf("restore %s: %v", hostsFile, err)
			return
		}
		i := bytes.LastIndex(now, []byte(added))
		if i < 0 {
			t.Errorf("restore %s: the line %q added by the test is gone", hostsFile, line)
			return
		}
		restored := append(append([]byte{}, now[:i]...), now[i+len(added):]...)
		if err := os.WriteFile(hostsFile, restored, 0); err != nil {
			t.Errorf("restore %s: %v", hostsFile, err)
		}
	})
}

// mountAt returns the mountinfo entry at path, nil when nothing is mounted there.
func mountAt(t *testing.T, path string) *mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	if len(infos) == 0 {
		return nil
	}
	return infos[len(infos)-1]
}

// unmountInCleanup unmounts path at the end of the test if it is still mounted, with a
// plain umount: never lazily, so that a mount still in use shows up as an error.
func unmountInCleanup(t *testing.T, path string) {
	t.Helper()
	t.Cleanup(func() {
		for range 5 {
			infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
			if err != nil {
				t.Errorf("read mountinfo: %v", err)
				return
			}
			if len(infos) == 0 {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out, err := exec.CommandContext(ctx, "umount", path).CombinedOutput()
			cancel()
			if err != nil {
				t.Errorf("umount %s: %v: %s", path, err, out)
				return
			}
		}
	})
}

// notifySocket is a stand-in for systemd's NOTIFY_SOCKET: it keeps every datagram.
type notifySocket struct {
	path string
	conn *net.UnixConn

	mu       sync.Mutex
	messages []string
	arrived  chan struct{} // closed and replaced on every datagram
}

func listenNotify(t *testing.T, path string) *notifySocket {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("notify socket: %v", err)
	}
	n := &notifySocket{path: path, conn: conn, arrived: make(chan struct{})}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			k, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.messages = append(n.messages, string(buf[:k]))
			close(n.arrived)
			n.arrived = make(chan struct{})
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return n
}

// all returns the datagrams received so far, in order.
func (n *notifySocket) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.messages...)
}

// waitFor waits for a datagram with a line equal to line and returns its index.
func (n *notifySocket) waitFor(line string, timeout time.Duration, p *process) (int, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		n.mu.Lock()
		for i, m := range n.messages {
			for _, l := range strings.Split(m, "\n") {
				if l == line {
					n.mu.Unlock()
					return i, nil
				}
			}
		}
		arrived := n.arrived
		n.mu.Unlock()
		select {
		case <-arrived:
		case <-p.done:
			return -1, fmt.Errorf("the agent exited before %s: %v", line, p.err)
		case <-deadline.C:
			return -1, fmt.Errorf("no %s within %s", line, timeout)
		}
	}
}

// scrape fetches the agent's /metrics text.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape metrics: status %d, %v", resp.StatusCode, err)
	}
	return string(b)
}

// waitSamples scrapes /metrics until it has every one of these exact sample lines.
func waitSamples(t *testing.T, addr string, timeout time.Duration, samples ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		lines := strings.Split(scrape(t, addr), "\n")
		var missing []string
		for _, s := range samples {
			if !slices.Contains(lines, s) {
				missing = append(missing, s)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("/metrics still lacks %q after %s", missing, timeout)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// queryStatus runs `status --json --socket` of the binary and decodes what it prints.
func queryStatus(bin, socket string) (status.Snapshot, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "status", "--json", "--socket", socket)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return status.Snapshot{}, fmt.Errorf("status --json: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	var st status.Snapshot
	if err := json.Unmarshal(stdout.Bytes(), &st); err != nil {
		return status.Snapshot{}, fmt.Errorf("status --json printed something else: %v\n%s", err, stdout.Bytes())
	}
	return st, nil
}

// waitPhase polls `status --json` until the agent reports phase p.
func waitPhase(t *testing.T, bin, socket string, p status.Phase, timeout time.Duration, agent *process) status.Snapshot {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last status.Snapshot
	var lastErr error
	for {
		st, err := queryStatus(bin, socket)
		if err == nil && st.Phase == p {
			return st
		}
		if err == nil {
			last = st
		}
		lastErr = err
		if ok, err := agent.exited(); ok {
			t.Fatalf("the agent exited while waiting for phase %s: %v", p, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("phase %s not reached within %s; last phase %q, last error %v", p, timeout, last.Phase, lastErr)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// vmRSS reads a process's resident set size from /proc.
func vmRSS(pid int) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", errors.New("no VmRSS line")
}

// tail returns the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// endedStep returns the index and the event of the one ended step s among steps, and
// fails when it is missing or appears more than once.
func endedStep(t *testing.T, steps []status.Event, s status.Step) (int, status.Event) {
	t.Helper()
	idx := -1
	for i, ev := range steps {
		if ev.Step != s || !ev.Done {
			continue
		}
		if idx >= 0 {
			t.Errorf("step %s ended twice (at %d and %d)", s, idx, i)
		}
		idx = i
	}
	if idx < 0 {
		t.Fatalf("step %s is not among the ended steps", s)
	}
	return idx, steps[idx]
}

// basicPost sends an authenticated POST and returns the status code.
func basicPost(t *testing.T, url, user, token string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, token)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// agentEnv is the environment the agent runs with: this process's, without anything
// that would point the AWS SDK, systemd or a proxy elsewhere, plus extra.
func agentEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "AWS_"),
			name == "NOTIFY_SOCKET", name == "WATCHDOG_USEC", name == "WATCHDOG_PID",
			name == "CREDENTIALS_DIRECTORY",
			strings.EqualFold(name, "HTTP_PROXY"), strings.EqualFold(name, "HTTPS_PROXY"),
			strings.EqualFold(name, "NO_PROXY"), strings.EqualFold(name, "ALL_PROXY"):
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}
