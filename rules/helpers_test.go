package rules

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// header is the start of a valid single-file rule set; tests append the
// entries of its rules list.
const header = "apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules:\n"

// Identities used throughout the tests.
const (
	checkout = "spiffe://cluster.local/ns/payments/sa/checkout"
	refunds  = "spiffe://cluster.local/ns/payments/sa/refunds"
	crawler  = "spiffe://cluster.local/ns/search/sa/crawler"
)

// testNow is the default decision time: well before any expiry in the tests.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// parseYAML parses one rule file named rules.yaml.
func parseYAML(tb testing.TB, src string) *Set {
	tb.Helper()
	set, err := Parse(Source{Name: "rules.yaml", Data: []byte(src)})
	if err != nil {
		tb.Fatalf("Parse: %v\n--- source ---\n%s", err, src)
	}
	return set
}

// compileYAML parses and compiles one rule file.
func compileYAML(tb testing.TB, src string) *Table {
	tb.Helper()
	t, err := Compile(parseYAML(tb, src))
	if err != nil {
		tb.Fatalf("Compile: %v", err)
	}
	return t
}

// compileRules compiles a rule set made of header and the given rules-list
// entries, one YAML line each (typically a flow mapping "- {id: ..., ...}").
func compileRules(tb testing.TB, entries ...string) *Table {
	tb.Helper()
	src := header
	if len(entries) == 0 {
		src = strings.Replace(src, "rules:\n", "rules: []\n", 1)
	}
	for _, e := range entries {
		src += "  " + e + "\n"
	}
	return compileYAML(tb, src)
}

// parseErrors parses srcs and returns the diagnostics, failing the test when
// parsing succeeds or fails with something other than an ErrorList.
func parseErrors(tb testing.TB, srcs ...Source) ErrorList {
	tb.Helper()
	set, err := Parse(srcs...)
	if err == nil {
		tb.Fatalf("Parse succeeded with %d rules, want an error", len(set.Rules))
	}
	var list ErrorList
	if !errors.As(err, &list) {
		tb.Fatalf("Parse error is %T (%v), want ErrorList", err, err)
	}
	return list
}

// writeFile writes data to dir/name, creating parent directories.
func writeFile(tb testing.TB, dir, name, data string) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// ruleID is the id of the deciding rule, or "" when none decided.
func ruleID(d Decision) string {
	if d.Rule == nil {
		return ""
	}
	return d.Rule.ID
}

// httpReq is an HTTP request from principal to https://host/path.
func httpReq(principal, method, host, path string) Request {
	return Request{Principal: principal, Host: host, Port: 443, Method: method, Path: path}
}

// sniReq is a TLS-passthrough request from principal to the server name sni.
func sniReq(principal, sni string) Request {
	return Request{Principal: principal, Host: sni, SNI: true, Port: 443}
}
