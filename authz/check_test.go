package authz_test

import (
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/rules"
)

// Requests that a principal, a method and a URL state in full are probes
// (probe_test.go), decided over gRPC and every HTTP front door alike; the
// tests here are of what only Envoy's gRPC Check can say.

func TestCheckTLSPassthrough(t *testing.T) {
	runCases(t, testRules, authz.Options{}, []checkCase{
		{"allow_sni", tlsReq(checkout, "files.stripe.com", 443), tlsAllow("payments-stripe-files-tls")},
		{"allow_sni_only_in_tls_session", tlsReq(checkout, "files.stripe.com", 443, func(r *authv3.CheckRequest) { r.Attributes.Destination.Service = "" }), tlsAllow("payments-stripe-files-tls")},
		{"allow_sni_only_in_destination_service", tlsReq(checkout, "files.stripe.com", 443, func(r *authv3.CheckRequest) { r.Attributes.TlsSession = nil }), tlsAllow("payments-stripe-files-tls")},
		{"allow_sni_empty_in_tls_session_falls_back_to_service", tlsReq(checkout, "files.stripe.com", 443, func(r *authv3.CheckRequest) { r.Attributes.TlsSession.Sni = "" }), tlsAllow("payments-stripe-files-tls")},
		{"tls_session_sni_wins_over_service", tlsReq(checkout, "files.stripe.com", 443, func(r *authv3.CheckRequest) { r.Attributes.Destination.Service = "pastebin.com" }), tlsAllow("payments-stripe-files-tls")},
		{"allow_sni_upper_case", tlsReq(checkout, "FILES.Stripe.COM", 443), tlsAllow("payments-stripe-files-tls")},
		{"port_from_socket", tlsReq(crawler, "ports.test", 9000), tlsAllow("port-9000")},
		{"deny_port_from_socket_not_allowed", tlsReq(checkout, "files.stripe.com", 8443), tlsDeny(rules.ReasonNoMatchingRule, "")},
		{"deny_rule_with_methods_never_matches_sni", tlsReq(checkout, "api.stripe.com", 443), tlsDeny(rules.ReasonNoMatchingRule, "")},
		{"deny_by_rule", tlsReq(checkout, "eu.pastebin.com", 443), tlsDeny(rules.ReasonDeniedByRule, "no-pastebin")},
		{"deny_no_identity", tlsReq("", "files.stripe.com", 443), tlsDeny(rules.ReasonNoIdentity, "")},
		{"deny_no_sni", tlsReq(checkout, "", 443), tlsDeny(rules.ReasonNoHost, "")},
		{"deny_port_in_sni", tlsReq(checkout, "files.stripe.com:443", 443), tlsDeny(rules.ReasonInvalidHost, "")},
		{"deny_sni_with_slash", tlsReq(checkout, "files.stripe.com/x", 443), tlsDeny(rules.ReasonInvalidHost, "")},
		{"empty_request_attribute_is_passthrough", tlsReq(checkout, "files.stripe.com", 443, func(r *authv3.CheckRequest) { r.Attributes.Request = &authv3.AttributeContext_Request{} }), tlsAllow("payments-stripe-files-tls")},
	})
}

func TestCheckHostAndPort(t *testing.T) {
	noHost := func(h *authv3.AttributeContext_HttpRequest) { h.Host = "" }
	scheme := func(s string) func(h *authv3.AttributeContext_HttpRequest) {
		return func(h *authv3.AttributeContext_HttpRequest) { h.Scheme = s }
	}
	runCases(t, testRules, authz.Options{}, []checkCase{
		{"authority_falls_back_to_header", httpReq(crawler, "GET", "https://ports.test/", withHTTP(noHost)), allow("port-443")},
		{"authority_header_with_port", httpReq(crawler, "GET", "https://ports.test:8443/", withHTTP(noHost)), allow("port-8443")},
		{"no_authority_at_all", httpReq(crawler, "GET", "https://ports.test/", withHTTP(noHost), withoutHeader(":authority")), deny(rules.ReasonNoHost, "")},
		{"port_from_authority_beats_socket", httpReq(crawler, "GET", "https://ports.test:8443/", withSocketPort(9000)), allow("port-8443")},
		{"port_from_https_scheme", httpReq(crawler, "GET", "https://ports.test/", withSocketPort(9000)), allow("port-443")},
		{"port_from_http_scheme", httpReq(crawler, "GET", "http://ports.test/", withSocketPort(9000)), allow("port-80")},
		{"scheme_is_case_insensitive", httpReq(crawler, "GET", "https://ports.test/", withHTTP(scheme("HTTPS")), withSocketPort(9000)), allow("port-443")},
		{"port_from_socket_without_scheme", httpReq(crawler, "GET", "https://ports.test/", withHTTP(scheme("")), withSocketPort(9000)), allow("port-9000")},
		{"port_from_socket_with_unknown_scheme", httpReq(crawler, "GET", "https://ports.test/", withHTTP(scheme("gopher")), withSocketPort(9000)), allow("port-9000")},
	})
}

func TestCheckPaths(t *testing.T) {
	runCases(t, testRules, authz.Options{}, []checkCase{
		{"unsafe_not_starting_with_slash", httpReq(crawler, "GET", "http://paths.test/", withHTTP(func(h *authv3.AttributeContext_HttpRequest) { h.Path = "b" })), deny(rules.ReasonUnsafePath, "")},
		{"unsafe_absolute_form", httpReq(crawler, "GET", "http://paths.test/", withHTTP(func(h *authv3.AttributeContext_HttpRequest) { h.Path = "http://paths.test/b" })), deny(rules.ReasonUnsafePath, "")},
		{"unsafe_asterisk_form", httpReq(crawler, "OPTIONS", "http://paths.test/", withHTTP(func(h *authv3.AttributeContext_HttpRequest) { h.Path = "*" })), deny(rules.ReasonUnsafePath, "")},
		{"path_falls_back_to_header", httpReq(crawler, "GET", "http://paths.test/b", withHTTP(func(h *authv3.AttributeContext_HttpRequest) { h.Path = "" })), allow("paths-b")},
		{"no_path_at_all", httpReq(crawler, "GET", "http://paths.test/b", withHTTP(func(h *authv3.AttributeContext_HttpRequest) { h.Path = "" }), withoutHeader(":path")), deny(rules.ReasonUnsafePath, "")},
	})
}

// TestCheckBadInput: each malformed request is denied with the SPEC's
// reason, the first in the SPEC's order that applies, and never answered
// with a gRPC error (runCases fails on one).
func TestCheckBadInput(t *testing.T) {
	method := func(m string) func(*authv3.CheckRequest) {
		return withHTTP(func(h *authv3.AttributeContext_HttpRequest) { h.Method = m })
	}
	host := func(v string) func(*authv3.CheckRequest) {
		return withHTTP(func(h *authv3.AttributeContext_HttpRequest) { h.Host = v; h.Headers[":authority"] = v })
	}
	charges := "https://api.stripe.com/v1/charges"
	runCases(t, testRules, authz.Options{}, []checkCase{
		{"nil_attributes", &authv3.CheckRequest{}, deny(rules.ReasonInvalidRequest, "")},
		{"empty_attributes", &authv3.CheckRequest{Attributes: &authv3.AttributeContext{}}, deny(rules.ReasonInvalidRequest, "")},
		{"only_context_extensions", &authv3.CheckRequest{Attributes: &authv3.AttributeContext{ContextExtensions: map[string]string{"k": "v"}}}, deny(rules.ReasonInvalidRequest, "")},
		{"method_empty", httpReq(checkout, "POST", charges, method("")), deny(rules.ReasonInvalidRequest, "")},
		{"method_with_space", httpReq(checkout, "POST", charges, method("PO ST")), deny(rules.ReasonInvalidRequest, "")},
		{"method_with_newline", httpReq(checkout, "POST", charges, method("POST\r\n")), deny(rules.ReasonInvalidRequest, "")},
		{"method_with_slash", httpReq(checkout, "POST", charges, method("POST/1")), deny(rules.ReasonInvalidRequest, "")},
		{"method_non_ascii", httpReq(checkout, "POST", charges, method("PÖST")), deny(rules.ReasonInvalidRequest, "")},
		{"invalid_method_before_no_identity", httpReq("", "POST", charges, method("")), deny(rules.ReasonInvalidRequest, "")},
		// The proto's port is a uint32: PostgreSQL would store it wrapped.
		{"socket_port_over_65535", httpReq(checkout, "POST", "grpc://api.stripe.com/v1/charges", withSocketPort(1<<31)), deny(rules.ReasonInvalidRequest, "")},
		{"socket_port_over_65535_tls", tlsReq(checkout, "api.stripe.com", 70000), tlsDeny(rules.ReasonInvalidRequest, "")},
		{"no_identity_before_no_host", httpReq("", "POST", charges, host("")), deny(rules.ReasonNoIdentity, "")},
		{"untrusted_trust_domain_before_invalid_host", httpReq("spiffe://evil.example/ns/payments/sa/checkout", "POST", charges, host("a@b")), deny(rules.ReasonUntrustedDomain, "")},
		{"no_host", httpReq(checkout, "POST", charges, host("")), deny(rules.ReasonNoHost, "")},
		{"invalid_host_userinfo", httpReq(checkout, "POST", charges, host("user@api.stripe.com")), deny(rules.ReasonInvalidHost, "")},
		{"invalid_host_userinfo_with_password", httpReq(checkout, "POST", charges, host("user:pw@api.stripe.com:443")), deny(rules.ReasonInvalidHost, "")},
		{"invalid_host_empty_port", httpReq(checkout, "POST", charges, host("api.stripe.com:")), deny(rules.ReasonInvalidHost, "")},
		{"invalid_host_non_numeric_port", httpReq(checkout, "POST", charges, host("api.stripe.com:https")), deny(rules.ReasonInvalidHost, "")},
		{"invalid_host_port_out_of_range", httpReq(checkout, "POST", charges, host("api.stripe.com:65536")), deny(rules.ReasonInvalidHost, "")},
		{"invalid_host_port_zero", httpReq(checkout, "POST", charges, host("api.stripe.com:0")), deny(rules.ReasonInvalidHost, "")},
		{"invalid_host_empty_label", httpReq(checkout, "POST", charges, host("api..stripe.com")), deny(rules.ReasonInvalidHost, "")},
		{"invalid_host_wildcard", httpReq(checkout, "POST", charges, host("*.stripe.com")), deny(rules.ReasonInvalidHost, "")},
		{"invalid_host_space", httpReq(checkout, "POST", charges, host("api.stripe.com ")), deny(rules.ReasonInvalidHost, "")},
		{"invalid_host_non_ascii", httpReq(checkout, "POST", charges, host("аpi.stripe.com")), deny(rules.ReasonInvalidHost, "")},
		{"invalid_host_before_unsafe_path", httpReq(checkout, "POST", "https://api.stripe.com/a%2Fb", host("api.stripe.com:x")), deny(rules.ReasonInvalidHost, "")},
	})
}

func TestCheckTrustXFCC(t *testing.T) {
	xfcc := func(v string) func(*authv3.CheckRequest) { return withHeader("x-forwarded-client-cert", v) }
	const (
		hop   = `By=spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account;Hash=0123abcd;Subject="CN=x,O=y";URI=`
		url   = "https://api.stripe.com/v1/charges"
		byURI = hop + checkout
	)
	trusting := []checkCase{
		{"uri_used_when_principal_empty", httpReq("", "POST", url, xfcc(byURI)), allow("payments-stripe-charges")},
		{"quoted_uri", httpReq("", "POST", url, xfcc(`Hash=1;URI="`+checkout+`"`)), allow("payments-stripe-charges")},
		{"uri_key_case_insensitive", httpReq("", "POST", url, xfcc(`Hash=1; uri=`+checkout)), allow("payments-stripe-charges")},
		{"last_element_wins", httpReq("", "POST", url, xfcc(hop+crawler+","+byURI)), allow("payments-stripe-charges")},
		{"earlier_element_ignored", httpReq("", "POST", url, xfcc(byURI+","+hop+crawler)), deny(rules.ReasonNoMatchingRule, "")},
		{"quoted_comma_is_not_an_element_boundary", httpReq("", "POST", url, xfcc(hop+crawler+`,Subject="CN=a,URI=`+crawler+`";URI=`+checkout)), allow("payments-stripe-charges")},
		{"peer_principal_wins_over_xfcc", httpReq(crawler, "POST", url, xfcc(byURI)), deny(rules.ReasonNoMatchingRule, "")},
		{"no_uri_in_xfcc", httpReq("", "POST", url, xfcc(`Hash=1;DNS=api.internal`)), deny(rules.ReasonNoIdentity, "")},
		{"uri_only_in_earlier_element", httpReq("", "POST", url, xfcc(byURI+`,Hash=1`)), deny(rules.ReasonNoIdentity, "")},
		{"invalid_uri", httpReq("", "POST", url, xfcc(`URI=not-spiffe`)), deny(rules.ReasonInvalidIdentity, "")},
		{"foreign_uri", httpReq("", "POST", url, xfcc(`URI=spiffe://evil.example/ns/payments/sa/checkout`)), deny(rules.ReasonUntrustedDomain, "")},
		{"xfcc_in_header_map", httpReq("", "POST", url, xfcc(byURI), asHeaderMap), allow("payments-stripe-charges")},
		{"repeated_xfcc_in_header_map_read_like_headers", httpReq("", "POST", url, asHeaderMap,
			withHeaderMap("x-forwarded-client-cert", byURI, "x-forwarded-client-cert", hop+crawler)), deny(rules.ReasonNoMatchingRule, "")},
		{"repeated_xfcc_in_header_map_last_wins", httpReq("", "POST", url, asHeaderMap,
			withHeaderMap("x-forwarded-client-cert", hop+crawler, "x-forwarded-client-cert", byURI)), allow("payments-stripe-charges")},
		{"no_xfcc", httpReq("", "POST", url), deny(rules.ReasonNoIdentity, "")},
		{"not_for_tls_passthrough", tlsReq("", "files.stripe.com", 443), tlsDeny(rules.ReasonNoIdentity, "")},
	}
	t.Run("set", func(t *testing.T) { runCases(t, testRules, authz.Options{TrustXFCC: true}, trusting) })

	notTrusting := []checkCase{
		{"xfcc_ignored", httpReq("", "POST", url, xfcc(byURI)), deny(rules.ReasonNoIdentity, "")},
		{"xfcc_in_header_map_ignored", httpReq("", "POST", url, xfcc(byURI), asHeaderMap), deny(rules.ReasonNoIdentity, "")},
		{"peer_principal_used", httpReq(checkout, "POST", url, xfcc(hop+crawler)), allow("payments-stripe-charges")},
	}
	t.Run("not_set", func(t *testing.T) { runCases(t, testRules, authz.Options{}, notTrusting) })
}

// TestCheckHeaderMap: Envoy set to encode raw headers sends them in
// header_map, as raw_value bytes, and not in headers; they are read the same.
func TestCheckHeaderMap(t *testing.T) {
	valueNotRaw := func(r *authv3.CheckRequest) {
		for _, h := range httpAttrs(r).GetHeaderMap().GetHeaders() {
			h.Value, h.RawValue = string(h.RawValue), nil
		}
	}
	noHostOrPath := withHTTP(func(h *authv3.AttributeContext_HttpRequest) { h.Host, h.Path = "", "" })
	runCases(t, testRules, authz.Options{}, []checkCase{
		{"allow", httpReq(checkout, "POST", "https://api.stripe.com/v1/charges", asHeaderMap), allow("payments-stripe-charges")},
		{"authority_and_path_from_header_map", httpReq(checkout, "POST", "https://api.stripe.com/v1/charges", noHostOrPath, asHeaderMap), allow("payments-stripe-charges")},
		{"deny_path_from_header_map", httpReq(checkout, "POST", "https://api.stripe.com/v1/accounts/x", noHostOrPath, asHeaderMap), deny(rules.ReasonDeniedByRule, "stripe-no-account-changes")},
		{"value_instead_of_raw_value", httpReq(checkout, "POST", "https://api.stripe.com/v1/charges", noHostOrPath, asHeaderMap, valueNotRaw), allow("payments-stripe-charges")},
		{"mixed_case_key", httpReq(checkout, "POST", "https://api.stripe.com/v1/charges", noHostOrPath, asHeaderMap, func(r *authv3.CheckRequest) {
			for _, h := range httpAttrs(r).GetHeaderMap().GetHeaders() {
				h.Key = strings.ToUpper(h.Key)
			}
		}), allow("payments-stripe-charges")},
		{"no_authority_anywhere", httpReq(checkout, "POST", "https://api.stripe.com/v1/charges", noHostOrPath, withoutHeader(":authority"), asHeaderMap), deny(rules.ReasonNoHost, "")},
	})
}

// TestCheckHugeHeaders: requests far larger than any real one are still
// answered, and decided on what matters.
func TestCheckHugeHeaders(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	many := func(r *authv3.CheckRequest) {
		for i := range 2000 {
			httpAttrs(r).Headers["x-h-"+strings.Repeat("k", i%50)+string(rune('a'+i%26))+strconv.Itoa(i)] = "value-" + strconv.Itoa(i)
		}
	}
	bigRaw := func(r *authv3.CheckRequest) {
		h := httpAttrs(r)
		h.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "x-big", RawValue: []byte(big)}}}
		for i := range 2000 {
			h.HeaderMap.Headers = append(h.HeaderMap.Headers, &corev3.HeaderValue{Key: "x-h-" + strconv.Itoa(i), RawValue: []byte("v")})
		}
	}
	charges := "https://api.stripe.com/v1/charges"
	runCases(t, testRules, authz.Options{}, []checkCase{
		{"one_mib_header_value", httpReq(checkout, "POST", charges, withHeader("x-big", big)), allow("payments-stripe-charges")},
		{"two_thousand_headers", httpReq(checkout, "POST", charges, many), allow("payments-stripe-charges")},
		{"one_mib_and_two_thousand_in_header_map", httpReq(checkout, "POST", charges, bigRaw), allow("payments-stripe-charges")},
		{"one_mib_request_id", httpReq(checkout, "POST", charges, withHeader("x-request-id", big)), allow("payments-stripe-charges")},
		{"one_mib_xfcc", httpReq("", "POST", charges, withHeader("x-forwarded-client-cert", big)), deny(rules.ReasonNoIdentity, "")},
		{"one_mib_path", httpReq(checkout, "POST", "https://api.stripe.com/v1/files/"+big), allow("payments-stripe-charges")},
		{"deeply_nested_metadata", httpReq(checkout, "POST", charges, withDeepMetadata(200, "v")), allow("payments-stripe-charges")},
		{"one_mib_host", httpReq(checkout, "POST", "https://"+big+"/v1/charges"), deny(rules.ReasonNoMatchingRule, "")},
	})
}
