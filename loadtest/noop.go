package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// noopServer answers every Check with OK at once: the physical limit of a
// gRPC ext_authz server on this machine. It is built with the same grpc-go
// settings as egress-authz serve, so the comparison isolates our work.
type noopServer struct {
	authv3.UnimplementedAuthorizationServer
}

var okResponse = &authv3.CheckResponse{
	Status:       &rpcstatus.Status{Code: int32(code.Code_OK)},
	HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
}

func (noopServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return okResponse, nil
}

// serveNoop runs the baseline on addr until the process is killed. It
// prints "listening ADDR" once ready.
func serveNoop(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	g := grpc.NewServer(
		grpc.MaxRecvMsgSize(4<<20),
		grpc.MaxConcurrentStreams(1024),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))), // as egress-authz serve
	)
	authv3.RegisterAuthorizationServer(g, noopServer{})
	fmt.Fprintln(os.Stdout, "listening", ln.Addr().String())
	return g.Serve(ln)
}
