package rules

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// explainRules is a realistic small rule set: wildcards, a deny over an
// allow, TLS passthrough, namespaces, an expiring rule and a dry-run rule.
const explainRules = header + `
  - id: payments-stripe-charges
    expires: 2027-06-30
    action: allow
    from: {principals: ["spiffe://cluster.local/ns/payments/sa/checkout"]}
    to: {hosts: [api.stripe.com], ports: [443], methods: [GET, POST], paths: [/v1/charges, "/v1/charges/*", "/v1/customers/**"]}
  - id: payments-stripe-files
    action: allow
    from: {namespaces: [payments]}
    to: {hosts: [files.stripe.com], methods: [POST], paths: ["/v1/files/**"]}
  - id: search-google-apis
    action: allow
    from: {namespaces: [search], serviceAccounts: [indexer]}
    to: {hosts: ["*.googleapis.com"], ports: [443]}
  - id: deny-generative-language
    action: deny
    to: {hosts: [generativelanguage.googleapis.com]}
  - id: notify-sendgrid
    action: allow
    from: {principals: ["spiffe://cluster.local/ns/notify/sa/mailer"]}
    to: {hosts: [api.sendgrid.com], ports: [443]}
  - id: payments-fraud-vendor-trial
    mode: dry-run
    action: allow
    from: {namespaces: [payments]}
    to: {hosts: [api.fraudscore.example], methods: [POST], paths: [/v2/score]}
`

const indexer = "spiffe://cluster.local/ns/search/sa/indexer"

func TestExplain(t *testing.T) {
	tab := compileYAML(t, explainRules)
	type miss struct{ rule, field, value string }
	for _, tc := range []struct {
		name     string
		req      Request
		at       time.Time
		decision string
		rule     string
		summary  string
		matched  map[string]string // rule -> role
		misses   []miss            // some of the misses that must be reported
		noRules  bool
	}{
		{
			name: "allowed_by_the_only_matching_rule", req: httpReq(checkout, "POST", "api.stripe.com", "/v1/charges"),
			decision: "allow", rule: "payments-stripe-charges", summary: "allowed by rule payments-stripe-charges",
			matched: map[string]string{"payments-stripe-charges": RoleDecides},
			misses:  []miss{{"payments-stripe-files", "hosts", "api.stripe.com"}, {"notify-sendgrid", "principals", checkout}},
		},
		{
			name: "method_not_listed_is_the_near_miss", req: httpReq(checkout, "DELETE", "api.stripe.com", "/v1/charges"),
			decision: "deny", summary: "denied: no rule allows this request",
			misses: []miss{{"payments-stripe-charges", "methods", "DELETE"}},
		},
		{
			name: "deny_rule_outranks_the_wildcard_allow", req: httpReq(indexer, "GET", "generativelanguage.googleapis.com", "/v1/models"),
			decision: "deny", rule: "deny-generative-language", summary: "denied by rule deny-generative-language",
			matched: map[string]string{"search-google-apis": RoleOutranked, "deny-generative-language": RoleDecides},
		},
		{
			name: "tls_passthrough_cannot_match_a_rule_with_paths", req: sniReq(checkout, "api.stripe.com"),
			decision: "deny",
			misses:   []miss{{"payments-stripe-charges", "tls", "TLS passthrough"}},
		},
		{
			name: "expired_rule_says_when", req: httpReq(checkout, "POST", "api.stripe.com", "/v1/charges"),
			at: time.Date(2027, 7, 1, 0, 0, 0, 0, time.UTC), decision: "deny",
			misses: []miss{{"payments-stripe-charges", "expires", "2027-07-01"}},
		},
		{
			name: "normalized_path_and_port_are_what_is_compared", req: Request{Principal: checkout, Host: "API.Stripe.com.:8443", Port: 443, Method: "GET", Path: "/v1/./charges/../refunds?x=1"},
			decision: "deny",
			misses:   []miss{{"payments-stripe-charges", "ports", "8443"}, {"payments-stripe-charges", "paths", "/v1/refunds"}},
		},
		{
			name: "caller_without_istio_namespace", req: httpReq("spiffe://cluster.local/legacy/batch", "POST", "files.stripe.com", "/v1/files"),
			decision: "deny",
			misses:   []miss{{"payments-stripe-files", "namespaces", ""}},
		},
		{
			name: "dry_run_rule_is_listed_but_does_not_decide", req: httpReq(checkout, "POST", "api.fraudscore.example", "/v2/score"),
			decision: "deny", summary: "denied: no rule allows this request",
			matched: map[string]string{"payments-fraud-vendor-trial": RoleDryRun},
		},
		{
			name: "untrusted_trust_domain_looks_at_no_rule", req: httpReq("spiffe://partner.example/ns/payments/sa/checkout", "POST", "api.stripe.com", "/v1/charges"),
			decision: "deny", summary: "trust domain partner.example is not in the rule set's trustDomains", noRules: true,
		},
		{
			name: "unsafe_path_looks_at_no_rule", req: httpReq(checkout, "GET", "api.stripe.com", "/v1/charges%2F..%2Fx"),
			decision: "deny", summary: "cannot be normalized safely", noRules: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := tc.at
			if at.IsZero() {
				at = testNow
			}
			e := explain(t, tab, tc.req, at, -1)
			d := tab.Decide(tc.req, at)
			if got := DecisionWord(e.Decision.Allow); got != tc.decision || ruleID(e.Decision) != tc.rule {
				t.Fatalf("decision %s by %q, want %s by %q", got, ruleID(e.Decision), tc.decision, tc.rule)
			}
			if e.Decision.Allow != d.Allow || e.Decision.Reason != d.Reason || ruleID(e.Decision) != ruleID(d) {
				t.Fatalf("Explain decided %+v, Decide %+v", e.Decision, d)
			}
			if !strings.Contains(e.Summary, tc.summary) {
				t.Errorf("summary %q, want it to contain %q", e.Summary, tc.summary)
			}
			if tc.noRules {
				if len(e.Rules) != 0 {
					t.Errorf("%d rules explained, want none", len(e.Rules))
				}
				return
			}
			if len(e.Rules) != len(tab.Set().Rules) {
				t.Fatalf("%d rules explained, want every one (%d)", len(e.Rules), len(tab.Set().Rules))
			}
			matched := map[string]string{}
			for _, rc := range e.Matching() {
				matched[rc.Rule.ID] = rc.Role
			}
			if fmt.Sprint(matched) != fmt.Sprint(orEmptyMap(tc.matched)) {
				t.Errorf("matched %v, want %v", matched, tc.matched)
			}
			for _, m := range tc.misses {
				rc := findCheck(t, e, m.rule)
				i := slices.IndexFunc(rc.Misses, func(x Miss) bool { return x.Field == m.field })
				if i < 0 {
					t.Errorf("rule %s: no miss on %s, got %+v", m.rule, m.field, rc.Misses)
					continue
				}
				if got := rc.Misses[i]; got.Value != m.value || got.Why == "" {
					t.Errorf("rule %s: miss %+v, want value %q and words", m.rule, got, m.value)
				}
			}
		})
	}
}

func orEmptyMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func findCheck(t *testing.T, e Explanation, id string) RuleCheck {
	t.Helper()
	for _, rc := range e.Rules {
		if rc.Rule.ID == id {
			return rc
		}
	}
	t.Fatalf("rule %s not explained", id)
	return RuleCheck{}
}

func TestExplainNearMissesComeFirst(t *testing.T) {
	tab := compileYAML(t, explainRules)
	req := httpReq(checkout, "DELETE", "api.stripe.com", "/v1/charges")
	e := explain(t, tab, req, testNow, -1)
	near := e.NearMisses(2)
	if len(near) != 2 || near[0].Rule.ID != "payments-stripe-charges" || len(near[0].Misses) != 1 {
		t.Fatalf("nearest misses %v, want payments-stripe-charges (one miss) first", ids(near))
	}
	if len(e.Rules) != 6 {
		t.Errorf("%d rules explained, want all 6", len(e.Rules))
	}
	one := explain(t, tab, req, testNow, 1)
	if len(one.Rules) != 1 || one.Rules[0].Rule.ID != "payments-stripe-charges" {
		t.Errorf("Explain(1) kept %v", ids(one.Rules))
	}
}

// explain is tab.Explain, failing the test on an error.
func explain(tb testing.TB, tab *Table, req Request, now time.Time, near int) Explanation {
	tb.Helper()
	e, err := tab.Explain(req, now, near)
	if err != nil {
		tb.Fatalf("Explain(%+v): %v", req, err)
	}
	return e
}

func ids(rcs []RuleCheck) []string {
	var out []string
	for _, rc := range rcs {
		out = append(out, rc.Rule.ID)
	}
	return out
}

func TestExplainJSON(t *testing.T) {
	tab := compileYAML(t, explainRules)
	e := explain(t, tab, httpReq(checkout, "POST", "api.fraudscore.example", "/v2/score?debug=1"), testNow, 1)
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Decision, Reason, Rule, Summary, Ruleset string
		Request                                  map[string]any
		DryRun                                   []struct{ Rule, Decision string } `json:"dry_run"`
		Rules                                    []struct {
			ID      string
			Matched bool
			Role    string
			Misses  []Miss
		}
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Decision != "deny" || got.Reason != "no-matching-rule" || got.Ruleset != tab.Version() {
		t.Errorf("JSON %s", b)
	}
	if got.Request["path"] != "/v2/score" || got.Request["namespace"] != "payments" || got.Request["port"] != 443.0 {
		t.Errorf("request %v: want the normalized values", got.Request)
	}
	if len(got.DryRun) != 1 || got.DryRun[0].Rule != "payments-fraud-vendor-trial" || got.DryRun[0].Decision != "allow" {
		t.Errorf("dry_run %+v", got.DryRun)
	}
	if len(got.Rules) != 2 || !got.Rules[1].Matched || got.Rules[1].Role != RoleDryRun || len(got.Rules[0].Misses) == 0 {
		t.Errorf("rules %+v: want the nearest miss, then the matching dry-run rule", got.Rules)
	}
}

// TestExplainAgreesWithDecide explains many requests against a large
// generated table and checks that the rules it says matched give exactly
// Decide's answer: the lowest matching enforce deny, else the lowest
// matching enforce allow, and the matching dry-run rules.
func TestExplainAgreesWithDecide(t *testing.T) {
	g := generateRules(t, 800, 7)
	set, err := Parse(Source{Name: "gen.yaml", Data: g.YAML})
	if err != nil {
		t.Fatal(err)
	}
	tab, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	// Requests built from a random rule's patterns, half of them with one
	// field changed: many match, many nearly match.
	rng := rand.New(rand.NewPCG(7, 11))
	pick := func(s []string, def string) string {
		if len(s) == 0 {
			return def
		}
		return s[rng.IntN(len(s))]
	}
	reqs := []Request{g.Allowed, g.Denied, g.Normalize, g.SNI}
	for range 600 {
		r := set.Rules[rng.IntN(len(set.Rules))]
		p := strings.ReplaceAll(pick(r.Principals, ""), "*", "x1")
		if p == "" {
			p = fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", pick(r.Namespaces, "team-01"), pick(r.ServiceAccounts, "svc-1"))
		}
		h := strings.Replace(pick(r.Hosts, genHost(rng.IntN(genVendors), 0)), "*.", "eu.", 1)
		port := 443
		if len(r.Ports) > 0 {
			port = r.Ports[rng.IntN(len(r.Ports))]
		}
		req := Request{Principal: p, Host: h, Port: port, Method: pick(r.Methods, "GET"),
			Path: strings.ReplaceAll(strings.Replace(pick(r.Paths, "/"), "/**", "/a/b", 1), "*", "x")}
		if !r.HTTPOnly() && rng.IntN(3) == 0 {
			req.SNI, req.Method, req.Path = true, "", ""
		}
		switch rng.IntN(8) {
		case 0:
			req.Method = "PATCH"
		case 1:
			req.Port = 8080
		case 2:
			req.Path = "/elsewhere"
		case 3:
			req.Principal = genPrincipal(rng.IntN(genNamespaces), rng.IntN(genAccounts))
		}
		reqs = append(reqs, req)
	}
	allowed := 0
	for _, req := range reqs {
		d := tab.Decide(req, testNow)
		e := explain(t, tab, req, testNow, -1)
		checkNearest(t, tab, req, e, 5)
		var deny, allow *Rule
		var dry []string
		for _, rc := range e.Rules {
			if !rc.Matched {
				continue
			}
			switch {
			case rc.Rule.Mode == DryRun:
				dry = append(dry, rc.Rule.ID)
			case rc.Rule.Action == Deny && deny == nil:
				deny = rc.Rule
			case rc.Rule.Action == Allow && allow == nil:
				allow = rc.Rule
			}
		}
		want := allow
		if deny != nil {
			want = deny
		}
		if d.Reason != ReasonAllowed && d.Reason != ReasonDeniedByRule && d.Reason != ReasonNoMatchingRule {
			want = nil
		}
		if d.Rule != want {
			t.Fatalf("%+v: Decide's rule %q, Explain's matches give %v", req, ruleID(d), want)
		}
		var gotDry []string
		for _, o := range d.DryRun {
			gotDry = append(gotDry, o.Rule.ID)
		}
		if !slices.Equal(gotDry, dry) {
			t.Fatalf("%+v: Decide's dry-run outcomes %v, Explain's %v", req, gotDry, dry)
		}
		if d.Allow {
			allowed++
		}
	}
	t.Logf("%d of %d requests allowed", allowed, len(reqs))
	if allowed < len(reqs)/4 || allowed > len(reqs)*3/4 {
		t.Fatalf("%d of %d requests allowed: the test exercises too little", allowed, len(reqs))
	}
}

// checkNearest fails unless explaining req for its n nearest misses keeps
// exactly the rules that matched and the n nearest misses of the full
// explanation all, with the same words.
func checkNearest(t *testing.T, tab *Table, req Request, all Explanation, n int) {
	t.Helper()
	want := map[*Rule]bool{}
	for _, rc := range all.Matching() {
		want[rc.Rule] = true
	}
	for _, rc := range all.NearMisses(n) {
		want[rc.Rule] = true
	}
	var wantChecks []RuleCheck
	for _, rc := range all.Rules {
		if want[rc.Rule] {
			wantChecks = append(wantChecks, rc)
		}
	}
	got := explain(t, tab, req, testNow, n)
	if fmt.Sprint(ids(got.Rules)) != fmt.Sprint(ids(wantChecks)) {
		t.Fatalf("%+v: Explain(%d) kept %v; the full explanation's matches and nearest misses are %v", req, n, ids(got.Rules), ids(wantChecks))
	}
	for i := range got.Rules {
		if fmt.Sprint(got.Rules[i]) != fmt.Sprint(wantChecks[i]) {
			t.Fatalf("%+v: rule %s explained as %+v, in the full explanation as %+v", req, got.Rules[i].Rule.ID, got.Rules[i], wantChecks[i])
		}
	}
}

// TestExplainRefusesLongFields: a principal, host, method or path longer
// than MaxExplainField is refused with an error naming the field and the
// limit; one of exactly that length is explained.
func TestExplainRefusesLongFields(t *testing.T) {
	tab := compileYAML(t, explainRules)
	base := httpReq(checkout, "POST", "api.stripe.com", "/v1/charges")
	long := func(prefix string, n int) string { return prefix + strings.Repeat("a", n-len(prefix)) }
	for _, tc := range []struct {
		field string
		set   func(r *Request, n int)
	}{
		{"principal", func(r *Request, n int) { r.Principal = long(checkout+"/", n) }},
		{"host", func(r *Request, n int) { r.Host = long("x.", n) }},
		{"method", func(r *Request, n int) { r.Method = long("P", n) }},
		{"path", func(r *Request, n int) { r.Path = long("/v1/charges/", n) }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			req := base
			tc.set(&req, MaxExplainField)
			if _, err := tab.Explain(req, testNow, 5); err != nil {
				t.Errorf("a %s of exactly %d bytes: %v", tc.field, MaxExplainField, err)
			}
			tc.set(&req, MaxExplainField+1)
			_, err := tab.Explain(req, testNow, -1)
			if err == nil || !strings.Contains(err.Error(), "the "+tc.field+" is") || !strings.Contains(err.Error(), "at most 8192 bytes") {
				t.Errorf("a %s of %d bytes: error %v, want one naming the %s and the limit", tc.field, MaxExplainField+1, err, tc.field)
			}
		})
	}
}

// TestExplainCostsWhatItShows: against a large table, explaining a request
// with every field at MaxExplainField allocates in proportion to the rules
// shown, not to the table: it once built the words of every rule, 2.5 GB
// for a 200 KB URL against 10,000 rules, before keeping 5. Even every rule
// stays small, since a miss repeats at most MaxMissValue bytes of a value.
func TestExplainCostsWhatItShows(t *testing.T) {
	g := generateRules(t, 3000, 3)
	set, err := Parse(Source{Name: "gen.yaml", Data: g.YAML})
	if err != nil {
		t.Fatal(err)
	}
	tab, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	// The principal and host of a rule with paths, so that the rule is
	// looked at field by field, and a long path no rule lists.
	req := g.Allowed
	req.Path = "/v1/items/" + strings.Repeat("x", MaxExplainField-len("/v1/items/"))
	req.Host = strings.Repeat("h", MaxExplainField-len(".vendor-123.com")) + ".vendor-123.com"
	allocated := func(near int) (uint64, Explanation) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		e := explain(t, tab, req, testNow, near)
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc, e
	}
	nearBytes, e := allocated(5)
	if got := len(e.NearMisses(-1)); got != 5 {
		t.Fatalf("%d near misses, want 5", got)
	}
	allBytes, all := allocated(-1)
	if len(all.Rules) != len(set.Rules) {
		t.Fatalf("%d rules explained, want all %d", len(all.Rules), len(set.Rules))
	}
	t.Logf("%d rules, 8 KiB host and path: %d KB allocated for 5 near misses, %d KB for every rule", len(set.Rules), nearBytes>>10, allBytes>>10)
	// The ranking needs a few bytes a rule; the words, a few kilobytes a
	// shown rule.
	if limit := uint64(len(set.Rules))*16 + 256<<10; nearBytes > limit {
		t.Errorf("5 near misses of %d rules: %d bytes allocated, want at most %d", len(set.Rules), nearBytes, limit)
	}
	if limit := uint64(len(set.Rules)) * 4 << 10; allBytes > limit {
		t.Errorf("every one of %d rules: %d bytes allocated, want at most %d", len(set.Rules), allBytes, limit)
	}
	for _, rc := range all.Rules {
		for _, m := range rc.Misses {
			if len(m.Value) > MaxMissValue+len("…") || len(m.Why) > MaxMissValue+len("…")+1024 {
				t.Fatalf("rule %s: a miss of %d and %d bytes repeats the request's whole value", rc.Rule.ID, len(m.Value), len(m.Why))
			}
		}
	}
}
