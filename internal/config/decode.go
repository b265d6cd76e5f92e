package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Shapes of yaml.v3's decode errors ("line 5: field safety_margn not found in type
// config.Interruption", "line 7: cannot unmarshal !!map into string").
var (
	unknownFieldError = regexp.MustCompile(`^line (\d+): field (\S+) not found in type (\S+)$`)
	lineError         = regexp.MustCompile(`^line (\d+): (.*)$`)
)

// secretKeys are keys an operator may try for the API token; the file never holds it.
var secretKeys = []string{"api_token", "token", "password", "api_key", "secret"}

// yamlProblems turns a decode error into problems that name the dotted key (as the
// documentation does), the line, and what to write instead: the nearest known key,
// or where secrets go.
func yamlProblems(err error, data []byte) []string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return []string{err.Error()}
	}
	var doc yaml.Node
	_ = yaml.Unmarshal(data, &doc) // the key at a line, for wrong types
	sections := sectionsByType()
	out := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		if m := unknownFieldError.FindStringSubmatch(e); m != nil {
			out = append(out, unknownKeyProblem(m[1], m[2], sections[m[3]]))
			continue
		}
		if m := lineError.FindStringSubmatch(e); m != nil {
			line, _ := strconv.Atoi(m[1])
			kind := yaml.ScalarNode
			switch {
			case strings.Contains(m[2], "!!map"):
				kind = yaml.MappingNode
			case strings.Contains(m[2], "!!seq"):
				kind = yaml.SequenceNode
			}
			if key := keyAtLine(&doc, line, kind, ""); key != "" {
				out = append(out, fmt.Sprintf("%s (line %d): %s", key, line, m[2]))
				continue
			}
		}
		out = append(out, e)
	}
	return out
}

// unknownKeyProblem says that field is no key of section, and what is meant instead.
func unknownKeyProblem(line, field string, sec section) string {
	key := field
	if sec.path != "" {
		key = sec.path + "." + field
	}
	msg := fmt.Sprintf("%s (line %s) is not a known key", key, line)
	if slices.Contains(secretKeys, strings.ToLower(field)) {
		return msg + ": secrets never sit in the file; use jenkins.api_token_file, jenkins.api_token_ssm_parameter or jenkins.api_token_secret_id"
	}
	if slices.Contains(sec.keys, field+"_file") {
		return fmt.Sprintf("%s; it is a secret, so the file names where it is: %s_file", msg, key)
	}
	best, bestDist := "", 3 // a typo: at most two edits away
	for _, k := range sec.keys {
		if d := editDistance(field, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" {
		if sec.path != "" {
			best = sec.path + "." + best
		}
		return msg + "; did you mean " + best + "?"
	}
	return msg + " (docs/configuration.md lists every key)"
}

// section is one mapping of the file: its dotted path and its keys.
type section struct {
	path string
	keys []string
}

// sectionsByType maps each struct type of the configuration ("config.Jenkins") to its
// section, from the yaml tags.
func sectionsByType() map[string]section {
	out := map[string]section{}
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		s := section{path: path}
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			s.keys = append(s.keys, name)
			ft := f.Type
			sub := path + "." + name
			if path == "" {
				sub = name
			}
			if ft.Kind() == reflect.Slice {
				ft, sub = ft.Elem(), sub+"[]"
			}
			if ft.Kind() == reflect.Struct && ft.PkgPath() == t.PkgPath() {
				walk(ft, sub)
			}
		}
		out[t.String()] = s
	}
	walk(reflect.TypeFor[Config](), "")
	return out
}

// keyAtLine is the dotted key whose value, a node of kind, starts at line, or "".
func keyAtLine(n *yaml.Node, line int, kind yaml.Kind, path string) string {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if k := keyAtLine(c, line, kind, path); k != "" {
				return k
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			p := key.Value
			if path != "" {
				p = path + "." + key.Value
			}
			if val.Line == line && val.Kind == kind {
				return p
			}
			if k := keyAtLine(val, line, kind, p); k != "" {
				return k
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if k := keyAtLine(c, line, kind, fmt.Sprintf("%s[%d]", path, i)); k != "" {
				return k
			}
		}
	}
	return ""
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
