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
