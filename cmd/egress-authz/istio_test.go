package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestRulesImportIstio: a rule set on stdout that lint accepts, the report
// on stderr, every line file:line:col first.
func TestRulesImportIstio(t *testing.T) {
	dir := t.TempDir()
	policies, err := filepath.Abs(filepath.Join("..", "..", "internal", "istiopolicy", "testdata", "policies.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, dir, "rules", "import", "istio", policies)
	if r.code != exitOK || !strings.Contains(r.stdout, "kind: RuleSet") {
		t.Fatalf("want exit 0 and a rule set\n%s", r)
	}
	for _, want := range []string{": rejected: AuthorizationPolicy istio-system/typo: field principal not found",
		"spec.rules[1].from[0].source.requestPrincipals: dropped: ", "spec.rules[0].when[0]: mapped: connection.sni"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the report lacks %q\n%s", want, r.stderr)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		if !diagLine.MatchString(l) {
			t.Errorf("report line %q is not FILE:LINE:COL: message", l)
		}
	}
	out := filepath.Join(dir, "imported.yaml")
	writeFile(t, out, r.stdout)
	if l := runCLI(t, dir, "rules", "lint", out); l.code != exitOK {
		t.Errorf("rules lint of the import: exit %d\n%s", l.code, l)
	}
	cases := filepath.Join(filepath.Dir(policies), "cases.yaml")
	if c := runCLI(t, dir, "rules", "test", out, "--cases", cases); c.code != exitOK {
		t.Errorf("rules test of the import: exit %d\n%s", c.code, c)
	}
	if r := runCLI(t, dir, "rules", "import", "istio", examplesPath(t)); r.code != exitFail || !strings.Contains(r.stderr, "no AuthorizationPolicy") {
		t.Errorf("a rule file is no policy: want exit 1\n%s", r)
	}
	if r := runCLI(t, dir, "rules", "import", "opa", policies); r.code != exitUsage {
		t.Errorf("another source: exit %d, want 2", r.code)
	}
}

// TestRulesExportIstio: the policy on stdout, what was left out on
// stderr.
func TestRulesExportIstio(t *testing.T) {
	r := runCLI(t, t.TempDir(), "rules", "export", "istio", "--namespace", "egress", "--selector", "app=egress-gw", examplesPath(t))
	if r.code != exitOK || !strings.Contains(r.stdout, "kind: AuthorizationPolicy") || !strings.Contains(r.stdout, `namespace: "egress"`) ||
		!strings.Contains(r.stdout, `"app": "egress-gw"`) || !strings.Contains(r.stderr, "rule deny-generative-language: dropped") {
		t.Errorf("want exit 0, the policy and the report\n%s", r)
	}
	if r := runCLI(t, t.TempDir(), "rules", "export", "istio", "--selector", "nolabel", examplesPath(t)); r.code != exitUsage {
		t.Errorf("a bad selector: exit %d, want 2", r.code)
	}
}
