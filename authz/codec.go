package authz

import (
	"fmt"
	"strings"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// checkFrame is what the Check handler asks the codec to decode into. It
// carries the request and, instead of a decode error, the reason the bytes
// were not a valid CheckRequest: bad input must be answered with a deny,
// and a codec error would reach Envoy as a gRPC error before our handler
// ran.
//
// checkFrame is itself a proto.Message (its reflection is the request's), so
// with grpc-go's default codec it decodes strictly, as any other message.
type checkFrame struct {
	req     authv3.CheckRequest
	invalid string
}

func (f *checkFrame) ProtoReflect() protoreflect.Message { return f.req.ProtoReflect() }

// ServerCodec returns the gRPC server option that installs our codec: the
// standard protobuf codec, except that a CheckRequest which cannot be
// decoded, invalid UTF-8 in a string field included, is handed to Check
// marked invalid rather than failing the call.
func ServerCodec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(codec{base: encoding.GetCodecV2("proto")})
}

type codec struct{ base encoding.CodecV2 }

func (c codec) Name() string { return "proto" }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if e, ok := v.(*encoded); ok {
		return marshalEncoded(e), nil
	}
	return c.base.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*checkFrame)
	if !ok {
		return c.base.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	decodeCheck(buf.ReadOnlyData(), f)
	return nil
}

// decodeCheck decodes b into f. When b holds strings that are not valid
// UTF-8 (which proto3 forbids and protobuf-go rejects), they are replaced
// by U+FFFD so that the rest of the request can still be logged, and the
// frame is marked invalid.
func decodeCheck(b []byte, f *checkFrame) {
	err := proto.Unmarshal(b, &f.req)
	if err == nil {
		return
	}
	f.req.Reset()
	clean, bad, serr := sanitizeUTF8(b, f.req.ProtoReflect().Descriptor(), 0)
	if serr == nil && bad {
		if proto.Unmarshal(clean, &f.req) == nil {
			f.invalid = "a string field is not valid UTF-8"
			return
		}
		f.req.Reset()
	}
	f.invalid = "malformed CheckRequest: " + err.Error()
}

const maxDepth = 64

// sanitizeUTF8 rewrites the wire encoding of a message of type md, replacing
// invalid UTF-8 in string fields (at any depth, map entries included) with
// U+FFFD. It reports whether anything was replaced.
func sanitizeUTF8(b []byte, md protoreflect.MessageDescriptor, depth int) ([]byte, bool, error) {
	if depth > maxDepth {
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
