package authz

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// checkFrame is what the Check handler asks the codec to decode into, and
// the memory of one Check: one allocation holds the decoded input, the
// strings it points to, the decision, the generated request id and the
// encoded response (see input.own). A frame is never reused, so that whatever keeps one of
// its strings (a cache entry does not: it copies them; a span may) keeps it
// valid.
//
// Our codec decodes the wire bytes into in, reading only what a decision
// reads (decodeWire). checkFrame is also a proto.Message whose reflection
// is req's, so that with grpc-go's default codec (a server built without
// ServerCodec) it decodes strictly, into req, as any other message; an
// interceptor sees the frame, whose proto form is then empty when our
// codec decoded it.
type checkFrame struct {
	in      input
	decoded bool                 // our codec filled in; else req holds the request
	req     *authv3.CheckRequest // made by ProtoReflect, for grpc-go's codec
	o       outcome
	out     encoded
	buf     [frameBytes]byte
}

// frameBytes is the room in a frame for a request's strings, its request id
// and its response: enough for a typical gateway request (principal, host,
// path, x-request-id, traceparent) and its deny response, and no more than
// keeps a frame in the runtime's 1152-byte size class (TestFrameSize).
// Larger requests take an allocation more.
const frameBytes = 600

func (f *checkFrame) ProtoReflect() protoreflect.Message {
	if f.req == nil {
		f.req = new(authv3.CheckRequest)
	}
	return f.req.ProtoReflect()
}

// decodeCheck decodes the wire bytes of a CheckRequest into f. Bad bytes
// are not an error: f.in is then marked invalid, to be answered with a deny.
func decodeCheck(b []byte, f *checkFrame) {
	decodeWire(b, &f.in)
	f.in.own(f.buf[:])
	f.decoded = true
}

// ServerCodec returns the gRPC server option that installs our codec: the
// standard protobuf codec, except that a CheckRequest is decoded only as far
// as a decision reads it, and one that cannot be decoded, or holds invalid
// UTF-8 in a string field read, is handed to Check marked invalid rather
// than failing the call.
func ServerCodec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(codec{base: encoding.GetCodecV2("proto")})
}

type codec struct{ base encoding.CodecV2 }

func (c codec) Name() string { return "proto" }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if e, ok := v.(*encoded); ok {
		return e.bufferSlice(), nil
	}
	return c.base.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*checkFrame)
	if !ok {
		return c.base.Unmarshal(data, v)
	}
	if len(data) == 1 {
		decodeCheck(data[0].ReadOnlyData(), f)
		return nil
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	decodeCheck(buf.ReadOnlyData(), f)
	return nil
}
