package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/sqlstore"
)

// chained40 returns forty's records chained, the even ones from the
// indexer, and record 12 denied by its rule.
func chained40() []audit.Record {
	recs := forty(func(i int, r *audit.Record) {
		r.RuleSet = "v1"
		if i%2 == 0 {
			r.Principal, r.Namespace = "spiffe://cluster.local/ns/search/sa/indexer", "search"
		}
		if i == 12 {
			r.Decision, r.Reason = audit.Deny, "denied-by-rule"
		}
	})
	prev := ""
	for i := range recs {
		recs[i].PrevHash = prev
		recs[i].Hash = audit.ComputeHash(&recs[i])
		prev = recs[i].Hash
	}
	return recs
}

// sqliteWith writes recs to a new SQLite decision log under t.TempDir().
func sqliteWith(t *testing.T, recs []audit.Record) *sqlstore.SQLite {
	t.Helper()
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "decisions.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Write(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	return st
}

func statsServer(t *testing.T) *httptest.Server {
	st := sqliteWith(t, chained40())
	rulesOf := func() (string, []string) { return "v1", []string{"stripe", "gcs", "legacy-ftp"} }
	srv := httptest.NewServer(StatsHandler(st, rulesOf, func() time.Time { return t0.Add(24 * time.Hour) }))
	t.Cleanup(srv.Close)
	return srv
}

func getStats(t *testing.T, srv *httptest.Server, query string) (int, Stats, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + "/v1/stats?" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var st Stats
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("%s: %v\n%s", query, err, body)
		}
	}
	return resp.StatusCode, st, string(body)
}

// TestStatsCounts: GET /v1/stats counts a real store's decisions by
// outcome, bucket, principal, host, rule and deny reason, and names the
// served rules that decided none.
func TestStatsCounts(t *testing.T) {
	srv := statsServer(t)
	code, st, body := getStats(t, srv, "since=2026-12-01T10:00:00Z&until=2026-12-01T11:00:00Z&bucket=10m")
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	// Denies: 5 10 12 15 20 25 30 35 40; dry runs: 7 14 21 28.
	if want := (Counts{Total: 40, Allow: 27, Deny: 9, DryRun: 4}); st.Counts != want {
		t.Errorf("counts %+v, want %+v", st.Counts, want)
	}
	if st.Bucket != "10m" || st.BucketMS != 600_000 || len(st.Series) != 6 {
		t.Fatalf("bucket %q (%d ms), %d buckets; want 10m and 6\n%s", st.Bucket, st.BucketMS, len(st.Series), body)
	}
	want := []Counts{
		{Total: 9, Allow: 7, Deny: 1, DryRun: 1},  // 1-9
		{Total: 10, Allow: 6, Deny: 3, DryRun: 1}, // 10-19
		{Total: 10, Allow: 6, Deny: 2, DryRun: 2}, // 20-29
		{Total: 10, Allow: 8, Deny: 2},            // 30-39
		{Total: 1, Deny: 1},                       // 40
		{},
	}
	for i, b := range st.Series {
		if b.Counts != want[i] || !b.Start.Equal(t0.Add(time.Duration(i)*10*time.Minute)) {
			t.Errorf("bucket %d: %s %+v, want %s %+v", i, b.Start, b.Counts, t0.Add(time.Duration(i)*10*time.Minute), want[i])
		}
	}
	if got := keys(st.Hosts); !slices.Equal(got, []string{"api.stripe.com=27", "storage.googleapis.com=13"}) {
		t.Errorf("hosts %v", got)
	}
	if got := keys(st.Workloads); !slices.Equal(got, []string{"spiffe://cluster.local/ns/payments/sa/checkout=20", "spiffe://cluster.local/ns/search/sa/indexer=20"}) {
		t.Errorf("workloads %v", got)
	}
	if got := keys(st.Rules); !slices.Equal(got, []string{"stripe=32"}) {
		t.Errorf("rules %v", got)
	}
	if got := keys(st.Reasons); !slices.Equal(got, []string{"no-matching-rule=8", "denied-by-rule=1"}) {
		t.Errorf("deny reasons %v", got)
	}
	if !slices.Equal(st.Unused, []string{"gcs", "legacy-ftp"}) || st.RuleSet != "v1" {
		t.Errorf("unused rules %v of %q, want gcs legacy-ftp of v1", st.Unused, st.RuleSet)
	}
}

// TestStatsFiltersAndWindow: the filters of /v1/decisions select what is
// counted; without since the window starts at the oldest record, and the
// bucket width is chosen from the window.
func TestStatsFiltersAndWindow(t *testing.T) {
	srv := statsServer(t)
	code, st, body := getStats(t, srv, "host=*.GOOGLEAPIS.com&decision=deny&top=1")
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	// storage.googleapis.com denies: 12 15 30.
	if want := (Counts{Total: 3, Deny: 3}); st.Counts != want {
		t.Errorf("counts %+v, want %+v", st.Counts, want)
	}
	if got := keys(st.Workloads); len(got) != 1 || got[0] != "spiffe://cluster.local/ns/search/sa/indexer=2" {
		t.Errorf("top=1 workloads %v", got)
	}
	// Only record 12 of those has a rule: stripe.
	if !slices.Equal(st.Unused, []string{"gcs", "legacy-ftp"}) {
		t.Errorf("unused %v, want gcs legacy-ftp", st.Unused)
	}
	// The oldest selected record is at 10:12; the clock says 24 h after
	// 10:00: 23 h 48 min in 30 min buckets from 10:00.
	if !st.Since.Equal(t0.Add(12*time.Minute)) || st.Bucket != "30m" || len(st.Series) != 48 {
		t.Errorf("window from %s in %s buckets (%d); want from 10:12 in 30m (48)", st.Since, st.Bucket, len(st.Series))
	}
	if st.Series[0].Deny != 2 || st.Series[1].Deny != 1 || st.Series[2].Total != 0 {
		t.Errorf("series starts %+v", st.Series[:3])
	}
	code, st, body = getStats(t, srv, "reason=dry-run&since=2026-12-01T10:00:00Z&until=2026-12-01T10:30:00Z")
	if code != http.StatusOK || st.Counts != (Counts{Total: 4, DryRun: 4}) || st.Bucket != "30s" || len(st.Series) != 60 {
		t.Errorf("dry runs of 10:00-10:30: %d %+v in %s (%d buckets)\n%s", code, st.Counts, st.Bucket, len(st.Series), body)
	}
}

// TestStatsRefusesWhatItCannotCount: unknown, repeated and paging
// parameters, and buckets that make no series, are a 400 saying why.
func TestStatsRefusesWhatItCannotCount(t *testing.T) {
	srv := statsServer(t)
	for _, tc := range []struct{ query, says string }{
		{"requestid=x", "requestid: unknown filter (known: since, until, request_id"},
		{"requestid=x", "bucket, top"},
		{"host=a&host=b", "given 2 times"},
		{"limit=10", "limit and cursor page"},
		{"reason=nope", "no reason a decision has"},
		{"bucket=10", "bucket"},
		{"bucket=100ms", "at least 1s"},
		{"bucket=1s&since=2026-11-01", "at most 10000"},
		{"top=0", "top"},
		{"principal=%zz", "malformed"},
	} {
		code, _, body := getStats(t, srv, tc.query)
		if code != http.StatusBadRequest || !strings.Contains(body, tc.says) {
			t.Errorf("%s: %d %q, want 400 saying %q", tc.query, code, body, tc.says)
		}
	}
}

func keys(tops []Top) []string {
	var out []string
	for _, t := range tops {
		out = append(out, fmt.Sprintf("%s=%d", t.Key, t.Total))
	}
	return out
}
