package authz

import (
	"strings"
	"testing"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/rules"
)

func TestXFCCURI(t *testing.T) {
	const (
		a = "spiffe://cluster.local/ns/a/sa/a"
		b = "spiffe://cluster.local/ns/b/sa/b"
	)
	cases := []struct{ name, xfcc, want string }{
		{"empty", "", ""},
		{"uri_only", "URI=" + a, a},
		{"envoy_shape", `By=spiffe://cluster.local/ns/istio-system/sa/gw;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject="";URI=` + a, a},
		{"last_element", "URI=" + a + ",URI=" + b, b},
		{"last_element_after_spaces", "URI=" + a + ", Hash=1;URI=" + b, b},
		{"quoted_value", `URI="` + a + `"`, a},
		{"comma_in_quotes_is_not_a_boundary", `URI=` + a + `;Subject="CN=x,URI=` + b + `"`, a},
		{"semicolon_in_quotes_is_not_a_pair", `Subject="a;URI=` + b + `";URI=` + a, a},
		{"escaped_quote_in_quotes", `Subject="a\",URI=` + b + `";URI=` + a, a},
		{"key_case_insensitive", "uri=" + a, a},
		{"first_uri_of_the_element", "URI=" + a + ";URI=" + b, a},
		{"no_uri_in_last_element", "URI=" + a + ",Hash=1", ""},
		{"dns_is_not_uri", "DNS=example.com", ""},
		{"uri_prefix_key_is_not_uri", "URIX=" + a, ""},
		{"trailing_comma", "URI=" + a + ",", ""},
		{"unterminated_quote", `URI="` + a, a},
		{"only_separators", ",;,;", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := xfccURI(tc.xfcc); got != tc.want {
				t.Errorf("xfccURI(%q) = %q, want %q", tc.xfcc, got, tc.want)
			}
		})
	}
}

func TestTraceID(t *testing.T) {
	const id = "4bf92f3577b34da6a3ce929d0e0e4736"
	cases := []struct{ name, tp, want string }{
		{"valid", "00-" + id + "-00f067aa0ba902b7-01", id},
		{"future_version_with_suffix", "01-" + id + "-00f067aa0ba902b7-01-extra", id},
		{"empty", "", ""},
		{"short", "00-" + id, ""},
		{"upper_case_hex", "00-" + strings.ToUpper(id) + "-00f067aa0ba902b7-01", ""},
		{"all_zero", "00-" + strings.Repeat("0", 32) + "-00f067aa0ba902b7-01", ""},
		{"bad_separator", "00_" + id + "-00f067aa0ba902b7-01", ""},
		{"non_hex", "00-" + strings.Repeat("g", 32) + "-00f067aa0ba902b7-01", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := traceID(tc.tp); got != tc.want {
				t.Errorf("traceID(%q) = %q, want %q", tc.tp, got, tc.want)
			}
		})
	}
}

func TestRequestID(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"kept", "abc-123", "abc-123"},
		{"empty", "", ""},
		{"bounded", strings.Repeat("a", 300), strings.Repeat("a", maxRequestIDLen)},
		{"cut_before_a_split_character", strings.Repeat("a", 127) + "é", strings.Repeat("a", 127)},
		{"cut_before_a_split_4_byte_character", strings.Repeat("a", 126) + "😀", strings.Repeat("a", 126)},
		{"invalid_utf8_replaced", "a\xffb", "a\uFFFDb"},
		{"huge", strings.Repeat("é", 1<<19), strings.Repeat("é", maxRequestIDLen/2)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := requestID(tc.in)
			if got != tc.want {
				t.Errorf("requestID = %q, want %q", got, tc.want)
			}
			if !utf8.ValidString(got) || len(got) > maxRequestIDLen {
				t.Errorf("requestID = %q: not valid UTF-8 of at most %d bytes", got, maxRequestIDLen)
			}
		})
	}
}

func TestHeaderMapValue(t *testing.T) {
	hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "x-raw", RawValue: []byte("raw")},
		{Key: "x-value", Value: "value"},
		{Key: "x-both", Value: "value", RawValue: []byte("raw")},
		{Key: "X-Upper", RawValue: []byte("upper")},
		{Key: "x-rep", RawValue: []byte("a")},
		{Key: "x-other", RawValue: []byte("o")},
		{Key: "x-rep", RawValue: []byte("b")},
		{Key: "x-empty"},
	}}
	cases := []struct{ key, want string }{
		{"x-raw", "raw"},
		{"x-value", "value"},
		{"x-both", "raw"},
		{"x-upper", "upper"},
		{"x-rep", "a,b"},
		{"x-empty", ""},
		{"x-absent", ""},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			if got := headerMapValue(hm, tc.key); got != tc.want {
				t.Errorf("headerMapValue(%q) = %q, want %q", tc.key, got, tc.want)
			}
		})
	}
}

// TestMapRequest pins down the translation of Envoy's shapes into a
// rules.Request, apart from any rule.
func TestMapRequest(t *testing.T) {
	const co = "spiffe://cluster.local/ns/payments/sa/checkout"
	build := func(h checkreq.HTTP, edits ...func(*authv3.CheckRequest)) *authv3.CheckRequest {
		cr, err := h.Build()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range edits {
			e(cr)
		}
		return cr
	}
	cases := []struct {
		name      string
		cr        *authv3.CheckRequest
		trustXFCC bool
		want      rules.Request
		wantID    string
		invalid   bool
	}{
		{
			name:   "http",
			cr:     build(checkreq.HTTP{Principal: co, Method: "POST", URL: "https://API.stripe.com/v1/charges?x=%2F", RequestID: "r1"}),
			want:   rules.Request{Principal: co, Host: "API.stripe.com", Port: 443, Method: "POST", Path: "/v1/charges?x=%2F"},
			wantID: "r1",
		},
		{
			name: "http_scheme_default_port",
			cr:   build(checkreq.HTTP{Principal: co, URL: "http://example.com:8080/"}),
			want: rules.Request{Principal: co, Host: "example.com:8080", Port: 80, Method: "GET", Path: "/"},
		},
		{
			name: "sni",
			cr:   checkreq.SNI(co, "files.stripe.com", 8443),
			want: rules.Request{Principal: co, Host: "files.stripe.com", SNI: true, Port: 8443},
		},
		{
			name:    "sni_principal_invalid_utf8_is_still_sni",
			cr:      checkreq.SNI("spiffe://cluster.local/\xff", "files.stripe.com", 443),
			want:    rules.Request{Principal: "spiffe://cluster.local/\xff", SNI: true},
			invalid: true,
		},
		{
			name:    "sni_invalid_utf8",
			cr:      checkreq.SNI(co, "files.\xffstripe.com", 443),
			want:    rules.Request{Principal: co, Host: "files.\xffstripe.com", SNI: true, Port: 443},
			invalid: true,
		},
		{
			name:      "xfcc_when_trusted",
			cr:        build(checkreq.HTTP{URL: "https://a.test/", Headers: map[string]string{"x-forwarded-client-cert": "URI=" + co}}),
			trustXFCC: true,
			want:      rules.Request{Principal: co, Host: "a.test", Port: 443, Method: "GET", Path: "/"},
		},
		{
			name: "xfcc_when_not_trusted",
			cr:   build(checkreq.HTTP{URL: "https://a.test/", Headers: map[string]string{"x-forwarded-client-cert": "URI=" + co}}),
			want: rules.Request{Host: "a.test", Port: 443, Method: "GET", Path: "/"},
		},
		{
			name:    "http_path_invalid_utf8",
			cr:      build(checkreq.HTTP{Principal: co, URL: "https://a.test/\xff"}),
			want:    rules.Request{Principal: co, Host: "a.test", Port: 443, Method: "GET", Path: "/\xff"},
			invalid: true,
		},
		{
			name:    "no_attributes",
			cr:      &authv3.CheckRequest{},
			invalid: true,
		},
		{
			name:    "nil_request",
			cr:      nil,
			invalid: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, m, invalid := mapProto(tc.cr, tc.trustXFCC)
			if (invalid != "") != tc.invalid {
				t.Errorf("invalid = %q, want invalid: %v", invalid, tc.invalid)
			}
			if req != tc.want {
				t.Errorf("request %+v, want %+v", req, tc.want)
			}
			if m.RequestID != tc.wantID {
				t.Errorf("request id %q, want %q", m.RequestID, tc.wantID)
			}
		})
	}
}
