package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/proto"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/rules"
)

// fuzzRules has a rule of every kind, so that fuzzed requests can reach
// every reason.
const fuzzRules = `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: stripe-charges
    action: allow
    from: {principals: ["spiffe://cluster.local/ns/payments/sa/*"]}
    to: {hosts: [api.stripe.com], ports: [443], methods: [POST], paths: [/v1/charges, "/v1/files/**", "/v1/c/*/x"]}
  - id: no-accounts
    action: deny
    to: {hosts: ["*.stripe.com"], paths: ["/v1/accounts/**"]}
  - id: stripe-tls
    action: allow
    from: {namespaces: [payments]}
    to: {hosts: ["*.stripe.com"], ports: [443]}
  - id: trial
    mode: dry-run
    action: deny
    to: {hosts: ["*"]}
`

// Fuzz input modes, bits of the first argument.
const (
	fuzzRaw       = 1 << iota // headers is the wire encoding of a CheckRequest, decoded by the codec
	fuzzTLS                   // no HTTP attributes: TLS passthrough
	fuzzHeaderMap             // headers in header_map as raw_value, not in headers
	fuzzXFCC                  // the server trusts x-forwarded-client-cert
	fuzzHTTP                  // scheme http rather than https
	fuzzNoScheme              // no scheme: the port comes from the socket
	fuzzNoAttrs               // no attributes at all
)

// checkRecorder checks that records are consistent with the response.
type checkRecorder struct{ t *testing.T }

func (r checkRecorder) Record(_ context.Context, recs []audit.Record) error {
	if len(recs) == 0 || !recs[0].Enforced {
		r.t.Errorf("records %+v: want the enforced decision first", recs)
	}
	for _, rec := range recs {
		if rec.Decision != audit.Allow && rec.Decision != audit.Deny {
			r.t.Errorf("record decision %q", rec.Decision)
		}
	}
	return nil
}

// FuzzCheck: whatever the request, Check answers with a well-formed allow
// or deny, never an error or a panic; and the codec path (the bytes Envoy
// sends, decoded by decodeCheck) decides as the direct call does.
func FuzzCheck(f *testing.F) {
	set, err := rules.Parse(rules.Source{Name: "fuzz.yaml", Data: []byte(fuzzRules)})
	if err != nil {
		f.Fatal(err)
	}
	table, err := rules.Compile(set)
	if err != nil {
		f.Fatal(err)
	}
	now := func() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }
	live := rules.NewLive(table, rules.LiveOptions{CacheSize: 64, Now: now})

	f.Add(uint8(0), "spiffe://cluster.local/ns/payments/sa/checkout", "api.stripe.com", "/v1/charges", "POST", "", []byte("x-request-id: r1\n:authority: api.stripe.com"))
	f.Add(uint8(fuzzTLS), "spiffe://cluster.local/ns/payments/sa/checkout", "files.stripe.com", "", "", "files.stripe.com", []byte(nil))
	f.Add(uint8(fuzzHeaderMap|fuzzXFCC), "", "", "/v1/accounts/../charges", "POST", "", []byte(":authority: api.stripe.com\nx-forwarded-client-cert: Hash=1;URI=spiffe://cluster.local/ns/payments/sa/checkout"))
	f.Add(uint8(fuzzRaw), "", "", "", "", "", []byte("\x0a\x02\x0a\x00"))

	f.Fuzz(func(t *testing.T, mode uint8, principal, host, path, method, sni string, headers []byte) {
		s := NewServer(live, Options{TrustXFCC: mode&fuzzXFCC != 0, Recorder: checkRecorder{t}, Now: now})
		ctx := context.Background()
		if mode&fuzzRaw != 0 {
			checkWire(t, headers)
			var fr checkFrame
			decodeCheck(headers, &fr)
			resp, err := viaWire(s, ctx, &fr.in)
			checkFuzzResponse(t, resp, err, nil)
			if fr.in.invalid != "" && resp.GetStatus().GetMessage() != string(rules.ReasonInvalidRequest) {
				t.Errorf("undecodable request (%s) denied with reason %q, want invalid-request", fr.in.invalid, resp.GetStatus().GetMessage())
			}
			return
		}

		cr := fuzzRequest(mode, principal, host, path, method, sni, headers)
		checkProto(t, cr)
		resp, err := s.Check(ctx, cr)
		checkFuzzResponse(t, resp, err, cr)

		// The same request through the codec, as it comes off the wire.
		b, err := proto.Marshal(cr)
		if err != nil {
			return // invalid UTF-8 in a string field: cannot be sent as it is
		}
		var fr checkFrame
		decodeCheck(b, &fr)
		if fr.in.invalid != "" {
			t.Fatalf("decodeCheck marked a valid request invalid: %s", fr.in.invalid)
		}
		viaCodec, err := viaWire(s, ctx, &fr.in)
		checkFuzzResponse(t, viaCodec, err, cr)
		if a, b := decisionOf(resp), decisionOf(viaCodec); a != b {
			t.Errorf("direct call decided %v, through the codec %v", a, b)
		}
	})
}

// fuzzRequest builds the CheckRequest a fuzz input describes. headers are
// "key: value" lines.
func fuzzRequest(mode uint8, principal, host, path, method, sni string, headers []byte) *authv3.CheckRequest {
	if mode&fuzzNoAttrs != 0 {
		return &authv3.CheckRequest{}
	}
	a := &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Principal: principal},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.20", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(len(headers)) % 65536}},
		}}},
	}
	if sni != "" {
		a.TlsSession = &authv3.AttributeContext_TLSSession{Sni: sni}
	}
	if mode&fuzzTLS != 0 {
		a.Destination.Service = host
		return &authv3.CheckRequest{Attributes: a}
	}
	h := &authv3.AttributeContext_HttpRequest{Id: "1", Method: method, Host: host, Path: path, Scheme: "https"}
	switch {
	case mode&fuzzNoScheme != 0:
		h.Scheme = ""
	case mode&fuzzHTTP != 0:
		h.Scheme = "http"
	}
	for line := range bytes.SplitSeq(headers, []byte("\n")) {
		i := bytes.IndexByte(line[min(1, len(line)):], ':') + min(1, len(line)) // a leading ':' is a pseudo-header's
		if i < 1 {
			continue
		}
		k, v := string(line[:i]), bytes.TrimPrefix(line[i+1:], []byte(" "))
		if mode&fuzzHeaderMap != 0 {
			if h.HeaderMap == nil {
				h.HeaderMap = &corev3.HeaderMap{}
			}
			h.HeaderMap.Headers = append(h.HeaderMap.Headers, &corev3.HeaderValue{Key: k, RawValue: slices.Clone(v)})
			continue
		}
		if h.Headers == nil {
			h.Headers = map[string]string{}
		}
		h.Headers[k] = string(v)
	}
	a.Request = &authv3.AttributeContext_Request{Http: h}
	return &authv3.CheckRequest{Attributes: a}
}

type decision struct {
	code         int32
	reason, rule string
}

func decisionOf(resp *authv3.CheckResponse) decision {
	md := resp.GetDynamicMetadata().GetFields()
	return decision{resp.GetStatus().GetCode(), md["reason"].GetStringValue(), md["rule"].GetStringValue()}
}

// checkFuzzResponse checks what can be said of any answer: no error, OK or
// PERMISSION_DENIED agreeing with the metadata, a response gRPC can send,
// no HTTP part for TLS passthrough, and a deny body that is JSON.
func checkFuzzResponse(t *testing.T, resp *authv3.CheckResponse, err error, cr *authv3.CheckRequest) {
	t.Helper()
	if err != nil {
		t.Fatalf("Check returned an error: %v", err)
	}
	if resp == nil || resp.Status == nil {
		t.Fatalf("Check returned no status: %v", resp)
	}
	if _, err := proto.Marshal(resp); err != nil {
		t.Fatalf("the response cannot be sent: %v", err)
	}
	md := resp.GetDynamicMetadata().GetFields()
	reason := md["reason"].GetStringValue()
	if !slices.Contains(rules.Reasons(), rules.Reason(reason)) {
		t.Errorf("unknown reason %q", reason)
	}
	if md["request_id"].GetStringValue() == "" {
		t.Errorf("no request_id")
	}
	tls := cr != nil && cr.GetAttributes() != nil && cr.GetAttributes().GetRequest().GetHttp() == nil
	switch code.Code(resp.Status.Code) {
	case code.Code_OK:
		if md["decision"].GetStringValue() != "allow" || reason != string(rules.ReasonAllowed) {
			t.Errorf("OK with metadata %v", md)
		}
		if ok := resp.GetOkResponse(); ok != nil && !proto.Equal(ok, &authv3.OkHttpResponse{}) {
			t.Errorf("allow adds to the request: %v", ok)
		}
		if tls && resp.HttpResponse != nil {
			t.Errorf("TLS-passthrough allow with an HTTP part")
		}
	case code.Code_PERMISSION_DENIED:
		if md["decision"].GetStringValue() != "deny" || reason == string(rules.ReasonAllowed) {
			t.Errorf("PERMISSION_DENIED with metadata %v", md)
		}
		if resp.GetOkResponse() != nil {
			t.Errorf("deny with an OkResponse")
		}
		d := resp.GetDeniedResponse()
		if tls && d != nil {
			t.Errorf("TLS-passthrough deny with an HTTP part")
		}
		if d == nil {
			return
		}
		if d.GetStatus().GetCode() != typev3.StatusCode_Forbidden {
			t.Errorf("deny HTTP status %v", d.GetStatus())
		}
		var body map[string]string
		if err := json.Unmarshal([]byte(d.Body), &body); err != nil {
			t.Fatalf("deny body %q: %v", d.Body, err)
		}
		want := map[string]string{"decision": "deny", "reason": reason, "rule": md["rule"].GetStringValue(), "request_id": md["request_id"].GetStringValue()}
		if len(body) != len(want) {
			t.Errorf("deny body %v, want %v", body, want)
		}
		for k, v := range want {
			if body[k] != v {
				t.Errorf("deny body %v, want %v", body, want)
				break
			}
		}
	default:
		t.Fatalf("status code %d, want OK or PERMISSION_DENIED", resp.Status.Code)
	}
}
