// Package otlptest stands in for an OpenTelemetry Collector in tests:
// in-process OTLP/gRPC endpoints for traces and logs that keep what they
// receive, and point the standard OTEL_EXPORTER_OTLP_* variables at
// themselves for the rest of the test.
//
// It imports no code of egress-authz, so that the tests of any package can
// use it.
package otlptest

import (
	"context"
	"net"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// TraceReceiver is an in-process OTLP/gRPC trace endpoint, as an
// OpenTelemetry Collector would be. It is safe for concurrent use.
type TraceReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu       sync.Mutex
	spans    []*tracepb.Span
	resource []*commonpb.KeyValue
}

// Export implements the OTLP trace service.
func (r *TraceReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		r.resource = rs.GetResource().GetAttributes()
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// Spans returns the spans received so far.
func (r *TraceReceiver) Spans() []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.Span(nil), r.spans...)
}

// Resource returns the resource attributes of the last export.
func (r *TraceReceiver) Resource() []*commonpb.KeyValue {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resource
}

// StartTraceReceiver serves a TraceReceiver on 127.0.0.1:0 and points the
// standard OpenTelemetry variables at it for the rest of the test.
func StartTraceReceiver(t testing.TB) *TraceReceiver {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &TraceReceiver{}
	g := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(g, r)
	done := make(chan struct{})
	go func() {
		_ = g.Serve(lis)
		close(done)
	}()
	t.Cleanup(func() {
		g.Stop()
		<-done
	})
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+lis.Addr().String())
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "") // empty means unset
	t.Setenv("OTEL_TRACES_SAMPLER", "")
	return r
}
