package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// OTLP is a Sink that exports each record as one OpenTelemetry log record,
// with the record's fields as attributes, to an OTLP/gRPC endpoint set by
// the standard OTEL_EXPORTER_OTLP_* variables (an OpenTelemetry Collector
// in front of the SIEM, typically). Each batch is exported synchronously so
// that a failure keeps the records in the write-ahead log for a retry; the
// position is kept in a cursor file. Delivery is at least once: a crash
// between an export and the cursor update sends a batch again, with the
// same writer and seq attributes, for the receiver to de-duplicate.
type OTLP struct {
	exp        sdklog.Exporter
	provider   *sdklog.LoggerProvider
	logger     otellog.Logger
	collected  *collector
	cursorPath string
}

// collector is the Processor that hands emitted records back to Write.
type collector struct {
	mu   sync.Mutex
	recs []sdklog.Record
}

func (c *collector) OnEmit(_ context.Context, r *sdklog.Record) error {
	c.mu.Lock()
	c.recs = append(c.recs, r.Clone())
	c.mu.Unlock()
	return nil
}
func (c *collector) Enabled(context.Context, sdklog.EnabledParameters) bool { return true }
func (c *collector) Shutdown(context.Context) error                         { return nil }
func (c *collector) ForceFlush(context.Context) error                       { return nil }

// NewOTLP returns an OTLP sink keeping its cursor in cursorPath.
func NewOTLP(ctx context.Context, cursorPath string) (*OTLP, error) {
	exp, err := otlploggrpc.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("otlp log exporter: %w", err)
	}
	return newOTLP(exp, cursorPath), nil
}

func newOTLP(exp sdklog.Exporter, cursorPath string) *OTLP {
	host, _ := os.Hostname()
	res := resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName("egress-authz"), semconv.ServiceInstanceID(host))
	c := &collector{}
	provider := sdklog.NewLoggerProvider(sdklog.WithProcessor(c), sdklog.WithResource(res))
	return &OTLP{
		exp:        exp,
		provider:   provider,
		logger:     provider.Logger("github.com/egress-authz/egress-authz/audit"),
		collected:  c,
		cursorPath: cursorPath,
	}
}

// Name implements Sink.
func (o *OTLP) Name() string { return "otlp" }

// Cursor implements Sink, from the cursor file ("writer seq").
func (o *OTLP) Cursor(_ context.Context, writer string) (uint64, error) {
	b, err := os.ReadFile(o.cursorPath)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	w, seq, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	if !ok || w != writer {
		return 0, nil
	}
	return strconv.ParseUint(seq, 10, 64)
}

// Write implements Sink.
func (o *OTLP) Write(ctx context.Context, recs []Record) error {
	o.collected.mu.Lock()
	o.collected.recs = o.collected.recs[:0]
	o.collected.mu.Unlock()
	for i := range recs {
		o.logger.Emit(ctx, logRecord(&recs[i]))
	}
	o.collected.mu.Lock()
	batch := o.collected.recs
	o.collected.mu.Unlock()
	if err := o.exp.Export(ctx, batch); err != nil {
		return fmt.Errorf("otlp: %w", err)
	}
	last := recs[len(recs)-1]
	tmp := o.cursorPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(last.Writer+" "+strconv.FormatUint(last.Seq, 10)+"\n"), 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, o.cursorPath)
}

func logRecord(r *Record) otellog.Record {
	var lr otellog.Record
	lr.SetTimestamp(r.Time)
	lr.SetEventName("egress_authz.decision")
	lr.SetSeverity(otellog.SeverityInfo)
	if r.Decision == Deny {
		lr.SetSeverity(otellog.SeverityWarn)
	}
	lr.SetSeverityText(strings.ToUpper(r.Decision))
	lr.SetBody(attribute.StringValue(fmt.Sprintf("%s %s %s:%d %s %s (%s)", r.Decision, r.Principal, r.Host, r.Port, r.Method, r.Path, r.Reason)))
	s := func(k, v string) attribute.KeyValue { return attribute.String("egress_authz."+k, v) }
	lr.AddAttributes(
		s("request_id", r.RequestID), s("trace_id", r.TraceID), s("principal", r.Principal),
		s("trust_domain", r.TrustDomain), s("namespace", r.Namespace), s("service_account", r.ServiceAccount),
		s("host", r.Host), attribute.Int("egress_authz.port", r.Port), s("method", r.Method), s("path", r.Path),
		s("decision", r.Decision), attribute.Bool("egress_authz.enforced", r.Enforced), s("rule", r.Rule),
		s("owner", r.Owner), s("ticket", r.Ticket), s("ruleset", r.RuleSet), s("reason", r.Reason),
		attribute.Bool("egress_authz.cache_hit", r.CacheHit), attribute.Int64("egress_authz.latency_ns", int64(r.Latency)),
		s("writer", r.Writer), attribute.Int64("egress_authz.seq", int64(r.Seq)), s("prev_hash", r.PrevHash), s("hash", r.Hash),
	)
	return lr
}

// Close implements Sink.
func (o *OTLP) Close() error {
	ctx := context.Background()
	return errors.Join(o.provider.Shutdown(ctx), o.exp.Shutdown(ctx))
}

// OTLPCursorPath is where the OTLP sink of a data directory keeps its
// position.
func OTLPCursorPath(dataDir string) string { return filepath.Join(dataDir, "otlp.cursor") }
