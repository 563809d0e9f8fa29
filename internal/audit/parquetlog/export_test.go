package parquetlog

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
)

// TestRecordWriterRoundTrip: records of two writers, out of order, come
// back from the file whole, hashes too.
func TestRecordWriterRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	recs := append(audittest.Realistic("a", 0, "", 1500, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), rng),
		audittest.Realistic("b", 0, "", 10, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), rng)...)
	full := audittest.Full()
	recs = append(recs, full)
	rng.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
	var buf bytes.Buffer
	w := NewRecordWriter(&buf)
	for i := range recs {
		if err := w.Write(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := ReadRecords(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(recs) || w.Records() != len(recs) {
		t.Fatalf("%d records read, %d counted, want %d", len(got), w.Records(), len(recs))
	}
	for i := range recs {
		if d := audittest.Diff(got[i], recs[i]); d != "" {
			t.Fatalf("record %d: %s", i, d)
		}
		if got[i].Hash != recs[i].Hash || got[i].PrevHash != recs[i].PrevHash || audit.ComputeHash(&got[i]) != recs[i].Hash && recs[i].Writer == "a" {
			t.Fatalf("record %d: hashes do not survive", i)
		}
	}
}
