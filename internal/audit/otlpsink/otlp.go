// Package otlpsink exports the decision log as OpenTelemetry logs: one log
// record per decision, every field an egress_authz.* attribute, sent by
// OTLP/gRPC to the endpoint the standard OTEL_EXPORTER_OTLP_* variables
// name. It is an audit.Sink only: nothing is read back.
package otlpsink

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

	"github.com/egress-authz/egress-authz/internal/audit"
)

// Sink is an audit.Sink that exports each record as one OpenTelemetry log record,
// with the record's fields as attributes, to an OTLP/gRPC endpoint set by
// the standard OTEL_EXPORTER_OTLP_* variables (an OpenTelemetry Collector
// in front of the SIEM, typically). Each batch is exported synchronously,
// in chunks small enough for the receiver, so that a failure keeps the
// records in the write-ahead log for a retry; the position is kept in a
// cursor file. Delivery is at least once: a crash between an export and
// the cursor update, or a chunk failing after earlier ones were delivered,
// sends records again, with the same writer and seq attributes, for the
// receiver to de-duplicate.
type Sink struct {
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

// New returns a sink keeping its cursor in cursorPath (see CursorPath).
func New(ctx context.Context, cursorPath string) (*Sink, error) {
	exp, err := otlploggrpc.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("otlp log exporter: %w", err)
	}
	return newSink(exp, cursorPath), nil
}

func newSink(exp sdklog.Exporter, cursorPath string) *Sink {
	host, _ := os.Hostname()
	res := resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName("egress-authz"), semconv.ServiceInstanceID(host))
	c := &collector{}
	provider := sdklog.NewLoggerProvider(sdklog.WithProcessor(c), sdklog.WithResource(res))
	return &Sink{
		exp:        exp,
		provider:   provider,
		logger:     provider.Logger("github.com/egress-authz/egress-authz/audit"),
		collected:  c,
		cursorPath: cursorPath,
	}
}

// Name implements audit.Sink.
func (o *Sink) Name() string { return "otlp" }

// Cursor implements audit.Sink, from the cursor file ("writer seq").
func (o *Sink) Cursor(_ context.Context, writer string) (uint64, error) {
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

// An export is cut into chunks of at most otlpChunkRecords records and
// about otlpChunkBytes encoded bytes. The writer hands Write up to
// Options.BatchSize records (10,000 by default), a whole backlog after an
// outage, but OTLP/gRPC receivers refuse a message over 4 MiB (the gRPC
// default, which the OpenTelemetry Collector keeps) with ResourceExhausted;
// the same oversized batch would then be retried for ever while the
// write-ahead log fills. 512 is the OpenTelemetry SDK's BatchProcessor
// default; the byte bound, half the receivers' limit and measured with a
// generous estimate, covers records with long paths.
const (
	otlpChunkRecords = 512
	otlpChunkBytes   = 2 << 20
)

// Write implements audit.Sink. It exports recs in order, one chunk at a time,
// and moves the cursor past each chunk once it has been delivered. When a
// chunk fails, Write returns the error with the cursor at the end of the
// chunks already delivered: the writer retries the whole batch, so that
// prefix is sent again (at least once, as after a crash), and a restart
// resumes after it. No record is skipped.
func (o *Sink) Write(ctx context.Context, recs []audit.Record) error {
	o.collected.mu.Lock()
	o.collected.recs = o.collected.recs[:0]
	o.collected.mu.Unlock()
	for i := range recs {
		o.logger.Emit(ctx, logRecord(&recs[i]))
	}
	o.collected.mu.Lock()
	batch := o.collected.recs
	o.collected.mu.Unlock()
	if len(batch) != len(recs) {
		// The cursor below indexes recs by position in batch.
		return fmt.Errorf("otlp: %d of %d records reached the exporter", len(batch), len(recs))
	}
	for start := 0; start < len(batch); {
		end := chunkEnd(batch, start)
		if err := o.exp.Export(ctx, batch[start:end]); err != nil {
			return fmt.Errorf("otlp: export records %d to %d: %w", recs[start].Seq, recs[end-1].Seq, err)
		}
		if err := o.setCursor(&recs[end-1]); err != nil {
			return err
		}
		start = end
	}
	return nil
}

// chunkEnd returns the end of the chunk of batch that begins at start: at
// most otlpChunkRecords records and otlpChunkBytes estimated bytes, but
// never empty, so that a record larger than the byte bound goes alone.
func chunkEnd(batch []sdklog.Record, start int) int {
	end, size := start, 0
	for end < len(batch) && end-start < otlpChunkRecords {
		size += estimateSize(&batch[end])
		if size > otlpChunkBytes && end > start {
			break
		}
		end++
	}
	return end
}

// setCursor records that r and everything before it have been delivered.
func (o *Sink) setCursor(r *audit.Record) error {
	tmp := o.cursorPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(r.Writer+" "+strconv.FormatUint(r.Seq, 10)+"\n"), 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, o.cursorPath)
}

// protoOverhead bounds the protobuf framing around one field: its tag and
// length prefix, and those of the message that wraps it (a KeyValue's
// AnyValue, say). recordOverhead bounds the fixed fields of a log record
// (timestamps, severity, flags, trace and span ids) and its own framing.
const (
	protoOverhead  = 16
	recordOverhead = 128
)

// estimateSize returns an upper bound on the size of r in an
// ExportLogsServiceRequest. It errs on the large side, by about half for
// a typical decision record, so that a chunk never outgrows the receiver's
// limit; the resource and scope, sent once per request, fit in the
// headroom between otlpChunkBytes and that limit.
func estimateSize(r *sdklog.Record) int {
	n := recordOverhead + protoOverhead + len(r.EventName()) + protoOverhead + len(r.SeverityText()) + valueSize(r.Body())
	r.WalkAttributes(func(kv attribute.KeyValue) bool {
		n += protoOverhead + len(kv.Key) + valueSize(kv.Value)
		return true
	})
	return n
}

// valueSize bounds the encoded size of v as an AnyValue with its framing.
func valueSize(v attribute.Value) int {
	const scalar = protoOverhead + 10 // a varint takes at most 10 bytes; a fixed64, 8
	n := protoOverhead
	switch v.Type() {
	case attribute.STRING:
		n += len(v.AsString())
	case attribute.BYTESLICE:
		n += len(v.AsByteSlice())
	case attribute.BOOLSLICE:
		n += len(v.AsBoolSlice()) * scalar
	case attribute.INT64SLICE:
		n += len(v.AsInt64Slice()) * scalar
	case attribute.FLOAT64SLICE:
		n += len(v.AsFloat64Slice()) * scalar
	case attribute.STRINGSLICE:
		for _, s := range v.AsStringSlice() {
			n += protoOverhead + len(s)
		}
	case attribute.SLICE:
		for _, e := range v.AsSlice() {
			n += valueSize(e)
		}
	case attribute.MAP:
		for _, kv := range v.AsMap() {
			n += protoOverhead + len(kv.Key) + valueSize(kv.Value)
		}
	default: // empty, bool, int64, float64
		n = scalar
	}
	return n
}

func logRecord(r *audit.Record) otellog.Record {
	var lr otellog.Record
	lr.SetTimestamp(r.Time)
	lr.SetEventName("egress_authz.decision")
	lr.SetSeverity(otellog.SeverityInfo)
	if r.Decision == audit.Deny {
		lr.SetSeverity(otellog.SeverityWarn)
	}
	lr.SetSeverityText(strings.ToUpper(r.Decision))
	lr.SetBody(attribute.StringValue(fmt.Sprintf("%s %s %s:%d %s %s (%s)", r.Decision, r.Principal, r.Host, r.Port, r.Method, r.Path, r.Reason)))
	var attrs [32]attribute.KeyValue
	lr.AddAttributes(appendAttributes(attrs[:0], r)...)
	return lr
}

// attrKeys are the attribute keys of the fields, egress_authz.NAME, made
// once.
var attrKeys = func() []string {
	var keys []string
	for _, f := range audit.Fields() {
		keys = append(keys, "egress_authz."+f.Name)
	}
	return keys
}()

var recordFields = audit.Fields()

// appendAttributes appends an attribute per field of r but its time, which
// is the log record's timestamp.
func appendAttributes(kvs []attribute.KeyValue, r *audit.Record) []attribute.KeyValue {
	for i := range recordFields {
		f := &recordFields[i]
		switch f.Kind {
		case audit.KindString:
			kvs = append(kvs, attribute.String(attrKeys[i], *f.Str(r)))
		case audit.KindBool:
			kvs = append(kvs, attribute.Bool(attrKeys[i], *f.Bool(r)))
		case audit.KindInt:
			kvs = append(kvs, attribute.Int64(attrKeys[i], f.Int(r)))
		}
	}
	return kvs
}

// Close implements audit.Sink.
func (o *Sink) Close() error {
	ctx := context.Background()
	return errors.Join(o.provider.Shutdown(ctx), o.exp.Shutdown(ctx))
}

// CursorPath is where the OTLP sink of a data directory keeps its
// position.
func CursorPath(dataDir string) string { return filepath.Join(dataDir, "otlp.cursor") }
