package authz

import (
	"bytes"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/egress-authz/egress-authz/rules"
)

// encoded is a CheckResponse already in wire form; our codec sends its
// bytes as they are. It is also a proto.Message (decoding itself), so that
// a server built without ServerCodec still answers correctly, if slower.
type encoded struct {
	b []byte
	// What the codec hands gRPC, kept here so that handing it over
	// allocates nothing.
	sb mem.SliceBuffer
	bs [1]mem.Buffer
}

func (e *encoded) ProtoReflect() protoreflect.Message {
	var r authv3.CheckResponse
	_ = proto.Unmarshal(e.b, &r) // our own bytes: they always decode
	return r.ProtoReflect()
}

// bufferSlice is the codec's side of encoded.
func (e *encoded) bufferSlice() mem.BufferSlice {
	e.sb = e.b
	e.bs[0] = &e.sb
	return e.bs[:]
}

// wire encodes the response to an outcome into e, appending to spare when
// it has room. Every response is answered from bytes encoded once per rule,
// reason and rule-set version: the response is the same for every request
// so decided but for the request id, which is appended as one more
// dynamic_metadata entry (protobuf map entries may come in any order) and,
// in an HTTP deny, put into the JSON body. That saves building and
// marshalling a Struct per Check. TestWireMatchesResponse holds the two
// forms equal.
func (s *Server) wire(o *outcome, spare []byte, e *encoded) *encoded {
	t := s.responseTemplate(&o.d, o.sni)
	e.b = t.append(spare[:0], o.requestID)
	return e
}

// template is a response's constant part: status and ok_response (or the
// deny's status, headers and body around the request id), and the encoded
// dynamic_metadata entries other than request_id.
type template struct {
	key    templateKey
	prefix []byte // CheckResponse.status and, for an HTTP allow, ok_response
	// An HTTP deny's denied_response: its status and headers, and its body
	// before and after the request id. denied is false for the others.
	denied                             bool
	deniedHead, bodyPrefix, bodySuffix []byte
	entries                            []byte // Struct.fields but request_id
}

// templateKey is what, besides its rule and rule-set version, a response
// depends on.
type templateKey struct {
	reason rules.Reason
	allow  bool
	sni    bool
}

// templates holds the templates of one rule-set version: per rule, and for
// decisions no rule made. Looking one up allocates nothing (a pointer key,
// then a short list), as it is done on every Check.
type templates struct {
	version string
	noRule  templateList
	byRule  sync.Map // *rules.Rule -> *templateList
}

// templateList is a short copy-on-write list of templates, one per key:
// a rule allows, or denies, over HTTP and TLS passthrough, and a decision
// no rule made has one of the few reasons.
type templateList struct{ p atomic.Pointer[[]*template] }

func (l *templateList) find(k templateKey) *template {
	if p := l.p.Load(); p != nil {
		for _, t := range *p {
			if t.key == k {
				return t
			}
		}
	}
	return nil
}

// add adds t unless the list has a template of its key, which it returns
// instead: concurrent callers share one template.
func (l *templateList) add(t *template) *template {
	for {
		old := l.p.Load()
		var list []*template
		if old != nil {
			for _, o := range *old {
				if o.key == t.key {
					return o
				}
			}
			list = append(list, *old...)
		}
		list = append(list, t)
		if l.p.CompareAndSwap(old, &list) {
			return t
		}
	}
}

// templateSets are the template sets of the current rule-set version and
// of the one before it. During a reload, decisions of both versions are in
// flight at once: keeping the previous set lets each find its templates
// instead of replacing the shared set in turn. Older sets are released.
type templateSets struct{ cur, prev *templates }

// templatesFor returns the template set of version, starting one if it
// has none.
func (s *Server) templatesFor(version string) *templates {
	for {
		old := s.templates.Load()
		if old != nil {
			if old.cur.version == version {
				return old.cur
			}
			if old.prev != nil && old.prev.version == version {
				return old.prev
			}
		}
		next := &templateSets{cur: &templates{version: version}}
		if old != nil {
			next.prev = old.cur
		}
		// Only swapped in over the sets looked at: when another call got
		// there first, look again rather than drop the set it made.
		if s.templates.CompareAndSwap(old, next) {
			return next.cur
		}
	}
}

// responseTemplate returns the template of d's response.
func (s *Server) responseTemplate(d *rules.Decision, sni bool) *template {
	ts := s.templatesFor(d.Version)
	l := &ts.noRule
	if d.Rule != nil {
		v, ok := ts.byRule.Load(d.Rule)
		if !ok {
			v, _ = ts.byRule.LoadOrStore(d.Rule, new(templateList))
		}
		l = v.(*templateList)
	}
	key := templateKey{reason: d.Reason, allow: d.Allow, sni: sni}
	if t := l.find(key); t != nil {
		return t
	}
	t := newTemplate(d, sni)
	t.key = key
	return l.add(t)
}

// newTemplate cuts the response that response builds for d, with no
// request id, into a template.
func newTemplate(d *rules.Decision, sni bool) *template {
	r := response(d, sni, "")
	head := &authv3.CheckResponse{Status: r.Status}
	t := &template{}
	var err error
	switch h := r.HttpResponse.(type) {
	case *authv3.CheckResponse_OkResponse:
		head.HttpResponse = h
	case *authv3.CheckResponse_DeniedResponse:
		const emptyID = `"request_id":""}`
		body := []byte(h.DeniedResponse.Body)
		if !bytes.HasSuffix(body, []byte(emptyID)) {
			panic("authz: a deny body that does not end with its request id")
		}
		t.denied = true
		t.bodyPrefix, t.bodySuffix = body[:len(body)-2], body[len(body)-2:]
		t.deniedHead, err = proto.Marshal(&authv3.DeniedHttpResponse{Status: h.DeniedResponse.Status, Headers: h.DeniedResponse.Headers})
	}
	prefix, err1 := proto.Marshal(head)
	entries, err2 := proto.Marshal(r.DynamicMetadata)
	if err != nil || err1 != nil || err2 != nil {
		panic("authz: cannot encode a constant response") // a programming error, not input
	}
	t.prefix, t.entries = prefix, entries
	return t
}

// Field numbers of the response's parts that append writes.
const (
	fieldRespDenied          = 2 // CheckResponse.denied_response
	fieldRespDynamicMetadata = 4 // CheckResponse.dynamic_metadata
	fieldDeniedBody          = 3 // DeniedHttpResponse.body
)

// append appends the response with request id id to b.
func (t *template) append(b []byte, id string) []byte {
	b = append(b, t.prefix...)
	if t.denied {
		// The request id is at most maxRequestIDLen bytes of valid UTF-8
		// (requestID), so its JSON form fits here.
		var scratch [6*maxRequestIDLen + 8]byte
		esc := appendJSONString(scratch[:0], id)
		bodyLen := len(t.bodyPrefix) + len(esc) + len(t.bodySuffix)
		b = protowire.AppendTag(b, fieldRespDenied, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(len(t.deniedHead)+protowire.SizeTag(fieldDeniedBody)+protowire.SizeBytes(bodyLen)))
		b = append(b, t.deniedHead...)
		b = protowire.AppendTag(b, fieldDeniedBody, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(bodyLen))
		b = append(b, t.bodyPrefix...)
		b = append(b, esc...)
		b = append(b, t.bodySuffix...)
	}
	b = protowire.AppendTag(b, fieldRespDynamicMetadata, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(len(t.entries)+requestIDEntrySize(id)))
	b = append(b, t.entries...)
	return appendRequestIDEntry(b, id)
}

// requestIDEntrySize is the size of what appendRequestIDEntry appends.
func requestIDEntrySize(id string) int {
	return protowire.SizeTag(1) + protowire.SizeBytes(requestIDEntryLen(id))
}

func requestIDEntryLen(id string) int {
	const key = "request_id"
	valueLen := protowire.SizeTag(3) + protowire.SizeBytes(len(id))
	return protowire.SizeTag(1) + protowire.SizeBytes(len(key)) + protowire.SizeTag(2) + protowire.SizeBytes(valueLen)
}

// appendRequestIDEntry appends the Struct.fields entry
// {"request_id": {string_value: id}}.
func appendRequestIDEntry(b []byte, id string) []byte {
	const key = "request_id"
	b = protowire.AppendTag(b, 1, protowire.BytesType) // Struct.fields
	b = protowire.AppendVarint(b, uint64(requestIDEntryLen(id)))
	b = protowire.AppendTag(b, 1, protowire.BytesType) // entry key
	b = protowire.AppendString(b, key)
	b = protowire.AppendTag(b, 2, protowire.BytesType) // entry value: Value
	b = protowire.AppendVarint(b, uint64(protowire.SizeTag(3)+protowire.SizeBytes(len(id))))
	b = protowire.AppendTag(b, 3, protowire.BytesType) // Value.string_value
	return protowire.AppendString(b, id)
}

// appendJSONString appends s as encoding/json writes it inside a string's
// quotes (HTML-safe: <, > and & escaped; U+2028 and U+2029 escaped;
// invalid UTF-8 as U+FFFD). TestAppendJSONString holds it equal to
// json.Marshal.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}
