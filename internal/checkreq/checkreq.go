// Package checkreq builds CheckRequests shaped the way the Istio egress
// gateway's Envoy sends them, for the check command, the load generator and
// tests: one place that knows what a real request looks like.
package checkreq

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/egress-authz/egress-authz/rules"
)

// HTTP describes an HTTP request through the gateway.
type HTTP struct {
	Principal string            // the caller's SPIFFE ID, as Envoy's source.principal
	Method    string            // GET when empty
	URL       string            // scheme://authority/path?query, taken as raw text: nothing is decoded or cleaned
	Headers   map[string]string // extra request headers (lower-case keys)
	RequestID string            // x-request-id; none when empty
}

// SplitURL splits a URL into scheme, authority and raw request target
// without parsing or cleaning the target, so that "%2F" or ".." reach the
// server exactly as typed.
func SplitURL(raw string) (scheme, authority, target string, err error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || scheme == "" {
		return "", "", "", fmt.Errorf("URL %q: want scheme://host/path", raw)
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		return scheme, rest, "/", nil
	}
	authority, target = rest[:end], rest[end:]
	if target[0] != '/' {
		target = "/" + target
	}
	return scheme, authority, target, nil
}

// schemePort is the port a request to scheme goes to when its authority
// names none, as the server reads it: 443 for https, else 80 (the
// destination socket's port, which Build sets to the same).
func schemePort(scheme string) uint32 {
	if strings.EqualFold(scheme, "https") {
		return 443
	}
	return 80
}

// Request returns the rules.Request the server decides when the gateway
// sends r: the authority as the host (port from it, else the scheme's
// default), the raw target as the path. "rules test" and "rules explain"
// use it, so that a URL in a test case is decided exactly like the real
// request the check command sends for it.
func (r HTTP) Request() (rules.Request, error) {
	scheme, authority, target, err := SplitURL(r.URL)
	if err != nil {
		return rules.Request{}, err
	}
	method := r.Method
	if method == "" {
		method = "GET"
	}
	if !rules.IsToken(method) {
		return rules.Request{}, fmt.Errorf("method %q is not an HTTP method", method)
	}
	return rules.Request{Principal: r.Principal, Host: authority, Port: int(schemePort(scheme)), Method: method, Path: target}, nil
}

// SNIRequest returns the rules.Request the server decides for the
// TLS-passthrough connection SNI(principal, sni, port) describes.
func SNIRequest(principal, sni string, port uint32) rules.Request {
	return rules.Request{Principal: principal, Host: sni, SNI: true, Port: int(port)}
}

// Build returns the CheckRequest the gateway would send for r.
func (r HTTP) Build() (*authv3.CheckRequest, error) {
	scheme, authority, target, err := SplitURL(r.URL)
	if err != nil {
		return nil, err
	}
	method := r.Method
	if method == "" {
		method = "GET"
	}
	port := schemePort(scheme)
	headers := map[string]string{
		":authority":        authority,
		":method":           method,
		":path":             target,
		":scheme":           scheme,
		"user-agent":        "egress-authz-check",
		"x-forwarded-proto": scheme,
	}
	if r.RequestID != "" {
		headers["x-request-id"] = r.RequestID
	}
	for k, v := range r.Headers {
		headers[strings.ToLower(k)] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{
			Address:   socket("10.0.0.10", 43210),
			Principal: r.Principal,
		},
		Destination: &authv3.AttributeContext_Peer{
			Address:   socket("10.0.0.20", port),
			Principal: "spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account",
		},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id:       "1", // Envoy's stream number: not a request id
			Method:   method,
			Headers:  headers,
			Path:     target,
			Host:     authority,
			Scheme:   scheme,
			Protocol: "HTTP/1.1",
		}},
	}}, nil
}

// SNI returns the CheckRequest Envoy's network ext_authz filter sends for a
// TLS-passthrough connection: no HTTP attributes, the server name in
// tls_session.sni and, as that filter does, in destination.service.
func SNI(principal, sni string, port uint32) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: socket("10.0.0.10", 43210), Principal: principal},
		Destination: &authv3.AttributeContext_Peer{
			Address: socket("10.0.0.20", port),
			Service: sni,
		},
		TlsSession: &authv3.AttributeContext_TLSSession{Sni: sni},
	}}
}

func socket(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}
