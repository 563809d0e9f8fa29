package s3log_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
	"github.com/egress-authz/egress-authz/internal/audit/parquetlog"
	"github.com/egress-authz/egress-authz/internal/audit/s3log"
	"github.com/egress-authz/egress-authz/internal/s3test"
)

// writer is an audit writer feeding an S3 sink of a cluster.
type writer struct {
	w       *audit.Writer
	sink    *s3log.Sink
	dir     string
	cluster string
}

func newWriter(t *testing.T, dsn, cluster string, maxRecords int) *writer {
	t.Helper()
	dir := t.TempDir()
	sink, err := s3log.OpenSink(context.Background(), dsn, s3log.Options{Staging: filepath.Join(dir, "s3"), Cluster: cluster,
		WAL: filepath.Join(dir, "wal"), MaxRecords: maxRecords})
	if err != nil {
		t.Fatal(err)
	}
	w, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "wal"), Linger: -1, SyncInterval: 10 * time.Millisecond}, sink)
	if err != nil {
		t.Fatal(err)
	}
	return &writer{w: w, sink: sink, dir: dir, cluster: cluster}
}

func (w *writer) record(t *testing.T, from, n int) []string {
	t.Helper()
	var ids []string
	for i := from; i < from+n; i++ {
		r := audittest.Sample(i)
		r.RequestID = w.dir + "-" + r.RequestID
		r.Cluster = w.cluster
		ids = append(ids, r.RequestID)
		if err := w.w.Record(context.Background(), []audit.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func (w *writer) close(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.w.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func openBucket(t *testing.T, dsn string) *parquetlog.Log {
	t.Helper()
	b, err := s3log.NewBucket(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	return parquetlog.OpenStorage(b)
}

func query(t *testing.T, st audit.Store, f audit.Filter) map[string]int {
	t.Helper()
	got := map[string]int{}
	if _, err := st.Query(context.Background(), f, func(r *audit.Record) error { got[r.RequestID]++; return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestFleetInOneBucket: two writers of two clusters upload their segments
// into one bucket with no coordination; the bucket reads as one log,
// every record of both once, each cluster on its own, and verifies.
func TestFleetInOneBucket(t *testing.T) {
	srv := s3test.Start(t)
	dsn := "s3://" + srv.Bucket("fleet") + "/decisions"
	a := newWriter(t, dsn, "eu-west-1", 100)
	b := newWriter(t, dsn, "us-east-1", 70)
	idsA := a.record(t, 0, 250)
	idsB := b.record(t, 0, 180)
	audittest.WaitUntil(t, "segments uploaded", func() bool { return a.sink.Durable() >= 200 && b.sink.Durable() >= 140 })
	a.close(t)
	b.close(t)
	for _, w := range []*writer{a, b} {
		if staged, _ := parquetlog.ListSegments(context.Background(), parquetlog.Dir(filepath.Join(w.dir, "s3")), ""); len(staged) != 0 {
			t.Errorf("segments still staged after Close: %v", staged)
		}
	}
	st := openBucket(t, dsn)
	got := query(t, st, audit.Filter{})
	if len(got) != len(idsA)+len(idsB) {
		t.Fatalf("the bucket holds %d records, want %d", len(got), len(idsA)+len(idsB))
	}
	for _, id := range append(idsA, idsB...) {
		if got[id] != 1 {
			t.Fatalf("record %s found %d times", id, got[id])
		}
	}
	if eu := query(t, st, audit.Filter{Cluster: "eu-west-1"}); len(eu) != len(idsA) {
		t.Errorf("cluster eu-west-1: %d records, want %d", len(eu), len(idsA))
	}
	v, err := audit.Verify(context.Background(), st, audit.VerifyOptions{})
	if err != nil || !v.OK() || v.Records != len(idsA)+len(idsB) || len(v.Writers) != 2 {
		t.Fatalf("verify: %+v %v", v, err)
	}
	// The layout: cluster, then day.
	segs, _ := parquetlog.ListSegments(context.Background(), mustBucket(t, dsn), "")
	for _, sg := range segs {
		if !strings.HasPrefix(sg.Name, "cluster=eu-west-1/day=") && !strings.HasPrefix(sg.Name, "cluster=us-east-1/day=") {
			t.Errorf("object %s is not under cluster=NAME/day=YYYY-MM-DD/", sg.Name)
		}
	}

	// An object deleted, and a row edited, are named by verify.
	os.Remove(srv.ObjectPath("fleet", "decisions/"+segs[1].Name))
	v, _ = audit.Verify(context.Background(), st, audit.VerifyOptions{})
	if v.OK() || v.Breaks[0].Kind != audit.BreakDeleted {
		t.Fatalf("an object deleted: %+v", v.Breaks)
	}
}

func mustBucket(t *testing.T, dsn string) *s3log.Bucket {
	b, err := s3log.NewBucket(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestServerDownThenBack: with the S3 server stopped, segments stay staged
// and the records in the write-ahead log, the sink reports failing, and
// when the server is back every record is uploaded, once.
func TestServerDownThenBack(t *testing.T) {
	srv := s3test.Start(t)
	dsn := "s3://" + srv.Bucket("fleet") + "/d"
	w := newWriter(t, dsn, "c1", 50)
	ids := w.record(t, 0, 60)
	audittest.WaitUntil(t, "the first segment uploaded", func() bool { return w.sink.Durable() == 50 })
	srv.Stop()
	ids = append(ids, w.record(t, 60, 200)...)
	audittest.WaitUntil(t, "the sink failing", func() bool { return w.w.Stats().Failing[w.sink.Name()] })
	if d := w.sink.Durable(); d != 50 {
		t.Fatalf("with the server down, %d records count as durable, want 50", d)
	}
	srv.Restart()
	audittest.WaitUntil(t, "the sink recovered", func() bool { return w.sink.Durable() >= 250 && !w.w.Stats().Failing[w.sink.Name()] })
	w.close(t)
	got := query(t, openBucket(t, dsn), audit.Filter{})
	for _, id := range ids {
		if got[id] != 1 {
			t.Fatalf("record %s found %d times", id, got[id])
		}
	}
}

// TestFork: two writers from one copied data directory (their staging
// directories copied too) upload into one bucket and lose nothing; the
// fork is reported.
func TestFork(t *testing.T) {
	srv := s3test.Start(t)
	for i, ahead := range []bool{false, true} {
		t.Run(fmt.Sprintf("ahead=%v", ahead), func(t *testing.T) {
			dsn := "s3://" + srv.Bucket(fmt.Sprintf("fork%d", i)) + "/decisions"
			audittest.Fork(t, audittest.ForkStore{
				Sink: func(t *testing.T, wal string) audit.Sink {
					sink, err := s3log.OpenSink(context.Background(), dsn, s3log.Options{Staging: filepath.Join(filepath.Dir(wal), "s3"),
						Cluster: "eu", WAL: wal, MaxRecords: 10, MaxAge: 20 * time.Millisecond})
					if err != nil {
						t.Fatal(err)
					}
					return sink
				},
				Reader: func(t *testing.T) audit.Store { return openBucket(t, dsn) },
			}, ahead)
		})
	}
}
