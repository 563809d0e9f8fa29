package parquetlog_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
	"github.com/egress-authz/egress-authz/internal/audit/parquetlog"
)

func queryAll(t *testing.T, dir string) []audit.Record {
	t.Helper()
	st, err := parquetlog.OpenExisting(dir, parquetlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Record
	if _, err := st.Query(context.Background(), audit.Filter{}, func(r *audit.Record) error {
		out = append(out, *r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func verifyDir(t *testing.T, dir string) *audit.Verification {
	t.Helper()
	st, err := parquetlog.OpenExisting(dir, parquetlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := audit.Verify(context.Background(), st, audit.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestWriterFeedsSegments: the audit writer feeds the Parquet sink, which
// holds records in its open segment; a reader in another process (a
// second handle here) finds every record at once, those in closed
// segments and those only in the write-ahead log, and verify checks them
// all. Closing the writer closes the open segment.
func TestWriterFeedsSegments(t *testing.T) {
	dir := t.TempDir()
	segs := filepath.Join(dir, "decisions")
	wal := filepath.Join(dir, "wal")
	sink, err := parquetlog.Open(segs, parquetlog.Options{MaxRecords: 100, WAL: wal})
	if err != nil {
		t.Fatal(err)
	}
	w, err := audit.Open(audit.Options{Dir: wal, Linger: -1, SyncInterval: 10 * time.Millisecond}, sink)
	if err != nil {
		t.Fatal(err)
	}
	const n = 250
	var ids []string
	for i := range n {
		r := audittest.Sample(i)
		ids = append(ids, r.RequestID)
		if err := w.Record(context.Background(), []audit.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	// Queryable at once, before any segment holds the newest records.
	got := queryAll(t, segs)
	if len(got) != n {
		t.Fatalf("queried %d records while serving, want %d", len(got), n)
	}
	for i, r := range got {
		if want := ids[n-1-i]; r.RequestID != want {
			t.Fatalf("record %d is request %s, want %s", i, r.RequestID, want)
		}
	}
	if v := verifyDir(t, segs); !v.OK() || v.Records != n {
		t.Fatalf("verify while serving: %d records, breaks %v", v.Records, v.Breaks)
	}
	// Two segments of 100 close as the sink fills; the rest wait in the
	// open segment.
	audittest.WaitUntil(t, "two closed segments", func() bool { return sink.Durable() == 200 })
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sink.Durable() != n {
		t.Fatalf("after Close the sink made %d records durable, want %d", sink.Durable(), n)
	}
	if got := queryAll(t, segs); len(got) != n {
		t.Fatalf("queried %d records after Close, want %d", len(got), n)
	}
	if v := verifyDir(t, segs); !v.OK() || v.Records != n {
		t.Fatalf("verify after Close: %d records, breaks %v", v.Records, v.Breaks)
	}
}

// TestFork: two writers from one copied data directory into one segment
// directory lose nothing, and the fork is reported.
func TestFork(t *testing.T) {
	for _, ahead := range []bool{false, true} {
		t.Run(fmt.Sprintf("ahead=%v", ahead), func(t *testing.T) {
			dir := t.TempDir()
			audittest.Fork(t, audittest.ForkStore{
				Sink: func(t *testing.T, wal string) audit.Sink {
					l, err := parquetlog.Open(dir, parquetlog.Options{WAL: wal, MaxRecords: 10, MaxAge: 20 * time.Millisecond})
					if err != nil {
						t.Fatal(err)
					}
					return l
				},
				Reader: func(t *testing.T) audit.Store {
					l, err := parquetlog.OpenExisting(dir, parquetlog.Options{})
					if err != nil {
						t.Fatal(err)
					}
					return l
				},
			}, ahead)
		})
	}
}

// TestSegmentsKeepWhatWasRecorded: the writer decodes each batch for this
// sink into memory it reuses for the next batch (the sink is
// audit.Copying), so a segment must copy every value it keeps, and its
// chain metadata too: after many batches through several segments, every
// record reads back as it was recorded, and the log verifies.
func TestSegmentsKeepWhatWasRecorded(t *testing.T) {
	dir := t.TempDir()
	segs := filepath.Join(dir, "decisions")
	sink, err := parquetlog.Open(segs, parquetlog.Options{MaxRecords: 3000})
	if err != nil {
		t.Fatal(err)
	}
	w, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "wal"), BatchSize: 97, Linger: -1, SyncInterval: time.Millisecond}, sink)
	if err != nil {
		t.Fatal(err)
	}
	want := audittest.Realistic("", 0, "", 10000, time.Date(2026, 12, 4, 1, 0, 0, 0, time.UTC), rand.New(rand.NewPCG(5, 5)))
	for i := range want {
		want[i].RequestID += fmt.Sprint(i % 7) // some ids kept as text
		if err := w.Record(context.Background(), want[i:i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := queryAll(t, segs)
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	slices.Reverse(got) // newest first
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("record %d:\n got %+v\nwant %+v", i+1, got[i], want[i])
		}
	}
	if v := verifyDir(t, segs); !v.OK() || v.Records != len(want) {
		t.Fatalf("verify: %d records, breaks %v", v.Records, v.Breaks)
	}
}
