package authz

import (
	"fmt"
	"strings"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/egress-authz/egress-authz/rules"
)

// This file keeps the Check path as it was before the handler decoded only
// what it reads: proto.Unmarshal of the whole CheckRequest, with invalid
// UTF-8 anywhere replaced and marked, then the mapping of the proto. It is
// the reference the wire decoder is held to (TestDecodeMatchesReference,
// FuzzDecodeCheck), and it is not used by the product.

// refDecode decodes b as the codec did: strictly, or, when b holds strings
// that are not valid UTF-8, with those replaced by U+FFFD and the request
// marked invalid; bytes that are no CheckRequest give an empty one.
func refDecode(b []byte) (cr *authv3.CheckRequest, invalid string) {
	cr = new(authv3.CheckRequest)
	err := proto.Unmarshal(b, cr)
	if err == nil {
		return cr, ""
	}
	cr.Reset()
	clean, bad, serr := sanitizeUTF8(b, cr.ProtoReflect().Descriptor(), 0)
	if serr == nil && bad {
		if proto.Unmarshal(clean, cr) == nil {
			return cr, "a string field is not valid UTF-8"
		}
		cr.Reset()
	}
	return cr, "malformed CheckRequest: " + err.Error()
}

const maxSanitizeDepth = 64

// sanitizeUTF8 rewrites the wire encoding of a message of type md, replacing
// invalid UTF-8 in string fields (at any depth, map entries included) with
// U+FFFD. It reports whether anything was replaced.
func sanitizeUTF8(b []byte, md protoreflect.MessageDescriptor, depth int) ([]byte, bool, error) {
	if depth > maxSanitizeDepth {
		return nil, false, fmt.Errorf("message nested too deep")
	}
	out := make([]byte, 0, len(b))
	bad := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false, protowire.ParseError(n)
		}
		fieldLen := protowire.ConsumeFieldValue(num, typ, b[n:])
		if fieldLen < 0 {
			return nil, false, protowire.ParseError(fieldLen)
		}
		field := b[:n+fieldLen]
		b = b[n+fieldLen:]
		fd := md.Fields().ByNumber(num)
		if fd == nil || typ != protowire.BytesType {
			out = append(out, field...)
			continue
		}
		v, _ := protowire.ConsumeBytes(field[n:])
		switch fd.Kind() {
		case protoreflect.StringKind:
			if !utf8.Valid(v) {
				bad = true
				v = []byte(strings.ToValidUTF8(string(v), "\uFFFD"))
			}
		case protoreflect.MessageKind:
			sub, subBad, err := sanitizeUTF8(v, fd.Message(), depth+1)
			if err != nil {
				return nil, false, err
			}
			bad = bad || subBad
			v = sub
		default:
			out = append(out, field...)
			continue
		}
		out = protowire.AppendTag(out, num, typ)
		out = protowire.AppendBytes(out, v)
	}
	return out, bad, nil
}

// refMapRequest is mapRequest as it was, on the proto.
func refMapRequest(cr *authv3.CheckRequest, trustXFCC bool) (req rules.Request, m meta, invalid string) {
	a := cr.GetAttributes()
	if a == nil || (a.Source == nil && a.Destination == nil && a.Request == nil && a.TlsSession == nil) {
		return req, m, "no attributes"
	}
	http := a.GetRequest().GetHttp()
	req.SNI = http == nil
	if http != nil {
		m.RequestID = requestID(refHeader(http, headerRequestID))
		m.TraceID = traceID(refHeader(http, headerTraceparent))
	}

	req.Principal = a.GetSource().GetPrincipal()
	if req.Principal == "" && trustXFCC && http != nil {
		req.Principal = xfccURI(refHeader(http, headerXFCC))
	}
	if !utf8.ValidString(req.Principal) {
		return req, m, "principal is not valid UTF-8"
	}
	socketPort := int(a.GetDestination().GetAddress().GetSocketAddress().GetPortValue())
	if socketPort > 65535 {
		return req, m, "destination port is over 65535"
	}

	if http == nil {
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
		req.Host = refHeader(http, headerAuthority)
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
		req.Path = refHeader(http, ":path")
	}
	if !utf8.ValidString(req.Host) || !utf8.ValidString(req.Path) {
		return req, m, "host or path is not valid UTF-8"
	}
	return req, m, ""
}

// refCarrier is the trace-context carrier as it was, on the proto.
type refCarrier struct {
	h *authv3.AttributeContext_HttpRequest
}

func (c refCarrier) Get(key string) string {
	if c.h == nil {
		return ""
	}
	return refHeader(c.h, strings.ToLower(key))
}

// refHeader is header as it was.
func refHeader(h *authv3.AttributeContext_HttpRequest, key string) string {
	if v, ok := h.Headers[key]; ok {
		return v
	}
	v, found := "", false
	for _, hv := range h.GetHeaderMap().GetHeaders() {
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
