package config

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The reference and the example that ship with the code.
const (
	docPath     = "../../docs/configuration.md"
	examplePath = "../../packaging/config.example.yaml"
)

// configKey is one key of the file: its dotted path (target_groups[].arn for a field
// of a list item), its default (invalid inside list items, which have none) and its type.
type configKey struct {
	path string
	def  reflect.Value
	typ  reflect.Type
}

// keysOf walks the yaml tags of the Config struct: every key that holds a value, every
// list, and the fields of list items; sections (nested structs) are walked into.
func keysOf(v reflect.Value, t reflect.Type, prefix string) []configKey {
	var keys []configKey
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		path := prefix + name
		var fv reflect.Value
		if v.IsValid() {
			fv = v.Field(i)
		}
		switch {
		case f.Type.Kind() == reflect.Struct:
			keys = append(keys, keysOf(fv, f.Type, path+".")...)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			keys = append(keys, configKey{path: path, def: fv, typ: f.Type})
			keys = append(keys, keysOf(reflect.Value{}, f.Type.Elem(), path+"[].")...)
		default:
			keys = append(keys, configKey{path: path, def: fv, typ: f.Type})
		}
	}
	return keys
}

func allKeys() []configKey {
	d := Default()
	return keysOf(reflect.ValueOf(d), reflect.TypeOf(d), "")
}

// docRow is a row of the reference: | `key` | `default` | unit | what it does |.
var docRow = regexp.MustCompile("^\\|\\s*`([a-z_.\\[\\]]+)`\\s*\\|([^|]*)\\|")

// TestEveryKeyIsDocumented keeps docs/configuration.md true: every key of the
// configuration has a row, its default column is the built-in default, and every row
// names a key that exists. A key added without its row fails here: add the row.
func TestEveryKeyIsDocumented(t *testing.T) {
	data, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatalf("the configuration reference is missing: %v", err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if m := docRow.FindStringSubmatch(line); m != nil {
			if _, dup := rows[m[1]]; dup {
				t.Errorf("%s: %s has two rows", docPath, m[1])
			}
			rows[m[1]] = strings.TrimSpace(m[2])
		}
	}
	known := map[string]bool{}
	for _, k := range allKeys() {
		known[k.path] = true
		cell, ok := rows[k.path]
		if !ok {
			t.Errorf("%s has no row for %s: add | `%s` | `default` | unit | what it does |", docPath, k.path, k.path)
			continue
		}
		if !k.def.IsValid() {
			if cell != "—" {
				t.Errorf("%s: %s is a field of a list item, which has no default: write — (got %s)", docPath, k.path, cell)
			}
			continue
		}
		if len(cell) < 2 || cell[0] != '`' || cell[len(cell)-1] != '`' {
			t.Errorf("%s: the default of %s must be a YAML value in backticks, got %q", docPath, k.path, cell)
			continue
		}
		got := reflect.New(k.typ)
		if err := yaml.Unmarshal([]byte(cell[1:len(cell)-1]), got.Interface()); err != nil {
			t.Errorf("%s: the default of %s, %s, does not read as its type %s: %v", docPath, k.path, cell, k.typ, err)
			continue
		}
		if !sameValue(got.Elem(), k.def) {
			t.Errorf("%s: the default of %s reads %s, the built-in default is %s", docPath, k.path, cell, show(k.def))
		}
	}
	for path := range rows {
		if !known[path] {
			t.Errorf("%s documents %s, which is not a key of the configuration", docPath, path)
		}
	}
}

// sameValue is reflect.DeepEqual, except that an empty list or map equals a nil one.
func sameValue(a, b reflect.Value) bool {
	if (a.Kind() == reflect.Slice || a.Kind() == reflect.Map) && a.Len() == 0 && b.Len() == 0 {
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// show writes a value as YAML, as the reference and the example write it.
func show(v reflect.Value) string {
	b, err := yaml.Marshal(v.Interface())
	if err != nil {
		return err.Error()
	}
	return "`" + strings.TrimSpace(string(b)) + "`"
}

// exampleKeys lists the key paths of a YAML document, list items as name[].
func exampleKeys(n *yaml.Node, prefix string, out map[string]bool) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			exampleKeys(c, prefix, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			path := n.Content[i].Value
			if prefix != "" {
				path = prefix + "." + path
			}
			out[path] = true
			exampleKeys(n.Content[i+1], path, out)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			exampleKeys(c, prefix+"[]", out)
		}
	}
}

// TestExampleHasEveryKeyWithItsDefault keeps packaging/config.example.yaml true: it
// loads, it shows every key of the configuration, and every value it shows is the
// built-in default, except the file system id and the target groups, which are
// examples of the site's own.
func TestExampleHasEveryKeyWithItsDefault(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(examplePath, data)
	if err != nil {
		t.Fatalf("the example does not load: %v", err)
	}
	want := Default()
	want.EFS.FileSystemID, want.TargetGroups = cfg.EFS.FileSystemID, cfg.TargetGroups
	if cfg.EFS.FileSystemID == "" || len(cfg.TargetGroups) == 0 {
		t.Errorf("the example should show a file system id and a target group: %+v %+v", cfg.EFS, cfg.TargetGroups)
	}
	got, wantV := reflect.ValueOf(cfg), reflect.ValueOf(want)
	for _, k := range keysOf(got, got.Type(), "") {
		if !k.def.IsValid() {
			continue
		}
		d := fieldByPath(wantV, k.path)
		if !sameValue(k.def, d) {
			t.Errorf("%s shows %s: %s, the built-in default is %s", examplePath, k.path, show(k.def), show(d))
		}
	}

	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	shown := map[string]bool{}
	exampleKeys(&doc, "", shown)
	for _, k := range allKeys() {
		if !shown[k.path] {
			t.Errorf("%s does not show %s: add it with its default and a comment", examplePath, k.path)
		}
	}
}

// fieldByPath follows a dotted key path (no list items) through the yaml tags of v.
func fieldByPath(v reflect.Value, path string) reflect.Value {
	for _, name := range strings.Split(path, ".") {
		i := slices.IndexFunc(reflect.VisibleFields(v.Type()), func(f reflect.StructField) bool {
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			return tag == name
		})
		v = v.Field(i)
	}
	return v
}
