package authz

import (
	"strings"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// input is what a decision reads of a Check: the few fields of Envoy's
// AttributeContext that mapRequest looks at, and nothing else. The gRPC
// handler fills it straight from the wire bytes (decodeCheck), Server.Check
// from a proto (inputFromProto); another transport fills it from what it
// receives. mapRequest, one function for all of them, gives the fields
// their meaning, so that every transport decides alike.
type input struct {
	// attrs is set when attributes has a source, destination, request or
	// tls_session (an empty one counts): without, the request is invalid.
	attrs bool
	// http is set when attributes.request.http is present; without it the
	// Check is a TLS-passthrough connection.
	http bool

	principal  string // attributes.source.principal
	socketPort uint32 // attributes.destination.address.socket_address.port_value
	service    string // attributes.destination.service
	sni        string // attributes.tls_session.sni

	// attributes.request.http
	method, host, path, scheme string
	h                          headers

	// invalid, when not empty, says why the transport found the request
	// unusable (bytes that are no CheckRequest, a string that is not UTF-8);
	// it is then denied with reason invalid-request.
	invalid string

	// spare is room, after the strings above, for what the Check makes
	// later (a generated request id, the encoded response), so that they
	// need no allocation of their own. Bytes in it are appended once and
	// never changed afterwards: strings may point into them. nil when the
	// transport has none to give.
	spare []byte
}

// headers are the request headers a decision reads, each as header()
// resolves it: from the headers map, else from header_map, repeated
// entries joined with ",".
type headers struct {
	requestID   string // x-request-id
	traceparent string // W3C trace context
	tracestate  string
	xfcc        string // x-forwarded-client-cert; read only when principal is empty
	authority   string // :authority; read only when host is empty
	path        string // :path; read only when path is empty
}

// Header names read from the request. Envoy lower-cases header keys.
const (
	headerRequestID   = "x-request-id"
	headerTraceparent = "traceparent"
	headerTracestate  = "tracestate"
	headerXFCC        = "x-forwarded-client-cert"
	headerAuthority   = ":authority"
	headerPath        = ":path"
	maxRequestIDLen   = 128
)

// Indexes of the headers read, in the order of headerName.
const (
	hRequestID = iota
	hTraceparent
	hTracestate
	hXFCC
	hAuthority
	hPath
	numHeaders
)

// headerName is the name of header i.
func headerName(i int) string {
	switch i {
	case hRequestID:
		return headerRequestID
	case hTraceparent:
		return headerTraceparent
	case hTracestate:
		return headerTracestate
	case hXFCC:
		return headerXFCC
	case hAuthority:
		return headerAuthority
	case hPath:
		return headerPath
	}
	return ""
}

// headerIndex returns the index of the header named key (exactly, as in
// the headers map), or -1 when it is not one that is read.
func headerIndex(key string) int {
	switch key {
	case headerRequestID:
		return hRequestID
	case headerTraceparent:
		return hTraceparent
	case headerTracestate:
		return hTracestate
	case headerXFCC:
		return hXFCC
	case headerAuthority:
		return hAuthority
	case headerPath:
		return hPath
	}
	return -1
}

// headerIndexFold is headerIndex for a header_map key, which is compared
// case-insensitively (strings.EqualFold, as Envoy's header names are).
func headerIndexFold(key string) int {
	var lower [len(headerXFCC)]byte // the longest name read
	if len(key) <= len(lower) {
		ascii := true
		for i := 0; i < len(key); i++ {
			c := key[i]
			if c >= 0x80 {
				ascii = false
				break
			}
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			lower[i] = c
		}
		if ascii {
			return headerIndex(string(lower[:len(key)]))
		}
	} else if isASCII(key) {
		return -1
	}
	// Unicode folding maps some letters outside ASCII onto ASCII ones
	// (U+017F to s): the slow path keeps strings.EqualFold's meaning.
	for i := range numHeaders {
		if strings.EqualFold(key, headerName(i)) {
			return i
		}
	}
	return -1
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// set stores header i's value.
func (h *headers) set(i int, v string) {
	switch i {
	case hRequestID:
		h.requestID = v
	case hTraceparent:
		h.traceparent = v
	case hTracestate:
		h.tracestate = v
	case hXFCC:
		h.xfcc = v
	case hAuthority:
		h.authority = v
	case hPath:
		h.path = v
	}
}

// inputFromProto returns the input a proto CheckRequest holds. Its strings
// are the proto's: nothing is copied.
func inputFromProto(cr *authv3.CheckRequest) input {
	var in input
	a := cr.GetAttributes()
	if a == nil || (a.Source == nil && a.Destination == nil && a.Request == nil && a.TlsSession == nil) {
		return in
	}
	in.attrs = true
	in.principal = a.GetSource().GetPrincipal()
	in.socketPort = a.GetDestination().GetAddress().GetSocketAddress().GetPortValue()
	in.service = a.GetDestination().GetService()
	in.sni = a.GetTlsSession().GetSni()
	http := a.GetRequest().GetHttp()
	if http == nil {
		return in
	}
	in.http = true
	in.method, in.host, in.path, in.scheme = http.Method, http.Host, http.Path, http.Scheme
	in.h.requestID = header(http, headerRequestID)
	in.h.traceparent = header(http, headerTraceparent)
	in.h.tracestate = header(http, headerTracestate)
	// The fallbacks only when they can be used (see headers).
	if in.principal == "" {
		in.h.xfcc = header(http, headerXFCC)
	}
	if in.host == "" {
		in.h.authority = header(http, headerAuthority)
	}
	if in.path == "" {
		in.h.path = header(http, headerPath)
	}
	return in
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

// own copies the strings of in into buf, or into one new allocation when
// they do not fit, so that in no longer points into the bytes it was
// decoded from (which gRPC reuses once the codec returns); what is left of
// buf becomes in.spare. Strings mapRequest does not read are dropped
// rather than copied (see headers), and a common method or scheme becomes
// its constant.
//
// The strings point into buf for as long as they live: buf must be memory
// that is never reused (a field of a checkFrame, allocated per call), and
// no byte of it is written again once a string covers it.
func (in *input) own(buf []byte) {
	if in.principal != "" {
		in.h.xfcc = ""
	}
	if in.host != "" {
		in.h.authority = ""
	}
	if in.path != "" {
		in.h.path = ""
	}
	method, constMethod := internMethod(in.method)
	scheme, constScheme := internScheme(in.scheme)
	if constMethod {
		in.method = ""
	}
	if constScheme {
		in.scheme = ""
	}
	fields := [...]*string{
		&in.principal, &in.service, &in.sni, &in.method, &in.host, &in.path, &in.scheme,
		&in.h.requestID, &in.h.traceparent, &in.h.tracestate, &in.h.xfcc, &in.h.authority, &in.h.path,
	}
	n := 0
	for _, f := range fields {
		n += len(*f)
	}
	arena := buf[:0]
	if n > len(buf) {
		arena = make([]byte, 0, n)
	}
	for _, f := range fields {
		if *f == "" {
			continue
		}
		start := len(arena)
		arena = append(arena, *f...)
		*f = bytesString(arena[start:])
	}
	if constMethod {
		in.method = method
	}
	if constScheme {
		in.scheme = scheme
	}
	if n > len(buf) {
		in.spare = buf[:0]
	} else {
		in.spare = buf[n:n]
	}
}

// internMethod returns the constant for a common HTTP method.
func internMethod(m string) (string, bool) {
	switch m {
	case "GET":
		return "GET", true
	case "POST":
		return "POST", true
	case "PUT":
		return "PUT", true
	case "DELETE":
		return "DELETE", true
	case "PATCH":
		return "PATCH", true
	case "HEAD":
		return "HEAD", true
	case "OPTIONS":
		return "OPTIONS", true
	case "CONNECT":
		return "CONNECT", true
	}
	return m, false
}

// internScheme returns the constant for https or http.
func internScheme(s string) (string, bool) {
	switch s {
	case "https":
		return "https", true
	case "http":
		return "http", true
	}
	return s, false
}

// bytesString returns the string whose bytes are b, without copying them.
// b must never be written again while the string lives.
func bytesString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// traceCarrier reads W3C trace context from the request's headers. It
// holds copies of them, not the input, so that the input does not escape
// when it is boxed.
type traceCarrier struct{ traceparent, tracestate string }

func (c traceCarrier) Get(key string) string {
	switch strings.ToLower(key) {
	case headerTraceparent:
		return c.traceparent
	case headerTracestate:
		return c.tracestate
	}
	return ""
}
func (c traceCarrier) Set(string, string) {}
func (c traceCarrier) Keys() []string     { return nil }
