package audit

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/grpc"
)

// logsReceiver is an in-process OTLP/gRPC logs endpoint, as an
// OpenTelemetry Collector would be.
type logsReceiver struct {
	collogs.UnimplementedLogsServiceServer
	mu    sync.Mutex
	attrs []map[string]string // one per log record: attribute key -> value as text
	delay time.Duration       // a slow endpoint
	calls int
}

func (r *logsReceiver) Export(ctx context.Context, req *collogs.ExportLogsServiceRequest) (*collogs.ExportLogsServiceResponse, error) {
	if r.delay > 0 {
		time.Sleep(r.delay)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	for _, rl := range req.ResourceLogs {
		for _, sl := range rl.ScopeLogs {
			for _, lr := range sl.LogRecords {
				m := map[string]string{"_event": lr.EventName, "_time": time.Unix(0, int64(lr.TimeUnixNano)).UTC().Format(time.RFC3339Nano)}
				for _, kv := range lr.Attributes {
					switch v := kv.Value; {
					case v.GetStringValue() != "":
						m[kv.Key] = v.GetStringValue()
					default:
						m[kv.Key] = v.String() // ints and bools, as proto text
					}
				}
				r.attrs = append(r.attrs, m)
			}
		}
	}
	return &collogs.ExportLogsServiceResponse{}, nil
}

func (r *logsReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.attrs)
}

func startLogsReceiver(t *testing.T, delay time.Duration) *logsReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcv := &logsReceiver{delay: delay}
	g := grpc.NewServer()
	collogs.RegisterLogsServiceServer(g, rcv)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	return rcv
}

func TestOTLPEveryRecordArrivesWithItsFields(t *testing.T) {
	rcv := startLogsReceiver(t, 0)
	dir := t.TempDir()
	o, err := NewOTLP(context.Background(), OTLPCursorPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	w, err := Open(Options{Dir: filepath.Join(dir, "wal"), BatchSize: 16}, o)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	for i := 0; i < n; i++ {
		record(t, w, sample(i))
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := rcv.count(); got != n {
		t.Fatalf("receiver got %d log records, want %d", got, n)
	}
	for i, m := range rcv.attrs {
		want := sample(i)
		checks := map[string]string{
			"egress_authz.request_id": want.RequestID, "egress_authz.principal": want.Principal,
			"egress_authz.namespace": want.Namespace, "egress_authz.host": want.Host, "egress_authz.decision": want.Decision,
			"egress_authz.rule": want.Rule, "egress_authz.ticket": want.Ticket, "egress_authz.reason": want.Reason,
			"_event": "egress_authz.decision", "_time": want.Time.UTC().Format(time.RFC3339Nano),
		}
		for k, v := range checks {
			if got := m[k]; got != v {
				t.Fatalf("record %d: %s = %q, want %q", i, k, got, v)
			}
		}
		for _, k := range []string{"egress_authz.seq", "egress_authz.hash", "egress_authz.prev_hash", "egress_authz.writer", "egress_authz.port", "egress_authz.latency_ns", "egress_authz.enforced", "egress_authz.cache_hit"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("record %d has no %s", i, k)
			}
		}
	}
	// The cursor survives a restart: nothing is sent twice.
	o2, err := NewOTLP(context.Background(), OTLPCursorPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	w2, err := Open(Options{Dir: filepath.Join(dir, "wal")}, o2)
	if err != nil {
		t.Fatal(err)
	}
	record(t, w2, sample(n))
	if err := w2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := rcv.count(); got != n+1 {
		t.Fatalf("after restart the receiver has %d records, want %d", got, n+1)
	}
}

func TestSlowOTLPDoesNotSlowSQLite(t *testing.T) {
	rcv := startLogsReceiver(t, 300*time.Millisecond)
	dir := t.TempDir()
	o, err := NewOTLP(context.Background(), OTLPCursorPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	st, err := OpenSQLite(context.Background(), filepath.Join(dir, "d.db"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := Open(Options{Dir: filepath.Join(dir, "wal"), BatchSize: 10}, st, o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// The slow sink is not waited for: its records stay in the log.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = w.Close(ctx)
	}()
	for i := 0; i < 200; i++ {
		record(t, w, sample(i))
	}
	// SQLite catches up at once; OTLP, at 10 records per 300 ms, cannot.
	deadline := time.Now().Add(5 * time.Second)
	for w.Stats().Sinks["sqlite"] != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("sqlite still behind: %+v", w.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if behind := w.Stats().Sinks["otlp"]; behind < 100 {
		t.Fatalf("otlp is only %d records behind: the test does not show independence", behind)
	}
	if rcv.count() >= 200 {
		t.Fatal("the slow receiver already has everything")
	}
}
