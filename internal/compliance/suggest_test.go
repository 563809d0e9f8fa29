package compliance

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/rules"
)

func TestIDLike(t *testing.T) {
	for _, tc := range []struct {
		seg  string
		want bool
	}{
		{"42", true},
		{"1234", true},
		{"ch_1AbC", true},
		{"ch_3MmlLrLkdIwHu7ix0snN0B15", true},
		{"cus_NffrFeUfNV2Hib", true},
		{"abc123def4", true}, // a Mailchimp list or campaign id: 10 hex characters
		{"3f2a9c4e-1b7d-4e8a-9c3b-2d1e0f4a5b6c", true},
		{"9fceb02d0ae598e95dc970b74767f19372d61af8", true},
		{"k8s9x2m4p7q1z3", true},
		{"dQw4w9WgXcQ", true},
		// Versions and dates name the API.
		{"v1", false},
		{"v2beta1", false},
		{"3.0", false},
		{"1.5.0", false},
		{"2024-06-01", false},
		{"2024-06", false},
		{"20240601", false},
		// Names an API author chose.
		{"charges", false},
		{"oauth2", false},
		{"oauth2callback", false},
		{"2fa-setup", false},
		{"oauth2-token-exchange", false},
		{"deadbeef", false},
		{"list_members", false},
		{"sha256", false},
		{"s3", false},
		{"", false},
	} {
		if got := idLike(tc.seg); got != tc.want {
			t.Errorf("idLike(%q) = %v, want %v", tc.seg, got, tc.want)
		}
	}
}

// TestPathMerger: a segment becomes "*" only where paths of the same
// skeleton differ and hold identifiers; with widen, at once. Each pattern
// is valid and matches the paths it was made from.
func TestPathMerger(t *testing.T) {
	for _, tc := range []struct {
		name  string
		widen bool
		paths []string
		want  []string
	}{
		{"one_id_stays", false, []string{"/v1/charges/ch_1AbC"}, []string{"/v1/charges/ch_1AbC"}},
		{"varying_ids", false, []string{"/v1/charges/ch_1AbC", "/v1/charges/ch_2XyZ"}, []string{"/v1/charges/*"}},
		{"hex_ids_vary_version_stays", false,
			[]string{"/3.0/campaigns/abc123def4/content", "/3.0/campaigns/0fe1d2c3b4/content"}, []string{"/3.0/campaigns/*/content"}},
		{"versions_never_merge", false, []string{"/v1/balance", "/v2/balance", "/3.0/ping", "/3.1/ping"},
			[]string{"/3.0/ping", "/3.1/ping", "/v1/balance", "/v2/balance"}},
		{"dates_never_merge", false, []string{"/reports/2024-06-01", "/reports/2024-06-02"},
			[]string{"/reports/2024-06-01", "/reports/2024-06-02"}},
		{"words_never_merge", false, []string{"/v1/charges", "/v1/refunds"}, []string{"/v1/charges", "/v1/refunds"}},
		{"a_literal_beside_ids_is_covered", false, []string{"/v1/charges/search", "/v1/charges/ch_1AbC", "/v1/charges/ch_2XyZ"},
			[]string{"/v1/charges/*"}},
		{"each_position_alone", false, []string{"/c/12/x/ab12cd34ef", "/c/13/x/ab12cd34ef"}, []string{"/c/*/x/ab12cd34ef"}},
		{"trailing_slash_kept", false, []string{"/items/", "/items"}, []string{"/items", "/items/"}},
		{"widen_one_id", true, []string{"/v1/charges/ch_1AbC", "/users/1234/orders", "/reports/2026-11-22/summary"},
			[]string{"/reports/2026-11-22/summary", "/users/*/orders", "/v1/charges/*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &pathMerger{widen: tc.widen}
			for _, p := range tc.paths {
				m.add(p)
			}
			got, n := m.patterns()
			if !slices.Equal(got, tc.want) {
				t.Fatalf("patterns %v, want %v", got, tc.want)
			}
			total := 0
			for _, c := range n {
				total += c
			}
			if total != len(tc.paths) {
				t.Errorf("counts %v, want %d in all", n, len(tc.paths))
			}
			var quoted []string
			for _, p := range got {
				quoted = append(quoted, fmt.Sprintf("%q", p))
			}
			tab := compileYAML(t, header+fmt.Sprintf("  - {id: r, action: allow, to: {paths: [%s]}}\n", strings.Join(quoted, ", ")))
			for _, p := range tc.paths {
				if d := tab.Decide(httpReq(checkout, "GET", "a.example", p), testNow); !d.Allow {
					t.Errorf("%s is not matched by %v: %s", p, got, d.Reason)
				}
			}
		})
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
		// Sub-domains of one parent stay apart without Widen.
		payReq(reports, "GET", "storage.googleapis.com", "/b/1"),
		payReq(reports, "GET", "bigquery.googleapis.com", "/q/2"),
		// An unknown port (socket port missing): no ports on that rule.
		{Principal: reports, Host: "metrics.example.org", Port: 0, Method: "PUT", Path: "/push"},
		// Nothing can allow these.
		payReq(checkout, "GET", "api.stripe.com", "/v1/charges%2F..%2Fbalance"),
		payReq("", "GET", "api.stripe.com", "/"),
		payReq(checkout, "GET", "bad host", "/"),
		// Only a rule wider than what was seen could allow these.
		payReq(checkout, "delete", "api.stripe.com", "/v1/charges"),
		payReq(checkout, "GET", "api.stripe.com", "/v1/charges/../balance"),
	}
	s := Suggest(reqs, SuggestOptions{})
	if s.Used != 11 || s.Skipped[rules.ReasonUnsafePath] != 1 || s.Skipped[rules.ReasonNoIdentity] != 1 || s.Skipped[rules.ReasonInvalidHost] != 1 ||
		s.LeftOut[ExcludedMethod] != 1 || s.LeftOut[ExcludedDotSegments] != 1 {
		t.Errorf("used %d, skipped %v, left out %v", s.Used, s.Skipped, s.LeftOut)
	}
	yaml := string(rules.Marshal(s.Set))
	want := `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: payments-checkout-api-stripe-com-get
    description: "Suggested from 2 recorded requests; review before merging"
    owner: TODO
    ticket: TODO
    action: allow
    from:
      principals: ["spiffe://cluster.local/ns/payments/sa/checkout"]
    to:
      hosts: [api.stripe.com]
      ports: [443]
      methods: [GET]
      paths: ["/v1/charges/*"]

  - id: payments-checkout-api-stripe-com-post
    description: "Suggested from 2 recorded requests; review before merging"
    owner: TODO
    ticket: TODO
    action: allow
    from:
      principals: ["spiffe://cluster.local/ns/payments/sa/checkout"]
    to:
      hosts: [api.stripe.com]
      ports: [443]
      methods: [POST]
      paths: [/v1/charges, /v1/customers/cus_NffrFeUfNV2Hib/sources]

  - id: payments-files-stripe-com-post
    description: "Suggested from 2 recorded requests; review before merging"
    owner: TODO
    ticket: TODO
    action: allow
    from:
      principals: ["spiffe://cluster.local/ns/payments/sa/disputes", "spiffe://cluster.local/ns/payments/sa/reports"]
    to:
      hosts: [files.stripe.com]
      ports: [443]
      methods: [POST]
      paths: [/v1/files]

  - id: payments-refunds-api-sendgrid-com-tls
    description: "Suggested from 2 recorded requests; review before merging (TLS passthrough seen: no methods or paths, which such connections cannot match)"
    owner: TODO
    ticket: TODO
    action: allow
    from:
      principals: ["spiffe://cluster.local/ns/payments/sa/refunds"]
    to:
      hosts: [api.sendgrid.com]
      ports: [443]

  - id: payments-reports-bigquery-googleapis-com-get
    description: "Suggested from 1 recorded request; review before merging"
    owner: TODO
    ticket: TODO
    action: allow
    from:
      principals: ["spiffe://cluster.local/ns/payments/sa/reports"]
    to:
      hosts: [bigquery.googleapis.com]
      ports: [443]
      methods: [GET]
      paths: [/q/2]

  - id: payments-reports-metrics-example-org-put
    description: "Suggested from 1 recorded request; review before merging"
    owner: TODO
    ticket: TODO
    action: allow
    from:
      principals: ["spiffe://cluster.local/ns/payments/sa/reports"]
    to:
      hosts: [metrics.example.org]
      methods: [PUT]
      paths: [/push]

  - id: payments-reports-storage-googleapis-com-get
    description: "Suggested from 1 recorded request; review before merging"
    owner: TODO
    ticket: TODO
    action: allow
    from:
      principals: ["spiffe://cluster.local/ns/payments/sa/reports"]
    to:
      hosts: [storage.googleapis.com]
      ports: [443]
      methods: [GET]
      paths: [/b/1]
`
	if yaml != want {
		t.Errorf("suggestion:\n%s\nwant:\n%s", yaml, want)
	}
	checkSuggestion(t, s, reqs)
}

// checkSuggestion checks that a suggestion is a valid rule file that lint
// has nothing to say about but its placeholders, which a lint policy
// requiring owner and ticket rejects; that it allows every request of
// reqs that Suggest did not skip or leave out; and that it allows nothing
// outside what was observed (see observedOracle).
func checkSuggestion(t *testing.T, s *Suggestion, reqs []rules.Request) {
	t.Helper()
	yaml := rules.Marshal(s.Set)
	set, err := rules.Parse(rules.Source{Name: "suggested.yaml", Data: yaml})
	if err != nil {
		t.Fatalf("the suggestion does not parse: %v\n%s", err, yaml)
	}
	if w := rules.Lint(set, testNow, 14*24*time.Hour); len(w) > 0 {
		t.Errorf("lint warns about the suggestion: %v", w)
	}
	if errs, warnings := (&rules.Policy{}).Check(set, testNow); len(errs) != 0 || len(warnings) != 2*len(set.Rules) {
		t.Errorf("with no lint policy: %d errors, %d placeholder warnings for %d rules, want 0 and two a rule", len(errs), len(warnings), len(set.Rules))
	}
	strict := &rules.Policy{Require: []rules.Field{rules.FieldOwner, rules.FieldTicket, rules.FieldExpires}}
	if errs, warnings := strict.Check(set, testNow); len(errs) != 3*len(set.Rules) || len(warnings) != 0 {
		t.Errorf("a policy requiring owner, ticket and expires: %d errors, %d warnings for %d rules, want three errors a rule", len(errs), len(warnings), len(set.Rules))
	}
	tab, err := rules.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range reqs {
		d := tab.Decide(req, testNow)
		_, reason, ex := judge(req)
		switch {
		case reason != "" && d.Reason != reason:
			t.Errorf("%+v: decided %s, want %s", req, d.Reason, reason)
		case reason == "" && ex == "" && !d.Allow:
			t.Errorf("the suggestion denies %+v (%s)\n%s", req, d.Reason, yaml)
		}
	}
	if err := CheckSuggestion(yaml, reqs, testNow); err != nil {
		t.Errorf("CheckSuggestion: %v", err)
	}
	// Nothing outside what was observed: requests made of the observed
	// callers, hosts, ports, methods and path segments, recombined.
	o := newObservedOracle(reqs)
	for _, c := range o.candidates() {
		if got, want := tab.Decide(c, testNow).Allow, o.allows(c); got != want {
			t.Errorf("the suggestion decides %s %s:%d%s from %s as allow=%v, but it was %sobserved\n%s",
				c.Method, c.Host, c.Port, c.Path, c.Principal, got, map[bool]string{true: "", false: "not "}[want], yaml)
			return
		}
	}
}

// observedOracle says which requests a proposal may allow: those observed,
// and those that differ from an observed one only in path segments where
// observations of the same caller, host, port and method differed and
// held identifiers. It restates Suggest's promise without its code.
type observedOracle struct {
	sni    map[[2]string]map[int]bool // principal, host -> ports seen over TLS passthrough
	groups map[string][][]string      // principal host port method -> observed paths, as segments
	seen   []rules.Request            // the usable requests, normalized
	segs   map[string]bool            // every path segment observed
}

func newObservedOracle(reqs []rules.Request) *observedOracle {
	o := &observedOracle{sni: map[[2]string]map[int]bool{}, groups: map[string][][]string{}, segs: map[string]bool{}}
	for _, req := range reqs {
		p, reason, ex := judge(req)
		if reason != "" || ex != "" {
			continue
		}
		n := rules.Request{Principal: req.Principal, Host: p.Host, Port: p.Port, SNI: req.SNI, Method: req.Method, Path: p.Path}
		o.seen = append(o.seen, n)
		if req.SNI {
			k := [2]string{req.Principal, p.Host}
			if o.sni[k] == nil {
				o.sni[k] = map[int]bool{}
			}
			o.sni[k][p.Port] = true
			continue
		}
		k := fmt.Sprint(req.Principal, " ", p.Host, " ", p.Port, " ", req.Method)
		segs := strings.Split(p.Path, "/")
		o.groups[k] = append(o.groups[k], segs)
		for _, s := range segs {
			o.segs[s] = true
		}
	}
	return o
}

// allows reports whether c is inside what was observed.
func (o *observedOracle) allows(c rules.Request) bool {
	p, reason, ex := judge(c)
	if reason != "" || ex != "" {
		return false
	}
	ports := []int{p.Port, 0} // a port unknown when recorded: any port
	for _, port := range ports {
		if o.sni[[2]string{c.Principal, p.Host}][port] {
			return true // a passthrough rule has no methods or paths
		}
	}
	if c.SNI {
		return false
	}
	cand := strings.Split(p.Path, "/")
	for _, port := range ports {
		obs := o.groups[fmt.Sprint(c.Principal, " ", p.Host, " ", port, " ", c.Method)]
		for _, a := range obs {
			if len(a) != len(cand) {
				continue
			}
			ok := true
			for i := range a {
				if cand[i] == a[i] {
					continue
				}
				// Allowed only at a position where observations of a's
				// skeleton held two different identifiers.
				if cand[i] == "" || !o.varies(obs, a, i) {
					ok = false
					break
				}
			}
			if ok {
				return true
			}
		}
	}
	return false
}

// varies reports whether, among the observations obs of one caller, host,
// port and method, those equal to a everywhere but at identifier-like
// segments hold two different identifiers at position i.
func (o *observedOracle) varies(obs [][]string, a []string, i int) bool {
	if !idLike(a[i]) {
		return false
	}
	for _, b := range obs {
		if len(b) != len(a) || b[i] == a[i] {
			continue
		}
		same := true
		for j := range a {
			if idLike(a[j]) != idLike(b[j]) || !idLike(a[j]) && a[j] != b[j] {
				same = false
				break
			}
		}
		if same {
			return true
		}
	}
	return false
}

// candidates returns requests to decide: each observed one, the same with
// each other method, port, caller and host seen, and with each path
// segment replaced by every segment seen and by a fresh identifier.
func (o *observedOracle) candidates() []rules.Request {
	var principals, hosts, methods []string
	ports := map[int]bool{}
	for _, r := range o.seen {
		principals, hosts = append(principals, r.Principal), append(hosts, r.Host)
		if !r.SNI {
			methods = append(methods, r.Method)
		}
		ports[r.Port] = true
	}
	methods = append(methods, "GET", "POST", "PUT", "DELETE", "PATCH")
	slices.Sort(principals)
	slices.Sort(hosts)
	slices.Sort(methods)
	principals, hosts, methods = slices.Compact(principals), slices.Compact(hosts), slices.Compact(methods)
	segs := append(sortedKeys(o.segs), "zz9y8x7w6v", "admin")
	var out []rules.Request
	for _, r := range o.seen {
		for _, p := range principals {
			out = append(out, withField(r, func(c *rules.Request) { c.Principal = p }))
		}
		for _, h := range hosts {
			out = append(out, withField(r, func(c *rules.Request) { c.Host = h }))
		}
		for port := range ports {
			out = append(out, withField(r, func(c *rules.Request) { c.Port = port }))
		}
		if r.SNI {
			out = append(out, withField(r, func(c *rules.Request) { c.SNI, c.Method, c.Path = false, "GET", "/" }))
			continue
		}
		for _, m := range methods {
			out = append(out, withField(r, func(c *rules.Request) { c.Method = m }))
		}
		path := strings.Split(r.Path, "/")
		for i := 1; i < len(path); i++ {
			for _, s := range segs {
				mut := slices.Clone(path)
				mut[i] = s
				out = append(out, withField(r, func(c *rules.Request) { c.Path = strings.Join(mut, "/") }))
			}
		}
		out = append(out, withField(r, func(c *rules.Request) { c.SNI, c.Method, c.Path = true, "", "" }))
	}
	return out
}

func withField(r rules.Request, f func(*rules.Request)) rules.Request {
	f(&r)
	return r
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

// TestSuggestProposesOnlyWhatWasObserved is the recorded mix of issue 19:
// a newsletter at Mailchimp and checkout at Stripe. The proposal allows
// exactly what was seen: each counterexample of the issue is denied.
func TestSuggestProposesOnlyWhatWasObserved(t *testing.T) {
	newsletter := "spiffe://cluster.local/ns/marketing/sa/newsletter"
	mc := "us21.api.mailchimp.com"
	reqs := []rules.Request{
		payReq(newsletter, "GET", mc, "/3.0/lists"),
		payReq(newsletter, "POST", mc, "/3.0/lists/abc123def4/members"),
		payReq(newsletter, "POST", mc, "/3.0/lists/0fe1d2c3b4/members"),
		payReq(newsletter, "GET", mc, "/3.0/campaigns/abc123def4/content"),
		payReq(newsletter, "GET", mc, "/3.0/campaigns/9a8b7c6d5e/content"),
		payReq(newsletter, "POST", mc, "/3.0/campaigns/9a8b7c6d5e/actions/send"),
		// Left out: a lower-case method, and a path reached through "../..".
		payReq(newsletter, "post", mc, "/3.0/lists/abc123def4/members"),
		payReq(newsletter, "GET", mc, "/3.0/lists/abc123def4/../../admin"),

		payReq(checkout, "POST", "api.stripe.com", "/v1/charges"),
		payReq(checkout, "GET", "api.stripe.com", "/v1/charges/ch_1AbC"),
		payReq(checkout, "GET", "api.stripe.com", "/v1/charges/ch_2XyZ"),
		payReq(checkout, "POST", "api.stripe.com", "/v1/customers/cus_NffrFeUfNV2Hib/sources"),
		payReq(checkout, "GET", "api.stripe.com", "/v1/balance"),
		payReq(checkout, "GET", "api.stripe.com", "/v2/balance"),
		payReq(checkout, "GET", "api.stripe.com", "/v1/reports/2024-06-01"),
		payReq(checkout, "GET", "api.stripe.com", "/v1/reports/2024-06-02"),
		payReq(checkout, "post", "api.stripe.com", "/v1/refunds"),
	}
	s := Suggest(reqs, SuggestOptions{})
	if s.Used != 14 || s.LeftOut[ExcludedMethod] != 2 || s.LeftOut[ExcludedDotSegments] != 1 {
		t.Errorf("used %d, left out %v", s.Used, s.LeftOut)
	}
	checkSuggestion(t, s, reqs)
	tab, err := rules.Compile(s.Set)
	if err != nil {
		t.Fatal(err)
	}
	yaml := rules.Marshal(s.Set)
	for _, want := range []string{`methods: [GET]
      paths: ["/3.0/campaigns/*/content", /3.0/lists]`, `methods: [POST]
      paths: [/3.0/campaigns/9a8b7c6d5e/actions/send, "/3.0/lists/*/members"]`,
		`methods: [GET]
      paths: [/v1/balance, "/v1/charges/*", /v1/reports/2024-06-01, /v1/reports/2024-06-02, /v2/balance]`} {
		if !strings.Contains(string(yaml), want) {
			t.Errorf("the proposal lacks %s\n%s", want, yaml)
		}
	}
	for _, c := range []struct {
		why string
		req rules.Request
	}{
		{"GET on list members, where only POST was seen (an export of personal data)", payReq(newsletter, "GET", mc, "/3.0/lists/abc123def4/members")},
		{"the API version is literal", payReq(newsletter, "GET", mc, "/3.1/campaigns/abc123def4/content")},
		{"a POST path is not a GET path", payReq(newsletter, "GET", mc, "/3.0/campaigns/9a8b7c6d5e/actions/send")},
		{"an id seen once stays literal", payReq(newsletter, "POST", mc, "/3.0/campaigns/abc123def4/actions/send")},
		{"the path reached through ../..", payReq(newsletter, "GET", mc, "/admin")},
		{"another Mailchimp data centre", payReq(newsletter, "GET", "us22.api.mailchimp.com", "/3.0/lists")},
		{"another port", rules.Request{Principal: newsletter, Host: mc, Port: 8443, Method: "GET", Path: "/3.0/lists"}},
		{"DELETE at Stripe, after a lower-case post was seen", payReq(checkout, "DELETE", "api.stripe.com", "/v1/charges")},
		{"the lower-case post itself", payReq(checkout, "post", "api.stripe.com", "/v1/refunds")},
		{"a refund, seen only in lower case", payReq(checkout, "POST", "api.stripe.com", "/v1/refunds")},
		{"another customer: one id seen stays literal", payReq(checkout, "POST", "api.stripe.com", "/v1/customers/cus_Other12345/sources")},
		{"a version not seen", payReq(checkout, "GET", "api.stripe.com", "/v3/balance")},
		{"a date not seen", payReq(checkout, "GET", "api.stripe.com", "/v1/reports/2024-06-03")},
		{"charges listed with GET were never seen", payReq(checkout, "GET", "api.stripe.com", "/v1/charges")},
		{"another caller", payReq(refunds, "GET", "api.stripe.com", "/v1/charges/ch_1AbC")},
	} {
		if d := tab.Decide(c.req, testNow); d.Allow {
			t.Errorf("%s: %s %s%s allowed by %s", c.why, c.req.Method, c.req.Host, c.req.Path, d.Rule.ID)
		}
	}
	// New charge ids are what "*" is for.
	if d := tab.Decide(payReq(checkout, "GET", "api.stripe.com", "/v1/charges/ch_3Zzz"), testNow); !d.Allow {
		t.Errorf("a new charge id is denied: %s", d.Reason)
	}
}

// TestSuggestWidens: with Widen, identifiers seen once become "*", names
// under one domain merge and many paths collapse, but methods stay per
// path and what is left out stays out.
func TestSuggestWidens(t *testing.T) {
	reports := "spiffe://cluster.local/ns/payments/sa/reports"
	reqs := []rules.Request{
		payReq(checkout, "GET", "api.stripe.com", "/v1/charges/ch_1AbC"),
		payReq(checkout, "POST", "api.stripe.com", "/v1/customers/cus_NffrFeUfNV2Hib/sources"),
		payReq(checkout, "post", "api.stripe.com", "/v1/refunds"),
		payReq(reports, "GET", "storage.googleapis.com", "/b/1"),
		payReq(reports, "GET", "bigquery.googleapis.com", "/b/1"),
		payReq(reports, "GET", "pubsub.googleapis.com", "/b/1"),
	}
	s := Suggest(reqs, SuggestOptions{Widen: true})
	yaml := string(rules.Marshal(s.Set))
	for _, want := range []string{`methods: [GET]
      paths: ["/v1/charges/*"]`, `methods: [POST]
      paths: ["/v1/customers/*/sources"]`, `hosts: ["*.googleapis.com"]`} {
		if !strings.Contains(yaml, want) {
			t.Errorf("the widened proposal lacks %s\n%s", want, yaml)
		}
	}
	if s.LeftOut[ExcludedMethod] != 1 || strings.Contains(yaml, "refunds") {
		t.Errorf("left out %v\n%s", s.LeftOut, yaml)
	}
	if err := CheckSuggestion([]byte(yaml), reqs, testNow); err != nil {
		t.Error(err)
	}
}

func TestSuggestCollapsesManyPathsWhenWidened(t *testing.T) {
	var reqs []rules.Request
	for i := range 30 {
		reqs = append(reqs, payReq(checkout, "GET", "api.example.com", fmt.Sprintf("/api/v2/section%c/items", 'a'+i%26)))
	}
	s := Suggest(reqs, SuggestOptions{Widen: true, MaxPaths: 5})
	if len(s.Set.Rules) != 1 || !slices.Equal(s.Set.Rules[0].Paths, []string{"/api/v2/**"}) || s.Requests[0] != 30 {
		t.Errorf("paths %v (%v requests), want [/api/v2/**] from 30", s.Set.Rules[0].Paths, s.Requests)
	}
	if err := CheckSuggestion(rules.Marshal(s.Set), reqs, testNow); err != nil {
		t.Error(err)
	}
	// Without Widen, every path stays.
	if s := Suggest(reqs, SuggestOptions{MaxPaths: 5}); len(s.Set.Rules[0].Paths) != 26 {
		t.Errorf("without Widen: %d paths, want 26", len(s.Set.Rules[0].Paths))
	}
}

// TestSuggestAllowsWhatItWasMadeFrom is a property test: whatever the
// traffic, the suggestion is a clean rule file that allows all of it that
// it did not leave out, and nothing outside it.
func TestSuggestAllowsWhatItWasMadeFrom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	segs := []string{"v1", "v2", "3.0", "items", "42", "43", "ch_1AbC", "ch_2XyZ", "abc123def4", "0fe1d2c3b4", "2024-06-01",
		"a%20b", "x.y", "~u", "3f2a9c4e-1b7d-4e8a-9c3b-2d1e0f4a5b6c", "*", "a*b", "", "..", "."}
	for round := range 12 {
		var reqs []rules.Request
		for range 120 {
			p := fmt.Sprintf("spiffe://cluster.local/ns/ns-%d/sa/sa-%d", rng.IntN(2), rng.IntN(2))
			if rng.IntN(10) == 0 {
				p = "spiffe://other.example/batch/job"
			}
			h := fmt.Sprintf("h%d.vendor-%d.com", rng.IntN(3), rng.IntN(2))
			if rng.IntN(5) == 0 {
				h += fmt.Sprintf(":%d", 8000+rng.IntN(2))
			}
			if rng.IntN(8) == 0 {
				reqs = append(reqs, rules.Request{Principal: p, Host: strings.Split(h, ":")[0], SNI: true, Port: 443})
				continue
			}
			path := ""
			for range 1 + rng.IntN(3) {
				path += "/" + segs[rng.IntN(len(segs))]
			}
			method := []string{"GET", "POST", "PUT"}[rng.IntN(3)]
			if rng.IntN(30) == 0 {
				method = "post" // a token, so the server decides it, but no methods list names it
			}
			reqs = append(reqs, rules.Request{Principal: p, Host: h, Port: []int{443, 80, 0}[rng.IntN(3)],
				Method: method, Path: path})
		}
		opts := SuggestOptions{}
		s := Suggest(reqs, opts)
		checkSuggestion(t, s, reqs)
		if t.Failed() {
			t.Fatalf("round %d", round)
		}
		// Widened, it still allows all it was made from.
		w := Suggest(reqs, SuggestOptions{Widen: true, Subdomains: 2 + round%3, MaxPaths: 1 + round%6})
		if err := CheckSuggestion(rules.Marshal(w.Set), reqs, testNow); err != nil {
			t.Fatalf("round %d, widened: %v", round, err)
		}
	}
}
