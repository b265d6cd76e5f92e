package imdstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

var aemmBuild struct {
	once sync.Once
	path string
	err  error
}

// aemmBinary builds amazon-ec2-metadata-mock (the Go tool dependency) once per test
// binary.
func aemmBinary(t testing.TB) string {
	t.Helper()
	aemmBuild.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			aemmBuild.err = fmt.Errorf("go toolchain not on PATH: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "aemm-")
		if err != nil {
			aemmBuild.err = err
			return
		}
		bin := filepath.Join(dir, "ec2-metadata-mock")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, goTool, "build", "-o", bin, "github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock").CombinedOutput()
		if err != nil {
			aemmBuild.err = fmt.Errorf("build ec2-metadata-mock: %v: %s", err, out)
			return
		}
		aemmBuild.path = bin
	})
	if aemmBuild.err != nil {
		testenv.Missing(t, "%s", aemmBuild.err.Error())
	}
	return aemmBuild.path
}

// StartAEMM runs amazon-ec2-metadata-mock, the real peer, in IMDSv2-only mode on a
// free loopback port with the given extra arguments (a subcommand such as spot,
// events or asglifecycle and its flags) and returns its base URL once it answers. It
// stops when the test ends. It serves instance i-1234567890abcdef0, m4.xlarge, in
// us-east-1a (use1-az4), on-demand, without instance tags. Without the go command
// the test skips (fails under CI=true).
func StartAEMM(t testing.TB, args ...string) string {
	t.Helper()
	testenv.SkipShort(t, "runs amazon-ec2-metadata-mock, built for the test")
	bin := aemmBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	full := append([]string{"-n", "127.0.0.1", "-p", port, "-I"}, args...)
	cmd := exec.Command(bin, full...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var out testenv.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The mock serves until killed; an earlier exit is a fault the test reports.
		if err := cmd.Process.Kill(); err != nil {
			t.Errorf("stop ec2-metadata-mock: %v\n%s", err, out.String())
		}
		if err := cmd.Wait(); err != nil && !isKilled(err) {
			t.Errorf("ec2-metadata-mock: %v\n%s", err, out.String())
		}
	})
	url := "http://127.0.0.1:" + port
	deadline := time.Now().Add(testenv.WaitLimit)
	for {
		req, _ := http.NewRequest(http.MethodPut, url+"/latest/api/token", nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ec2-metadata-mock %s did not answer: %v\n%s", strings.Join(full, " "), err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// isKilled reports whether err is the exit of a process that SIGKILL ended.
func isKilled(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}
