package s3log_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit/audittest"
	"github.com/egress-authz/egress-authz/internal/audit/s3log"
	"github.com/egress-authz/egress-authz/internal/s3test"
)

// cpuTime is the CPU this process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSinkRecords: the S3 sink's cost per record, a whole segment of
// the load test's realistic records (random request and trace ids)
// written, closed, uploaded with its checksum and checked: wall time and
// this process's CPU per record (versitygw's own CPU is not counted: it is
// S3's), and the upload's throughput.
func BenchmarkSinkRecords(b *testing.B) {
	srv := s3test.Start(b)
	dsn := "s3://" + srv.Bucket("bench") + "/decisions"
	const n = 1 << 18 // a segment: the sink's MaxRecords default
	recs := audittest.Realistic("w", 0, "", n, time.Date(2026, 12, 4, 1, 0, 0, 0, time.UTC), rand.New(rand.NewPCG(1, 1)))
	ctx := context.Background()
	var cpu, upload time.Duration
	var uploaded int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := b.TempDir()
		sink, err := s3log.OpenSink(ctx, dsn, s3log.Options{Staging: filepath.Join(dir, "s3"), Cluster: fmt.Sprintf("bench-%d", i),
			MaxRecords: n + 1})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := sink.Cursor(ctx, "w"); err != nil {
			b.Fatal(err)
		}
		c0 := cpuTime(b)
		b.StartTimer()
		for j := 0; j < n; j += 2000 {
			if err := sink.Write(ctx, recs[j:min(j+2000, n)]); err != nil {
				b.Fatal(err)
			}
		}
		u0 := time.Now()
		if err := sink.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		upload += time.Since(u0)
		cpu += cpuTime(b) - c0
		if sink.Durable() != n {
			b.Fatalf("%d records uploaded, want %d", sink.Durable(), n)
		}
		objs, err := mustBucketB(b, dsn).List(ctx, fmt.Sprintf("cluster=bench-%d/", i))
		if err != nil || len(objs) != 1 {
			b.Fatalf("want the one segment in the bucket: %v, %v", objs, err)
		}
		uploaded = objs[0].Size
		sink.Close()
		os.RemoveAll(dir)
		b.StartTimer()
	}
	b.StopTimer()
	if uploaded == 0 {
		b.Fatal("no segment of the benchmark's records in the bucket")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*n), "cpu-ns/record")
	b.ReportMetric(float64(uploaded)*float64(b.N)/upload.Seconds()/1e6, "upload-MB/s")
	b.ReportMetric(float64(uploaded)/n, "bytes/record")
}

func mustBucketB(b *testing.B, dsn string) *s3log.Bucket {
	bk, err := s3log.NewBucket(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	return bk
}
