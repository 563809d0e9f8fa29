package authz

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/rules"
)

// The wire decoder is held to the reference (reference_test.go: the whole
// CheckRequest decoded by protobuf, then mapped) on what it gives a
// decision: the rules.Request, the request id and trace id, the trace
// context a tracer reads, and whether the request is invalid. The one
// difference allowed is what comes of the fields it does not read: the
// reference rejects the whole request for invalid UTF-8 or malformed data
// anywhere, the wire decoder only in what it reads. So the wire decoder
// must agree exactly with the reference run on the request with every
// unread field removed (readOnly), and with the reference on the request
// as sent wherever the reference does not reject it.

// readPaths are the fields a decision reads, by their proto names, and
// what readOnly keeps of each. This is the specification, written apart
// from the decoder's field numbers.
var readPaths = map[string]keepAs{
	"attributes":                                               keepWalk,
	"attributes.source":                                        keepWalk,
	"attributes.source.principal":                              keepValue,
	"attributes.destination":                                   keepWalk,
	"attributes.destination.service":                           keepValue,
	"attributes.destination.address":                           keepWalk,
	"attributes.destination.address.socket_address":            keepWalk,
	"attributes.destination.address.socket_address.port_value": keepValue,
	// The other members of the oneofs: only their presence matters.
	"attributes.destination.address.socket_address.named_port": keepEmpty,
	"attributes.destination.address.pipe":                      keepEmpty,
	"attributes.destination.address.envoy_internal_address":    keepEmpty,
	"attributes.request":                                       keepWalk,
	"attributes.request.http":                                  keepWalk,
	"attributes.request.http.method":                           keepValue,
	"attributes.request.http.host":                             keepValue,
	"attributes.request.http.path":                             keepValue,
	"attributes.request.http.scheme":                           keepValue,
	"attributes.request.http.headers":                          keepHeaderEntry,
	"attributes.request.http.header_map":                       keepWalk,
	"attributes.request.http.header_map.headers":               keepHeaderValue,
	"attributes.tls_session":                                   keepWalk,
	"attributes.tls_session.sni":                               keepValue,
}

// readHeaders are the request headers a decision reads.
var readHeaders = []string{"x-request-id", "traceparent", "tracestate", "x-forwarded-client-cert", ":authority", ":path"}

type keepAs int

const (
	keepValue       keepAs = iota + 1 // the field as it is
	keepWalk                          // a message, with only its fields read
	keepEmpty                         // present, but empty
	keepHeaderEntry                   // a headers map entry, when its key is a header read
	keepHeaderValue                   // a header_map entry, when its key is one, in any case
)

// readOnly returns the wire bytes of a message of type md with every field
// that is not read removed. It fails where the bytes cannot be walked.
func readOnly(b []byte, md protoreflect.MessageDescriptor, path string) ([]byte, error) {
	var out []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		if num > protowire.MaxValidNumber {
			return nil, errFieldNumber
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		raw, val := b[:n+m], b[n:n+m]
		b = b[n+m:]
		fd := md.Fields().ByNumber(num)
		if fd == nil || typ != wireType(fd) {
			continue // unknown to protobuf
		}
		p := string(fd.Name())
		if path != "" {
			p = path + "." + p
		}
		switch readPaths[p] {
		case keepValue:
			out = append(out, raw...)
		case keepWalk:
			v, _ := protowire.ConsumeBytes(val)
			sub, err := readOnly(v, fd.Message(), p)
			if err != nil {
				return nil, err
			}
			out = protowire.AppendTag(out, num, typ)
			out = protowire.AppendBytes(out, sub)
		case keepEmpty:
			out = protowire.AppendTag(out, num, typ)
			out = protowire.AppendBytes(out, nil)
		case keepHeaderEntry, keepHeaderValue:
			v, _ := protowire.ConsumeBytes(val)
			key, err := lastString(v, 1)
			if err != nil {
				return nil, err
			}
			for _, h := range readHeaders {
				if key == h || readPaths[p] == keepHeaderValue && strings.EqualFold(key, h) {
					out = append(out, raw...)
					break
				}
			}
		}
	}
	return out, nil
}

// wireType is the wire type protobuf expects for fd.
func wireType(fd protoreflect.FieldDescriptor) protowire.Type {
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	}
	return protowire.VarintType
}

// lastString returns the last length-delimited field num of a message.
func lastString(b []byte, num protowire.Number) (string, error) {
	s := ""
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return "", protowire.ParseError(l)
		}
		if n > protowire.MaxValidNumber {
			return "", errFieldNumber
		}
		m := protowire.ConsumeFieldValue(n, typ, b[l:])
		if m < 0 {
			return "", protowire.ParseError(m)
		}
		if n == num && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[l : l+m])
			s = string(v)
		}
		b = b[l+m:]
	}
	return s, nil
}

// decoded is what a decision is given of a request, by either path.
type decoded struct {
	req                     rules.Request
	meta                    meta
	invalid                 bool
	traceparent, tracestate string
}

// viaReference decodes and maps b as the handler did before.
func viaReference(b []byte, trustXFCC bool) decoded {
	cr, invalid := refDecode(b)
	return referenceMap(cr, invalid, trustXFCC)
}

func referenceMap(cr *authv3.CheckRequest, invalid string, trustXFCC bool) decoded {
	req, m, bad := refMapRequest(cr, trustXFCC)
	c := refCarrier{cr.GetAttributes().GetRequest().GetHttp()}
	return decoded{req: req, meta: m, invalid: invalid != "" || bad != "", traceparent: c.Get("traceparent"), tracestate: c.Get("tracestate")}
}

// viaWireDecoder decodes and maps b as the handler does. It scribbles over
// b once decoded, so that anything still pointing into it shows.
func viaWireDecoder(b []byte, trustXFCC bool) (decoded, *checkFrame) {
	b = bytes.Clone(b)
	f := new(checkFrame)
	decodeCheck(b, f)
	for i := range b {
		b[i] = 0xAA
	}
	req, m, bad := mapRequest(&f.in, trustXFCC)
	c := traceCarrier{f.in.h.traceparent, f.in.h.tracestate}
	return decoded{req: req, meta: m, invalid: f.in.invalid != "" || bad != "", traceparent: c.Get("traceparent"), tracestate: c.Get("tracestate")}, f
}

// checkWire holds the wire decoder to the reference on the bytes b.
func checkWire(t testing.TB, b []byte) {
	t.Helper()
	desc := (&authv3.CheckRequest{}).ProtoReflect().Descriptor()
	filtered, ferr := readOnly(b, desc, "")
	for _, trust := range []bool{false, true} {
		got, f := viaWireDecoder(b, trust)
		if ferr != nil {
			// Bytes the decoder walks are malformed: it must say so.
			if !strings.HasPrefix(f.in.invalid, "malformed CheckRequest") || got != (decoded{invalid: true}) {
				t.Fatalf("bytes %q are malformed (%v), the wire decoder gives %+v (%s)", b, ferr, got, f.in.invalid)
			}
			if ref := viaReference(b, trust); ref != got {
				t.Fatalf("bytes %q: malformed, the reference gives %+v, the wire decoder %+v", b, ref, got)
			}
			continue
		}
		if ref := viaReference(filtered, trust); got != ref {
			t.Fatalf("bytes %q (trustXFCC %v):\n wire decoder %+v (%s)\n    reference %+v on the fields read, %q", b, trust, got, f.in.invalid, ref, filtered)
		}
		if old := viaReference(b, trust); old != got {
			// Only the reference rejecting what the decoder does not read.
			if !old.invalid || bytes.Equal(filtered, b) {
				t.Fatalf("bytes %q (trustXFCC %v):\n wire decoder %+v\n    reference %+v", b, trust, got, old)
			}
		}
	}
}

// checkProto holds Server.Check's mapping of a proto, and the wire decoder
// on its encoding, to the reference.
func checkProto(t testing.TB, cr *authv3.CheckRequest) {
	t.Helper()
	for _, trust := range []bool{false, true} {
		want, wm, winvalid := refMapRequest(cr, trust)
		in := inputFromProto(cr)
		got, gm, ginvalid := mapRequest(&in, trust)
		if got != want || gm != wm || ginvalid != winvalid {
			t.Fatalf("proto %v (trustXFCC %v):\n mapped %+v %+v %q\n    was %+v %+v %q", cr, trust, got, gm, ginvalid, want, wm, winvalid)
		}
		rc, ic := refCarrier{cr.GetAttributes().GetRequest().GetHttp()}, traceCarrier{in.h.traceparent, in.h.tracestate}
		for _, k := range []string{"traceparent", "tracestate", "Traceparent"} {
			if rc.Get(k) != ic.Get(k) {
				t.Fatalf("proto %v: trace context %s is %q, was %q", cr, k, ic.Get(k), rc.Get(k))
			}
		}
	}
	if b, err := proto.Marshal(cr); err == nil {
		checkWire(t, b)
	}
}

// TestFieldNumbers holds the decoder's field numbers to the generated
// descriptors.
func TestFieldNumbers(t *testing.T) {
	type msg = protoreflect.MessageDescriptor
	var (
		check   = (&authv3.CheckRequest{}).ProtoReflect().Descriptor()
		attrs   = (&authv3.AttributeContext{}).ProtoReflect().Descriptor()
		peer    = (&authv3.AttributeContext_Peer{}).ProtoReflect().Descriptor()
		request = (&authv3.AttributeContext_Request{}).ProtoReflect().Descriptor()
		http    = (&authv3.AttributeContext_HttpRequest{}).ProtoReflect().Descriptor()
		tls     = (&authv3.AttributeContext_TLSSession{}).ProtoReflect().Descriptor()
		addr    = (&corev3.Address{}).ProtoReflect().Descriptor()
		socket  = (&corev3.SocketAddress{}).ProtoReflect().Descriptor()
		hm      = (&corev3.HeaderMap{}).ProtoReflect().Descriptor()
		hv      = (&corev3.HeaderValue{}).ProtoReflect().Descriptor()
		resp    = (&authv3.CheckResponse{}).ProtoReflect().Descriptor()
		denied  = (&authv3.DeniedHttpResponse{}).ProtoReflect().Descriptor()
	)
	for _, tc := range []struct {
		md   msg
		name protoreflect.Name
		num  protowire.Number
	}{
		{check, "attributes", fieldCheckAttributes},
		{attrs, "source", fieldAttrSource},
		{attrs, "destination", fieldAttrDestination},
		{attrs, "request", fieldAttrRequest},
		{attrs, "tls_session", fieldAttrTLSSession},
		{peer, "address", fieldPeerAddress},
		{peer, "service", fieldPeerService},
		{peer, "principal", fieldPeerPrincipal},
		{addr, "socket_address", fieldAddrSocket},
		{addr, "pipe", fieldAddrPipe},
		{addr, "envoy_internal_address", fieldAddrInternal},
		{socket, "port_value", fieldSocketPortValue},
		{socket, "named_port", fieldSocketNamedPort},
		{request, "http", fieldRequestHTTP},
		{http, "method", fieldHTTPMethod},
		{http, "headers", fieldHTTPHeaders},
		{http, "path", fieldHTTPPath},
		{http, "host", fieldHTTPHost},
		{http, "scheme", fieldHTTPScheme},
		{http, "header_map", fieldHTTPHeaderMap},
		{tls, "sni", fieldTLSSNI},
		{hm, "headers", fieldHeaderMapHeaders},
		{hv, "key", fieldHeaderKey},
		{hv, "value", fieldHeaderValue},
		{hv, "raw_value", fieldHeaderRawValue},
		{http.Fields().ByName("headers").MapKey().ContainingMessage(), "key", fieldMapKey},
		{http.Fields().ByName("headers").MapKey().ContainingMessage(), "value", fieldMapValue},
		{resp, "denied_response", fieldRespDenied},
		{resp, "dynamic_metadata", fieldRespDynamicMetadata},
		{denied, "body", fieldDeniedBody},
	} {
		fd := tc.md.Fields().ByName(tc.name)
		if fd == nil || fd.Number() != tc.num {
			t.Errorf("%s.%s: field %v, the decoder says %d", tc.md.FullName(), tc.name, fd, tc.num)
		}
	}
	// The oneofs the decoder treats as such.
	if o := addr.Fields().ByName("pipe").ContainingOneof(); o == nil || o.Fields().Len() != 3 {
		t.Errorf("Address.address is not the oneof of three the decoder knows: %v", o)
	}
	if o := socket.Fields().ByName("named_port").ContainingOneof(); o == nil || o.Fields().Len() != 2 {
		t.Errorf("SocketAddress.port_specifier is not the oneof of two the decoder knows: %v", o)
	}
	// Every header read has a name the decoder knows.
	for _, h := range readHeaders {
		if i := headerIndex(h); i < 0 || headerName(i) != h {
			t.Errorf("header %q: index %d", h, i)
		}
	}
	if len(readHeaders) != numHeaders {
		t.Errorf("the decoder reads %d headers, the specification %d", numHeaders, len(readHeaders))
	}
}

// TestSchemeFold: strings.ToLower(s) is "https" or "http" exactly when s is
// one of them in another ASCII case, which mapRequest relies on.
func TestSchemeFold(t *testing.T) {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if l := unicode.ToLower(r); r >= 0x80 && strings.ContainsRune("htps", l) {
			t.Errorf("%U lower-cases to %q", r, l)
		}
	}
	for _, s := range []string{"https", "HTTPS", "Https", "http", "HTTP", "hTtP", "httpſ", "ftp", "", "https ", "httpss"} {
		for _, w := range []string{"https", "http"} {
			if got, want := asciiEqualFold(s, w), strings.ToLower(s) == w; got != want {
				t.Errorf("asciiEqualFold(%q, %q) = %v, want %v", s, w, got, want)
			}
		}
	}
}

// TestHeaderIndexFold: a header_map key is matched as strings.EqualFold
// matches it, Unicode folding included.
func TestHeaderIndexFold(t *testing.T) {
	cases := []struct {
		key  string
		want int
	}{
		{"x-request-id", hRequestID},
		{"X-Request-ID", hRequestID},
		{"x-reque\u017Ft-id", hRequestID}, // ſ folds to s
		{"TRACEPARENT", hTraceparent},
		{"tracestate", hTracestate},
		{"X-Forwarded-Client-Cert", hXFCC},
		{":AUTHORITY", hAuthority},
		{":path", hPath},
		{"x-request-id ", -1},
		{"x-request", -1},
		{"", -1},
		{"x-request-id\xff", -1},
		{strings.Repeat("a", 100), -1},
		{"x-forwarded-client-cert-and-more", -1},
	}
	for _, tc := range cases {
		if got := headerIndexFold(tc.key); got != tc.want {
			t.Errorf("headerIndexFold(%q) = %d, want %d", tc.key, got, tc.want)
		}
	}
}

// realRequests are CheckRequests as the gateway sends them, in the shapes
// the tests know, to compare and to seed the fuzzer with.
func realRequests() []*authv3.CheckRequest {
	const p = "spiffe://cluster.local/ns/payments/sa/checkout"
	build := func(h checkreq.HTTP, edits ...func(*authv3.CheckRequest)) *authv3.CheckRequest {
		cr, err := h.Build()
		if err != nil {
			panic(err)
		}
		for _, e := range edits {
			e(cr)
		}
		return cr
	}
	http := func(cr *authv3.CheckRequest) *authv3.AttributeContext_HttpRequest { return cr.Attributes.Request.Http }
	toHeaderMap := func(cr *authv3.CheckRequest) {
		h := http(cr)
		h.HeaderMap = &corev3.HeaderMap{}
		for _, k := range []string{":authority", ":path", "x-request-id", "traceparent", "x-forwarded-client-cert", "user-agent"} {
			if v, ok := h.Headers[k]; ok {
				h.HeaderMap.Headers = append(h.HeaderMap.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
			}
		}
		h.Headers = nil
	}
	typical := checkreq.HTTP{Principal: p, Method: "POST", URL: "https://api.stripe.com/v1/charges", RequestID: "3f1c0a52-7d1e-4d3b-9a57-2b8f6c1e4a90",
		Headers: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "vendor=1"}}
	xfcc := checkreq.HTTP{URL: "https://api.stripe.com/v1/charges", Headers: map[string]string{
		"x-forwarded-client-cert": `By=spiffe://cluster.local/ns/istio-system/sa/gw;Hash=1;Subject="";URI=` + p}}
	return []*authv3.CheckRequest{
		build(typical),
		build(typical, toHeaderMap),
		build(typical, func(cr *authv3.CheckRequest) { http(cr).Host, http(cr).Path = "", "" }),
		build(typical, func(cr *authv3.CheckRequest) { http(cr).Host, http(cr).Path = "", "" }, toHeaderMap),
		build(typical, toHeaderMap, func(cr *authv3.CheckRequest) {
			http(cr).HeaderMap.Headers = append(http(cr).HeaderMap.Headers, &corev3.HeaderValue{Key: "X-Request-Id", Value: "second"})
		}),
		build(xfcc),
		build(xfcc, toHeaderMap),
		build(checkreq.HTTP{Principal: p, Method: "GET", URL: "http://example.com:8080/a/../b?q=%2F"}),
		build(checkreq.HTTP{Principal: p, URL: "https://api.stripe.com/"}, func(cr *authv3.CheckRequest) { http(cr).Scheme = "" }),
		build(checkreq.HTTP{Principal: p, Method: "get", URL: "HTTPS://API.stripe.com/x"}),
		build(checkreq.HTTP{Principal: p, URL: "https://api.stripe.com/"}, func(cr *authv3.CheckRequest) {
			cr.Attributes.Destination.Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_NamedPort{NamedPort: "https"}
		}),
		build(checkreq.HTTP{Principal: p, URL: "https://api.stripe.com/"}, func(cr *authv3.CheckRequest) {
			cr.Attributes.Destination.Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/p"}}}
		}),
		checkreq.SNI(p, "files.stripe.com", 443),
		checkreq.SNI(p, "files.stripe.com", 8443),
		{Attributes: &authv3.AttributeContext{Destination: &authv3.AttributeContext_Peer{Service: "files.stripe.com"}}},
		{Attributes: &authv3.AttributeContext{ContextExtensions: map[string]string{"a": "b"}}},
		{},
	}
}

// TestDecodeMatchesReference holds the wire decoder to the reference on
// real requests, on the FuzzCheck corpus, and on edits of real requests'
// bytes that the decoder must take as protobuf does.
func TestDecodeMatchesReference(t *testing.T) {
	for _, cr := range realRequests() {
		checkProto(t, cr)
	}
	for _, b := range fuzzCheckCorpus(t) {
		checkWire(t, b)
	}
	typical, err := proto.Marshal(realRequests()[0])
	if err != nil {
		t.Fatal(err)
	}
	attr := func(fields ...[]byte) []byte { // CheckRequest{attributes: fields}
		a := bytes.Join(fields, nil)
		return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), a)
	}
	msg := func(num protowire.Number, fields ...[]byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), bytes.Join(fields, nil))
	}
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	source := func(p string) []byte { return msg(1, str(4, p)) }
	http := func(fields ...[]byte) []byte { return msg(4, msg(2, fields...)) }
	entry := func(k, v string) []byte { return msg(3, str(1, k), str(2, v)) }
	port := func(v uint64) []byte { return msg(2, msg(1, msg(1, varint(3, v)))) }
	const p = "spiffe://cluster.local/ns/payments/sa/checkout"
	cases := map[string][]byte{
		"merged_twice":              append(bytes.Clone(typical), typical...),
		"principal_last_wins":       attr(source("spiffe://a/b"), source(p)),
		"attributes_merged":         append(attr(source(p)), attr(http(str(2, "GET"), str(5, "a.test"), str(4, "/")))...),
		"map_key_last_wins":         attr(source(p), http(entry("x-request-id", "a"), entry("x-request-id", "b"))),
		"map_entry_key_repeated":    attr(source(p), http(msg(3, str(1, "user-agent"), str(2, "v"), str(1, "x-request-id")))),
		"map_entry_value_only":      attr(source(p), http(msg(3, str(2, "v")))),
		"map_wins_over_header_map":  attr(source(p), http(entry("x-request-id", ""), msg(13, msg(1, str(1, "x-request-id"), str(2, "hm"))))),
		"header_map_joined":         attr(source(p), http(msg(13, msg(1, str(1, "x-request-id"), str(3, "a")), msg(1, str(1, "X-REQUEST-ID"), str(2, "b"))))),
		"header_map_raw_wins":       attr(source(p), http(msg(13, msg(1, str(1, "x-request-id"), str(2, "v"), str(3, "raw"))))),
		"header_map_empty_raw":      attr(source(p), http(msg(13, msg(1, str(1, "x-request-id"), str(3, "raw"), str(2, "v"), str(3, ""))))),
		"header_map_merged":         attr(source(p), http(msg(13, msg(1, str(1, "x-request-id"), str(3, "a")))), http(msg(13, msg(1, str(1, "x-request-id"), str(3, "b"))))),
		"header_map_invalid_raw":    attr(source(p), http(msg(13, msg(1, str(1, "x-request-id"), str(3, "a\xffb"))))),
		"port_over_65535":           attr(source(p), port(65536)),
		"port_over_uint32":          attr(source(p), port(1<<32|443)),
		"port_then_named":           attr(source(p), msg(2, msg(1, msg(1, varint(3, 443), str(4, "x"))))),
		"port_then_pipe":            attr(source(p), port(443), msg(2, msg(1, msg(2)))),
		"pipe_then_socket":          attr(source(p), msg(2, msg(1, msg(2))), msg(2, msg(1, msg(1, str(2, "10.0.0.1"))))),
		"socket_merged":             attr(source(p), port(9000), msg(2, msg(1, msg(1, str(2, "10.0.0.1"))))),
		"wrong_wire_type_principal": attr(msg(1, varint(4, 7)), http(str(2, "GET"))),
		"wrong_wire_type_port":      attr(source(p), msg(2, msg(1, msg(1, str(3, "443"))))),
		"wrong_wire_type_attrs":     varint(1, 5),
		"unknown_fields":            append(attr(varint(99, 1), source(p), msg(100)), varint(77, 3)...),
		"unknown_group":             append(attr(source(p)), 0x9b, 0x06, 0x08, 0x01, 0x9c, 0x06),
		"empty_source":              attr(msg(1)),
		"empty_request":             attr(msg(4)),
		"only_context_extensions":   attr(msg(10, str(1, "k"), str(2, "v"))),
		"invalid_utf8_unread":       append(bytes.Clone(typical), attr(msg(10, str(1, "k\xff")))...),
		"invalid_utf8_read":         append(bytes.Clone(typical), attr(source("spiffe://a/\xff"))...),
		"malformed_unread":          append(bytes.Clone(typical), attr(msg(11, []byte{0x0a, 0x7f}))...),
		"malformed_read":            append(bytes.Clone(typical), attr(msg(1, []byte{0x22, 0x7f}))...),
		"malformed_and_invalid":     append(attr(source("\xff")), attr(msg(11, []byte{0x0a, 0x7f}))...),
		"field_number_too_large":    protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3),
		"end_group_at_top":          {0x0c},
		"truncated":                 typical[:len(typical)-3],
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) { checkWire(t, b) })
	}
}

// fuzzCheckCorpus returns the wire bytes of FuzzCheck's seed corpus.
func fuzzCheckCorpus(t testing.TB) [][]byte {
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzCheck", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no FuzzCheck corpus: %v", err)
	}
	var out [][]byte
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := parseCorpusFile(data)
		if err != nil || len(v) != 7 {
			t.Fatalf("%s: %v (%d values)", name, err, len(v))
		}
		mode := uint8(v[0][0])
		if mode&fuzzRaw != 0 {
			out = append(out, []byte(v[6]))
			continue
		}
		cr := fuzzRequest(mode, v[1], v[2], v[3], v[4], v[5], []byte(v[6]))
		if b, err := proto.Marshal(cr); err == nil {
			out = append(out, b)
		}
	}
	return out
}

// parseCorpusFile reads the values of a "go test fuzz v1" file of bytes,
// uint8, string and []byte values, each as a string.
func parseCorpusFile(data []byte) ([]string, error) {
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) == 0 || lines[0] != "go test fuzz v1" {
		return nil, strconv.ErrSyntax
	}
	var out []string
	for _, l := range lines[1:] {
		typ, lit, ok := strings.Cut(l, "(")
		if !ok || !strings.HasSuffix(lit, ")") {
			return nil, strconv.ErrSyntax
		}
		lit = lit[:len(lit)-1]
		switch typ {
		case "byte", "uint8":
			if strings.HasPrefix(lit, "'") {
				r, _, _, err := strconv.UnquoteChar(lit[1:len(lit)-1], '\'')
				if err != nil {
					return nil, err
				}
				out = append(out, string([]byte{byte(r)}))
				continue
			}
			n, err := strconv.ParseUint(lit, 0, 8)
			if err != nil {
				return nil, err
			}
			out = append(out, string([]byte{byte(n)}))
		case "string", "[]byte":
			s, err := strconv.Unquote(lit)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		default:
			return nil, strconv.ErrSyntax
		}
	}
	return out, nil
}

// FuzzDecodeCheck holds the wire decoder to the reference on any bytes:
// as they come, and appended to a real request (protobuf merges the two,
// so that the fuzzer's fields land in a request that is otherwise valid).
func FuzzDecodeCheck(f *testing.F) {
	var real [][]byte
	for _, cr := range realRequests() {
		b, err := proto.Marshal(cr)
		if err != nil {
			f.Fatal(err)
		}
		real = append(real, b)
		f.Add(b)
	}
	for _, b := range fuzzCheckCorpus(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkWire(t, b)
		if len(b) > 0 {
			base := real[int(b[0])%len(real)]
			checkWire(t, append(bytes.Clone(base), b[1:]...))
		}
	})
}
