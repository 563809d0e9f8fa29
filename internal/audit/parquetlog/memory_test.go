package parquetlog

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
)

// sinkMemoryRecords is how many records the memory benchmark writes: a few
// segments' worth, so that every buffer of a segment, a row group and a
// page has filled and been reused.
const sinkMemoryRecords = 2_000_000

// BenchmarkSinkMemory: the resident memory of the Parquet sink while it
// writes sinkMemoryRecords realistic records in batches of 2,000, as the
// writer hands them over. It runs in a child process (TestSinkMemoryChild),
// so that nothing else the tests did is resident: peak-MiB is the child's
// peak resident set (VmHWM) above its resident set just before the sink
// opened; heap-MiB the peak of the Go heap's objects (live and not yet
// collected), sampled after every batch. The records are made batch by
// batch, so that they are not counted (one batch is, in the baseline).
func BenchmarkSinkMemory(b *testing.B) {
	var peak, heap float64
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSinkMemoryChild$", "-test.v")
		cmd.Env = append(os.Environ(), "PARQUETLOG_MEMORY_CHILD="+b.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("%v:\n%s", err, out)
		}
		got := map[string]float64{}
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok && strings.HasPrefix(k, "sink-") {
				got[k], _ = strconv.ParseFloat(v, 64)
			}
		}
		if got["sink-peak-bytes"] == 0 {
			b.Fatalf("the child reported nothing:\n%s", out)
		}
		peak, heap = got["sink-peak-bytes"], got["sink-heap-bytes"]
	}
	b.ReportMetric(peak/(1<<20), "peak-MiB")
	b.ReportMetric(heap/(1<<20), "heap-MiB")
}

// TestSinkMemoryChild is BenchmarkSinkMemory's child process.
func TestSinkMemoryChild(t *testing.T) {
	dir := os.Getenv("PARQUETLOG_MEMORY_CHILD")
	if dir == "" {
		t.Skip("run by BenchmarkSinkMemory")
	}
	rng := rand.New(rand.NewPCG(1, 1))
	start := time.Date(2026, 12, 4, 1, 0, 0, 0, time.UTC)
	const batch = 2000
	next := func(seq uint64, prev string) []audit.Record {
		recs := audittest.Realistic("w", seq, prev, batch, start.Add(time.Duration(seq)*33*time.Microsecond), rng)
		return recs
	}
	recs := next(0, "")
	runtime.GC()
	base := procStatus(t, "VmRSS")
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Cursor(context.Background(), "w"); err != nil {
		t.Fatal(err)
	}
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var heap uint64
	for seq := 0; seq < sinkMemoryRecords; seq += batch {
		if err := s.Write(context.Background(), recs); err != nil {
			t.Fatal(err)
		}
		metrics.Read(sample)
		heap = max(heap, sample[0].Value.Uint64())
		last := recs[len(recs)-1]
		recs = next(last.Seq, last.Hash)
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("sink-peak-bytes=%d\n", procStatus(t, "VmHWM")-base)
	fmt.Printf("sink-heap-bytes=%d\n", heap)
}

// procStatus returns a field of /proc/self/status, in bytes.
func procStatus(t *testing.T, field string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status:", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}
