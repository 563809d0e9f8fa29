package authz_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/rules"
)

// start serves testRules, uncached, with opts.
func start(t *testing.T, opts authz.Options) (*authztest.Server, *rules.Table) {
	t.Helper()
	table := authztest.Table(t, "rules.yaml", testRules)
	return authztest.NewServer(t, rules.NewLive(table, rules.LiveOptions{}), opts), table
}

func TestCheckRequestID(t *testing.T) {
	s, _ := start(t, authz.Options{})
	charges := "https://api.stripe.com/v1/charges"
	long := strings.Repeat("a", 127) + "é" // the 128-byte limit falls inside "é"
	rawID := func(id []byte) func(*authv3.CheckRequest) {
		return func(r *authv3.CheckRequest) {
			httpAttrs(r).HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "x-request-id", RawValue: id}}}
		}
	}
	cases := []struct {
		name string
		req  *authv3.CheckRequest
		want string // "" means: a generated id
	}{
		{"from_x_request_id_on_allow", httpReq(checkout, "POST", charges, withHeader("x-request-id", "req-123")), "req-123"},
		{"from_x_request_id_on_deny", httpReq(checkout, "GET", charges, withHeader("x-request-id", "req-456")), "req-456"},
		{"from_x_request_id_on_tls_deny", tlsReq(checkout, "pastebin.com", 443), ""},
		{"from_x_request_id_on_invalid_request", httpReq(checkout, "PO ST", charges, withHeader("x-request-id", "req-789")), "req-789"},
		{"repeated_in_header_map_joined_as_in_headers", httpReq(checkout, "GET", charges, asHeaderMap, withHeaderMap("x-request-id", "a", "x-request-id", "b")), "a,b"},
		{"from_header_map_raw_value", httpReq(checkout, "GET", charges, withHeader("x-request-id", "req-raw"), asHeaderMap), "req-raw"},
		{"not_envoy_stream_id", httpReq(checkout, "GET", charges, withHTTP(func(h *authv3.AttributeContext_HttpRequest) { h.Id = "42" })), ""},
		{"generated_when_empty", httpReq(checkout, "GET", charges, withHeader("x-request-id", "")), ""},
		{"bounded_at_a_character_boundary", httpReq(checkout, "GET", charges, withHeader("x-request-id", long)), strings.Repeat("a", 127)},
		{"invalid_utf8_in_raw_value_replaced", httpReq(checkout, "GET", charges, rawID([]byte("req-\xff-1"))), "req-\uFFFD-1"},
		{"invalid_utf8_in_raw_value_on_allow", httpReq(checkout, "POST", charges, rawID([]byte("\xc3("))), "\uFFFD("},
	}
	seen := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			authz.CheckDecode(t, tc.req)
			v := verdictOf(t, s.Check(t, tc.req))
			switch {
			case tc.want != "" && v.RequestID != tc.want:
				t.Errorf("request_id %q, want %q", v.RequestID, tc.want)
			case tc.want == "" && (v.RequestID == "1" || v.RequestID == "42" || seen[v.RequestID]):
				t.Errorf("request_id %q, want a newly generated id", v.RequestID)
			}
			seen[v.RequestID] = true
		})
	}
}

// invalidUTF8 returns n bytes that are not valid UTF-8.
func invalidUTF8(n int) []byte {
	b := bytes.Repeat([]byte{0xff}, n)
	copy(b, "\xc3\x28")
	return b
}

// TestCheckInvalidUTF8 sends what grpc-go's own codec would refuse on both
// sides: a CheckRequest with invalid UTF-8 in a string field. In a field a
// decision reads, the answer is a deny with reason invalid-request, never
// a gRPC error. In a field it does not read (which the handler does not
// decode), the answer is the one the request gets without it.
func TestCheckInvalidUTF8(t *testing.T) {
	const mark = "QQQQQQQQ" // replaced in the wire bytes by invalid UTF-8
	charges := "https://api.stripe.com/v1/charges"
	cases := []struct {
		name string
		req  *authv3.CheckRequest
		tls  bool
		read bool // a field the decision reads
	}{
		{"source_principal", httpReq("spiffe://cluster.local/ns/payments/sa/"+mark, "POST", charges), false, true},
		{"path", httpReq(checkout, "POST", "https://api.stripe.com/v1/charges/"+mark), false, true},
		{"host", httpReq(checkout, "POST", "https://"+mark+".stripe.com/v1/charges"), false, true},
		{"method", httpReq(checkout, mark, charges), false, true},
		{"scheme", httpReq(checkout, "POST", charges, withHTTP(func(h *authv3.AttributeContext_HttpRequest) { h.Scheme = mark })), false, true},
		{"request_id", httpReq(checkout, "POST", charges, withHeader("x-request-id", mark)), false, true},
		{"traceparent", httpReq(checkout, "POST", charges, withHeader("traceparent", mark)), false, true},
		{"xfcc", httpReq(checkout, "POST", charges, withHeader("x-forwarded-client-cert", "URI="+mark)), false, true},
		{"authority_header", httpReq(checkout, "POST", charges, withHeader(":authority", mark)), false, true},
		{"header_map_value_of_a_header_read", httpReq(checkout, "POST", charges, withHeader("x-request-id", "r"), asHeaderMap, func(r *authv3.CheckRequest) {
			for _, h := range httpAttrs(r).HeaderMap.Headers {
				if h.Key == "x-request-id" {
					h.Value = mark
				}
			}
		}), false, true},
		{"tls_sni", tlsReq(checkout, mark+".stripe.com", 443), true, true},
		{"tls_destination_service", tlsReq(checkout, "files.stripe.com", 443, func(r *authv3.CheckRequest) {
			r.Attributes.Destination.Service = mark
		}), true, true},
		{"header_value", httpReq(checkout, "POST", charges, withHeader("user-agent", mark)), false, false},
		{"header_key", httpReq(checkout, "POST", charges, withHeader("x-"+mark, "v")), false, false},
		{"http_id", httpReq(checkout, "POST", charges, withHTTP(func(h *authv3.AttributeContext_HttpRequest) { h.Id = mark })), false, false},
		{"context_extension", httpReq(checkout, "POST", charges, func(r *authv3.CheckRequest) {
			r.Attributes.ContextExtensions = map[string]string{"k": mark}
		}), false, false},
		{"header_map_key", httpReq(checkout, "POST", charges, withHeader("x-"+mark, "v"), asHeaderMap), false, false},
		{"in_metadata", httpReq(checkout, "POST", charges, withDeepMetadata(3, mark)), false, false},
		{"deep_in_metadata", httpReq(checkout, "POST", charges, withDeepMetadata(200, mark)), false, false},
		{"destination_principal_on_tls", tlsReq(checkout, "files.stripe.com", 443, func(r *authv3.CheckRequest) {
			r.Attributes.Destination.Principal = mark
		}), true, false},
	}
	for _, lv := range liveVariants {
		t.Run(lv.name, func(t *testing.T) {
			s := authztest.NewServer(t, rules.NewLive(authztest.Table(t, "rules.yaml", testRules), rules.LiveOptions{CacheSize: lv.cache}), authz.Options{})
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					b, err := proto.Marshal(tc.req)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Contains(b, []byte(mark)) {
						t.Fatalf("marker not in the wire bytes")
					}
					edited := bytes.ReplaceAll(b, []byte(mark), invalidUTF8(len(mark)))
					if proto.Unmarshal(edited, new(authv3.CheckRequest)) == nil {
						t.Fatalf("test bug: the edited request is valid")
					}
					authz.CheckDecodeBytes(t, edited)
					ctx, cancel := context.WithTimeout(context.Background(), authztest.Timeout)
					defer cancel()
					resp, err := s.CheckRaw(ctx, edited)
					if err != nil {
						t.Fatalf("gRPC error %v, want a deny", err)
					}
					v := verdictOf(t, resp)
					if !tc.read {
						unedited, err := s.CheckRaw(ctx, b)
						if err != nil {
							t.Fatal(err)
						}
						w := verdictOf(t, unedited)
						if w.Reason == string(rules.ReasonInvalidRequest) {
							t.Fatalf("test bug: the request is invalid without the edit")
						}
						v.expect(t, want{reason: rules.Reason(w.Reason), rule: w.Rule, tls: tc.tls})
						return
					}
					v.expect(t, want{reason: rules.ReasonInvalidRequest, tls: tc.tls})
					if tc.name == "request_id" && !strings.Contains(v.RequestID, "\uFFFD") {
						t.Errorf("request_id %q: want the sent id with U+FFFD for the invalid bytes", v.RequestID)
					}
				})
			}
		})
	}
}

// TestCheckGarbage: bytes that are no CheckRequest at all are denied as
// invalid requests, not failed.
func TestCheckGarbage(t *testing.T) {
	s, _ := start(t, authz.Options{})
	valid, err := proto.Marshal(httpReq(checkout, "POST", "https://api.stripe.com/v1/charges"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"all_ones", bytes.Repeat([]byte{0xff}, 64)},
		{"text", []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")},
		{"json", []byte(`{"attributes":{"source":{"principal":"spiffe://cluster.local/ns/payments/sa/checkout"}}}`)},
		{"truncated_request", valid[:len(valid)/2]},
		{"length_past_the_end", []byte{0x0a, 0x7f, 0x01}},
		{"field_number_zero", []byte{0x00, 0x01}},
		{"overlong_varint", append([]byte{0x08}, bytes.Repeat([]byte{0x80}, 11)...)},
		{"group_never_closed", []byte{0x0b}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			authz.CheckDecodeBytes(t, tc.b)
			ctx, cancel := context.WithTimeout(context.Background(), authztest.Timeout)
			defer cancel()
			resp, err := s.CheckRaw(ctx, tc.b)
			if err != nil {
				t.Fatalf("gRPC error %v, want a deny", err)
			}
			verdictOf(t, resp).expect(t, deny(rules.ReasonInvalidRequest, ""))
		})
	}
}

// withDeepMetadata puts leaf at the bottom of google.protobuf.Value lists
// nested depth deep in attributes.metadata_context.
func withDeepMetadata(depth int, leaf string) func(*authv3.CheckRequest) {
	return func(r *authv3.CheckRequest) {
		v := structpb.NewStringValue(leaf)
		for range depth {
			v = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{v}})
		}
		r.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			"deep": {Fields: map[string]*structpb.Value{"v": v}},
		}}
	}
}

// TestCheckWithoutServerCodec: a server built without authz.ServerCodec
// (grpc-go's strict codec) still decides valid requests.
func TestCheckWithoutServerCodec(t *testing.T) {
	table := authztest.Table(t, "rules.yaml", testRules)
	g := grpc.NewServer()
	authz.NewServer(rules.NewLive(table, rules.LiveOptions{CacheSize: 100}), authz.Options{}).Register(g)
	s := authztest.Serve(t, g)
	cases := []checkCase{
		{"allow", httpReq(checkout, "POST", "https://api.stripe.com/v1/charges"), allow("payments-stripe-charges")},
		{"deny_by_rule", httpReq(checkout, "POST", "https://api.stripe.com/v1/accounts/a"), deny(rules.ReasonDeniedByRule, "stripe-no-account-changes")},
		{"deny_no_matching_rule", httpReq(checkout, "GET", "https://api.stripe.com/v1/charges"), deny(rules.ReasonNoMatchingRule, "")},
		{"tls_allow", tlsReq(checkout, "files.stripe.com", 443), tlsAllow("payments-stripe-files-tls")},
		{"invalid_request", &authv3.CheckRequest{}, deny(rules.ReasonInvalidRequest, "")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			verdictOf(t, s.Check(t, tc.req)).expect(t, tc.want)
		})
	}
}
