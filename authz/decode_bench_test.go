package authz

import (
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/egress-authz/egress-authz/internal/checkreq"
)

// typicalRequest is a CheckRequest as the egress gateway's Envoy sends it
// for an HTTP request, with nine headers.
func typicalRequest(tb testing.TB) []byte {
	cr, err := checkreq.HTTP{
		Principal: "spiffe://cluster.local/ns/payments/sa/checkout",
		Method:    "POST",
		URL:       "https://api.stripe.com/v1/charges",
		RequestID: "3f1c0a52-7d1e-4d3b-9a57-2b8f6c1e4a90",
		Headers: map[string]string{
			"accept":      "*/*",
			"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		},
	}.Build()
	if err != nil {
		tb.Fatal(err)
	}
	if n := len(cr.Attributes.Request.Http.Headers); n != 9 {
		tb.Fatalf("%d headers, want 9", n)
	}
	b, err := proto.Marshal(cr)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// BenchmarkDecodeCheck measures what the handler does with a Check's bytes
// before deciding: decode and map. "wire" is the handler's way (decodeCheck
// into a frame of its own, then mapRequest); "proto" the reference's
// (proto.Unmarshal of the whole request, then the mapping of the proto).
func BenchmarkDecodeCheck(b *testing.B) {
	data := typicalRequest(b)
	b.Run("wire", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			f := new(checkFrame)
			decodeCheck(data, f)
			if req, _, invalid := mapRequest(&f.in, false); invalid != "" || req.Method != "POST" {
				b.Fatalf("%+v %s", req, invalid)
			}
		}
	})
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			cr := new(authv3.CheckRequest)
			if err := proto.Unmarshal(data, cr); err != nil {
				b.Fatal(err)
			}
			if req, _, invalid := refMapRequest(cr, false); invalid != "" || req.Method != "POST" {
				b.Fatalf("%+v %s", req, invalid)
			}
		}
	})
}
