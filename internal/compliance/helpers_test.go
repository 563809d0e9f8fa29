package compliance

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/rules"
)

// header is the start of a valid single-file rule set; tests append the
// entries of its rules list.
const header = "apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules:\n"

// Identities used throughout the tests.
const (
	checkout = "spiffe://cluster.local/ns/payments/sa/checkout"
	refunds  = "spiffe://cluster.local/ns/payments/sa/refunds"
	indexer  = "spiffe://cluster.local/ns/search/sa/indexer"
)

// testNow is the default decision time: well before any expiry in the tests.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// explainRules is a realistic small rule set (the one the rules package's
// explain tests use): wildcards, a deny over an allow, a dry-run rule and
// an expiry.
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

// parseYAML parses one rule file named rules.yaml.
func parseYAML(tb testing.TB, src string) *rules.Set {
	tb.Helper()
	set, err := rules.Parse(rules.Source{Name: "rules.yaml", Data: []byte(src)})
	if err != nil {
		tb.Fatalf("Parse: %v\n--- source ---\n%s", err, src)
	}
	return set
}

// compileYAML parses and compiles one rule file.
func compileYAML(tb testing.TB, src string) *rules.Table {
	tb.Helper()
	t, err := rules.Compile(parseYAML(tb, src))
	if err != nil {
		tb.Fatalf("Compile: %v", err)
	}
	return t
}

// httpReq is an HTTP request from principal to https://host/path.
func httpReq(principal, method, host, path string) rules.Request {
	return rules.Request{Principal: principal, Host: host, Port: 443, Method: method, Path: path}
}

// memStore is an audit.Store over records in memory, answering newest
// first as the real stores do, selecting with Filter.Match; it has no
// pages, which the tools never ask for.
type memStore struct{ recs []audit.Record }

func (m *memStore) Query(ctx context.Context, f audit.Filter, fn func(*audit.Record) error) (string, error) {
	if f.Limit != 0 || f.Cursor != "" {
		return "", errors.New("memStore: no pages")
	}
	for i := len(m.recs) - 1; i >= 0; i-- {
		r := m.recs[i]
		if !f.Match(&r) {
			continue
		}
		if err := fn(&r); err != nil {
			return "", err
		}
	}
	return "", nil
}

func (m *memStore) Chains(ctx context.Context, fn func(*audit.Record) error) error {
	return errors.New("memStore: Chains not supported")
}

func (m *memStore) Close() error { return nil }
