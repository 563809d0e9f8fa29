package authz

import (
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/egress-authz/egress-authz/rules"
)

// Header names read from the request. Envoy lower-cases header keys.
const (
	headerRequestID   = "x-request-id"
	headerTraceparent = "traceparent"
	headerXFCC        = "x-forwarded-client-cert"
	headerAuthority   = ":authority"
	maxRequestIDLen   = 128
)

// meta is what a CheckRequest says about the request besides what rules
// decide on: identifiers for the decision log and the response.
type meta struct {
	RequestID string // from x-request-id; empty when the request had none
	TraceID   string // from a W3C traceparent header; empty when absent or malformed
}

// mapRequest translates a CheckRequest into the rules' Request. It is a pure
// function of its input: the whole of Envoy's shape is handled here.
// invalid is non-empty when the request is unusable (the decision is then
// ReasonInvalidRequest) and says why.
func mapRequest(cr *authv3.CheckRequest, trustXFCC bool) (req rules.Request, m meta, invalid string) {
	a := cr.GetAttributes()
	if a == nil || (a.Source == nil && a.Destination == nil && a.Request == nil && a.TlsSession == nil) {
		return req, m, "no attributes"
	}
	http := a.GetRequest().GetHttp()
	// Known before anything can be found invalid: a TLS-passthrough deny
	// must have no HTTP part, whatever the reason.
	req.SNI = http == nil
	if http != nil {
		m.RequestID = requestID(header(http, headerRequestID))
		m.TraceID = traceID(header(http, headerTraceparent))
	}

	req.Principal = a.GetSource().GetPrincipal()
	if req.Principal == "" && trustXFCC && http != nil {
		req.Principal = xfccURI(header(http, headerXFCC))
	}
	if !utf8.ValidString(req.Principal) {
		return req, m, "principal is not valid UTF-8"
	}
	socketPort := int(a.GetDestination().GetAddress().GetSocketAddress().GetPortValue())
	if socketPort > 65535 {
		// The proto field is a uint32; no socket has such a port.
		return req, m, "destination port is over 65535"
	}

	if http == nil {
		// TLS passthrough through Envoy's network ext_authz filter: one
		// Check per connection, with the SNI as the only name.
		req.Host = a.GetTlsSession().GetSni()
		if req.Host == "" {
			req.Host = a.GetDestination().GetService()
		}
		req.Port = socketPort
		if !utf8.ValidString(req.Host) {
			return req, m, "SNI is not valid UTF-8"
		}
		return req, m, ""
	}

	if !rules.IsToken(http.Method) {
		return req, m, "method is not an HTTP token"
	}
	req.Method = http.Method
	req.Host = http.Host
	if req.Host == "" {
		req.Host = header(http, headerAuthority)
	}
	switch strings.ToLower(http.Scheme) {
	case "https":
		req.Port = 443
	case "http":
		req.Port = 80
	default:
		req.Port = socketPort
	}
	req.Path = http.Path
	if req.Path == "" {
		req.Path = header(http, ":path")
	}
	if !utf8.ValidString(req.Host) || !utf8.ValidString(req.Path) {
		return req, m, "host or path is not valid UTF-8"
	}
	return req, m, ""
}

// header returns a request header, from the headers map or, when Envoy is
// set to encode raw headers, from header_map.
func header(h *authv3.AttributeContext_HttpRequest, key string) string {
	if v, ok := h.Headers[key]; ok {
		return v
	}
	return headerMapValue(h.GetHeaderMap(), key)
}

// headerMapValue returns a header from header_map. Envoy sends each
// occurrence of a repeated header as its own entry there, where the headers
// map has them joined with ","; they are joined the same way here, so that
// both encodings mean the same (the last element of x-forwarded-client-cert
// is the nearest peer in either).
func headerMapValue(hm *corev3.HeaderMap, key string) string {
	v, found := "", false
	for _, hv := range hm.GetHeaders() {
		if !strings.EqualFold(hv.GetKey(), key) {
			continue
		}
		s := hv.GetValue()
		if len(hv.RawValue) > 0 {
			s = string(hv.RawValue)
		}
		if found {
			v += "," + s
		} else {
			v, found = s, true
		}
	}
	return v
}

// requestID returns an x-request-id as it can be echoed in the response:
// valid UTF-8 (a header_map raw_value is bytes, and a response holding
// invalid UTF-8 cannot be marshalled, failing the call) and at most
// maxRequestIDLen bytes, cut at a character boundary.
func requestID(v string) string {
	if len(v) > 4*maxRequestIDLen {
		v = v[:4*maxRequestIDLen] // bound the work on a huge header
	}
	v = strings.ToValidUTF8(v, "\uFFFD")
	if len(v) > maxRequestIDLen {
		i := maxRequestIDLen
		for i > 0 && !utf8.RuneStart(v[i]) {
			i--
		}
		v = v[:i]
	}
	return v
}

// traceID returns the trace id of a W3C traceparent header
// ("00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>"), or "" when the
// header is absent or malformed.
func traceID(tp string) string {
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return ""
	}
	id := tp[3:35]
	allZero := true
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ""
		}
		if c != '0' {
			allZero = false
		}
	}
	if allZero {
		return ""
	}
	return id
}

// xfccURI returns the URI= value of the last element of an
// x-forwarded-client-cert header: the certificate of the peer closest to
// us. Values may be quoted and contain ',' and ';'.
func xfccURI(xfcc string) string {
	if xfcc == "" {
		return ""
	}
	// Find the start of the last element, skipping commas inside quotes.
	start, inQuote := 0, false
	for i := 0; i < len(xfcc); i++ {
		switch xfcc[i] {
		case '\\':
			i++
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				start = i + 1
			}
		}
	}
	elem := xfcc[start:]
	for len(elem) > 0 {
		var pair string
		pair, elem = cutUnquoted(elem, ';')
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if ok && strings.EqualFold(k, "URI") {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

func cutUnquoted(s string, sep byte) (before, after string) {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			inQuote = !inQuote
		case sep:
			if !inQuote {
				return s[:i], s[i+1:]
			}
		}
	}
	return s, ""
}

// headerCarrier reads W3C trace context from the request's headers.
type headerCarrier struct {
	h *authv3.AttributeContext_HttpRequest
}

func (c headerCarrier) Get(key string) string {
	if c.h == nil {
		return ""
	}
	return header(c.h, strings.ToLower(key))
}
func (c headerCarrier) Set(string, string) {}
func (c headerCarrier) Keys() []string     { return nil }
