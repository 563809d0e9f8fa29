package authz_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

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

// cpuPerOp reports the process's CPU time (user and system, client and
// server together, as both run here) per operation as cpu-ns/op, so that
// the transports' costs compare beside their latency.
func cpuPerOp(b *testing.B, run func()) {
	b.Helper()
	before := processCPU(b)
	run()
	if b.N > 0 {
		b.ReportMetric(float64(processCPU(b)-before)/float64(b.N), "cpu-ns/op")
	}
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCheckHTTP measures a decision through an HTTP front door over a
// real loopback HTTP/1.1 keep-alive connection, as NGINX or Envoy's HTTP
// service ask: the HTTP counterpart of BenchmarkCheckGRPC, with the same
// requests and the same cached rule table. The identity comes from XFCC
// (no cryptography) or from a forwarded X.509 SVID verified per request.
func BenchmarkCheckHTTP(b *testing.B) {
	live := rules.NewLive(authztest.Table(b, "rules.yaml", testRules), rules.LiveOptions{CacheSize: 100000})
	p := newPKI(b)
	for _, src := range identitySources {
		f := startFront(b, live, src, p)
		for _, bc := range []struct {
			name   string
			method string
			url    string
			status int
		}{
			{"allow", "POST", "https://api.stripe.com/v1/charges", 200},
			{"deny", "GET", "https://api.stripe.com/v1/charges", 403},
		} {
			head := headOf(doors[2], probe{method: bc.method, url: bc.url}) + f.identityHeader(b, checkout) +
				"X-Request-Id: 3f1c0a52-7d1e-4d3b-9a57-2b8f6c1e4a90\r\n\r\n"
			b.Run(src.name+"/"+bc.name, func(b *testing.B) {
				c := dialKeepAlive(b, f.url)
				b.ReportAllocs()
				cpuPerOp(b, func() {
					for b.Loop() {
						if st := c.do(b, head); st != bc.status {
							b.Fatalf("HTTP %d, want %d", st, bc.status)
						}
					}
				})
			})
		}
		head := headOf(doors[2], probe{method: "POST", url: "https://api.stripe.com/v1/charges"}) + f.identityHeader(b, checkout) + "\r\n"
		b.Run(src.name+"/allow_parallel", func(b *testing.B) {
			b.ReportAllocs()
			cpuPerOp(b, func() {
				b.RunParallel(func(pb *testing.PB) {
					c := dialKeepAlive(b, f.url)
					for pb.Next() {
						if st := c.do(b, head); st != 200 {
							b.Errorf("HTTP %d", st)
							return
						}
					}
				})
			})
		})
	}
}

// BenchmarkCheckGRPCCPU is BenchmarkCheckGRPC's allow and allow_parallel
// with cpu-ns/op, to set beside BenchmarkCheckHTTP's.
func BenchmarkCheckGRPCCPU(b *testing.B) {
	live := rules.NewLive(authztest.Table(b, "rules.yaml", testRules), rules.LiveOptions{CacheSize: 100000})
	s := authztest.NewServer(b, live, authz.Options{})
	ctx := context.Background()
	req := benchRequests()[0].req
	b.Run("allow", func(b *testing.B) {
		b.ReportAllocs()
		cpuPerOp(b, func() {
			for b.Loop() {
				if _, err := s.Client.Check(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("allow_parallel", func(b *testing.B) {
		b.ReportAllocs()
		cpuPerOp(b, func() {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Client.Check(ctx, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	})
}

// keepAlive is one HTTP/1.1 connection, reused for request after request.
type keepAlive struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialKeepAlive(b *testing.B, addr string) *keepAlive {
	b.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return &keepAlive{conn: conn, r: bufio.NewReader(conn)}
}

// do sends a request head (with its blank line) and reads the answer's
// status, discarding its body.
func (c *keepAlive) do(b *testing.B, head string) int {
	if _, err := io.WriteString(c.conn, head); err != nil {
		b.Fatal(err)
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
