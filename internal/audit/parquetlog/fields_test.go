package parquetlog_test

import (
	"cmp"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
	"github.com/egress-authz/egress-authz/internal/audit/parquetlog"
)

// TestEveryRecordFieldHasAColumn writes a record with every field set and,
// for each field of audit.Record (by reflection, so that a field added to
// Record and forgotten here fails), a record with that field changed, and
// reads them back: a field without a column comes back empty or
// unchanged. The chain fields are the writer's: each record is chained
// after the one before, and its hashes are recomputed when read.
func TestEveryRecordFieldHasAColumn(t *testing.T) {
	dir := t.TempDir()
	log, err := parquetlog.Open(dir, parquetlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	base := audittest.Full()
	base.Time = base.Time.Add(123 * time.Nanosecond)
	base.TraceID = "4bf92f3577b34da6a3ce929d0e0e4736" // a trace id is 32 hex digits
	var want []audit.Record
	for _, v := range audittest.Vary(base) {
		r := v.Record
		switch v.Field {
		case "Writer", "Seq", "PrevHash", "Hash":
			continue // the chain's, set below
		case "TraceID":
			r.TraceID = "4bf92f3577b34da6a3ce929d0e0e4737"
		case "RequestID":
			r.RequestID = "3f2b8c1e-9a4d-4e2f-8b1c-0d9e7f6a5b4c" // stored as 16 bytes
		}
		want = append(want, r)
	}
	want = append([]audit.Record{base}, want...)
	prev := ""
	for i := range want {
		want[i].Writer, want[i].Seq, want[i].PrevHash = "w", uint64(i+1), prev
		want[i].Hash = audit.ComputeHash(&want[i])
		prev = want[i].Hash
	}
	if _, err := log.Cursor(context.Background(), "w"); err != nil {
		t.Fatal(err)
	}
	if err := log.Write(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	got := queryAll(t, dir)
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	slices.SortFunc(got, func(a, b audit.Record) int { return cmp.Compare(a.Seq, b.Seq) })
	for i := range want {
		if d := audittest.Diff(got[i], want[i]); d != "" {
			t.Errorf("record %d:%s", i+1, d)
		}
	}
}
