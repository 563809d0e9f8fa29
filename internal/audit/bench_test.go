package audit_test

import (
	"context"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/sqlstore"
)

// BenchmarkWriterEndToEnd measures records/s from Record to stored in
// SQLite, through the write-ahead log, with 8 concurrent callers.
func BenchmarkWriterEndToEnd(b *testing.B) {
	dir := b.TempDir()
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(dir, "d.db"))
	if err != nil {
		b.Fatal(err)
	}
	w, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "wal")}, st)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	per := b.N/8 + 1
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs := []audit.Record{sample(1)}
			for i := 0; i < per; i++ {
				recs[0] = sample(i)
				if err := w.Record(context.Background(), recs); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Close(context.Background()); err != nil { // drains: every record stored
		b.Fatal(err)
	}
	b.ReportMetric(float64(per*8)/time.Since(start).Seconds(), "records/s")
}

// BenchmarkRecordLatency is what the decision log adds to a Check: the
// chain, the hash and the write-ahead write, under 64 concurrent callers
// while the SQLite sink drains in the background. It reports the p50 and
// p99 of single Record calls.
func BenchmarkRecordLatency(b *testing.B) {
	dir := b.TempDir()
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(dir, "d.db"))
	if err != nil {
		b.Fatal(err)
	}
	w, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "wal")}, st)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close(context.Background())
	var mu sync.Mutex
	var all []time.Duration
	b.SetParallelism(32) // 64 goroutines on 2 cores
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		lat := make([]time.Duration, 0, 1024)
		recs := []audit.Record{sample(1)}
		i := 0
		for pb.Next() {
			i++
			recs[0] = sample(i)
			t := time.Now()
			if err := w.Record(context.Background(), recs); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(t))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	b.StopTimer()
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds()), "p99-ns")
	}
}

// BenchmarkRecordParallel is the CPU the write-ahead log costs a decision
// under 64 concurrent callers (group commit shares one write(2) among the
// Checks that arrive together), with a sink that discards what it reads.
func BenchmarkRecordParallel(b *testing.B) {
	dir := b.TempDir()
	w, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "wal")}, audit.NewStdout(io.Discard))
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close(context.Background())
	b.SetParallelism(32) // 64 goroutines on 2 cores
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		recs := []audit.Record{sample(1)}
		i := 0
		for pb.Next() {
			i++
			recs[0] = sample(i)
			if err := w.Record(context.Background(), recs); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
