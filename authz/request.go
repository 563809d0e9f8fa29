package authz

import (
	"strings"
	"unicode/utf8"

	"github.com/egress-authz/egress-authz/rules"
)

// meta is what a Check says about the request besides what rules decide
// on: identifiers for the decision log and the response.
type meta struct {
	RequestID string // from x-request-id; empty when the request had none
	TraceID   string // from a W3C traceparent header; empty when absent or malformed
}

// mapRequest translates what a Check holds into the rules' Request. It is a
// pure function of its input: the whole of Envoy's shape is handled here,
// whichever transport filled in. invalid is non-empty when the request is
// unusable (the decision is then ReasonInvalidRequest) and says why.
func mapRequest(in *input, trustXFCC bool) (req rules.Request, m meta, invalid string) {
	if !in.attrs {
		return req, m, "no attributes"
	}
	// Known before anything can be found invalid: a TLS-passthrough deny
	// must have no HTTP part, whatever the reason.
	req.SNI = !in.http
	if in.http {
		m.RequestID = requestID(in.h.requestID)
		m.TraceID = traceID(in.h.traceparent)
	}

	req.Principal = in.principal
	if req.Principal == "" && trustXFCC && in.http {
		req.Principal = xfccURI(in.h.xfcc)
	}
	if !utf8.ValidString(req.Principal) {
		return req, m, "principal is not valid UTF-8"
	}
	if in.socketPort > 65535 {
		// The proto field is a uint32; no socket has such a port.
		return req, m, "destination port is over 65535"
	}
	socketPort := int(in.socketPort)

	if !in.http {
		// TLS passthrough through Envoy's network ext_authz filter: one
		// Check per connection, with the SNI as the only name.
		req.Host = in.sni
		if req.Host == "" {
			req.Host = in.service
		}
		req.Port = socketPort
		if !utf8.ValidString(req.Host) {
			return req, m, "SNI is not valid UTF-8"
		}
		return req, m, ""
	}

	if !rules.IsToken(in.method) {
		return req, m, "method is not an HTTP token"
	}
	req.Method = in.method
	req.Host = in.host
	if req.Host == "" {
		req.Host = in.h.authority
	}
	// As strings.ToLower(scheme) == "https" would, without allocating: no
	// letter outside ASCII lower-cases to one of "https" (TestSchemeFold).
	switch {
	case asciiEqualFold(in.scheme, "https"):
		req.Port = 443
	case asciiEqualFold(in.scheme, "http"):
		req.Port = 80
	default:
		req.Port = socketPort
	}
	req.Path = in.path
	if req.Path == "" {
		req.Path = in.h.path
	}
	if !utf8.ValidString(req.Host) || !utf8.ValidString(req.Path) {
		return req, m, "host or path is not valid UTF-8"
	}
	return req, m, ""
}

// asciiEqualFold reports whether s is lower, a lower-case ASCII word, but
// for the case of its ASCII letters.
func asciiEqualFold(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
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
// us.
func xfccURI(xfcc string) string { return xfccField(xfcc, "URI") }

// xfccField returns the value of key (case-insensitive) in the last
// element of an x-forwarded-client-cert header, unquoted. Values may be
// quoted and contain ',' and ';'.
func xfccField(xfcc, key string) string {
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
		if ok && strings.EqualFold(k, key) {
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
