package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// out is where the rendered files are checked in.
const out = ".."

func render(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := Render(".")
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestGeneratedFilesAreCurrent fails when a .libsonnet file changed and `make mixin`
// was not run, or when a rendered file was edited by hand.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	files := render(t)
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Errorf("%s: %v (run make mixin)", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("packaging/%s is stale or edited by hand: run make mixin", name)
		}
	}
	entries, err := os.ReadDir(filepath.Join(out, DashboardsDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := files[filepath.Join(DashboardsDir, e.Name())]; !ok {
			t.Errorf("packaging/%s/%s is not rendered by the mixin any more: delete it", DashboardsDir, e.Name())
		}
	}
}

// TestDashboardsMatchGrafanaSchema decodes each dashboard strictly with the Grafana
// dashboard schema of grafana-foundation-sdk (unknown fields, wrong types, missing
// required fields and unknown panel options or Prometheus query fields fail), then
// lints what the schema does not say: unique panel ids and titles, panels inside the
// 24-column grid without overlap, every query on the dashboard's data source variable
// and every raw agent metric filtered by the job and instance variables.
func TestDashboardsMatchGrafanaSchema(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	for name, raw := range render(t) {
		if !strings.HasPrefix(name, DashboardsDir+string(filepath.Separator)) {
			continue
		}
		t.Run(filepath.Base(name), func(t *testing.T) {
			// The mixin's dashboards are classic JSON-model dashboards (panels, gridPos), the
			// form Grafana 11/12 import and provision from files; dashboardv2.Dashboard is the
			// v2 resource schema (elements, layout) and does not describe them.
			var d dashboard.Dashboard //nolint:staticcheck // the schema of the classic JSON model the mixin renders; dashboardv2 is another format
			if err := schemaErr(d.UnmarshalJSONStrict(raw)); err != nil {
				t.Fatalf("not a valid Grafana dashboard: %v", err)
			}
			if err := schemaErr(d.Validate()); err != nil {
				t.Fatalf("invalid: %v", err)
			}
			if d.Uid == nil || *d.Uid == "" {
				t.Error("no uid: imports would create a new dashboard each time")
			}
			lint(t, raw)
		})
	}
}

// schemaErr drops the empty cog.BuildErrors that the SDK returns as a non-nil error
// when nothing went wrong.
func schemaErr(err error) error {
	var be cog.BuildErrors
	if errors.As(err, &be) && len(be) == 0 {
		return nil
	}
	return err
}

var agentMetric = regexp.MustCompile(`\bjenkins_spot_agent_[a-z_]+(\{[^}]*\})?`)

func lint(t *testing.T, raw []byte) {
	var d struct {
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			GridPos struct{ X, Y, W, H int } `json:"gridPos"`
			Targets []struct {
				Expr       string `json:"expr"`
				Datasource struct {
					UID string `json:"uid"`
				} `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	ids, titles := map[int]bool{}, map[string]bool{}
	occupied := map[[2]int]string{}
	for _, p := range d.Panels {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID == 0 || ids[p.ID] {
			t.Errorf("%s: id missing or not unique", where)
		}
		ids[p.ID] = true
		if titles[p.Title] {
			t.Errorf("%s: title not unique", where)
		}
		titles[p.Title] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v outside the 24-column grid", where, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := occupied[[2]int{x, y}]; ok {
					t.Errorf("%s overlaps %s at (%d,%d)", where, other, x, y)
				}
				occupied[[2]int{x, y}] = where
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: data source is not the ${datasource} variable", where)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no query", where)
		}
		for _, q := range p.Targets {
			if q.Datasource.UID != "${datasource}" {
				t.Errorf("%s: query %q not on ${datasource}", where, q.Expr)
			}
			for _, m := range agentMetric.FindAllString(q.Expr, -1) {
				if !strings.Contains(m, `job=~"$job"`) || !strings.Contains(m, `instance=~"$instance"`) {
					t.Errorf("%s: %s is not filtered by $job and $instance", where, m)
				}
			}
		}
	}
	if len(d.Panels) < 10 {
		t.Errorf("only %d panels", len(d.Panels))
	}
}

// TestSchemaCatchesMistakes proves the schema check is live: a misspelt panel option,
// a Prometheus query field of the wrong type and an unknown top-level field each fail.
func TestSchemaCatchesMistakes(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	raw := render(t)[filepath.Join(DashboardsDir, "jenkins-spot-agent.json")]
	for name, mutate := range map[string]func(map[string]any){
		"misspelt option": func(d map[string]any) {
			p := d["panels"].([]any)[1].(map[string]any)
			p["options"].(map[string]any)["colourMode"] = "value"
		},
		"query field type": func(d map[string]any) {
			p := d["panels"].([]any)[1].(map[string]any)
			p["targets"].([]any)[0].(map[string]any)["expr"] = 42
		},
		"unknown field": func(d map[string]any) { d["refreshEvery"] = "30s" },
	} {
		var d map[string]any
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		mutate(d)
		broken, _ := json.Marshal(d)
		var db dashboard.Dashboard //nolint:staticcheck // the schema of the classic JSON model the mixin renders; dashboardv2 is another format
		if err := schemaErr(db.UnmarshalJSONStrict(broken)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
