package parquetlog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// rewrite rewrites a segment as another tool would: every row read,
// change applied, the file written again with its key-value metadata.
func rewrite(t *testing.T, path string, change func([]row) []row) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	meta, _ := pf.Lookup(metaKey)
	var rows []row
	for _, rg := range pf.RowGroups() {
		if err := readRows(rg, func(b []row) error { rows = append(rows, b...); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	rows = change(rows)
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := parquet.NewGenericWriter[row](out, parquet.MaxRowsPerRowGroup(rowGroupRows), parquet.KeyValueMetadata(metaKey, meta))
	if _, err := w.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out.Close()
}

func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "day=*", "*.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	return files
}

func verify(t *testing.T, dir string) *audit.Verification {
	t.Helper()
	st, err := OpenExisting(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := st.VerifyChains(context.Background(), audit.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerify(t *testing.T) {
	build := func(t *testing.T) string {
		dir := t.TempDir()
		// 20,000 records in segments of 6,000: several marks per segment.
		writeAll(t, dir, Options{MaxRecords: 6000}, chain("w1", 0, "", 20000, t0.Add(-12*time.Hour), time.Second, nil))
		return dir
	}
	type want struct {
		seq     uint64
		problem string
	}
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, dir string)
		breaks []want
	}{
		{name: "intact", tamper: func(*testing.T, string) {}},
		{
			name: "three edits and a deletion are each named",
			tamper: func(t *testing.T, dir string) {
				files := segmentFiles(t, dir)
				rewrite(t, files[0], func(rows []row) []row {
					rows[13].Host = "evil.example.com" // record 14
					rows[49].Decision = "allow"        // record 50 (a deny)
					return slices.Delete(rows, 19, 20) // record 20
				})
				rewrite(t, files[2], func(rows []row) []row {
					rows[100].Principal = "spiffe://cluster.local/ns/x/sa/y" // record 12,101
					return rows
				})
			},
			breaks: []want{{14, "edited"}, {21, "records 20..20 were deleted"}, {50, "edited"}, {12101, "edited"}},
		},
		{
			name: "a deleted row group",
			tamper: func(t *testing.T, dir string) {
				// The first mark block of the second segment.
				rewrite(t, segmentFiles(t, dir)[1], func(rows []row) []row { return rows[markEvery:] })
			},
			breaks: []want{{6001 + markEvery, fmt.Sprintf("records 6001..%d were deleted", 6000+markEvery)}},
		},
		{
			name:   "a deleted segment",
			tamper: func(t *testing.T, dir string) { os.Remove(segmentFiles(t, dir)[1]) },
			breaks: []want{{12001, "records 6001..12000 were deleted"}},
		},
		{
			name: "a reordered segment",
			tamper: func(t *testing.T, dir string) {
				rewrite(t, segmentFiles(t, dir)[0], func(rows []row) []row { slices.Reverse(rows); return rows })
			},
			breaks: []want{{6000, "records 1..5999 were deleted"}},
		},
		{
			name: "two segments' names swapped",
			tamper: func(t *testing.T, dir string) {
				files := segmentFiles(t, dir)
				os.Rename(files[1], files[1]+".x")
				os.Rename(files[2], files[1])
				os.Rename(files[1]+".x", files[2])
			},
			breaks: []want{{6001, "renamed or replaced"}, {12001, "renamed or replaced"}},
		},
		{
			name: "a segment renamed out of the layout",
			tamper: func(t *testing.T, dir string) {
				files := segmentFiles(t, dir)
				os.Rename(files[3], strings.Replace(files[3], "00000000000000018001", "00000000000000030001", 1))
			},
			breaks: []want{{0, "is not a segment"}},
		},
		{
			name: "an edit with its CRC recomputed is caught by the chain",
			tamper: func(t *testing.T, dir string) {
				rewrite(t, segmentFiles(t, dir)[0], func(rows []row) []row {
					var r audit.Record
					fromRow(&rows[99], &r)
					r.Host = "evil.example.com"
					rows[99].Host = r.Host
					rows[99].RecordCRC, _ = recordCRC(&r, nil)
					return rows
				})
			},
			breaks: []want{{markEvery + 1, "do not give the chain hash"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := build(t)
			tc.tamper(t, dir)
			v := verify(t, dir)
			if len(tc.breaks) == 0 {
				if !v.OK() || v.Records != 20000 || v.Writers["w1"] != 20000 {
					t.Fatalf("verify of an intact log: %+v", v)
				}
				return
			}
			for _, w := range tc.breaks {
				found := slices.ContainsFunc(v.Breaks, func(b audit.Break) bool {
					return b.Seq == w.seq && strings.Contains(b.Problem, w.problem)
				})
				if !found {
					t.Errorf("no break at record %d saying %q; breaks: %+v", w.seq, w.problem, v.Breaks)
				}
			}
		})
	}
}
