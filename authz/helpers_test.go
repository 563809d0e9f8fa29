package authz_test

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/proto"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/internal/testutil"
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
			table := testutil.Table(t, "rules.yaml", yaml)
			s := testutil.Start(t, rules.NewLive(table, rules.LiveOptions{CacheSize: lv.cache}), opts)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
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

// verdict is what a CheckResponse says, read from its dynamic metadata
// after verdictOf has checked that every part of the response agrees.
type verdict struct {
	Allow     bool
	Reason    string
	Rule      string
	RuleSet   string
	RequestID string
	HTTP      bool // the response has an HTTP part (OkResponse or DeniedResponse)
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

// verdictOf checks that resp is a well-formed answer as the SPEC's
// "Response" section describes it, and returns what it says.
func verdictOf(t testing.TB, resp *authv3.CheckResponse) verdict {
	t.Helper()
	md := testutil.Metadata(resp)
	wantKeys := []string{"decision", "reason", "request_id", "rule", "ruleset"}
	if got := slices.Sorted(maps.Keys(md)); !slices.Equal(got, wantKeys) {
		t.Errorf("dynamic_metadata keys %v, want %v", got, wantKeys)
	}
	v := verdict{Allow: md["decision"] == "allow", Reason: md["reason"], Rule: md["rule"], RuleSet: md["ruleset"], RequestID: md["request_id"]}
	if md["decision"] != "allow" && md["decision"] != "deny" {
		t.Errorf("dynamic_metadata decision %q, want allow or deny", md["decision"])
	}
	if v.RequestID == "" || !utf8.ValidString(v.RequestID) {
		t.Errorf("request_id %q: want a non-empty UTF-8 string", v.RequestID)
	}
	switch c := code.Code(resp.GetStatus().GetCode()); c {
	case code.Code_OK:
		if !v.Allow || v.Reason != string(rules.ReasonAllowed) || v.Rule == "" {
			t.Errorf("status OK but metadata %v", md)
		}
		switch hr := resp.GetHttpResponse().(type) {
		case nil:
		case *authv3.CheckResponse_OkResponse:
			v.HTTP = true
			// Nothing may be added upstream: the upstream is a third party.
			if !proto.Equal(hr.OkResponse, &authv3.OkHttpResponse{}) {
				t.Errorf("allow changes the request: %v", hr.OkResponse)
			}
		default:
			t.Errorf("status OK with HTTP response %T", hr)
		}
	case code.Code_PERMISSION_DENIED:
		if v.Allow || v.Reason == "" || v.Reason == string(rules.ReasonAllowed) {
			t.Errorf("status PERMISSION_DENIED but metadata %v", md)
		}
		if msg := resp.GetStatus().GetMessage(); msg != v.Reason {
			t.Errorf("status message %q, want the reason %q", msg, v.Reason)
		}
		switch hr := resp.GetHttpResponse().(type) {
		case nil:
		case *authv3.CheckResponse_DeniedResponse:
			v.HTTP = true
			checkDenied(t, hr.DeniedResponse, v)
		default:
			t.Errorf("status PERMISSION_DENIED with HTTP response %T", hr)
		}
	default:
		t.Errorf("status code %v, want OK or PERMISSION_DENIED", c)
	}
	return v
}

// checkDenied checks the HTTP part of a deny: 403, the decision header and
// a JSON body with exactly decision, reason, rule and request_id.
func checkDenied(t testing.TB, d *authv3.DeniedHttpResponse, v verdict) {
	t.Helper()
	if got := d.GetStatus().GetCode(); got != typev3.StatusCode_Forbidden {
		t.Errorf("HTTP status %v, want 403", got)
	}
	if got := headerValues(d.GetHeaders(), authz.DecisionHeader); !slices.Equal(got, []string{"deny"}) {
		t.Errorf("header %s: %q, want [deny]", authz.DecisionHeader, got)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil {
		t.Errorf("deny body %q is not JSON: %v", d.GetBody(), err)
		return
	}
	want := map[string]any{"decision": "deny", "reason": v.Reason, "rule": v.Rule, "request_id": v.RequestID}
	if !maps.Equal(body, want) {
		t.Errorf("deny body %v, want %v", body, want)
	}
}

func headerValues(hs []*corev3.HeaderValueOption, key string) []string {
	var out []string
	for _, h := range hs {
		if h.GetHeader().GetKey() == key {
			out = append(out, h.GetHeader().GetValue())
		}
	}
	return out
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

// withPrincipal sets source.principal.
func withPrincipal(p string) func(*authv3.CheckRequest) {
	return func(req *authv3.CheckRequest) { req.Attributes.Source.Principal = p }
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
