package parquetlog

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
)

var t0 = time.Date(2026, 12, 3, 22, 0, 0, 0, time.UTC)

// chain makes n records of writer, chained as the audit writer chains
// them, starting after seq from (hash prev), spaced step apart from start.
func chain(writer string, from uint64, prev string, n int, start time.Time, step time.Duration, rng *rand.Rand) []audit.Record {
	out := make([]audit.Record, n)
	for i := range out {
		seq := from + uint64(i) + 1
		r := audit.Record{
			Time:           start.Add(time.Duration(i) * step),
			RequestID:      fmt.Sprintf("ea-abc-%x", seq),
			Principal:      fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/sa%d", seq%5, seq%7),
			TrustDomain:    "cluster.local",
			Namespace:      fmt.Sprintf("ns%d", seq%5),
			ServiceAccount: fmt.Sprintf("sa%d", seq%7),
			Host:           fmt.Sprintf("api%d.example.com", seq%4),
			Port:           443,
			Method:         []string{"GET", "POST"}[seq%2],
			Path:           fmt.Sprintf("/v1/items/%d", seq%100),
			Decision:       audit.Allow,
			Enforced:       true,
			Rule:           fmt.Sprintf("rule-%d", seq%3),
			Owner:          "team",
			Ticket:         "SEC-1",
			RuleSet:        "v1",
			Reason:         "allowed-by-rule",
			CacheHit:       seq%3 == 0,
			Latency:        time.Duration(1000 + seq%5000),
			Writer:         writer,
			Seq:            seq,
			PrevHash:       prev,
		}
		if rng != nil {
			switch rng.IntN(4) {
			case 0:
				r.RequestID = fmt.Sprintf("%08x-%04x-4%03x-a%03x-%012x", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<12), rng.IntN(1<<12), rng.Uint64()&(1<<48-1))
			case 1:
				r.RequestID = fmt.Sprintf("%08X-%04X-4%03X-A%03X-%012X", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<12), rng.IntN(1<<12), rng.Uint64()&(1<<48-1)) // upper case: kept as text
			}
			if rng.IntN(2) == 0 {
				r.TraceID = fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64()|1)
			}
		}
		switch seq % 29 {
		case 5:
			r.RequestID = "" // stored as null, as the nil UUID and no trace id are
		case 6:
			r.RequestID = "00000000-0000-0000-0000-000000000000" // kept as text: a null UUID is no UUID
		}
		if seq%10 == 0 {
			r.Decision, r.Reason, r.Rule, r.Owner, r.Ticket = audit.Deny, "no-matching-rule", "", "", ""
		}
		if seq%13 == 0 {
			r.Enforced, r.Reason = false, "dry-run"
		}
		if seq%17 == 0 {
			r.Method, r.Path, r.Port = "", "", 8443 // TLS passthrough
		}
		if seq%7 == 0 {
			r.Cluster = "eu-west"
		}
		if seq%9 == 0 {
			r.Processor = "stripe"
		}
		r.Hash = audit.ComputeHash(&r)
		prev = r.Hash
		out[i] = r
	}
	return out
}

func writeAll(t testing.TB, dir string, opts Options, batches ...[]audit.Record) *Log {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range batches {
		if len(b) == 0 {
			continue
		}
		if _, err := s.Cursor(context.Background(), b[0].Writer); err != nil {
			t.Fatal(err)
		}
		for len(b) > 0 {
			n := min(len(b), 700)
			if err := s.Write(context.Background(), b[:n]); err != nil {
				t.Fatal(err)
			}
			b = b[n:]
		}
		if err := s.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func query(t testing.TB, st *Log, f audit.Filter) ([]audit.Record, string) {
	t.Helper()
	var got []audit.Record
	next, err := st.Query(context.Background(), f, func(r *audit.Record) error {
		got = append(got, *r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, next
}

func TestEveryFieldRoundTrips(t *testing.T) {
	dir := t.TempDir()
	recs := chain("w1", 0, "", 3000, t0, time.Second, rand.New(rand.NewPCG(1, 2)))
	writeAll(t, dir, Options{MaxRecords: 1000}, recs)
	st, err := OpenExisting(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := query(t, st, audit.Filter{})
	if len(got) != len(recs) {
		t.Fatalf("got %d records, want %d", len(got), len(recs))
	}
	slices.Reverse(got) // newest first; recs are oldest first
	for i := range recs {
		if !reflect.DeepEqual(got[i], recs[i]) {
			t.Fatalf("record %d:\n got %+v\nwant %+v", i, got[i], recs[i])
		}
	}
}

func TestQueryFiltersAndOrder(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	// Two writers whose segments overlap in time, across midnight.
	a := chain("writer-a", 0, "", 5000, t0.Add(90*time.Minute), 997*time.Millisecond, rng)
	b := chain("writer-b", 0, "", 4000, t0.Add(100*time.Minute), 1311*time.Millisecond, rng)
	writeAll(t, dir, Options{MaxRecords: 1500}, a, b)
	st, err := OpenExisting(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(a), b...)
	slices.SortFunc(all, func(x, y audit.Record) int { return newer(&x, &y) })
	mid := t0.Add(2 * time.Hour)
	enforced := true
	for _, f := range []audit.Filter{
		{},
		{Principal: "spiffe://cluster.local/ns/ns2/sa/sa3"},
		{Namespace: "ns1"},
		{Host: audit.HostPattern{Name: "api3.example.com"}},
		{Host: audit.HostPattern{Suffix: ".example.com", Port: 8443}},
		{RequestID: "ea-abc-7d"},
		{Cluster: "eu-west"},
		{Processor: "stripe"},
		{Port: 8443},
		{Method: "GET"},
		{Reason: "no-matching-rule"},
		{Enforced: &enforced},
		{Rule: "rule-1"},
		{Decision: audit.Deny},
		{DryRun: true},
		{Since: mid},
		{Until: mid},
		{Since: mid, Until: mid.Add(30 * time.Minute), Namespace: "ns4"},
	} {
		var want []audit.Record
		for i := range all {
			if matchRecord(&f, &all[i], f.Until) {
				want = append(want, all[i])
			}
		}
		got, _ := query(t, st, f)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("filter %+v: got %d records, want %d (first difference at %d)", f, len(got), len(want), firstDiff(got, want))
		}
		// The same, page by page.
		var paged []audit.Record
		pf := f
		pf.Limit = 333
		for pages := 0; ; pages++ {
			page, next := query(t, st, pf)
			paged = append(paged, page...)
			if next == "" {
				break
			}
			if pages > len(want) {
				t.Fatal("pagination does not end")
			}
			pf.Cursor = next
		}
		if !reflect.DeepEqual(paged, want) {
			t.Errorf("filter %+v in pages of 333: got %d records, want %d (first difference at %d)", f, len(paged), len(want), firstDiff(paged, want))
		}
	}
}

func firstDiff(a, b []audit.Record) int {
	for i := range min(len(a), len(b)) {
		if !reflect.DeepEqual(a[i], b[i]) {
			return i
		}
	}
	return min(len(a), len(b))
}
