package metrics

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The alert rules live in packaging/ but are checked here, next to the metric
// names they depend on, so renaming a metric breaks this package's tests.
var alertsDir = filepath.Join("..", "..", "packaging")

var metricName = regexp.MustCompile(`\b(jenkins_spot_agent_[a-z_]+|process_[a-z_]+)\b`)

func TestAlertRulesCheck(t *testing.T) {
	out := runPromtool(t, nil, "check", "rules", filepath.Join(alertsDir, "alerts.yml"), filepath.Join(alertsDir, "rules.yml"))
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool check rules: %s", out)
	}
}

func TestAlertRulesUnitTests(t *testing.T) {
	out := runPromtool(t, nil, "test", "rules", filepath.Join(alertsDir, "alerts_test.yml"))
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules: %s", out)
	}
}

// TestAlertRulesUseExportedNames catches a rule that names a metric this package
// does not export (promtool would happily evaluate it against nothing).
func TestAlertRulesUseExportedNames(t *testing.T) {
	m := exercised()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range families {
		exported[f.GetName()] = true
	}
	// The mixin's rendered files: rules, recording rules and the dashboard.
	for _, file := range []string{"alerts.yml", "rules.yml", filepath.Join("dashboards", "jenkins-spot-agent.json")} {
		rules, err := os.ReadFile(filepath.Join(alertsDir, file))
		if err != nil {
			t.Fatal(err)
		}
		names := metricName.FindAllString(string(rules), -1)
		if len(names) < 5 {
			t.Fatalf("found only %v in %s", names, file)
		}
		for _, name := range names {
			family := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
			if !exported[name] && !exported[family] {
				t.Errorf("%s uses %s, which the agent does not export", file, name)
			}
		}
	}
}
