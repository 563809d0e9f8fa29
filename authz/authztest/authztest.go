// Package authztest runs the real ext_authz server in-process, on a
// loopback TCP socket, so that tests of any package talk gRPC to it as
// Envoy would, and reads its answers the way the SPEC's "Response" section
// describes them. It is to authz what net/http/httptest is to net/http.
//
// Every helper takes a testing.TB, fails the test on its own errors and
// releases what it started when the test ends.
package authztest

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/rules"
)

// Timeout bounds each call the helpers make.
const Timeout = 10 * time.Second

// Table parses and compiles one YAML rule file named name.
func Table(tb testing.TB, name, yaml string) *rules.Table {
	tb.Helper()
	set, err := rules.Parse(rules.Source{Name: name, Data: []byte(yaml)})
	if err != nil {
		tb.Fatalf("parse rules %s: %v", name, err)
	}
	t, err := rules.Compile(set)
	if err != nil {
		tb.Fatalf("compile rules %s: %v", name, err)
	}
	return t
}

// Server is a gRPC server listening on 127.0.0.1 and a client connected
// to it.
type Server struct {
	Addr   string // host:port the server listens on
	Conn   *grpc.ClientConn
	Client authv3.AuthorizationClient
}

// NewServer serves authz.NewServer(d, opts) the way the serve command does
// (with authz.ServerCodec, plaintext) on 127.0.0.1:0 and connects a client.
func NewServer(tb testing.TB, d authz.Decider, opts authz.Options) *Server {
	tb.Helper()
	g := grpc.NewServer(authz.ServerCodec())
	authz.NewServer(d, opts).Register(g)
	return Serve(tb, g)
}

// Serve serves g, with whatever services and options it was built with, on
// 127.0.0.1:0 and connects a client. g is stopped when the test ends.
func Serve(tb testing.TB, g *grpc.Server) *Server {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Serve(lis) }()
	tb.Cleanup(func() {
		g.Stop()
		if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			tb.Errorf("serve: %v", err)
		}
	})
	conn := Dial(tb, lis.Addr().String())
	return &Server{Addr: lis.Addr().String(), Conn: conn, Client: authv3.NewAuthorizationClient(conn)}
}

// Dial connects a plaintext client to addr; it is closed when the test ends.
func Dial(tb testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	tb.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Check sends req and fails the test on a gRPC error: bad input must be
// answered with a deny, never with an error.
func (s *Server) Check(tb testing.TB, req *authv3.CheckRequest) *authv3.CheckResponse {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	resp, err := s.Client.Check(ctx, req)
	if err != nil {
		tb.Fatalf("Check: gRPC error %v", err)
	}
	return resp
}

// CheckRaw sends b as the body of a Check call, byte for byte. It is how a
// test sends what grpc-go would refuse to marshal, such as a string field
// holding invalid UTF-8; b is usually a marshalled CheckRequest, edited.
func (s *Server) CheckRaw(ctx context.Context, b []byte) (*authv3.CheckResponse, error) {
	resp := new(authv3.CheckResponse)
	err := s.Conn.Invoke(ctx, authv3.Authorization_Check_FullMethodName, b, resp, grpc.ForceCodecV2(rawCodec{}))
	return resp, err
}

// rawCodec sends []byte as it is and is the proto codec otherwise.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.([]byte); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2("proto").Unmarshal(data, v)
}

// Metadata returns the string fields of a response's dynamic_metadata
// (decision, rule, ruleset, reason, request_id).
func Metadata(resp *authv3.CheckResponse) map[string]string {
	out := map[string]string{}
	for k, v := range resp.GetDynamicMetadata().GetFields() {
		out[k] = v.GetStringValue()
	}
	return out
}
