package parquetlog

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// TestQuerySkipsOnlyWhatCannotMatch: a segment of three row groups, a
// principal only in the middle one (at its first and last rows and on
// both sides of a mark), windows whose edges fall on row-group
// boundaries: every skip a query makes (by the row groups' times, by the
// dictionary of an exact match) keeps every matching record, with its
// chain hash.
func TestQuerySkipsOnlyWhatCannotMatch(t *testing.T) {
	const n = 2*rowGroupRows + 3000
	start := t0.Add(-20 * time.Hour)
	recs := chain("w1", 0, "", n, start, 50*time.Millisecond, nil)
	const only = "spiffe://cluster.local/ns/only/sa/middle"
	rg1 := rowGroupRows
	for _, i := range []int{rg1, rg1 + markEvery - 1, rg1 + markEvery, rg1 + 40000, 2*rg1 - 1} {
		recs[i].Principal = only
	}
	const lastNS = "ns-last"
	for _, i := range []int{2 * rg1, n - 1} {
		recs[i].Namespace = lastNS
	}
	prev := ""
	for i := range recs {
		recs[i].PrevHash = prev
		recs[i].Hash = audit.ComputeHash(&recs[i])
		prev = recs[i].Hash
	}
	dir := t.TempDir()
	writeAll(t, dir, Options{MaxRecords: n}, recs)
	st, err := OpenExisting(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	refs, err := listSegments(context.Background(), st.st)
	if err != nil || len(refs) != 1 {
		t.Fatalf("want one segment, got %v (%v)", refs, err)
	}
	seg, err := openSegment(context.Background(), st.st, refs[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := len(seg.rowGroups()); got != 3 {
		t.Fatalf("the segment has %d row groups, want 3", got)
	}
	seg.close()

	at := func(i int) time.Time { return recs[i].Time }
	ns := time.Nanosecond
	newest := slices.Clone(recs)
	slices.Reverse(newest)
	for _, tc := range []struct {
		name string
		f    audit.Filter
		want int // -1: not checked, only compared
	}{
		{"principal_in_one_row_group", audit.Filter{Principal: only}, 5},
		{"window_edges_on_its_first_and_last_rows", audit.Filter{Principal: only, Since: at(rg1), Until: at(2*rg1 - 1).Add(ns)}, 5},
		{"window_just_inside_them", audit.Filter{Principal: only, Since: at(rg1).Add(ns), Until: at(2*rg1 - 1)}, 3},
		{"window_from_the_last_row_of_a_row_group", audit.Filter{Since: at(rg1 - 1), Until: at(rg1).Add(ns)}, 2},
		{"window_to_the_first_row_of_a_row_group", audit.Filter{Since: at(2*rg1 - 1), Until: at(2 * rg1).Add(ns)}, 2},
		{"window_across_row_groups", audit.Filter{Principal: "spiffe://cluster.local/ns/ns2/sa/sa3", Since: at(rg1 - 5000), Until: at(2*rg1 + 2000)}, -1},
		{"absent_principal", audit.Filter{Principal: "spiffe://cluster.local/ns/none/sa/none"}, 0},
		{"two_exact_matches_in_different_row_groups", audit.Filter{Principal: only, Namespace: lastNS}, 0},
		{"namespace_in_the_last_row_group", audit.Filter{Namespace: lastNS}, 2},
		{"namespace_and_method", audit.Filter{Namespace: lastNS, Method: recs[n-1].Method}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []audit.Record
			for i := range newest {
				if matchRecord(&tc.f, &newest[i], tc.f.Until) {
					want = append(want, newest[i])
				}
			}
			if tc.want >= 0 && len(want) != tc.want {
				t.Fatalf("the test's records: %d match, want %d", len(want), tc.want)
			}
			got, _ := query(t, st, tc.f)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %d records, want %d (first difference at %d)", len(got), len(want), firstDiff(got, want))
			}
			if len(want) > 100 {
				return
			}
			// Page by page: the cursor's bound is a window's edge too.
			var paged []audit.Record
			pf := tc.f
			pf.Limit = 2
			for pages := 0; ; pages++ {
				page, next := query(t, st, pf)
				paged = append(paged, page...)
				if next == "" || pages > len(want) {
					break
				}
				pf.Cursor = next
			}
			if !reflect.DeepEqual(paged, want) {
				t.Fatalf("in pages of 2: got %d records, want %d (first difference at %d)", len(paged), len(want), firstDiff(paged, want))
			}
		})
	}
}
