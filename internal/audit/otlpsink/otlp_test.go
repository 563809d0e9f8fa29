package otlpsink

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
	"github.com/egress-authz/egress-authz/internal/audit/sqlstore"
)

var sample = audittest.Sample

func record(t *testing.T, w *audit.Writer, recs ...audit.Record) {
	t.Helper()
	if err := w.Record(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}

// logsReceiver is an in-process OTLP/gRPC logs endpoint, as an
// OpenTelemetry Collector would be.
type logsReceiver struct {
	collogs.UnimplementedLogsServiceServer
	mu    sync.Mutex
	attrs []map[string]string // one per log record: attribute key -> value as text
	gate  chan struct{}       // when set, each export waits for a value: a slow endpoint
	calls int
	fail  int     // when > 0, the fail-th call is refused
	seqs  []int64 // egress_authz.seq of each log record, in arrival order
	sizes []int   // encoded size of each accepted request
}

func (r *logsReceiver) Export(ctx context.Context, req *collogs.ExportLogsServiceRequest) (*collogs.ExportLogsServiceResponse, error) {
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.calls == r.fail {
		return nil, status.Error(codes.Internal, "refused by the test") // not retried by the exporter
	}
	r.sizes = append(r.sizes, proto.Size(req))
	for _, rl := range req.ResourceLogs {
		for _, sl := range rl.ScopeLogs {
			for _, lr := range sl.LogRecords {
				m := map[string]string{"_event": lr.EventName, "_time": time.Unix(0, int64(lr.TimeUnixNano)).UTC().Format(time.RFC3339Nano)}
				for _, kv := range lr.Attributes {
					if kv.Key == "egress_authz.seq" {
						r.seqs = append(r.seqs, kv.Value.GetIntValue())
					}
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

func (r *logsReceiver) received() (seqs []int64, sizes []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.seqs...), append([]int(nil), r.sizes...)
}

// startLogsReceiver starts a receiver with grpc-go's default limits, among
// them the 4 MiB maximum message the OpenTelemetry Collector keeps too.
func startLogsReceiver(t *testing.T, gate chan struct{}) *logsReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcv := &logsReceiver{gate: gate}
	g := grpc.NewServer()
	collogs.RegisterLogsServiceServer(g, rcv)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	return rcv
}

func TestOTLPEveryRecordArrivesWithItsFields(t *testing.T) {
	rcv := startLogsReceiver(t, nil)
	dir := t.TempDir()
	o, err := New(context.Background(), CursorPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	w, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "wal"), BatchSize: 16}, o)
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
	o2, err := New(context.Background(), CursorPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	w2, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "wal")}, o2)
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

// TestSlowOTLPDoesNotSlowSQLite: each sink has its own position in the
// write-ahead log. With the OTLP endpoint stuck on its first export,
// SQLite takes every record.
func TestSlowOTLPDoesNotSlowSQLite(t *testing.T) {
	gate := make(chan struct{})
	rcv := startLogsReceiver(t, gate)
	dir := t.TempDir()
	o, err := New(context.Background(), CursorPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(dir, "d.db"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "wal"), BatchSize: 10}, st, o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// The stuck sink is not waited for: its records stay in the log.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = w.Close(ctx)
	}()
	for i := 0; i < 200; i++ {
		record(t, w, sample(i))
	}
	audittest.WaitUntil(t, "sqlite to store every record", func() bool { return w.Stats().Sinks[st.Name()] == 0 })
	if behind := w.Stats().Sinks[o.Name()]; behind != 200 {
		t.Fatalf("otlp is %d records behind, want all 200 (its endpoint took none)", behind)
	}
	if rcv.count() != 0 {
		t.Fatal("the stuck receiver has records")
	}
}

// TestEveryFieldIsAnAttribute: each field of a record, changed in turn by
// reflection over audit.Record, changes the log record it is exported as,
// whose attributes are egress_authz.NAME for every field but the time,
// which is the timestamp.
func TestEveryFieldIsAnAttribute(t *testing.T) {
	export := func(r *audit.Record) (keys []string, text string) {
		lr := logRecord(r)
		lr.WalkAttributes(func(kv attribute.KeyValue) bool {
			keys = append(keys, string(kv.Key))
			text += string(kv.Key) + "=" + kv.Value.String() + " "
			return true
		})
		return keys, lr.Timestamp().String() + " " + text
	}
	full := audittest.Full()
	keys, base := export(&full)
	var want []string
	for _, f := range audit.Fields() {
		if f.Kind != audit.KindTime {
			want = append(want, "egress_authz."+f.Name)
		}
	}
	if !slices.Equal(keys, want) {
		t.Errorf("attributes %v, want %v", keys, want)
	}
	for _, v := range audittest.Vary(full) {
		if _, got := export(&v.Record); got == base {
			t.Errorf("changing Record.%s leaves the exported log record as it was", v.Field)
		}
	}
}

// chained returns n records of writer "w1" with seqs 1 to n, as the writer
// would hand them to a sink, each with a path about pathLen(i) bytes long.
func chained(n int, pathLen func(i int) int) []audit.Record {
	recs := make([]audit.Record, n)
	for i := range recs {
		r := sample(i)
		r.Path = "/v1/customers/" + fmt.Sprint(i) + "/charges?expand=" + strings.Repeat("x", pathLen(i))
		r.Writer, r.Seq = "w1", uint64(i+1)
		r.PrevHash, r.Hash = strings.Repeat("a", 64), strings.Repeat("b", 64)
		recs[i] = r
	}
	return recs
}

func TestOTLPBacklogLargerThanAMessageArrivesInChunks(t *testing.T) {
	rcv := startLogsReceiver(t, nil)
	ctx := context.Background()
	o, err := New(ctx, CursorPath(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	// A backlog after a collector outage: 3,000 records of about 1.5 KB,
	// already near the limit, then 1,000 with paths long enough that 512
	// of them make over 2.5 MiB.
	const n = 4000
	recs := chained(n, func(i int) int {
		if i < 3000 {
			return 200
		}
		return 2000
	})
	if err := o.Write(ctx, recs); err != nil {
		t.Fatalf("write %d records: %v", n, err)
	}
	seqs, sizes := rcv.received()
	total := 0
	for i, size := range sizes {
		total += size
		if size > otlpChunkBytes {
			t.Errorf("export %d of %d is %d bytes, over the %d-byte chunk bound", i+1, len(sizes), size, otlpChunkBytes)
		}
	}
	t.Logf("%d records, %d bytes in %d exports", n, total, len(sizes))
	if total <= 8<<20 {
		t.Fatalf("the backlog is only %d bytes: the test does not show chunking", total)
	}
	if len(seqs) != n {
		t.Fatalf("receiver got %d records in %d exports, want %d", len(seqs), len(sizes), n)
	}
	for i, seq := range seqs {
		if seq != int64(i+1) {
			t.Fatalf("record %d arrived with seq %d, want %d", i, seq, i+1)
		}
	}
	if c, err := o.Cursor(ctx, "w1"); err != nil || c != n {
		t.Fatalf("cursor = %d, %v; want %d", c, err, n)
	}
}

func TestOTLPFailedChunkLeavesCursorAfterDeliveredPrefix(t *testing.T) {
	rcv := startLogsReceiver(t, nil)
	rcv.mu.Lock()
	rcv.fail = 2
	rcv.mu.Unlock()
	ctx := context.Background()
	cursor := CursorPath(t.TempDir())
	o, err := New(ctx, cursor)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	const n = 3 * otlpChunkRecords
	recs := chained(n, func(int) int { return 0 })
	if err := o.Write(ctx, recs); err == nil {
		t.Fatal("write succeeded though the receiver refused the second chunk")
	}
	// A restart resumes after the chunk delivered, and not later.
	o2, err := New(ctx, cursor)
	if err != nil {
		t.Fatal(err)
	}
	defer o2.Close()
	if c, err := o2.Cursor(ctx, "w1"); err != nil || c != otlpChunkRecords {
		t.Fatalf("cursor after a failed second chunk = %d, %v; want %d", c, err, otlpChunkRecords)
	}
	// The writer retries the whole batch: the prefix is sent again, and
	// every record arrives, in order once duplicates are dropped.
	if err := o.Write(ctx, recs); err != nil {
		t.Fatalf("retry: %v", err)
	}
	seqs, _ := rcv.received()
	var next int64 = 1
	for _, seq := range seqs {
		if seq == next {
			next++
		} else if seq >= next {
			t.Fatalf("seq %d arrived before %d", seq, next)
		}
	}
	if next != n+1 {
		t.Fatalf("records after seq %d never arrived", next-1)
	}
	if c, err := o.Cursor(ctx, "w1"); err != nil || c != n {
		t.Fatalf("cursor = %d, %v; want %d", c, err, n)
	}
}
