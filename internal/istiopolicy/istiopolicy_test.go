package istiopolicy

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/compliance"
	"github.com/egress-authz/egress-authz/rules"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func readSource(t *testing.T, path string) rules.Source {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return rules.Source{Name: path, Data: data}
}

// importFile decodes and imports one file of policies, and checks that
// the rule set is valid.
func importFile(t *testing.T, src rules.Source) (*rules.Table, []Document, []Finding) {
	t.Helper()
	docs, findings, err := Decode(src)
	if err != nil {
		t.Fatal(err)
	}
	set, more := Import(docs, ImportOptions{})
	findings = append(findings, more...)
	out := rules.Marshal(set)
	parsed, err := rules.Parse(rules.Source{Name: "imported.yaml", Data: out})
	if err != nil {
		t.Fatalf("the imported rule set is invalid: %v\n%s", err, out)
	}
	tab, err := rules.Compile(parsed)
	if err != nil {
		t.Fatal(err)
	}
	return tab, docs, findings
}

// TestImportRealWorldPolicies imports the policies of an egress gateway
// and runs the cases that say what Istio decides for them: the imported
// rules decide the same, except where a case names the difference the
// import chose (never wider access).
func TestImportRealWorldPolicies(t *testing.T) {
	tab, docs, findings := importFile(t, readSource(t, "testdata/policies.yaml"))
	if len(docs) != 7 {
		t.Errorf("%d policies decoded, want 7 (the typo and the ConfigMap are not)", len(docs))
	}
	cases, err := rules.ParseCases(readSource(t, "testdata/cases.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := compliance.RunCases(tab, cases, testNow)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if !r.Passed {
			t.Errorf("case %q (%s): %v", r.Name, r.Pos, r.Problems)
		}
	}
	if rep.Passed != len(cases) {
		t.Errorf("%d of %d cases passed\n%s", rep.Passed, len(cases), rules.Marshal(tab.Set()))
	}

	for _, want := range []struct {
		outcome      Outcome
		field, words string
	}{
		{Rejected, "", "AuthorizationPolicy istio-system/typo: field principal not found"},
		{Rejected, "", `(apiVersion "v1", kind "ConfigMap"): skipped`},
		{Rejected, "spec.action", "CUSTOM delegates the decision"},
		{Dropped, "spec.rules[1].from[0].source.requestPrincipals", "the whole rule is left out"},
		{Dropped, "spec.rules[1].from[0].source.ipBlocks", "the whole rule is left out"},
		{Dropped, "spec.rules[0].from[0].source.notPrincipals", "the whole rule is left out"},
		{Mapped, "spec.rules[1].from[0].source.notPrincipals", "taken out of the list"},
		{Dropped, "spec.rules[1].to[0].operation.notMethods", "the standard methods other than these"},
		{Dropped, "spec.rules[1].when[0]", "this deny applies more widely"},
		{Dropped, "spec.rules[0].from[0].source.notNamespaces", "this deny applies more widely"},
		{Dropped, "spec.selector", "select the egress gateway"},
		{Mapped, "spec.rules[0].when[0]", "connection.sni [api.sendgrid.com]: to.hosts"},
	} {
		found := slices.ContainsFunc(findings, func(f Finding) bool {
			return f.Outcome == want.outcome && f.Field == want.field && strings.Contains(f.Msg, want.words) && f.Pos.Line > 0
		})
		if !found {
			t.Errorf("no %s finding at %s saying %q", want.outcome, want.field, want.words)
		}
	}
}

// TestImportNeverDropsANotSilently: every not* field of every policy has
// a finding of its own.
func TestImportNeverDropsANotSilently(t *testing.T) {
	_, docs, findings := importFile(t, readSource(t, "testdata/policies.yaml"))
	n := 0
	for _, d := range docs {
		for ri, r := range d.Policy.Spec.Rules {
			for fi, f := range r.From {
				s := f.Source
				for name, vals := range map[string][]string{"notPrincipals": s.NotPrincipals, "notNamespaces": s.NotNamespaces,
					"notRequestPrincipals": s.NotRequestPrincipals, "notServiceAccounts": s.NotServiceAccounts, "notIpBlocks": s.NotIPBlocks} {
					if len(vals) > 0 {
						n++
						field := fmt.Sprintf("spec.rules[%d].from[%d].source.%s", ri, fi, name)
						if !slices.ContainsFunc(findings, func(f Finding) bool { return f.Policy == d.Name() && f.Field == field }) {
							t.Errorf("%s %s: no finding", d.Name(), field)
						}
					}
				}
			}
			for ti, to := range r.To {
				o := to.Operation
				for name, vals := range map[string][]string{"notHosts": o.NotHosts, "notMethods": o.NotMethods, "notPaths": o.NotPaths, "notPorts": o.NotPorts} {
					if len(vals) > 0 {
						n++
						field := fmt.Sprintf("spec.rules[%d].to[%d].operation.%s", ri, ti, name)
						if !slices.ContainsFunc(findings, func(f Finding) bool { return f.Policy == d.Name() && f.Field == field }) {
							t.Errorf("%s %s: no finding", d.Name(), field)
						}
					}
				}
			}
		}
	}
	if n < 3 {
		t.Errorf("only %d not* fields in the test policies: the check checks little", n)
	}
}

// TestImportActionDecidesTheSafeSide: for a not* or another field that
// cannot be expressed, an ALLOW rule is left out and a DENY rule widened.
func TestImportActionDecidesTheSafeSide(t *testing.T) {
	const tmpl = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: istio-system}
spec:
  action: %s
  rules:
    - from:
        - source: {namespaces: [payments], %s}
      to:
        - operation: {hosts: [api.stripe.com]}
`
	checkout := "spiffe://cluster.local/ns/payments/sa/checkout"
	for _, field := range []string{"notPrincipals: [cluster.local/ns/payments/sa/x*]", "requestPrincipals: [\"*\"]", "ipBlocks: [10.0.0.0/8]",
		"notServiceAccounts: [payments/x]", "notRemoteIpBlocks: [1.2.3.4]", "trustDomains: [cluster.local]"} {
		for _, action := range []string{"ALLOW", "DENY"} {
			src := rules.Source{Name: "p.yaml", Data: []byte(fmt.Sprintf(tmpl, action, field))}
			tab, _, findings := importFile(t, src)
			d := tab.Decide(rules.Request{Principal: checkout, Host: "api.stripe.com", Port: 443, Method: "GET", Path: "/"}, testNow)
			// ALLOW: the rule is left out, so checkout is denied (Istio
			// might allow). DENY: the condition is left out, so checkout
			// is denied by the rule (Istio might not deny).
			if d.Allow || action == "DENY" && d.Reason != rules.ReasonDeniedByRule {
				t.Errorf("%s with %s: %s", action, field, d.Reason)
			}
			if !slices.ContainsFunc(findings, func(f Finding) bool { return f.Outcome == Dropped && strings.Contains(f.Field, "source.") }) {
				t.Errorf("%s with %s: no finding for the field", action, field)
			}
		}
	}
}

// TestPrincipalPatterns: the SPIFFE patterns match exactly the Istio
// identities that Istio's pattern matches.
func TestPrincipalPatterns(t *testing.T) {
	var ids []string
	for _, td := range []string{"cluster.local", "cluster", "other.example"} {
		for _, ns := range []string{"payments", "pay", "search", "n"} {
			for _, sa := range []string{"checkout", "check", "indexer", "x"} {
				ids = append(ids, td+"/ns/"+ns+"/sa/"+sa)
			}
		}
	}
	for _, pat := range []string{
		"cluster.local/ns/payments/sa/checkout", "cluster.local/ns/payments/sa/*", "cluster.local/ns/payments/*",
		"cluster.local/ns/pay*", "cluster.local/*", "cluster*", "cluster.local/n*", "*/ns/payments/sa/checkout",
		"*/sa/check", "*check", "*out", "*payments/sa/x", "cluster.local/ns/payments/sa/check*",
	} {
		pats, err := principalPatterns(pat)
		if err != nil {
			t.Errorf("%s: %v", pat, err)
			continue
		}
		var quoted []string
		for _, p := range pats {
			quoted = append(quoted, strconv.Quote(p))
		}
		tab := compile(t, "trustDomains: [cluster.local, cluster, other.example]\n", fmt.Sprintf("from: {principals: [%s]}, to: {hosts: [a.example]}", strings.Join(quoted, ", ")))
		for _, id := range ids {
			got := tab.Decide(rules.Request{Principal: "spiffe://" + id, Host: "a.example", Port: 443, Method: "GET", Path: "/"}, testNow).Allow
			if want := istioMatch(pat, id); got != want {
				t.Errorf("Istio pattern %s, rule patterns %v: %s allowed %v, Istio says %v", pat, pats, id, got, want)
			}
		}
	}
	for _, bad := range []string{"a*b", "*a*", "cluster.local/ns/a/sa/b/c/*", "cluster.local/xs/*"} {
		if pats, err := principalPatterns(bad); err == nil {
			t.Errorf("%s: %v, want an error", bad, pats)
		}
	}
}

// TestPathPatterns: the path patterns match exactly the normalized paths
// Istio's path matches.
func TestPathPatterns(t *testing.T) {
	paths := []string{"/", "/v1", "/v1/", "/v1/charges", "/v1/charges/", "/v1/charges/ch_1", "/v1/charges/ch_1/refunds",
		"/v1/chargesfoo", "/v1/chargesfoo/x", "/v1/customers/c/sources", "/v1/customers/c/d/sources", "/v1/customers//sources",
		"/admin", "/admin/x", "/administrator", "/x/admin"}
	istio := func(pat, p string) bool { // Istio's matching, templates included
		if strings.Contains(pat, "{") {
			ps, ss := strings.Split(pat, "/"), strings.Split(p, "/")
			for i, s := range ps {
				if s == "{**}" {
					return len(ss) > i
				}
				if i >= len(ss) || s == "{*}" && ss[i] == "" || s != "{*}" && s != ss[i] {
					return false
				}
			}
			return len(ps) == len(ss)
		}
		return istioMatch(pat, p)
	}
	for _, pat := range []string{"/v1/charges", "/v1/charges*", "/v1/charges/*", "/v1/*", "/*", "/admin*",
		"/v1/customers/{*}/sources", "/v1/charges/{**}", "/v1/{*}"} {
		pats, err := pathPatterns(pat)
		if err != nil {
			t.Errorf("%s: %v", pat, err)
			continue
		}
		var quoted []string
		for _, p := range pats {
			quoted = append(quoted, strconv.Quote(p))
		}
		tab := compile(t, "trustDomains: [cluster.local]\n", fmt.Sprintf("to: {paths: [%s]}", strings.Join(quoted, ", ")))
		for _, p := range paths {
			got := tab.Decide(rules.Request{Principal: "spiffe://cluster.local/ns/a/sa/b", Host: "a.example", Port: 443, Method: "GET", Path: p}, testNow).Allow
			n, _ := rules.NormalizePath(p)
			if want := istio(pat, n); got != want {
				t.Errorf("Istio path %s, rule paths %v: %s allowed %v, Istio says %v", pat, pats, p, got, want)
			}
		}
	}
	for _, bad := range []string{"*.json", "/a/{*}.txt", "/{**}/x", "/a*b"} {
		if pats, err := pathPatterns(bad); err == nil {
			t.Errorf("%s: %v, want an error", bad, pats)
		}
	}
}

func compile(t *testing.T, tds, rule string) *rules.Table {
	t.Helper()
	src := "apiVersion: egress-authz/v1\nkind: RuleSet\n" + tds + "rules:\n  - {id: r, action: allow, " + rule + "}\n"
	set, err := rules.Parse(rules.Source{Name: "r.yaml", Data: []byte(src)})
	if err != nil {
		t.Fatalf("%v\n%s", err, src)
	}
	tab, err := rules.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// TestExportIsASupersetOfTheRules exports the example rules, reads the
// policy back with Decode (strictly), imports it, and checks that every
// request the rules allow, the exported layer allows too, and that it
// still tells callers and hosts apart.
func TestExportIsASupersetOfTheRules(t *testing.T) {
	set, err := rules.Load("../../deploy/examples/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rulesTab, err := rules.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	out, findings := Export(set, ExportOptions{Now: testNow})
	layer, docs, _ := importFile(t, rules.Source{Name: "exported.yaml", Data: out})
	if len(docs) != 1 || docs[0].Name() != "istio-system/egress-authz-allow" || docs[0].Policy.Spec.Action != "ALLOW" ||
		docs[0].Policy.Spec.Selector.MatchLabels["istio"] != "egressgateway" {
		t.Fatalf("exported %d policies: %+v\n%s", len(docs), docs, out)
	}
	cases, err := rules.ParseCases(readSource(t, "../../deploy/examples/rules_test_cases.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := compliance.RunCases(rulesTab, cases, testNow)
	if err != nil {
		t.Fatal(err)
	}
	layerRep, err := compliance.RunCases(layer, cases, testNow)
	if err != nil {
		t.Fatal(err)
	}
	stricter := 0
	for i, r := range rep.Results {
		got := layerRep.Results[i].Got.Decision
		if r.Got.Decision == "allow" && got != "allow" {
			t.Errorf("case %q: the rules allow it, the exported layer does not (%s)\n%s", r.Name, layerRep.Results[i].Got, out)
		}
		if r.Got.Decision == "deny" && got == "deny" {
			stricter++
		}
	}
	if stricter == 0 {
		t.Error("the exported layer denies none of the cases the rules deny: it is no layer at all")
	}
	for _, want := range []string{"rule deny-generative-language: dropped: a deny rule", "rule payments-fraud-vendor-trial: dropped: a dry-run rule"} {
		if !slices.ContainsFunc(findings, func(f Finding) bool { return strings.Contains(f.String(), want) }) {
			t.Errorf("no finding %q", want)
		}
	}
}

// TestExportQuotesExactly: names that YAML would read as something else
// than a string, and principal patterns Istio cannot say, come out as
// the exact strings, or widened to a prefix.
func TestExportQuotesExactly(t *testing.T) {
	src := `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: odd-names
    action: allow
    from: {namespaces: ["on"], serviceAccounts: ["1e3", "null", "no"]}
    to: {hosts: [a.example]}
  - id: middle-star
    action: allow
    from: {principals: ["spiffe://cluster.local/ns/*/sa/checkout"]}
    to: {hosts: ["*.b.example"], methods: [GET]}
`
	set, err := rules.Parse(rules.Source{Name: "r.yaml", Data: []byte(src)})
	if err != nil {
		t.Fatal(err)
	}
	out, findings := Export(set, ExportOptions{})
	docs, _, err := Decode(rules.Source{Name: "exported.yaml", Data: out})
	if err != nil || len(docs) != 1 {
		t.Fatalf("%v\n%s", err, out)
	}
	spec := docs[0].Policy.Spec
	var got [][]string
	for _, r := range spec.Rules {
		got = append(got, r.From[0].Source.Principals)
	}
	want := [][]string{
		{"cluster.local/ns/on/sa/1e3", "cluster.local/ns/on/sa/null", "cluster.local/ns/on/sa/no"},
		{"cluster.local/ns/on/sa/1e3", "cluster.local/ns/on/sa/null", "cluster.local/ns/on/sa/no"},
		{"cluster.local/ns/*"},
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("principals %q, want %q\n%s", got, want, out)
	}
	if !slices.Equal(spec.Rules[0].To[0].Operation.Hosts, []string{"a.example", "a.example:*"}) || spec.Rules[1].When[0].Key != "connection.sni" ||
		!slices.Equal(spec.Rules[2].To[0].Operation.Hosts, []string{"*.b.example"}) || len(spec.Rules[2].When) != 0 {
		t.Errorf("hosts and server names:\n%s", out)
	}
	if !slices.ContainsFunc(findings, func(f Finding) bool { return strings.Contains(f.Msg, `written as "cluster.local/ns/*"`) }) {
		t.Errorf("the widened principal is not reported: %v", findings)
	}
}

// TestExportEmpty: no allow rule, no access, even through the layer.
func TestExportEmpty(t *testing.T) {
	set, err := rules.Parse(rules.Source{Name: "r.yaml", Data: []byte("apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules: []\n")})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := Export(set, ExportOptions{})
	docs, _, err := Decode(rules.Source{Name: "e.yaml", Data: out})
	if err != nil || len(docs) != 1 || docs[0].Policy.Spec.Rules == nil || len(docs[0].Policy.Spec.Rules) != 0 {
		t.Errorf("%v %+v\n%s", err, docs, out)
	}
}
