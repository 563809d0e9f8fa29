package authz_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/rules"
)

// enforceRules decide; dryRunRules are the same set with dry-run rules
// added that would decide every request the other way.
const (
	enforceRules = `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: allow-example
    action: allow
    to: {hosts: [example.com]}
  - id: no-pastebin
    action: deny
    to: {hosts: [pastebin.com]}
`
	dryRunRules = enforceRules + `  - id: trial-deny-example
    mode: dry-run
    action: deny
    to: {hosts: [example.com]}
  - id: trial-allow-other
    owner: team-search
    ticket: SEC-9
    mode: dry-run
    action: allow
    to: {hosts: [other.test]}
  - id: trial-allow-pastebin
    mode: dry-run
    action: allow
    to: {hosts: [pastebin.com]}
`
)

// TestCheckDryRun: a matching dry-run rule never changes the decision.
func TestCheckDryRun(t *testing.T) {
	cases := []checkCase{
		{"dry_run_deny_does_not_deny", httpReq(crawler, "GET", "https://example.com/"), allow("allow-example")},
		{"dry_run_allow_does_not_allow", httpReq(crawler, "GET", "https://other.test/"), deny(rules.ReasonNoMatchingRule, "")},
		{"dry_run_allow_does_not_beat_deny_rule", httpReq(crawler, "GET", "https://pastebin.com/"), deny(rules.ReasonDeniedByRule, "no-pastebin")},
		{"dry_run_deny_does_not_deny_tls", tlsReq(crawler, "example.com", 443), tlsAllow("allow-example")},
		{"dry_run_allow_does_not_allow_tls", tlsReq(crawler, "other.test", 443), tlsDeny(rules.ReasonNoMatchingRule, "")},
	}
	t.Run("without_dry_run_rules", func(t *testing.T) { runCases(t, enforceRules, authz.Options{}, cases) })
	t.Run("with_dry_run_rules", func(t *testing.T) { runCases(t, dryRunRules, authz.Options{}, cases) })
}

// recorder keeps what the server records; err is returned from Record.
type recorder struct {
	mu    sync.Mutex
	calls [][]audit.Record
	err   error
}

func (r *recorder) Record(_ context.Context, recs []audit.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, slices.Clone(recs))
	return r.err
}

func (r *recorder) last(t *testing.T) []audit.Record {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) == 0 {
		t.Fatal("nothing recorded")
	}
	return r.calls[len(r.calls)-1]
}

// TestCheckRecords: every decision reaches the Recorder, the dry-run
// outcomes beside the enforced one.
func TestCheckRecords(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
	traceparent := "00-" + trace + "-00f067aa0ba902b7-01"
	table := authztest.Table(t, "rules.yaml", dryRunRules)

	// outcome is the part of an audit.Record that a decision sets.
	type outcome struct {
		Decision, Reason, Rule, Owner, Ticket string
		Enforced                              bool
	}
	cases := []struct {
		name string
		opts authz.Options
		req  *authv3.CheckRequest
		// who and what, the same in every record of the decision
		subject audit.Record
		want    []outcome
	}{
		{
			name:    "allow_with_dry_run_deny",
			req:     httpReq(crawler, "GET", "https://Example.COM/a/../b?q=secret", withHeader("x-request-id", "req-1"), withHeader("traceparent", traceparent)),
			subject: audit.Record{RequestID: "req-1", TraceID: trace, Principal: crawler, TrustDomain: "cluster.local", Namespace: "search", ServiceAccount: "crawler", Host: "example.com", Port: 443, Method: "GET", Path: "/b"},
			want:    []outcome{{"allow", "allowed-by-rule", "allow-example", "", "", true}, {"deny", "dry-run", "trial-deny-example", "", "", false}},
		},
		{
			name:    "query_kept_when_asked",
			opts:    authz.Options{KeepQuery: true},
			req:     httpReq(crawler, "GET", "http://example.com:8080/b?q=1", withHeader("x-request-id", "req-2"), withHeader("traceparent", "00-"+strings.Repeat("0", 32)+"-00f067aa0ba902b7-01")),
			subject: audit.Record{RequestID: "req-2", Principal: crawler, TrustDomain: "cluster.local", Namespace: "search", ServiceAccount: "crawler", Host: "example.com", Port: 8080, Method: "GET", Path: "/b?q=1"},
			want:    []outcome{{"allow", "allowed-by-rule", "allow-example", "", "", true}, {"deny", "dry-run", "trial-deny-example", "", "", false}},
		},
		{
			name:    "deny_with_dry_run_allow_on_tls",
			req:     tlsReq(checkout, "other.test", 8443),
			subject: audit.Record{Principal: checkout, TrustDomain: "cluster.local", Namespace: "payments", ServiceAccount: "checkout", Host: "other.test", Port: 8443},
			want:    []outcome{{"deny", "no-matching-rule", "", "", "", true}, {"allow", "dry-run", "trial-allow-other", "team-search", "SEC-9", false}},
		},
		{
			name:    "invalid_request_recorded",
			req:     httpReq(crawler, "GE T", "https://example.com/", withHeader("x-request-id", "req-3")),
			subject: audit.Record{RequestID: "req-3", Principal: crawler},
			want:    []outcome{{"deny", "invalid-request", "", "", "", true}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			opts := tc.opts
			opts.Recorder, opts.Now = r, func() time.Time { return now }
			s := authztest.NewServer(t, rules.NewLive(table, rules.LiveOptions{CacheSize: 100}), opts)
			v := verdictOf(t, s.Check(t, tc.req))
			recs := r.last(t)
			if len(recs) != len(tc.want) {
				t.Fatalf("%d records, want %d: %+v", len(recs), len(tc.want), recs)
			}
			for i, rec := range recs {
				got := outcome{rec.Decision, rec.Reason, rec.Rule, rec.Owner, rec.Ticket, rec.Enforced}
				if got != tc.want[i] {
					t.Errorf("record %d: %+v, want %+v", i, got, tc.want[i])
				}
				subj := audit.Record{RequestID: rec.RequestID, TraceID: rec.TraceID, Principal: rec.Principal, TrustDomain: rec.TrustDomain,
					Namespace: rec.Namespace, ServiceAccount: rec.ServiceAccount, Host: rec.Host, Port: rec.Port, Method: rec.Method, Path: rec.Path}
				want := tc.subject
				if want.RequestID == "" {
					want.RequestID = v.RequestID // generated
				}
				if subj != want {
					t.Errorf("record %d is about %+v, want %+v", i, subj, want)
				}
				if !rec.Time.Equal(now) {
					t.Errorf("record %d: time %v, want %v", i, rec.Time, now)
				}
				if rec.RequestID != v.RequestID {
					t.Errorf("record %d: request id %q, the response says %q", i, rec.RequestID, v.RequestID)
				}
				if rec.Reason != string(rules.ReasonInvalidRequest) && rec.RuleSet != table.Version() {
					t.Errorf("record %d: rule set %q, want %q", i, rec.RuleSet, table.Version())
				}
			}
		})
	}
}

// TestCheckAuditUnavailable: no decision without a record. When the
// Recorder refuses, the request is denied, whatever the rules say.
func TestCheckAuditUnavailable(t *testing.T) {
	r := &recorder{err: errors.New("buffer full")}
	live := rules.NewLive(authztest.Table(t, "rules.yaml", dryRunRules), rules.LiveOptions{CacheSize: 100})
	s := authztest.NewServer(t, live, authz.Options{Recorder: r})
	// Three times: a request is cached at its second miss, so the third
	// answer comes from the cache and must be denied all the same.
	runCached := func(name string, req *authv3.CheckRequest, w want) {
		t.Run(name, func(t *testing.T) {
			for range 3 {
				verdictOf(t, s.Check(t, req)).expect(t, w)
			}
		})
	}
	runCached("allow_becomes_deny", httpReq(crawler, "GET", "https://example.com/"), deny(rules.ReasonAuditUnavailable, ""))
	runCached("deny_by_rule_becomes_audit_unavailable", httpReq(crawler, "GET", "https://pastebin.com/"), deny(rules.ReasonAuditUnavailable, ""))
	runCached("tls_allow_becomes_deny", tlsReq(crawler, "example.com", 443), tlsDeny(rules.ReasonAuditUnavailable, ""))
	runCached("invalid_request_becomes_audit_unavailable", &authv3.CheckRequest{}, deny(rules.ReasonAuditUnavailable, ""))

	// Once the recorder recovers, the rules decide again.
	r.mu.Lock()
	r.err = nil
	r.mu.Unlock()
	runCached("recovered", httpReq(crawler, "GET", "https://example.com/"), allow("allow-example"))
}
