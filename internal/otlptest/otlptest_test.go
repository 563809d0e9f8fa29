package otlptest

import (
	"context"
	"go/build"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// dial connects to the endpoint the receiver put in the environment.
func dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	addr, ok := strings.CutPrefix(os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), "http://")
	if !ok || os.Getenv("OTEL_EXPORTER_OTLP_INSECURE") != "true" {
		t.Fatalf("OTEL_EXPORTER_OTLP_ENDPOINT=%q INSECURE=%q: want a plaintext http:// endpoint",
			os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), os.Getenv("OTEL_EXPORTER_OTLP_INSECURE"))
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func resource(name string) *resourcepb.Resource {
	return &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: name}}}}}
}

func logsRequest(events ...string) *collogspb.ExportLogsServiceRequest {
	var recs []*logspb.LogRecord
	for _, e := range events {
		recs = append(recs, &logspb.LogRecord{EventName: e})
	}
	return &collogspb.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
		Resource:  resource("test"),
		ScopeLogs: []*logspb.ScopeLogs{{LogRecords: recs}},
	}}}
}

func eventNames(recs []*logspb.LogRecord) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.GetEventName())
	}
	return out
}

func TestLogReceiverKeepsAcceptedRecordsInOrder(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://elsewhere:4317")
	rcv := StartLogReceiver(t, LogReceiverOptions{FailCall: 2})
	if got := os.Getenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"); got != "" {
		t.Errorf("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=%q: want it cleared, or it would win over the receiver", got)
	}
	client := collogspb.NewLogsServiceClient(dial(t))
	ctx := context.Background()
	if _, err := client.Export(ctx, logsRequest("a", "b")); err != nil {
		t.Fatalf("first call: %v", err)
	}
	if _, err := client.Export(ctx, logsRequest("refused")); status.Code(err) != codes.Internal {
		t.Fatalf("second call: error %v, want code Internal (FailCall 2)", err)
	}
	if _, err := client.Export(ctx, logsRequest("c")); err != nil {
		t.Fatalf("third call: %v", err)
	}
	if got, want := eventNames(rcv.Records()), []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("records %v, want %v", got, want)
	}
	if rcv.Len() != 3 {
		t.Errorf("Len %d, want 3", rcv.Len())
	}
	sizes := rcv.Sizes()
	if len(sizes) != 2 || sizes[0] <= sizes[1] {
		t.Errorf("sizes %v: want two, the first (two records) larger", sizes)
	}
	if got := rcv.Resource(); len(got) != 1 || got[0].GetValue().GetStringValue() != "test" {
		t.Errorf("resource %v, want service.name=test", got)
	}
}

func TestLogReceiverDelay(t *testing.T) {
	const delay = 100 * time.Millisecond
	StartLogReceiver(t, LogReceiverOptions{Delay: delay})
	client := collogspb.NewLogsServiceClient(dial(t))
	start := time.Now()
	if _, err := client.Export(context.Background(), logsRequest("a")); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < delay {
		t.Errorf("answered after %v, want at least %v", took, delay)
	}
}

func TestTraceReceiverKeepsSpans(t *testing.T) {
	t.Setenv("OTEL_TRACES_SAMPLER", "always_off")
	rcv := StartTraceReceiver(t)
	if got := os.Getenv("OTEL_TRACES_SAMPLER"); got != "" {
		t.Errorf("OTEL_TRACES_SAMPLER=%q: want it cleared", got)
	}
	client := coltracepb.NewTraceServiceClient(dial(t))
	req := &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   resource("traced"),
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{Name: "one"}, {Name: "two"}}}},
	}}}
	if _, err := client.Export(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range rcv.Spans() {
		names = append(names, s.GetName())
	}
	if want := []string{"one", "two"}; !slices.Equal(names, want) {
		t.Errorf("spans %v, want %v", names, want)
	}
	if got := rcv.Resource(); len(got) != 1 || got[0].GetValue().GetStringValue() != "traced" {
		t.Errorf("resource %v, want service.name=traced", got)
	}
}

// TestImportsNoProductCode keeps the package usable from the tests of
// every package of the module, including the ones it helps to test.
func TestImportsNoProductCode(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range slices.Concat(pkg.Imports, pkg.TestImports, pkg.XTestImports) {
		if imp == "github.com/egress-authz/egress-authz" || strings.HasPrefix(imp, "github.com/egress-authz/egress-authz/") {
			t.Errorf("imports %s", imp)
		}
	}
}
