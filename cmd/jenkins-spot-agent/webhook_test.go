package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/config"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/instance"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/metrics"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/status"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// TestRunWiresTheWebhook: run builds the notifier from webhook.url_file (or the
// credential webhook-url) and counts its results in the agent's metrics; no URL means
// no notifier, and a bad URL is a configuration error that does not show the URL.
func TestRunWiresTheWebhook(t *testing.T) {
	var got atomic.Int32
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err == nil {
			got.Add(1)
		}
	}))
	defer recv.Close()
	dir := t.TempDir()
	e := &env{configPath: "site.yaml", log: slog.New(slog.DiscardHandler)}
	t.Setenv("CREDENTIALS_DIRECTORY", "")

	cfg := config.Default()
	if n, err := newWebhook(cfg, metrics.New("dev", "x"), e); n != nil || err != nil {
		t.Fatalf("no URL: %v %v, want no notifier", n, err)
	}

	urlFile := filepath.Join(dir, "webhook-url")
	if err := os.WriteFile(urlFile, []byte(recv.URL+"/hooks/s3cr3t-path\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Webhook.URLFile = urlFile
	m := metrics.New("dev", "x")
	n, err := newWebhook(cfg, m, e)
	if err != nil || n == nil {
		t.Fatalf("with a URL: %v %v", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	n.Event(status.Event{Kind: status.EventNotice, Notice: &instance.Notice{Kind: instance.KindSpotTerminate}})
	testenv.Eventually(t, "the notification", func() bool { return got.Load() == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if v := webhookCount(t, m, metrics.WebhookSent); v != 1 {
		t.Errorf("webhook_notifications_total{result=sent} = %v, want 1", v)
	}

	if err := os.WriteFile(urlFile, []byte("ftp://hooks.example.invalid/s3cr3t-path\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = newWebhook(cfg, m, e)
	if !config.IsInvalid(err) || strings.Contains(err.Error(), "s3cr3t-path") {
		t.Errorf("bad URL: %v, want a configuration error without the URL", err)
	}
}

// webhookCount reads jenkins_spot_agent_webhook_notifications_total{result} from m.
func webhookCount(t *testing.T, m *metrics.Metrics, result string) float64 {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "jenkins_spot_agent_webhook_notifications_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return s.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}
