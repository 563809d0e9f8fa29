package otlptest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// LogReceiverOptions says how a LogReceiver misbehaves. The zero value
// answers every call at once, with grpc-go's default limits (among them
// the 4 MiB maximum message that the OpenTelemetry Collector keeps too).
type LogReceiverOptions struct {
	// Delay is how long each Export waits before answering: a slow
	// endpoint.
	Delay time.Duration
	// FailCall, when > 0, is the Export call (counting from 1) that is
	// refused with codes.Internal, which OTLP exporters do not retry. The
	// records of a refused call are not kept.
	FailCall int
}

// LogReceiver is an in-process OTLP/gRPC logs endpoint, as an
// OpenTelemetry Collector would be. It is safe for concurrent use.
type LogReceiver struct {
	collogspb.UnimplementedLogsServiceServer
	opts LogReceiverOptions

	mu       sync.Mutex
	calls    int
	records  []*logspb.LogRecord
	sizes    []int
	resource []*commonpb.KeyValue
}

// StartLogReceiver serves a LogReceiver on 127.0.0.1:0 and points the
// standard OpenTelemetry variables at it for the rest of the test.
func StartLogReceiver(tb testing.TB, opts LogReceiverOptions) *LogReceiver {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &LogReceiver{opts: opts}
	g := grpc.NewServer()
	collogspb.RegisterLogsServiceServer(g, r)
	done := make(chan struct{})
	go func() {
		_ = g.Serve(lis)
		close(done)
	}()
	tb.Cleanup(func() {
		g.Stop()
		<-done
	})
	tb.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+lis.Addr().String())
	tb.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	tb.Setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "") // empty means unset
	return r
}

// Export implements the OTLP logs service.
func (r *LogReceiver) Export(ctx context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	if r.opts.Delay > 0 {
		t := time.NewTimer(r.opts.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.calls == r.opts.FailCall {
		return nil, status.Error(codes.Internal, "refused by the test")
	}
	r.sizes = append(r.sizes, proto.Size(req))
	for _, rl := range req.GetResourceLogs() {
		r.resource = rl.GetResource().GetAttributes()
		for _, sl := range rl.GetScopeLogs() {
			r.records = append(r.records, sl.GetLogRecords()...)
		}
	}
	return &collogspb.ExportLogsServiceResponse{}, nil
}

// Records returns the log records received so far, in arrival order.
func (r *LogReceiver) Records() []*logspb.LogRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*logspb.LogRecord(nil), r.records...)
}

// Len is how many log records have been received so far.
func (r *LogReceiver) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.records)
}

// Sizes returns the encoded size of each accepted Export request, in
// arrival order: how an exporter split what it sent.
func (r *LogReceiver) Sizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.sizes...)
}

// Resource returns the resource attributes of the last accepted export.
func (r *LogReceiver) Resource() []*commonpb.KeyValue {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resource
}
