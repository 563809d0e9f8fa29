package parquetlog

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// countingDir is a Dir that records what was listed.
type countingDir struct {
	Dir
	mu     sync.Mutex
	listed []string
}

func (c *countingDir) List(ctx context.Context, prefix string) ([]Object, error) {
	c.mu.Lock()
	c.listed = append(c.listed, prefix)
	c.mu.Unlock()
	return c.Dir.List(ctx, prefix)
}

// TestQueryListsOnlyTheClusterAndDays: in a fleet's layout, a query of one
// cluster and a time range lists only that cluster's directories of those
// days, and answers as a query of the whole log filtered record by record.
func TestQueryListsOnlyTheClusterAndDays(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	for _, c := range []string{"eu-west-1", "us-east-1", "ap-south-1"} {
		recs := chain("w-"+c, 0, "", 10*24, start, time.Hour, nil) // ten days, a record an hour
		for i := range recs {
			recs[i].Cluster = c
		}
		// Re-chain: the cluster is part of the hash.
		prev := ""
		for i := range recs {
			recs[i].PrevHash = prev
			recs[i].Hash = audit.ComputeHash(&recs[i])
			prev = recs[i].Hash
		}
		writeAll(t, dir, Options{Cluster: c, MaxRecords: 30}, recs).Close()
	}
	st := &countingDir{Dir: Dir(dir)}
	log := OpenStorage(st)
	f := audit.Filter{Cluster: "us-east-1", Since: start.Add(3 * 24 * time.Hour), Until: start.Add(5 * 24 * time.Hour)}
	got, _ := query(t, log, f)

	all, _ := query(t, OpenStorage(Dir(dir)), audit.Filter{})
	var want []audit.Record
	for _, r := range all {
		if f.Match(&r) {
			want = append(want, r)
		}
	}
	if len(want) != 48 {
		t.Fatalf("the filter matches %d records of the log, want 48 (two days of one cluster)", len(want))
	}
	if i := firstDiff(got, want); len(got) != len(want) || i < len(want) {
		t.Fatalf("query of one cluster's two days: %d records, want %d; first difference at %d", len(got), len(want), i)
	}
	for _, p := range st.listed {
		if !strings.HasPrefix(p, "cluster=us-east-1/day=") {
			t.Errorf("listed %q: want only cluster=us-east-1's days", p)
		}
	}
	days := slices.Compact(slices.Sorted(slices.Values(st.listed)))
	if len(days) > 4 {
		t.Errorf("listed %d day directories (%v), want the range's 2 and at most a day either side", len(days), days)
	}
}
