package compliance

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/egress-authz/egress-authz/rules"
)

func TestGeneralizePath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/v1/charges", "/v1/charges"},
		{"/v1/charges/ch_3MmlLrLkdIwHu7ix0snN0B15", "/v1/charges/*"},
		{"/v1/customers/cus_NffrFeUfNV2Hib/sources", "/v1/customers/*/sources"},
		{"/users/1234/orders/98765", "/users/*/orders/*"},
		{"/objects/3f2a9c4e-1b7d-4e8a-9c3b-2d1e0f4a5b6c", "/objects/*"},
		{"/commits/9fceb02d0ae598e95dc970b74767f19372d61af8", "/commits/*"},
		{"/reports/2026-11-22/summary", "/reports/*/summary"},
		{"/blobs/k8s9x2m4p7q1z3/raw", "/blobs/*/raw"},
		// Names an API author chose stay.
		{"/v2/oauth2/token", "/v2/oauth2/token"},
		{"/api/v1beta/models", "/api/v1beta/models"},
		{"/oauth2callback", "/oauth2callback"},
		{"/2fa-setup", "/2fa-setup"},
		{"/oauth2-token-exchange", "/oauth2-token-exchange"},
		{"/s3/deadbeef", "/s3/deadbeef"},
		{"/", "/"},
		{"/items/", "/items/"},
		{"/a**b", "/a*b"},
	} {
		got := GeneralizePath(tc.in)
		if got != tc.want {
			t.Errorf("GeneralizePath(%q) = %q, want %q", tc.in, got, tc.want)
			continue
		}
		// A valid path pattern that matches the path: a rule on it
		// allows the path.
		set, err := rules.Parse(rules.Source{Name: "r.yaml", Data: []byte(header +
			fmt.Sprintf("  - {id: r, action: allow, to: {paths: [%q]}}\n", got))})
		if err != nil {
			t.Errorf("GeneralizePath(%q) = %q, not a valid pattern: %v", tc.in, got, err)
			continue
		}
		tab, err := rules.Compile(set)
		if err != nil {
			t.Fatal(err)
		}
		if d := tab.Decide(httpReq(checkout, "GET", "a.example", tc.in), testNow); !d.Allow {
			t.Errorf("GeneralizePath(%q) = %q does not match it: %s", tc.in, got, d.Reason)
		}
	}
}

func TestCollapsePaths(t *testing.T) {
	var paths []string
	for i := range 8 {
		paths = append(paths, fmt.Sprintf("/api/v2/reports/r%d", i), fmt.Sprintf("/api/v2/users/u%d", i))
	}
	paths = append(paths, "/health", "/api/v2/reports")
	slices.Sort(paths)
	got := collapsePaths(paths, 4)
	want := []string{"/api/v2/reports/**", "/api/v2/users/**", "/health"}
	if !slices.Equal(got, want) {
		t.Errorf("collapsePaths = %v, want %v", got, want)
	}
	if short := collapsePaths([]string{"/a", "/b/c"}, 10); !slices.Equal(short, []string{"/a", "/b/c"}) {
		t.Errorf("a short list changed: %v", short)
	}
}

func TestGroupHosts(t *testing.T) {
	names := []string{"api.stripe.com", "bigquery.googleapis.com", "files.stripe.com", "googleapis.com",
		"pubsub.googleapis.com", "s3.eu-west-1.amazonaws.com", "a.example.co.uk", "b.example.co.uk", "c.example.co.uk",
		"one.co.uk", "two.co.uk", "three.co.uk", "storage.googleapis.com", "10.0.0.1", "10.0.0.2", "10.0.0.3"}
	slices.Sort(names)
	var got []string
	for _, g := range groupHosts(names, 3) {
		got = append(got, strings.Join(g.patterns, ","))
	}
	want := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "api.stripe.com", "*.example.co.uk", "files.stripe.com",
		"googleapis.com,*.googleapis.com", "one.co.uk", "s3.eu-west-1.amazonaws.com", "three.co.uk", "two.co.uk"}
	if !slices.Equal(got, want) {
		t.Errorf("groups\n got %v\nwant %v", got, want)
	}
}

// payReq is a request from principal over https.
func payReq(principal, method, host, path string) rules.Request {
	return rules.Request{Principal: principal, Host: host, Port: 443, Method: method, Path: path}
}

func TestSuggest(t *testing.T) {
	disputes := "spiffe://cluster.local/ns/payments/sa/disputes"
	reports := "spiffe://cluster.local/ns/payments/sa/reports"
	reqs := []rules.Request{
		payReq(checkout, "POST", "api.stripe.com", "/v1/charges"),
		payReq(checkout, "GET", "api.stripe.com", "/v1/charges/ch_3MmlLrLkdIwHu7ix0snN0B15"),
		payReq(checkout, "GET", "API.stripe.com", "/v1/charges/ch_3MmlLrLkdIwHu7ix0snN0B99?expand=x"),
		payReq(checkout, "POST", "api.stripe.com:443", "/v1/customers/cus_NffrFeUfNV2Hib/sources"),
		payReq(disputes, "POST", "files.stripe.com", "/v1/files"),
		payReq(reports, "POST", "files.stripe.com", "/v1/files"),
		// TLS passthrough and HTTP to the same host: no methods or paths.
		{Principal: refunds, Host: "api.sendgrid.com", SNI: true, Port: 443},
		payReq(refunds, "POST", "api.sendgrid.com", "/v3/mail/send"),
		// Many sub-domains of one parent.
		payReq(reports, "GET", "storage.googleapis.com", "/b/1"),
		payReq(reports, "GET", "bigquery.googleapis.com", "/q/2"),
		payReq(reports, "POST", "pubsub.googleapis.com", "/t/3"),
		// An unknown port (socket port missing): no ports on that rule.
		{Principal: reports, Host: "metrics.example.org", Port: 0, Method: "PUT", Path: "/push"},
		// Nothing can allow these.
		payReq(checkout, "GET", "api.stripe.com", "/v1/charges%2F..%2Fbalance"),
		payReq("", "GET", "api.stripe.com", "/"),
		payReq(checkout, "GET", "bad host", "/"),
	}
	s := Suggest(reqs, SuggestOptions{})
	if s.Used != 12 || s.Skipped[rules.ReasonUnsafePath] != 1 || s.Skipped[rules.ReasonNoIdentity] != 1 || s.Skipped[rules.ReasonInvalidHost] != 1 {
		t.Errorf("used %d, skipped %v", s.Used, s.Skipped)
	}
	yaml := string(rules.Marshal(s.Set))
	want := `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: payments-checkout-api-stripe-com
    description: "Suggested from 4 recorded requests; review before merging"
    action: allow
    from:
      principals: ["spiffe://cluster.local/ns/payments/sa/checkout"]
    to:
      hosts: [api.stripe.com]
      ports: [443]
      methods: [GET, POST]
      paths: [/v1/charges, "/v1/charges/*", "/v1/customers/*/sources"]

  - id: payments-files-stripe-com
    description: "Suggested from 2 recorded requests; review before merging"
    action: allow
    from:
      principals: ["spiffe://cluster.local/ns/payments/sa/disputes", "spiffe://cluster.local/ns/payments/sa/reports"]
    to:
      hosts: [files.stripe.com]
      ports: [443]
      methods: [POST]
      paths: [/v1/files]

  - id: payments-refunds-api-sendgrid-com
    description: "Suggested from 2 recorded requests; review before merging (TLS passthrough seen: no methods or paths, which such connections cannot match)"
    action: allow
    from:
      principals: ["spiffe://cluster.local/ns/payments/sa/refunds"]
    to:
      hosts: [api.sendgrid.com]
      ports: [443]

  - id: payments-reports-googleapis-com
    description: "Suggested from 3 recorded requests; review before merging"
    action: allow
    from:
      principals: ["spiffe://cluster.local/ns/payments/sa/reports"]
    to:
      hosts: ["*.googleapis.com"]
      ports: [443]
      methods: [GET, POST]
      paths: ["/b/*", "/q/*", "/t/*"]

  - id: payments-reports-metrics-example-org
    description: "Suggested from 1 recorded request; review before merging"
    action: allow
    from:
      principals: ["spiffe://cluster.local/ns/payments/sa/reports"]
    to:
      hosts: [metrics.example.org]
      methods: [PUT]
      paths: [/push]
`
	if yaml != want {
		t.Errorf("suggestion:\n%s\nwant:\n%s", yaml, want)
	}
	checkSuggestion(t, s, reqs)
}

// checkSuggestion checks that a suggestion is a valid rule file that lint
// has nothing to say about, and that it allows every request of reqs that
// a rule can allow.
func checkSuggestion(t *testing.T, s *Suggestion, reqs []rules.Request) {
	t.Helper()
	yaml := rules.Marshal(s.Set)
	set, err := rules.Parse(rules.Source{Name: "suggested.yaml", Data: yaml})
	if err != nil {
		t.Fatalf("the suggestion does not parse: %v\n%s", err, yaml)
	}
	if w := rules.Lint(set, testNow, 14*24*3600e9); len(w) > 0 {
		t.Errorf("lint warns about the suggestion: %v", w)
	}
	tab, err := rules.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range reqs {
		d := tab.Decide(req, testNow)
		switch d.Reason {
		case rules.ReasonAllowed, rules.ReasonNoIdentity, rules.ReasonInvalidIdentity, rules.ReasonNoHost, rules.ReasonInvalidHost, rules.ReasonUnsafePath:
		default:
			t.Errorf("the suggestion denies %+v (%s)\n%s", req, d.Reason, yaml)
		}
	}
	if err := CheckSuggestion(yaml, reqs, testNow); err != nil {
		t.Errorf("CheckSuggestion: %v", err)
	}
}

// TestCheckSuggestionCatchesAWrongProposal: the self-check "rules suggest"
// runs before printing fails on a proposal that does not parse, and on one
// that denies a request a rule could allow, but not on requests no rule
// can allow.
func TestCheckSuggestionCatchesAWrongProposal(t *testing.T) {
	reqs := []rules.Request{
		payReq(checkout, "POST", "api.stripe.com", "/v1/charges"),
		payReq(checkout, "GET", "api.stripe.com", "/v1/a%2Fb"), // unsafe-path: no rule can allow it
		payReq(refunds, "POST", "api.stripe.com", "/v1/refunds"),
	}
	s := Suggest(reqs[:2], SuggestOptions{})
	if err := CheckSuggestion(rules.Marshal(s.Set), reqs[:2], testNow); err != nil {
		t.Errorf("a proposal for its own requests: %v", err)
	}
	err := CheckSuggestion(rules.Marshal(s.Set), reqs, testNow)
	var denied *DeniedError
	if !errors.As(err, &denied) || denied.Request != reqs[2] || denied.Reason != rules.ReasonNoMatchingRule {
		t.Errorf("a proposal that misses refunds: %v", err)
	}
	if err := CheckSuggestion([]byte("rules: {}\n"), reqs, testNow); err == nil || !strings.HasPrefix(err.Error(), "parse: ") {
		t.Errorf("a proposal that does not parse: %v", err)
	}
}

func TestSuggestCollapsesManyPaths(t *testing.T) {
	var reqs []rules.Request
	for i := range 30 {
		reqs = append(reqs, payReq(checkout, "GET", "api.example.com", fmt.Sprintf("/api/v2/section%c/items", 'a'+i%26)))
	}
	s := Suggest(reqs, SuggestOptions{MaxPaths: 5})
	if len(s.Set.Rules) != 1 || !slices.Equal(s.Set.Rules[0].Paths, []string{"/api/v2/**"}) {
		t.Errorf("paths %v, want [/api/v2/**]", s.Set.Rules[0].Paths)
	}
	checkSuggestion(t, s, reqs)
}

// TestSuggestAllowsWhatItWasMadeFrom is a property test: whatever the
// traffic, the suggestion is a clean rule file that allows all of it.
func TestSuggestAllowsWhatItWasMadeFrom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	segs := []string{"v1", "v2", "items", "42", "ch_3MmlLrLkdIwHu7ix0snN0B15", "a%20b", "x.y", "~u", "3f2a9c4e-1b7d-4e8a-9c3b-2d1e0f4a5b6c", "*", "**", "a*b", ""}
	for round := range 20 {
		var reqs []rules.Request
		for range 200 {
			p := fmt.Sprintf("spiffe://cluster.local/ns/ns-%d/sa/sa-%d", rng.IntN(3), rng.IntN(3))
			if rng.IntN(10) == 0 {
				p = "spiffe://other.example/batch/job"
			}
			h := fmt.Sprintf("h%d.vendor-%d.com", rng.IntN(6), rng.IntN(3))
			if rng.IntN(5) == 0 {
				h += fmt.Sprintf(":%d", 8000+rng.IntN(3))
			}
			if rng.IntN(6) == 0 {
				reqs = append(reqs, rules.Request{Principal: p, Host: strings.Split(h, ":")[0], SNI: true, Port: 443})
				continue
			}
			path := ""
			for range 1 + rng.IntN(4) {
				path += "/" + segs[rng.IntN(len(segs))]
			}
			method := []string{"GET", "POST", "PUT"}[rng.IntN(3)]
			if rng.IntN(100) == 0 {
				method = "post" // a token, so the server decides it, but no methods list names it
			}
			reqs = append(reqs, rules.Request{Principal: p, Host: h, Port: []int{443, 80, 0}[rng.IntN(3)],
				Method: method, Path: path})
		}
		s := Suggest(reqs, SuggestOptions{Subdomains: 2 + round%3, MaxPaths: 1 + round%6})
		checkSuggestion(t, s, reqs)
		if t.Failed() {
			return
		}
	}
}

// TestSuggestLowerCaseMethod: a method the server accepts but a rule's
// methods list cannot name (lint wants upper case) leaves that rule's
// methods open, and says why; other rules keep theirs.
func TestSuggestLowerCaseMethod(t *testing.T) {
	reqs := []rules.Request{
		payReq(checkout, "POST", "api.stripe.com", "/v1/charges"),
		payReq(checkout, "post", "api.stripe.com", "/v1/charges"),
		payReq(refunds, "POST", "api.stripe.com", "/v1/refunds"),
	}
	s := Suggest(reqs, SuggestOptions{})
	if len(s.Set.Rules) != 2 {
		t.Fatalf("%d rules, want 2:\n%s", len(s.Set.Rules), rules.Marshal(s.Set))
	}
	for _, r := range s.Set.Rules {
		open := r.Principals[0] == checkout
		if open != (r.Methods == nil) {
			t.Errorf("rule %s: methods %v", r.ID, r.Methods)
		}
		if open != strings.Contains(r.Description, `the method "post" was seen`) {
			t.Errorf("rule %s: description %q", r.ID, r.Description)
		}
	}
	checkSuggestion(t, s, reqs)
}
