package compliance

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/rules"
)

func table(t *testing.T, rulesYAML string) *rules.Table {
	t.Helper()
	return compileYAML(t, header+rulesYAML)
}

func TestRequest(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	tab := table(t, `  - {id: stripe, action: allow, to: {hosts: [api.stripe.com], ports: [443], methods: [GET], paths: ["/v1/**"]}}
  - {id: tls, action: allow, to: {hosts: [api.sendgrid.com]}}
`)
	for _, tc := range []struct {
		name   string
		rec    audit.Record
		ok     bool
		reason rules.Reason
	}{
		{"normalized_http", audit.Record{Principal: checkout, Host: "api.stripe.com", Port: 443, Method: "GET", Path: "/v1/charges", Reason: "allowed-by-rule"}, true, rules.ReasonAllowed},
		{"query_kept_by_the_server", audit.Record{Principal: checkout, Host: "api.stripe.com", Port: 443, Method: "GET", Path: "/v1/charges?limit=3", Reason: "allowed-by-rule"}, true, rules.ReasonAllowed},
		{"tls_passthrough_has_no_method", audit.Record{Principal: checkout, Host: "api.sendgrid.com", Port: 443, Reason: "allowed-by-rule"}, true, rules.ReasonAllowed},
		{"unsafe_path_recorded_raw", audit.Record{Principal: checkout, Host: "api.stripe.com", Port: 443, Method: "GET", Path: "/v1/a%2Fb", Reason: "unsafe-path"}, true, rules.ReasonUnsafePath},
		{"invalid_host_recorded_raw", audit.Record{Principal: checkout, Host: "api.stripe.com:x", Port: 443, Method: "GET", Path: "/", Reason: "invalid-host"}, true, rules.ReasonInvalidHost},
		{"invalid_request_is_not_replayed", audit.Record{Principal: checkout, Reason: "invalid-request"}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, ok := Request(&tc.rec)
			if ok != tc.ok {
				t.Fatalf("ok %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if d := tab.Decide(req, now); d.Reason != tc.reason {
				t.Errorf("%+v decided %s, want %s", req, d.Reason, tc.reason)
			}
		})
	}
}

// TestReplayTellsChangesFromEarlierDrift records decisions as an older
// rule set made them, then replays them with OLD and NEW: a request NEW
// decides differently is the change's doing only when OLD still decides
// it as recorded.
func TestReplayTellsChangesFromEarlierDrift(t *testing.T) {
	ctx := context.Background()
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var recs []audit.Record
	add := func(n int, method, host, path, decision, rule, reason string) {
		for i := 0; i < n; i++ {
			recs = append(recs, audit.Record{Time: base.Add(time.Duration(len(recs)) * time.Minute), RequestID: "r", Principal: checkout,
				TrustDomain: "cluster.local", Namespace: "payments", ServiceAccount: "checkout", Host: host, Port: 443,
				Method: method, Path: path, Decision: decision, Enforced: true, Rule: rule, Reason: reason,
				Writer: "w1", Seq: uint64(len(recs) + 1)})
		}
	}
	// Recorded while "legacy" still allowed the reports API.
	add(3, "GET", "api.example.com", "/reports/1", "allow", "legacy", "allowed-by-rule")
	add(2, "GET", "api.example.com", "/reports/2", "allow", "legacy", "allowed-by-rule")
	add(7, "POST", "api.example.com", "/orders", "deny", "", "no-matching-rule")
	add(3, "GET", "api.example.com", "/status", "allow", "status", "allowed-by-rule")
	add(2, "", "", "", "deny", "", "invalid-request")
	dry := recs[0]
	dry.Enforced, dry.Seq, dry.Decision = false, uint64(len(recs)+1), "deny"
	recs = append(recs, dry)
	db := &memStore{recs: recs}

	old := table(t, "  - {id: status, action: allow, to: {hosts: [api.example.com], paths: [/status]}}\n")
	nw := table(t, `  - {id: status, action: allow, to: {hosts: [api.example.com], paths: [/status]}}
  - {id: orders, action: allow, to: {hosts: [api.example.com], methods: [POST], paths: [/orders]}}
`)
	rep, err := Replay(ctx, db, audit.Filter{}, old, nw, base)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 17 || rep.Skipped != 2 || rep.Unchanged != 3 || rep.ChangedCount != 12 || len(rep.Changed) != 2 {
		t.Fatalf("report %+v", rep)
	}
	byPath := map[string]Group{}
	for _, g := range rep.Changed {
		byPath[g.Path] = g
	}
	if g := byPath["/orders"]; g.Count != 7 || g.Cause != CauseChange || g.Now.Rule != "orders" {
		t.Errorf("orders: %+v", g)
	}
	if g := byPath["/reports/*"]; g.Count != 5 || g.Cause != CauseBefore || g.Was.Rule != "legacy" || g.Example != "/reports/2" {
		t.Errorf("reports: %+v", g)
	}
	if !rep.From.Equal(base) || !rep.To.Equal(base.Add(16*time.Minute)) {
		t.Errorf("window %s to %s", rep.From, rep.To)
	}
}

// TestReplayGroupsAsSuggestDoes: recorded paths are grouped as Suggest
// merges them, so a newsletter's traffic to Mailchimp is one line per
// endpoint and method: ids that vary are "*", the API version is not.
func TestReplayGroupsAsSuggestDoes(t *testing.T) {
	newsletter := "spiffe://cluster.local/ns/marketing/sa/newsletter"
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var recs []audit.Record
	for i, path := range []string{"/3.0/lists/abc123def4/members", "/3.0/lists/0fe1d2c3b4/members", "/3.0/lists/9a8b7c6d5e/members",
		"/3.0/campaigns/abc123def4/content", "/3.0/campaigns/0fe1d2c3b4/content", "/3.0/campaigns/9a8b7c6d5e/content"} {
		method := "POST"
		if strings.Contains(path, "campaigns") {
			method = "GET"
		}
		recs = append(recs, audit.Record{Time: base.Add(time.Duration(i) * time.Minute), Principal: newsletter,
			TrustDomain: "cluster.local", Namespace: "marketing", ServiceAccount: "newsletter", Host: "us21.api.mailchimp.com", Port: 443,
			Method: method, Path: path, Decision: "deny", Enforced: true, Reason: "no-matching-rule"})
	}
	old := table(t, "  - {id: status, action: allow, to: {hosts: [api.example.com], paths: [/status]}}\n")
	nw := table(t, "  - {id: mailchimp, action: allow, from: {namespaces: [marketing]}, to: {hosts: [us21.api.mailchimp.com]}}\n")
	rep, err := Replay(context.Background(), &memStore{recs: recs}, audit.Filter{}, old, nw, base)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range rep.Changed {
		got = append(got, fmt.Sprintf("%d %s %s", g.Count, g.Method, g.Path))
	}
	slices.Sort(got)
	want := []string{"3 GET /3.0/campaigns/*/content", "3 POST /3.0/lists/*/members"}
	if !slices.Equal(got, want) {
		t.Errorf("groups %q, want %q", got, want)
	}
}

func TestOutcomeOf(t *testing.T) {
	rule := &rules.Rule{ID: "payments-stripe"}
	for _, tc := range []struct {
		d    rules.Decision
		want Outcome
	}{
		{rules.Decision{Allow: true, Reason: rules.ReasonAllowed, Rule: rule}, Outcome{Decision: audit.Allow, Rule: "payments-stripe", Reason: rules.ReasonAllowed}},
		{rules.Decision{Reason: rules.ReasonDeniedByRule, Rule: rule}, Outcome{Decision: audit.Deny, Rule: "payments-stripe", Reason: rules.ReasonDeniedByRule}},
		{rules.Decision{Reason: rules.ReasonNoMatchingRule}, Outcome{Decision: audit.Deny, Reason: rules.ReasonNoMatchingRule}},
	} {
		if got := OutcomeOf(&tc.d); got != tc.want {
			t.Errorf("OutcomeOf(%+v) = %+v, want %+v", tc.d, got, tc.want)
		}
	}
}
