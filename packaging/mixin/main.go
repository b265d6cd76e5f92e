// Command mixin renders the jenkins-spot-agent monitoring mixin (mixin.libsonnet in
// this directory) into the files that ship: Prometheus alert and recording rules as
// YAML and the Grafana dashboard as JSON. It evaluates the jsonnet with go-jsonnet,
// so no jsonnet binary is needed:
//
//	go run ./packaging/mixin            # writes packaging/alerts.yml, rules.yml, dashboards/
//	go run ./packaging/mixin -out DIR   # somewhere else
//
// The tests of this package fail when the checked-in files differ from a fresh render.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-jsonnet"
	"go.yaml.in/yaml/v3"
)

// Files rendered, relative to the output directory.
const (
	AlertsFile    = "alerts.yml"
	RulesFile     = "rules.yml"
	DashboardsDir = "dashboards"
)

const header = "# Generated from packaging/mixin (make mixin). Do not edit: change the .libsonnet files.\n"

func main() {
	src := flag.String("src", "packaging/mixin", "directory of mixin.libsonnet")
	out := flag.String("out", "packaging", "directory to write alerts.yml, rules.yml and dashboards/ into")
	flag.Parse()
	files, err := Render(*src)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mixin:", err)
		os.Exit(1)
	}
	for name, data := range files {
		path := filepath.Join(*out, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "mixin:", err)
			os.Exit(1)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "mixin:", err)
			os.Exit(1)
		}
		fmt.Println("wrote", path)
	}
}

// Render evaluates dir/mixin.libsonnet and returns the files to write, by path
// relative to the output directory.
func Render(dir string) (map[string][]byte, error) {
	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{dir}})
	eval := func(field string) ([]byte, error) {
		out, err := vm.EvaluateAnonymousSnippet("render.jsonnet", fmt.Sprintf("(import 'mixin.libsonnet').%s", field))
		if err != nil {
			return nil, fmt.Errorf("evaluate %s: %w", field, err)
		}
		return []byte(out), nil
	}
	files := map[string][]byte{}
	for file, field := range map[string]string{AlertsFile: "prometheusAlerts", RulesFile: "prometheusRules"} {
		j, err := eval(field)
		if err != nil {
			return nil, err
		}
		y, err := rulesYAML(j)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		files[file] = y
	}
	j, err := eval("grafanaDashboards")
	if err != nil {
		return nil, err
	}
	var dashboards map[string]json.RawMessage
	if err := json.Unmarshal(j, &dashboards); err != nil {
		return nil, err
	}
	if len(dashboards) == 0 {
		return nil, errors.New("grafanaDashboards is empty")
	}
	for name, raw := range dashboards {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return nil, err
		}
		buf.WriteByte('\n')
		files[filepath.Join(DashboardsDir, name)] = buf.Bytes()
	}
	return files, nil
}

// keyOrder is the order rule files read best in; other keys follow alphabetically.
var keyOrder = []string{"name", "alert", "record", "expr", "for", "labels", "annotations", "summary", "description", "rules"}

// rulesYAML turns the JSON of a rule file into block-style YAML: keys in keyOrder,
// multi-line strings as literal blocks.
func rulesYAML(j []byte) ([]byte, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(j, &n); err != nil {
		return nil, err
	}
	restyle(&n)
	var buf bytes.Buffer
	buf.WriteString(header)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

func restyle(n *yaml.Node) {
	n.Style = 0
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!str" && strings.Contains(n.Value, "\n") {
			n.Style = yaml.LiteralStyle
		} else if n.Tag == "!!str" {
			// Let the encoder quote only what needs it.
			n.Style = 0
		}
	case yaml.MappingNode:
		type pair struct{ k, v *yaml.Node }
		pairs := make([]pair, 0, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			pairs = append(pairs, pair{n.Content[i], n.Content[i+1]})
		}
		rank := func(k string) int {
			if i := slices.Index(keyOrder, k); i >= 0 {
				return i
			}
			return len(keyOrder)
		}
		slices.SortStableFunc(pairs, func(a, b pair) int {
			if d := rank(a.k.Value) - rank(b.k.Value); d != 0 {
				return d
			}
			return strings.Compare(a.k.Value, b.k.Value)
		})
		n.Content = n.Content[:0]
		for _, p := range pairs {
			n.Content = append(n.Content, p.k, p.v)
		}
	}
	for _, c := range n.Content {
		restyle(c)
	}
}
