package parquetlog

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
)

// BenchmarkSegmentWrite: the sink's cost per record (conversion, encoding,
// compression, the segment's fsync and rename) and the bytes on disk, for
// the load test's realistic records with random request and trace ids.
func BenchmarkSegmentWrite(b *testing.B) {
	recs := audittest.Realistic("w", 0, "", 262144, time.Date(2026, 12, 4, 1, 0, 0, 0, time.UTC), rand.New(rand.NewPCG(1, 1)))
	b.ReportAllocs()
	b.ResetTimer()
	var size int64
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		s, err := Open(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		s.Cursor(context.Background(), "w")
		for j := 0; j < len(recs); j += 2000 {
			if err := s.Write(context.Background(), recs[j:min(j+2000, len(recs))]); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		size = dirSize(b, dir)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
	b.ReportMetric(float64(size)/float64(len(recs)), "bytes/record")
}

func dirSize(tb testing.TB, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// bigLog builds (once, kept in the temp dir) a log of n realistic records
// over the 30 days before its end.
func bigLog(b *testing.B, n int) string {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("egress-authz-bench-parquet-%d-v2", n))
	if _, err := os.Stat(filepath.Join(dir, "complete")); err == nil {
		return dir
	}
	os.RemoveAll(dir)
	b.Logf("building %d records in %s (once)", n, dir)
	s, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	s.Cursor(context.Background(), "bench")
	rng := rand.New(rand.NewPCG(2, 2))
	span := 30 * 24 * time.Hour
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var prev string
	const chunk = 100000
	for seq := 0; seq < n; seq += chunk {
		recs := audittest.Realistic("bench", uint64(seq), prev, chunk, start.Add(time.Duration(seq)*(span/time.Duration(n))), rng)
		// Spread them evenly over the span.
		for i := range recs {
			recs[i].Time = start.Add(time.Duration(seq+i) * (span / time.Duration(n)))
			recs[i].PrevHash = prev
			recs[i].Hash = audit.ComputeHash(&recs[i])
			prev = recs[i].Hash
		}
		if err := s.Write(context.Background(), recs); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "complete"), nil, 0o644)
	return dir
}

// BenchmarkQueryPrincipal24h: an auditor's question on a log of
// 10,000,000 records spread over 30 days: one principal's decisions in a
// 24 h window.
func BenchmarkQueryPrincipal24h(b *testing.B) {
	dir := bigLog(b, 10_000_000)
	st, err := OpenExisting(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	f := audit.Filter{Principal: "spiffe://cluster.local/ns/team-07/sa/svc-3", Since: start.Add(15 * 24 * time.Hour), Until: start.Add(16 * 24 * time.Hour)}
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

// BenchmarkVerify10M: audit verify of 10,000,000 records.
func BenchmarkVerify10M(b *testing.B) {
	dir := bigLog(b, 10_000_000)
	st, err := OpenExisting(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v, err := st.VerifyChains(context.Background(), audit.VerifyOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if !v.OK() || v.Records != 10_000_000 {
			b.Fatalf("verify: %d records, breaks %v", v.Records, v.Breaks)
		}
	}
	b.ReportMetric(float64(runtime.NumCPU()), "cpus")
}

// BenchmarkLogCPU is what the whole default decision log (the write-ahead
// log and this sink) costs the server per decision: 64 concurrent callers
// record the load test's realistic records (random request and trace ids)
// through a Writer into Parquet segments, and the process's CPU time, user
// and system, from the first Record until Close has every record in a
// closed segment, is divided by the records. The goal is ≤ 3 µs.
func BenchmarkLogCPU(b *testing.B) {
	recs := audittest.Realistic("w", 0, "", 1<<16, time.Date(2026, 12, 4, 1, 0, 0, 0, time.UTC), rand.New(rand.NewPCG(3, 3)))
	dir := b.TempDir()
	s, err := Open(filepath.Join(dir, "decisions"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	w, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "wal")}, s)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU(b)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			one := make([]audit.Record, 1)
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				one[0] = recs[int(i)%len(recs)]
				if err := w.Record(context.Background(), one); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64((processCPU(b)-cpu0).Nanoseconds())/float64(b.N)/1000, "cpu-µs/record")
}

// processCPU is the process's CPU time so far, user and system.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
