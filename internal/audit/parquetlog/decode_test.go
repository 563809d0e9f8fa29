package parquetlog

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// TestDecoderReadsWhatTheRowReaderReads: the columnar decoder and
// parquet-go's row reader give the same records, every field, on
// segments with random ids, TLS records, dry-run outcomes and row groups
// of several pages.
func TestDecoderReadsWhatTheRowReaderReads(t *testing.T) {
	dir := t.TempDir()
	writeAll(t, dir, Options{MaxRecords: 100000}, chain("w1", 0, "", 70000, t0, 13*time.Millisecond, rand.New(rand.NewPCG(7, 8))))
	eachSegment(t, dir, func(seg *segment) {
		ref := seg.ref
		dec, err := newDecoder(seg.pf.Schema())
		if err != nil {
			t.Fatal(err)
		}
		for _, sp := range seg.rowGroups() {
			var want []audit.Record
			var crcs []uint32
			if err := readRows(sp.rg, func(rows []row) error {
				for i := range rows {
					var r audit.Record
					fromRow(&rows[i], &r)
					want = append(want, r)
					crcs = append(crcs, rows[i].RecordCRC)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			got := make([]audit.Record, sp.rg.NumRows())
			if err := dec.decode(sp.rg, got, allColumns); err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if !reflect.DeepEqual(got[i], want[i]) {
					t.Fatalf("%s row %d:\n got %+v\nwant %+v", ref.name, i, got[i], want[i])
				}
			}
			if !reflect.DeepEqual(dec.crcs, crcs) {
				t.Fatalf("%s: the CRCs differ", ref.name)
			}
		}
	})
}
