package metrics

import (
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// docPath is the metrics reference that ships with the code.
const docPath = "../../docs/metrics.md"

// docRow is one row of the reference's table of the agent's metrics.
type docRow struct {
	typ    string
	labels []string
}

// documented reads the table rows (| `name` | type | `label`, ... | meaning |) and the
// standard collector prefixes (`go_*`) of docs/metrics.md.
func documented(t *testing.T) (map[string]docRow, []string) {
	t.Helper()
	data, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatalf("the metrics reference is missing: %v", err)
	}
	rows := map[string]docRow{}
	for _, line := range strings.Split(string(data), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`"+namespace+"_") {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		var labels []string
		for _, l := range strings.Split(cells[3], ",") {
			if l = strings.Trim(strings.TrimSpace(l), "`"); l != "" {
				labels = append(labels, l)
			}
		}
		slices.Sort(labels)
		if _, dup := rows[name]; dup {
			t.Errorf("%s: %s has two rows", docPath, name)
		}
		rows[name] = docRow{typ: strings.TrimSpace(cells[2]), labels: labels}
	}
	var prefixes []string
	for _, m := range regexp.MustCompile("`([a-z_]+_)\\*`").FindAllStringSubmatch(string(data), -1) {
		prefixes = append(prefixes, m[1])
	}
	return rows, prefixes
}

// descPattern reads a Desc's String: its name and its constant and variable labels.
var descPattern = regexp.MustCompile(`^Desc\{fqName: "([^"]*)", .*constLabels: \{(.*)\}, variableLabels: \{(.*)\}\}$`)

// registered describes every collector of a fresh registry (the shutdown margin too,
// which joins it when a plan finishes): metric names and their label names.
func registered(t *testing.T, m *Metrics) map[string][]string {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() {
		m.Registry().Describe(ch)
		close(ch)
	}()
	out := map[string][]string{}
	for d := range ch {
		match := descPattern.FindStringSubmatch(d.String())
		if match == nil {
			t.Fatalf("cannot read the descriptor %s", d)
		}
		var labels []string
		for _, pair := range strings.Split(match[2], ",") {
			if name, _, ok := strings.Cut(pair, "="); ok {
				labels = append(labels, name)
			}
		}
		for _, l := range strings.Split(match[3], ",") {
			if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
				labels = append(labels, l)
			}
		}
		slices.Sort(labels)
		out[match[1]] = labels
	}
	return out
}

// TestEveryMetricIsDocumented keeps docs/metrics.md true: every metric the agent
// registers has a row with its type and labels, and every row names a registered
// metric. A metric added without its row fails here: add the row.
func TestEveryMetricIsDocumented(t *testing.T) {
	rows, prefixes := documented(t)
	m := exercised()
	names := registered(t, m)
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for _, f := range families {
		types[f.GetName()] = strings.ToLower(f.GetType().String())
	}

	for _, name := range slices.Sorted(maps.Keys(names)) {
		labels := names[name]
		if !strings.HasPrefix(name, namespace+"_") {
			if !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
				t.Errorf("%s is registered but %s names neither it nor its prefix (like `go_*`)", name, docPath)
			}
			continue
		}
		row, ok := rows[name]
		if !ok {
			t.Errorf("%s is registered but has no row in %s: add | `%s` | type | labels | meaning |", name, docPath, name)
			continue
		}
		if !slices.Equal(row.labels, labels) {
			t.Errorf("%s: %s lists the labels %v, the metric has %v", name, docPath, row.labels, labels)
		}
		if typ, ok := types[name]; ok && row.typ != typ {
			t.Errorf("%s: %s says it is a %s, it is a %s", name, docPath, row.typ, typ)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(rows)) {
		if _, ok := names[name]; !ok {
			t.Errorf("%s documents %s, which the agent does not register", docPath, name)
		}
	}
}
