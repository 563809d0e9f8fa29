package rules

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestLintPrincipalOutsideTrustDomains: the warning names principals no
// identity can have, and only those; a '*' in a pattern's trust domain
// matches as it does at decision time.
func TestLintPrincipalOutsideTrustDomains(t *testing.T) {
	cases := []struct {
		principal string
		warn      bool
	}{
		{"spiffe://cluster.local/ns/a/sa/b", false},
		{"spiffe://cluster.local/ns/*/sa/b", false},
		{"spiffe://other.example/ns/a/sa/b", true},
		{"spiffe://*/ns/a/sa/b", false},
		{"spiffe://cluster.*/ns/a/sa/b", false},
		{"spiffe://*.other.example/ns/a/sa/b", true},
	}
	for _, c := range cases {
		t.Run(c.principal, func(t *testing.T) {
			set := parseYAML(t, fmt.Sprintf(`apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local, partner.example]
rules:
  - id: r
    action: allow
    from: {principals: [%q]}
    to: {hosts: [api.example.com]}
`, c.principal))
			var warned []string
			for _, d := range Lint(set, time.Now(), 0) {
				if strings.Contains(d.Msg, "outside trustDomains") {
					warned = append(warned, d.Msg)
				}
			}
			if (len(warned) > 0) != c.warn {
				t.Errorf("warnings %q, want a warning: %v", warned, c.warn)
			}
			// The pattern matches an identity of the trust domains exactly
			// when lint does not warn.
			tab, err := Compile(set)
			if err != nil {
				t.Fatal(err)
			}
			_, path, _ := strings.Cut(strings.TrimPrefix(c.principal, "spiffe://"), "/")
			matched := false
			for _, td := range set.TrustDomains {
				id := "spiffe://" + td + "/" + strings.ReplaceAll(path, "*", "x")
				d := tab.Decide(Request{Principal: id, Host: "api.example.com", Port: 443, Method: "GET", Path: "/"}, time.Now())
				matched = matched || d.Allow
			}
			if c.warn == matched {
				t.Errorf("lint warns %v, but an identity of the trust domains matched: %v", c.warn, matched)
			}
		})
	}
}

// TestLintAllowWithoutFrom: an enforce-mode allow rule with no from (or an
// empty one) is warned of as matching every workload in the trust domains,
// which is also what a rule file caught half-written can look like; rules
// that name their callers, dry-run rules and deny rules are not.
func TestLintAllowWithoutFrom(t *testing.T) {
	const everyone = "has no from: it matches every workload in the trust domains (cluster.local, partner.example); overly broad"
	for _, tc := range []struct {
		name, rule, want string // want "" means no warning about callers
	}{
		{"allow_without_from", `{id: r, action: allow, to: {hosts: [api.example.com]}}`, everyone},
		{"allow_with_an_empty_from", `{id: r, action: allow, from: {}, to: {hosts: [api.example.com]}}`, everyone},
		{"allow_without_from_or_hosts", `{id: r, action: allow}`,
			"has no from and allows any host: it lets every workload in the trust domains (cluster.local, partner.example) reach every host; overly broad"},
		{"allow_with_namespaces", `{id: r, action: allow, from: {namespaces: [a]}, to: {hosts: [api.example.com]}}`, ""},
		{"allow_with_service_accounts", `{id: r, action: allow, from: {serviceAccounts: [a]}, to: {hosts: [api.example.com]}}`, ""},
		{"dry_run_allow_without_from", `{id: r, mode: dry-run, action: allow, to: {hosts: [api.example.com]}}`, ""},
		{"deny_without_from", `{id: r, action: deny, to: {hosts: [api.example.com]}}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := parseYAML(t, "apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [partner.example, cluster.local]\nrules:\n  - "+tc.rule+"\n")
			var got []string
			for _, d := range Lint(set, testNow, 0) {
				if strings.Contains(d.Msg, "every workload") {
					got = append(got, d.Error())
				}
			}
			if tc.want == "" {
				if len(got) > 0 {
					t.Errorf("warnings %q, want none about every workload", got)
				}
				return
			}
			if len(got) != 1 || !strings.HasPrefix(got[0], `rules.yaml:5:5: rule "r": `+tc.want) {
				t.Errorf("warnings %q, want one starting %q", got, `rules.yaml:5:5: rule "r": `+tc.want)
			}
		})
	}
}
