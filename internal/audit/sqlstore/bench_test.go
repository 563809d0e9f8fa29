package sqlstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// BenchmarkSQLiteWrite measures sustained inserts into the SQLite sink in
// the batches the writer hands it when it is behind (BatchSize, 10,000).
//
// The cost of a record depends on how many distinct keys the indexes see:
//   - few-keys: the test sample, 5 principals, 4 hosts, 2 rules, into an
//     empty table, where every index insert lands on a page already hot;
//   - realistic: the load test's world (300 principals in 50 namespaces,
//     2,000 hosts, 10,000 rules, real SHA-256 hashes), into a table that
//     already holds 300,000 records, so each index has a tail page per key.
func BenchmarkSQLiteWrite(b *testing.B) {
	open := func(b *testing.B) audit.Sink {
		st, err := OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "d.db"))
		if err != nil {
			b.Fatal(err)
		}
		return st
	}
	b.Run("few-keys", func(b *testing.B) { benchSinkWrite(b, open(b), 0, sample) })
	b.Run("realistic", func(b *testing.B) { benchSinkWrite(b, open(b), 300_000, spread) })
}

// benchSinkWrite writes prefill records of gen's stream into sink, then
// measures how fast it takes the next ones in batches of the writer's
// BatchSize.
func benchSinkWrite(b *testing.B, sink audit.Sink, prefill int, gen func(int) audit.Record) {
	defer sink.Close()
	const batch = 10000
	recs := make([]audit.Record, batch)
	seq := 0
	fill := func() {
		for j := range recs {
			seq++
			recs[j] = gen(seq)
			recs[j].Writer, recs[j].Seq = "bench", uint64(seq)
			if recs[j].Hash == "" {
				recs[j].Hash = "h"
			}
		}
	}
	for seq < prefill {
		fill()
		if err := sink.Write(context.Background(), recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	var spent time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		fill() // making the records is not the sink's cost
		b.StartTimer()
		start := time.Now()
		if err := sink.Write(context.Background(), recs); err != nil {
			b.Fatal(err)
		}
		spent += time.Since(start)
	}
	b.ReportMetric(float64(b.N*batch)/spent.Seconds(), "records/s")
}

// spread is record i of a realistic stream: the load test's world of 300
// principals in 50 namespaces, 2,000 hosts and 10,000 rules, a decision
// every 30 µs, with distinct request ids and real hash values.
func spread(i int) audit.Record {
	h := sha256.Sum256([]byte(strconv.Itoa(i)))
	p := (i * 7919) % 300
	k := (i * 104729) % 10000
	return audit.Record{
		Time:           t0.Add(time.Duration(i) * 30 * time.Microsecond),
		RequestID:      fmt.Sprintf("%08x-7d3c-4f1a-9b2e-%012x", i, i*31),
		TraceID:        fmt.Sprintf("%032x", i*977),
		Principal:      fmt.Sprintf("spiffe://cluster.local/ns/team-%02d/sa/svc-%d", p/6, p%6),
		TrustDomain:    "cluster.local",
		Namespace:      fmt.Sprintf("team-%02d", p/6),
		ServiceAccount: fmt.Sprintf("svc-%d", p%6),
		Host:           fmt.Sprintf("api-%d.vendor-%d.example.com", k%2000, k%2000%250),
		Port:           443,
		Method:         "GET",
		Path:           fmt.Sprintf("/v1/res-%d/items/%d", k%20, i%1000),
		Decision:       []string{audit.Allow, audit.Deny}[i%10/9],
		Enforced:       true,
		Rule:           fmt.Sprintf("rule-%d", k),
		Owner:          fmt.Sprintf("team-%02d", p/6),
		Ticket:         fmt.Sprintf("SEC-%d", 1000+k),
		RuleSet:        "3f9a1c0d5e7b2a48",
		Reason:         []string{"allowed-by-rule", "denied-by-rule"}[i%10/9],
		CacheHit:       i%10 != 0,
		Latency:        time.Duration(1000 + i%1000),
		PrevHash:       hex.EncodeToString(h[:]),
		Hash:           hex.EncodeToString(h[:]),
	}
}

// BenchmarkQueryPrincipal24h: an auditor's question on a log of 1,000,000
// records spread over 30 days: one principal's decisions in a 24 h window.
// The database is built once and kept in the temp dir between runs.
func BenchmarkQueryPrincipal24h(b *testing.B) {
	const n = 1_000_000
	path := filepath.Join(os.TempDir(), "egress-authz-bench-1m-v1.db")
	st, err := OpenSQLite(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	have, _ := st.Cursor(context.Background(), "bench")
	if have < n {
		b.Logf("building %d records in %s (once)", n, path)
		recs := make([]audit.Record, 0, 5000)
		span := 30 * 24 * time.Hour
		for seq := have + 1; seq <= n; seq++ {
			r := audit.Record{
				Time:      t0.Add(time.Duration(seq) * (span / n)),
				RequestID: fmt.Sprintf("r%d", seq),
				Principal: fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/sa%d", seq%50, seq%300),
				Namespace: fmt.Sprintf("ns%d", seq%50), ServiceAccount: fmt.Sprintf("sa%d", seq%300),
				TrustDomain: "cluster.local", Host: fmt.Sprintf("api%d.example.com", seq%2000), Port: 443,
				Method: "GET", Path: "/v1/x", Decision: audit.Allow, Enforced: true, Rule: fmt.Sprintf("rule-%d", seq%10000),
				RuleSet: "v", Reason: "allowed-by-rule", Writer: "bench", Seq: seq, Hash: "h",
			}
			recs = append(recs, r)
			if len(recs) == cap(recs) || seq == n {
				if err := st.Write(context.Background(), recs); err != nil {
					b.Fatal(err)
				}
				recs = recs[:0]
			}
		}
	}
	f := audit.Filter{
		Principal: "spiffe://cluster.local/ns/ns7/sa/sa157",
		Since:     t0.Add(15 * 24 * time.Hour),
		Until:     t0.Add(16 * 24 * time.Hour),
	}
	b.ResetTimer()
	var got int
	for i := 0; i < b.N; i++ {
		got = 0
		if _, err := st.Query(context.Background(), f, func(*audit.Record) error { got++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if got == 0 {
		b.Fatal("the query found nothing: the benchmark measures nothing")
	}
	b.ReportMetric(float64(got), "rows")
}
