package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins/jenkinstest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// TestSecretRedactedThroughSlog logs a config.Secret every way the code base passes
// values to slog and fmt, through both handlers Main can build.
func TestSecretRedactedThroughSlog(t *testing.T) {
	const token = "sec-unit-token-7f3a9c"
	s := config.Secret(token)
	if s.Reveal() != token {
		t.Fatalf("Reveal() = %q", s.Reveal())
	}
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := newLogger(&buf, "debug", format)
			if err != nil {
				t.Fatal(err)
			}
			log.Debug("as a pair", "token", s)
			log.Info("as an attribute", slog.Any("token", s))
			log.Warn("in a group", slog.Group("jenkins", slog.Any("token", s)))
			log.With("token", s).Error("from With")
			log.WithGroup("g").Info("under WithGroup", "token", s)
			log.Info("through fmt", "msg", fmt.Sprintf("%v %s %q", s, s, s))
			log.Info("in an error", "err", fmt.Errorf("quiet-down with %v: %w", s, errors.New("refused")))

			out := buf.String()
			if strings.Contains(out, token) {
				t.Fatalf("the token is in the %s log:\n%s", format, out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 7 {
				t.Fatalf("%d lines, want 7:\n%s", len(lines), out)
			}
			for _, l := range lines {
				if !strings.Contains(l, "[redacted]") {
					t.Errorf("line without [redacted]: %s", l)
				}
			}
			if format == "json" {
				var rec struct {
					Jenkins struct{ Token string } `json:"jenkins"`
				}
				if err := json.Unmarshal([]byte(lines[2]), &rec); err != nil {
					t.Fatal(err)
				}
				if rec.Jenkins.Token != "[redacted]" {
					t.Errorf("grouped token = %q, want [redacted]", rec.Jenkins.Token)
				}
			}
		})
	}
}

// secForbidden are the strings no output may hold: the Jenkins API token, the same
// token as a Basic authorization header carries it, and the AWS secret access key.
func secForbidden(w *pfWorld) map[string]string {
	return map[string]string{
		"jenkins api token":     w.token,
		"basic authorization":   base64.StdEncoding.EncodeToString([]byte(pfUser + ":" + w.token)),
		"aws secret access key": w.awsSecret,
	}
}

// secCheck fails the test for any forbidden string in out and, for JSON logs, any line
// that is not a JSON object.
func secCheck(t *testing.T, w *pfWorld, name, out, format string) {
	t.Helper()
	for what, s := range secForbidden(w) {
		if strings.Contains(out, s) {
			t.Errorf("%s holds the %s", name, what)
		}
	}
	if format != "json" {
		return
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" && !json.Valid([]byte(l)) {
			t.Errorf("%s: a line of --log-format json is not JSON: %s", name, l)
		}
	}
}

// TestSecretNeverInLogs runs the commands that load the Jenkins API token at debug
// level, in both log formats, and looks for the token and the AWS secret key in
// everything they print.
func TestSecretNeverInLogs(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run("preflight "+format, func(t *testing.T) {
			w := pfNewWorld(t)
			// Failures print the most: a denied call and an unresolvable name.
			w.aws.Deny("DeregisterTargets")
			w.aws.Deny("DescribeInstances")
			cfg := w.pfConfig(t, pfUnresolvable, pfTrue(t), "")
			code, out, errOut := pfRun(t, "preflight", "--config", cfg, "--log-level", "debug", "--log-format", format)
			if code != exitFailed {
				t.Fatalf("exit code %d, want %d; stderr:\n%s\nstdout:\n%s", code, exitFailed, errOut, out)
			}
			if !strings.Contains(out, "token from "+w.tokenFile) {
				t.Fatalf("preflight did not load the token:\n%s", out)
			}
			secCheck(t, w, "stdout", out, "text")
			secCheck(t, w, "stderr", errOut, format)
		})

		t.Run("run with a failing mount "+format, func(t *testing.T) {
			w := pfNewWorld(t)
			// A mount program that fails without a transient cause is not retried:
			// the boot ends at once.
			failing := filepath.Join(w.dir, "mount-fails")
			pfWrite(t, failing, "#!/bin/sh\necho \"mount: bad option\" >&2\nexit 32\n")
			secExecutable(t, failing)
			cfg := w.pfConfig(t, pfResolvable, failing, "")
			code, out, errOut := pfRun(t, "run", "--config", cfg, "--log-level", "debug", "--log-format", format)
			if code != exitFailed {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitFailed, errOut)
			}
			if !strings.Contains(errOut, "bad option") {
				t.Fatalf("the run did not get as far as the mount:\n%s", errOut)
			}
			secCheck(t, w, "stdout", out, format)
			secCheck(t, w, "stderr", errOut, format)
		})

		t.Run("run through a shutdown plan "+format, func(t *testing.T) {
			secRunPlan(t, format)
		})
	}
}

// secRunPlan runs `run` with a Spot notice already posted: the notice aborts the boot
// (the mount program is still busy) and the shutdown plan runs, which sends the token
// to the Jenkins double with the quiet-down request.
func secRunPlan(t *testing.T, format string) {
	w := pfNewWorld(t)
	jd := jenkinstest.NewServer(jenkinstest.Config{
		Users: map[string]jenkinstest.User{pfUser: {Token: w.token, Manage: true}},
	})
	js := httptest.NewServer(jd.Handler())
	t.Cleanup(js.Close)

	slow := filepath.Join(w.dir, "mount-slow")
	pfWrite(t, slow, "#!/bin/sh\nexec sleep 30\n")
	secExecutable(t, slow)
	// No replacement is asked for, so the plan does not wait for a successor that never
	// comes here: what this test reads is the log of a whole plan.
	cfg := w.pfConfig(t, pfResolvable, slow, "interruption:\n  request_replacement: false\n")
	// Point jenkins.url at the double: the config's own url is a closed port.
	cfgText := strings.Replace(secRead(t, cfg), "url: http://127.0.0.1:1", "url: "+js.URL, 1)
	pfWrite(t, cfg, cfgText)

	w.imds.SetSpotAction("terminate", time.Now().Add(2*time.Minute))

	var out, errOut testenv.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"run", "--config", cfg, "--log-level", "debug", "--log-format", format}, &out, &errOut)
	}()

	// The plan ends with its report; the agent then lingers until it is stopped.
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case code := <-done:
			t.Fatalf("run exited with %d before the plan finished; stderr:\n%s", code, errOut.String())
		case <-deadline:
			cancel()
			<-done
			t.Fatalf("the shutdown plan did not finish within 60 s; stderr:\n%s", errOut.String())
		case <-tick.C:
			if strings.Contains(errOut.String(), "shutdown plan finished") {
				break wait
			}
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit code after the plan and a stop %d, want %d", code, exitOK)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return within 30 s of its context being cancelled")
	}

	// The token was loaded and sent, so its absence below means something.
	authenticated := false
	for _, r := range jd.Requests() {
		if r.User == pfUser {
			authenticated = true
		}
	}
	if !authenticated {
		t.Fatalf("the Jenkins double saw no request authenticated with the token: %+v", jd.Requests())
	}
	logs := errOut.String()
	if !strings.Contains(logs, "DEBUG") {
		t.Errorf("no debug line in the log; the test would not see what debug logging prints")
	}
	secCheck(t, w, "stdout", out.String(), format)
	secCheck(t, w, "stderr", logs, format)
}

func secExecutable(t *testing.T, path string) {
	t.Helper()
	if err := os.Chmod(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

func secRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
