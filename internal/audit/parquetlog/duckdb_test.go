package parquetlog

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/duckdbtest"
)

// TestDuckDBReadsTheSameRecords reads the segments with DuckDB, an
// independent Parquet reader, with its defaults (the glob the README
// shows, hive partitions detected), and compares every field of every
// record with what the store reads. DuckDB reads the UTC timestamp at
// microsecond precision, so times are compared to the microsecond.
func TestDuckDBReadsTheSameRecords(t *testing.T) {
	dir := t.TempDir()
	recs := chain("w1", 0, "", 2500, t0.Add(123456789*time.Nanosecond), 1234567*time.Microsecond, rand.New(rand.NewPCG(5, 6)))
	writeAll(t, dir, Options{MaxRecords: 1000}, recs)
	rows := duckdbtest.Query(t, fmt.Sprintf(`SELECT epoch_us(time) AS time_us,
		coalesce(request_id, CAST(request_uuid AS VARCHAR)) AS request_id, coalesce(lower(hex(trace_id)), '') AS trace_id,
		principal, trust_domain, namespace, service_account, host, port, method, path, decision, enforced,
		rule, owner, ticket, ruleset, reason, cache_hit, latency_ns, writer, seq, day
		FROM read_parquet('%s/**/*.parquet') ORDER BY seq`, dir))
	if len(rows) != len(recs) {
		t.Fatalf("DuckDB read %d records, want %d", len(rows), len(recs))
	}
	str := func(v any) string {
		switch v := v.(type) {
		case string:
			return v
		case nil:
			return ""
		}
		return fmt.Sprint(v)
	}
	for i, row := range rows {
		r := recs[i]
		want := map[string]string{
			"time_us": strconv.FormatInt(r.Time.UnixMicro(), 10), "request_id": r.RequestID, "trace_id": r.TraceID,
			"principal": r.Principal, "trust_domain": r.TrustDomain, "namespace": r.Namespace, "service_account": r.ServiceAccount,
			"host": r.Host, "port": strconv.Itoa(r.Port), "method": r.Method, "path": r.Path, "decision": r.Decision,
			"enforced": strconv.FormatBool(r.Enforced), "rule": r.Rule, "owner": r.Owner, "ticket": r.Ticket, "ruleset": r.RuleSet,
			"reason": r.Reason, "cache_hit": strconv.FormatBool(r.CacheHit), "latency_ns": strconv.FormatInt(int64(r.Latency), 10),
			"writer": r.Writer, "seq": strconv.FormatUint(r.Seq, 10), "day": r.Time.UTC().Format(time.DateOnly),
		}
		for k, w := range want {
			if got := str(row[k]); got != w {
				t.Fatalf("record %d (seq %d): DuckDB reads %s = %q, want %q", i, r.Seq, k, got, w)
			}
		}
	}
}
