package authz_test

import (
	"context"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/rules"
)

// benchRequests are the shapes the gateway sends most: an allowed HTTP
// request, a denied one and a TLS-passthrough connection.
func benchRequests() []struct {
	name string
	req  *authv3.CheckRequest
	code code.Code
} {
	return []struct {
		name string
		req  *authv3.CheckRequest
		code code.Code
	}{
		{"allow", httpReq(checkout, "POST", "https://api.stripe.com/v1/charges", withHeader("x-request-id", "3f1c0a52-7d1e-4d3b-9a57-2b8f6c1e4a90")), code.Code_OK},
		{"deny", httpReq(checkout, "GET", "https://api.stripe.com/v1/charges", withHeader("x-request-id", "3f1c0a52-7d1e-4d3b-9a57-2b8f6c1e4a90")), code.Code_PERMISSION_DENIED},
		{"tls", tlsReq(checkout, "files.stripe.com", 443), code.Code_OK},
	}
}

// BenchmarkCheckGRPC measures a Check over a real loopback gRPC connection
// with the production codec and a cached rule table: the latency Envoy
// sees, minus the network.
func BenchmarkCheckGRPC(b *testing.B) {
	live := rules.NewLive(authztest.Table(b, "rules.yaml", testRules), rules.LiveOptions{CacheSize: 100000})
	s := authztest.NewServer(b, live, authz.Options{})
	ctx := context.Background()
	for _, bc := range benchRequests() {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, err := s.Client.Check(ctx, bc.req)
				if err != nil || code.Code(resp.GetStatus().GetCode()) != bc.code {
					b.Fatalf("Check: %v, %v", resp.GetStatus(), err)
				}
			}
		})
	}
	b.Run("allow_parallel", func(b *testing.B) {
		req := benchRequests()[0].req
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Client.Check(ctx, req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkCheckDirect measures Server.Check alone: the mapping, the
// decision and the response, with and without the decision cache.
func BenchmarkCheckDirect(b *testing.B) {
	table := authztest.Table(b, "rules.yaml", testRules)
	for _, cache := range []struct {
		name string
		size int
	}{{"cached", 100000}, {"uncached", 0}} {
		s := authz.NewServer(rules.NewLive(table, rules.LiveOptions{CacheSize: cache.size}), authz.Options{})
		ctx := context.Background()
		for _, bc := range benchRequests() {
			b.Run(cache.name+"/"+bc.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					resp, err := s.Check(ctx, bc.req)
					if err != nil || code.Code(resp.GetStatus().GetCode()) != bc.code {
						b.Fatalf("Check: %v, %v", resp.GetStatus(), err)
					}
				}
			})
		}
	}
}
