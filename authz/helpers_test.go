package authz_test

import (
	"maps"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/rules"
)

// Identities used throughout the tests.
const (
	checkout = "spiffe://cluster.local/ns/payments/sa/checkout"
	refunds  = "spiffe://cluster.local/ns/payments/sa/refunds"
	crawler  = "spiffe://cluster.local/ns/search/sa/crawler"
	gateway  = "spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account"
)

// testRules is the rule set most end-to-end tests decide with. Each rule
// exists to make one behaviour visible in the deciding rule's id.
const testRules = `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: payments-stripe-charges
    owner: team-payments
    ticket: SEC-1234
    action: allow
    from:
      principals: ["spiffe://cluster.local/ns/payments/sa/checkout"]
    to:
      hosts: [api.stripe.com]
      ports: [443]
      methods: [POST]
      paths: [/v1/charges, "/v1/files/**"]
  - id: stripe-no-account-changes
    action: deny
    to:
      hosts: [api.stripe.com]
      paths: ["/v1/accounts/**"]
  - id: payments-stripe-files-tls
    action: allow
    from: {namespaces: [payments]}
    to: {hosts: [files.stripe.com], ports: [443]}
  - id: no-pastebin
    action: deny
    to: {hosts: [pastebin.com, "*.pastebin.com"]}
  - id: crawler-example
    action: allow
    from: {principals: ["spiffe://cluster.local/ns/search/sa/crawler"]}
    to: {hosts: [example.com], methods: [GET, HEAD]}
  - id: paths-b
    action: allow
    to: {hosts: [paths.test], paths: [/b]}
  - id: port-80
    action: allow
    to: {hosts: [ports.test], ports: [80]}
  - id: port-443
    action: allow
    to: {hosts: [ports.test], ports: [443]}
  - id: port-8443
    action: allow
    to: {hosts: [ports.test], ports: [8443]}
  - id: port-9000
    action: allow
    to: {hosts: [ports.test], ports: [9000]}
`

// liveVariants are the two ways production runs a rule table: every test
// that decides runs against both, since the cache must never change an
// answer.
var liveVariants = []struct {
	name  string
	cache int
}{
	{"uncached", 0},
	{"cached", 1000},
}

// want is the expected answer to one Check.
type want struct {
	reason rules.Reason // ReasonAllowed for an allow
	rule   string       // the deciding rule; "" when none decided
	tls    bool         // a TLS-passthrough answer: no HTTP part
}

func allow(rule string) want                     { return want{reason: rules.ReasonAllowed, rule: rule} }
func deny(reason rules.Reason, rule string) want { return want{reason: reason, rule: rule} }
func tlsAllow(rule string) want                  { return want{reason: rules.ReasonAllowed, rule: rule, tls: true} }
func tlsDeny(reason rules.Reason, rule string) want {
	return want{reason: reason, rule: rule, tls: true}
}

// checkCase is one request and the answer expected for it.
type checkCase struct {
	name string
	req  *authv3.CheckRequest
	want want
}

// runCases starts a server for each Live variant deciding with yaml and
// checks every case against it over gRPC.
func runCases(t *testing.T, yaml string, opts authz.Options, cases []checkCase) {
	t.Helper()
	for _, lv := range liveVariants {
		t.Run(lv.name, func(t *testing.T) {
			table := authztest.Table(t, "rules.yaml", yaml)
			s := authztest.NewServer(t, rules.NewLive(table, rules.LiveOptions{CacheSize: lv.cache}), opts)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					authz.CheckDecode(t, tc.req)
					// Three times, so that the cached variant also answers
					// from its cache (a request is cached at its second miss).
					for range 3 {
						v := verdictOf(t, s.Check(t, proto.Clone(tc.req).(*authv3.CheckRequest)))
						v.expect(t, tc.want)
						// An invalid request is denied before the rules are
						// consulted, so it may name no rule set.
						if v.RuleSet != table.Version() && (v.RuleSet != "" || tc.want.reason != rules.ReasonInvalidRequest) {
							t.Errorf("ruleset %q, want the table's version %q", v.RuleSet, table.Version())
						}
					}
				})
			}
		})
	}
}

// verdict is what a response says (authztest.VerdictOf, which also checks
// that it is well formed), with the expectations of this package's tests.
type verdict struct{ authztest.Verdict }

func verdictOf(t testing.TB, resp *authv3.CheckResponse) verdict {
	t.Helper()
	return verdict{authztest.VerdictOf(t, resp)}
}

func (v verdict) expect(t testing.TB, w want) {
	t.Helper()
	if v.Allow != (w.reason == rules.ReasonAllowed) || v.Reason != string(w.reason) || v.Rule != w.rule {
		t.Errorf("got allow=%v reason=%q rule=%q, want reason=%q rule=%q", v.Allow, v.Reason, v.Rule, w.reason, w.rule)
	}
	if v.HTTP == w.tls {
		t.Errorf("response has an HTTP part: %v, want %v", v.HTTP, !w.tls)
	}
}

// httpReq is the CheckRequest the gateway sends for an HTTP request, edited
// by each of edits (hand-built variations on Envoy's shape).
func httpReq(principal, method, url string, edits ...func(*authv3.CheckRequest)) *authv3.CheckRequest {
	req, err := checkreq.HTTP{Principal: principal, Method: method, URL: url}.Build()
	if err != nil {
		panic(err)
	}
	for _, e := range edits {
		e(req)
	}
	return req
}

// tlsReq is the CheckRequest of a TLS-passthrough connection, edited.
func tlsReq(principal, sni string, port uint32, edits ...func(*authv3.CheckRequest)) *authv3.CheckRequest {
	req := checkreq.SNI(principal, sni, port)
	for _, e := range edits {
		e(req)
	}
	return req
}

func httpAttrs(req *authv3.CheckRequest) *authv3.AttributeContext_HttpRequest {
	return req.GetAttributes().GetRequest().GetHttp()
}

// withHeader sets a request header in the headers map.
func withHeader(key, value string) func(*authv3.CheckRequest) {
	return func(req *authv3.CheckRequest) { httpAttrs(req).Headers[key] = value }
}

// withoutHeader removes a request header from the headers map.
func withoutHeader(key string) func(*authv3.CheckRequest) {
	return func(req *authv3.CheckRequest) { delete(httpAttrs(req).Headers, key) }
}

// asHeaderMap moves the headers into header_map as raw_value bytes, the
// way Envoy sends them when it is set to encode raw headers.
func asHeaderMap(req *authv3.CheckRequest) {
	h := httpAttrs(req)
	for _, k := range slices.Sorted(maps.Keys(h.Headers)) {
		if h.HeaderMap == nil {
			h.HeaderMap = &corev3.HeaderMap{}
		}
		h.HeaderMap.Headers = append(h.HeaderMap.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(h.Headers[k])})
	}
	h.Headers = nil
}

// withHeaderMap appends key, value pairs to header_map as raw_value bytes,
// each pair its own entry, as Envoy sends a repeated header.
func withHeaderMap(kv ...string) func(*authv3.CheckRequest) {
	return func(req *authv3.CheckRequest) {
		h := httpAttrs(req)
		if h.HeaderMap == nil {
			h.HeaderMap = &corev3.HeaderMap{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			h.HeaderMap.Headers = append(h.HeaderMap.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
	}
}

// withSocketPort sets the destination socket's port.
func withSocketPort(port uint32) func(*authv3.CheckRequest) {
	return func(req *authv3.CheckRequest) {
		req.Attributes.Destination.Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: port}
	}
}

// withHTTP edits the HTTP attributes.
func withHTTP(edit func(h *authv3.AttributeContext_HttpRequest)) func(*authv3.CheckRequest) {
	return func(req *authv3.CheckRequest) { edit(httpAttrs(req)) }
}
