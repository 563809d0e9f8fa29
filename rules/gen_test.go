package rules

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// generated is a synthetic rule set shaped like a large real one, with
// requests whose decisions are known.
type generated struct {
	YAML []byte

	// Allowed is allowed by an enforce-mode rule naming its exact host and
	// principal. Denied asks for the same host from a principal no rule
	// lets in: denied with no-matching-rule after scanning that host's
	// rules. Normalize is Allowed with a path that needs every
	// normalization step to become Allowed's path.
	Allowed, Denied, Normalize Request
	// SNI is a TLS-passthrough request allowed by a rule without methods
	// and paths.
	SNI Request
}

// Shape of the generated set: about 300 principals in 50 namespaces, 2,000
// host names under 400 vendor domains.
const (
	genNamespaces = 50
	genAccounts   = 6 // per namespace
	genVendors    = 400
	genSubdomains = 5 // per vendor
)

func genPrincipal(ns, sa int) string {
	return fmt.Sprintf("spiffe://cluster.local/ns/team-%02d/sa/svc-%d", ns, sa)
}

func genHost(vendor, sub int) string {
	return fmt.Sprintf("%s.vendor-%03d.com", []string{"api", "files", "auth", "events", "eu"}[sub], vendor)
}

// generateRules returns a valid rule file of n rules (n >= 600), the same
// for the same n and seed. Mix, per rule: principals (60%, some with '*')
// or namespaces and service accounts (40%); one to three hosts, one in ten
// a "*.vendor" wildcard; ports, methods and path patterns on many; every
// 500th rule a deny, every 200th a dry-run, every 100th with an expiry
// date; plus two rules without hosts that every request evaluates.
func generateRules(tb testing.TB, n int, seed uint64) *generated {
	tb.Helper()
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	var b bytes.Buffer
	b.Grow(n * 200)
	b.WriteString("apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local, partner.example]\nrules:\n")
	b.WriteString(`  - id: deny-quarantine-admin
    description: quarantined namespace reaches no admin API
    owner: security
    action: deny
    from: {namespaces: [team-49]}
    to: {paths: ["/admin/**"]}
  - id: trial-debug-anywhere
    mode: dry-run
    action: allow
    from: {serviceAccounts: [debug]}
`)
	quote := func(s []string) string { return `["` + strings.Join(s, `", "`) + `"]` }
	paths := [][]string{
		{"/v1/items/*"},
		{"/api/v2/**"},
		{"/v1/charges", "/v1/charges/*"},
		{"/v1/files/*/content"},
		{"/oauth/token"},
	}
	g := &generated{}
	for i := 2; i < n; i++ {
		fmt.Fprintf(&b, "  - id: rule-%05d\n    owner: team-%02d\n    ticket: SEC-%d\n", i, i%genNamespaces, 1000+i)
		switch {
		case i%500 == 7:
			b.WriteString("    action: deny\n")
		case i%200 == 3:
			b.WriteString("    mode: dry-run\n    action: allow\n")
		default:
			b.WriteString("    action: allow\n")
		}
		if i%100 == 11 {
			fmt.Fprintf(&b, "    expires: %d-%02d-01\n", 2027+i%3, 1+i%12)
		}
		ns, sa := rng.IntN(genNamespaces-1), rng.IntN(genAccounts)
		if r := rng.IntN(10); r < 6 {
			ps := []string{genPrincipal(ns, sa)}
			if r == 0 {
				ps = []string{fmt.Sprintf("spiffe://cluster.local/ns/team-%02d/sa/*", ns)}
			} else if r == 1 {
				ps = append(ps, genPrincipal(rng.IntN(genNamespaces-1), rng.IntN(genAccounts)))
			}
			fmt.Fprintf(&b, "    from:\n      principals: %s\n", quote(ps))
		} else {
			fmt.Fprintf(&b, "    from:\n      namespaces: [team-%02d]\n", ns)
			if r < 8 {
				fmt.Fprintf(&b, "      serviceAccounts: [svc-%d]\n", sa)
			}
		}
		var hosts []string
		for range 1 + rng.IntN(3) {
			v := rng.IntN(genVendors)
			if rng.IntN(10) == 0 {
				hosts = append(hosts, fmt.Sprintf("*.vendor-%03d.com", v))
			} else {
				hosts = append(hosts, genHost(v, rng.IntN(genSubdomains)))
			}
		}
		fmt.Fprintf(&b, "    to:\n      hosts: %s\n", quote(hosts))
		if rng.IntN(10) < 7 {
			b.WriteString("      ports: [443]\n")
		}
		switch rng.IntN(4) {
		case 0:
			b.WriteString("      methods: [GET]\n")
		case 1:
			b.WriteString("      methods: [GET, POST]\n")
		}
		if rng.IntN(10) < 4 {
			fmt.Fprintf(&b, "      paths: %s\n", quote(paths[rng.IntN(len(paths))]))
		}
	}
	// The rules the sample requests rely on, placed in the middle of the
	// set so that nothing about their position makes them cheap to find.
	host := genHost(123, 0)
	b.WriteString(`  - id: bench-allowed
    owner: team-07
    action: allow
    from: {principals: ["` + genPrincipal(7, 2) + `"]}
    to: {hosts: [` + host + `], ports: [443], methods: [GET, POST], paths: ["/v1/items/*", "/api/v2/**"]}
  - id: bench-sni
    action: allow
    from: {namespaces: [team-07]}
    to: {hosts: ["*.vendor-124.com"], ports: [443]}
`)
	g.YAML = b.Bytes()
	g.Allowed = Request{Principal: genPrincipal(7, 2), Host: host, Port: 443, Method: "POST", Path: "/v1/items/it_123?expand=all"}
	// team-49 is never in a generated from: clause.
	g.Denied = Request{Principal: genPrincipal(49, 0), Host: host, Port: 443, Method: "POST", Path: "/v1/items/it_123"}
	g.Normalize = Request{Principal: genPrincipal(7, 2), Host: "API.Vendor-123.com.:443", Method: "POST", Path: "//v1/./x/../%69tems/it%5f123?expand=all"}
	g.SNI = Request{Principal: genPrincipal(7, 4), Host: "events.vendor-124.com", SNI: true, Port: 443}
	return g
}

func TestGenerateRules(t *testing.T) {
	g := generateRules(t, 2000, 1)
	set := parseYAML(t, string(g.YAML))
	if len(set.Rules) != 2002 {
		t.Fatalf("generated %d rules, want 2002", len(set.Rules))
	}
	tab, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	checkGenerated(t, tab, g)
}

// checkGenerated fails unless the sample requests are decided as
// generated's doc says.
func checkGenerated(tb testing.TB, tab *Table, g *generated) {
	tb.Helper()
	for _, tc := range []struct {
		name   string
		req    Request
		allow  bool
		reason Reason
		rule   string
		path   string
	}{
		{"allowed", g.Allowed, true, ReasonAllowed, "bench-allowed", "/v1/items/it_123"},
		{"denied", g.Denied, false, ReasonNoMatchingRule, "", "/v1/items/it_123"},
		{"normalize", g.Normalize, true, ReasonAllowed, "bench-allowed", "/v1/items/it_123"},
		{"sni", g.SNI, true, ReasonAllowed, "bench-sni", ""},
	} {
		d := tab.Decide(tc.req, testNow)
		if d.Allow != tc.allow || d.Reason != tc.reason || ruleID(d) != tc.rule || d.Path != tc.path {
			tb.Fatalf("%s: %s", tc.name, fmtDecision(d))
		}
	}
}
