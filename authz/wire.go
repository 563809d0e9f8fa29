package authz

import (
	"sync"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/egress-authz/egress-authz/rules"
)

// encoded is a CheckResponse already in wire form; our codec sends its
// bytes as they are. It is also a proto.Message (decoding itself), so that
// a server built without ServerCodec still answers correctly, if slower.
type encoded struct{ b []byte }

func (e *encoded) ProtoReflect() protoreflect.Message {
	var r authv3.CheckResponse
	_ = proto.Unmarshal(e.b, &r) // our own bytes: they always decode
	return r.ProtoReflect()
}

// wire returns what the gRPC handler sends for an outcome. An allow is
// answered from bytes encoded once per rule and rule-set version: the
// response is the same for every request the rule allows but for the
// request id, which is appended as one more dynamic_metadata entry
// (protobuf map entries may come in any order). That saves building and
// marshalling a Struct on the most frequent path. Denies, which carry a
// per-request body, are built as protos. TestWireMatchesResponse holds the
// two forms equal.
func (s *Server) wire(o outcome) any {
	if !o.d.Allow || o.d.Rule == nil {
		return response(&o.d, o.sni, o.requestID)
	}
	t := s.allowTemplate(&o.d, o.sni)
	rid := appendRequestIDEntry(nil, o.requestID)
	b := make([]byte, 0, len(t.prefix)+len(t.entries)+len(rid)+8)
	b = append(b, t.prefix...)
	b = protowire.AppendTag(b, 4, protowire.BytesType) // CheckResponse.dynamic_metadata
	b = protowire.AppendVarint(b, uint64(len(t.entries)+len(rid)))
	b = append(b, t.entries...)
	b = append(b, rid...)
	return &encoded{b: b}
}

// template is an allow response's constant part: status and ok_response,
// and the encoded dynamic_metadata entries other than request_id.
type template struct{ prefix, entries []byte }

type templateKey struct {
	rule *rules.Rule
	sni  bool
}

// templates holds the templates of one rule-set version.
type templates struct {
	version string
	m       sync.Map // templateKey -> *template
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
		next := &templateSets{cur: &templates{version: version}}
		if old != nil {
			if old.cur.version == version {
				return old.cur
			}
			if old.prev != nil && old.prev.version == version {
				return old.prev
			}
			next.prev = old.cur
		}
		// Only swapped in over the sets looked at: when another call got
		// there first, look again rather than drop the set it made.
		if s.templates.CompareAndSwap(old, next) {
			return next.cur
		}
	}
}

func (s *Server) allowTemplate(d *rules.Decision, sni bool) *template {
	ts := s.templatesFor(d.Version)
	key := templateKey{rule: d.Rule, sni: sni}
	if t, ok := ts.m.Load(key); ok {
		return t.(*template)
	}
	head := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_OK)}}
	if !sni {
		head.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}
	}
	prefix, err1 := proto.Marshal(head)
	entries, err2 := proto.Marshal(&structpb.Struct{Fields: metadataFields(d, "")})
	if err1 != nil || err2 != nil {
		panic("authz: cannot encode a constant response") // a programming error, not input
	}
	t, _ := ts.m.LoadOrStore(key, &template{prefix: prefix, entries: entries})
	return t.(*template)
}

// appendRequestIDEntry appends the Struct.fields entry
// {"request_id": {string_value: id}}.
func appendRequestIDEntry(b []byte, id string) []byte {
	const key = "request_id"
	valueLen := protowire.SizeTag(3) + protowire.SizeBytes(len(id))
	entryLen := protowire.SizeTag(1) + protowire.SizeBytes(len(key)) + protowire.SizeTag(2) + protowire.SizeBytes(valueLen)
	b = protowire.AppendTag(b, 1, protowire.BytesType) // Struct.fields
	b = protowire.AppendVarint(b, uint64(entryLen))
	b = protowire.AppendTag(b, 1, protowire.BytesType) // entry key
	b = protowire.AppendString(b, key)
	b = protowire.AppendTag(b, 2, protowire.BytesType) // entry value: Value
	b = protowire.AppendVarint(b, uint64(valueLen))
	b = protowire.AppendTag(b, 3, protowire.BytesType) // Value.string_value
	return protowire.AppendString(b, id)
}

// marshalEncoded is the codec's side of encoded.
func marshalEncoded(e *encoded) mem.BufferSlice { return mem.BufferSlice{mem.SliceBuffer(e.b)} }
