package telemetry_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/egress-authz/egress-authz/internal/otlptest"
	"github.com/egress-authz/egress-authz/internal/telemetry"
)

func TestTracingEnabledByTheStandardVariables(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_SERVICE_NAME": "x"}, false},
	} {
		if got := telemetry.TracingEnabled(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("TracingEnabled(%v) = %v, want %v", tc.env, got, tc.want)
		}
	}
}

func TestNewTracerExportsByOTLPOnShutdown(t *testing.T) {
	r := otlptest.StartTraceReceiver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tracer, shutdown, err := telemetry.NewTracer(ctx, "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	_, span := tracer.Start(trace.ContextWithRemoteSpanContext(ctx, parent), "egress-authz.Check", trace.WithSpanKind(trace.SpanKindServer))
	span.End()
	if err := shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	spans := r.Spans()
	if len(spans) != 1 {
		t.Fatalf("receiver got %d spans, want 1", len(spans))
	}
	s := spans[0]
	if got := trace.TraceID(s.GetTraceId()); got != parent.TraceID() {
		t.Errorf("trace id %s, want the parent's %s", got, parent.TraceID())
	}
	if got := trace.SpanID(s.GetParentSpanId()); got != parent.SpanID() {
		t.Errorf("parent span id %s, want %s", got, parent.SpanID())
	}
	if s.GetName() != "egress-authz.Check" || s.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("span %q kind %v, want egress-authz.Check, server", s.GetName(), s.GetKind())
	}
	res := map[string]string{}
	for _, kv := range r.Resource() {
		res[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	if res["service.name"] != "egress-authz" || res["service.version"] != "1.2.3" || res["service.instance.id"] == "" {
		t.Errorf("resource %v, want service.name egress-authz, service.version 1.2.3 and an instance id", res)
	}
}
