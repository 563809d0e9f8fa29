package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
)

// fixture is a Writer feeding a real store: an SQLite file in a temp dir,
// or a fresh database on the test PostgreSQL server.
type fixture struct {
	dir  string
	kind string
	dsn  string
	w    *audit.Writer
	sink audit.Sink
}

func newFixture(t *testing.T, opts audit.Options, wrap ...func(audit.Sink) audit.Sink) *fixture {
	return newFixtureOn(t, "sqlite", opts, wrap...)
}

func newFixtureOn(t *testing.T, kind string, opts audit.Options, wrap ...func(audit.Sink) audit.Sink) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), kind: kind}
	var sink audit.Sink
	switch kind {
	case "sqlite":
		f.dsn = filepath.Join(f.dir, "decisions.db")
		st, err := OpenSQLite(context.Background(), f.dsn)
		if err != nil {
			t.Fatal(err)
		}
		sink = st
	case "postgres":
		f.dsn = newPostgresDB(t)
		st, err := OpenPostgres(context.Background(), f.dsn, PostgresOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sink = st
	}
	for _, w := range wrap {
		sink = w(sink)
	}
	opts.Dir = filepath.Join(f.dir, "wal")
	w, err := audit.Open(opts, sink)
	if err != nil {
		t.Fatal(err)
	}
	f.w, f.sink = w, sink
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = w.Close(ctx)
	})
	return f
}

// reader opens a second handle on the fixture's store, as an auditor or
// an attacker with a database client would.
func (f *fixture) reader(t *testing.T) audit.Store {
	t.Helper()
	var st audit.Store
	var err error
	if f.kind == "postgres" {
		st, err = OpenPostgres(context.Background(), f.dsn, PostgresOptions{})
	} else {
		st, err = OpenSQLite(context.Background(), f.dsn)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func (f *fixture) drain(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.w.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

var (
	t0     = audittest.T0
	sample = audittest.Sample
)

func record(t *testing.T, w *audit.Writer, recs ...audit.Record) {
	t.Helper()
	if err := w.Record(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}

func queryAll(t *testing.T, s audit.Store, f audit.Filter) []audit.Record {
	t.Helper()
	var out []audit.Record
	if _, err := s.Query(context.Background(), f, func(r *audit.Record) error { out = append(out, *r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRoundTripEveryField(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) { testRoundTripEveryField(t, kind) })
	}
}

func testRoundTripEveryField(t *testing.T, kind string) {
	f := newFixtureOn(t, kind, audit.Options{})
	want := sample(7)
	want.Path = "/v1/ünïcode?dropped"
	dry := want
	dry.Enforced, dry.Decision, dry.Reason, dry.Rule = false, audit.Allow, "dry-run", "trial"
	record(t, f.w, want, dry)
	f.drain(t)

	got := queryAll(t, f.reader(t), audit.Filter{})
	if len(got) != 2 {
		t.Fatalf("got %d records, want 2", len(got))
	}
	// Newest first; equal times are ordered by sequence, descending.
	g, gdry := got[1], got[0]
	if g.Writer == "" || g.Seq != 1 || gdry.Seq != 2 || g.PrevHash != "" || gdry.PrevHash != g.Hash {
		t.Fatalf("chain fields: %+v / %+v", g, gdry)
	}
	if g.Hash != audit.ComputeHash(&g) {
		t.Fatalf("stored hash %s does not match content", g.Hash)
	}
	want.Writer, want.Seq, want.PrevHash, want.Hash = g.Writer, g.Seq, g.PrevHash, g.Hash
	if g != want {
		t.Fatalf("round trip:\n got %+v\nwant %+v", g, want)
	}
	if gdry.Enforced || gdry.Rule != "trial" {
		t.Fatalf("dry-run record: %+v", gdry)
	}
}

// TestEveryFieldIsStored: a record with every field set, and its variants
// with one field changed each (by reflection over audit.Record), come back
// from each store as they went in: no field lacks a column, and no two
// columns are swapped.
func TestEveryFieldIsStored(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixtureOn(t, kind, audit.Options{})
			want := []audit.Record{audittest.Full()}
			for _, v := range audittest.Vary(audittest.Full()) {
				want = append(want, v.Record)
			}
			for i := range want {
				want[i].Writer += fmt.Sprintf("/%02d", i) // one chain each, so that no two share a key
			}
			if err := f.sink.Write(context.Background(), want); err != nil {
				t.Fatal(err)
			}
			got := map[string]audit.Record{}
			if err := f.reader(t).Chains(context.Background(), func(r *audit.Record) error { got[r.Writer] = *r; return nil }); err != nil {
				t.Fatal(err)
			}
			for i, w := range want {
				if d := audittest.Diff(got[w.Writer], w); d != "" {
					t.Errorf("record %d (%s) came back different:%s", i, w.Writer, d)
				}
			}
		})
	}
}

// filterSample is record i of the filter tests: audittest.Sample with
// the fields the filters select varied too.
func filterSample(i int) audit.Record {
	r := sample(i)
	if i == 5 {
		r.Enforced = false
	}
	if i%6 == 0 {
		r.Method = "GET"
	}
	if i%9 == 0 {
		r.Port = 8443
	}
	if i%5 == 0 {
		r.Cluster = "eu-west"
	}
	if i%6 == 0 {
		r.Processor = "stripe"
	}
	switch {
	case i%8 == 0:
		r.Host = "x.my_api.svc.example.com"
	case i%13 == 0:
		r.Host = "x.myxapi.svc.example.com" // what my_api would match if '_' were LIKE's wildcard
	case i%11 == 0:
		r.Host = "example.com"
	}
	return r
}

func TestQueryFilters(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) { testQueryFilters(t, kind) })
	}
}

func testQueryFilters(t *testing.T, kind string) {
	f := newFixtureOn(t, kind, audit.Options{})
	const n = 60
	for i := 0; i < n; i++ {
		record(t, f.w, filterSample(i))
	}
	f.drain(t)
	s := f.reader(t)
	count := func(pred func(*audit.Record) bool) int {
		c := 0
		for i := 0; i < n; i++ {
			r := filterSample(i)
			if pred(&r) {
				c++
			}
		}
		return c
	}
	host := func(p string) audit.HostPattern {
		h, err := audit.ParseHostPattern(p)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	yes, no := true, false
	tests := []struct {
		name string
		f    audit.Filter
		want func(*audit.Record) bool
	}{
		{"all", audit.Filter{}, func(*audit.Record) bool { return true }},
		{"since", audit.Filter{Since: t0.Add(50 * time.Second)}, func(r *audit.Record) bool { return !r.Time.Before(t0.Add(50 * time.Second)) }},
		{"until_is_exclusive", audit.Filter{Until: t0.Add(10 * time.Second)}, func(r *audit.Record) bool { return r.Time.Before(t0.Add(10 * time.Second)) }},
		{"window", audit.Filter{Since: t0.Add(10 * time.Second), Until: t0.Add(20 * time.Second)}, func(r *audit.Record) bool {
			return !r.Time.Before(t0.Add(10*time.Second)) && r.Time.Before(t0.Add(20*time.Second))
		}},
		{"principal", audit.Filter{Principal: "spiffe://cluster.local/ns/ns1/sa/sa1"}, func(r *audit.Record) bool { return r.Principal == "spiffe://cluster.local/ns/ns1/sa/sa1" }},
		{"namespace", audit.Filter{Namespace: "ns2"}, func(r *audit.Record) bool { return r.Namespace == "ns2" }},
		{"host", audit.Filter{Host: host("api3.example.com")}, func(r *audit.Record) bool { return r.Host == "api3.example.com" }},
		{"host_in_any_case", audit.Filter{Host: host("API3.Example.COM.")}, func(r *audit.Record) bool { return r.Host == "api3.example.com" }},
		{"host_with_port", audit.Filter{Host: host("api1.example.com:8443")}, func(r *audit.Record) bool { return r.Host == "api1.example.com" && r.Port == 8443 }},
		{"host_wildcard_not_the_apex", audit.Filter{Host: host("*.example.com")}, func(r *audit.Record) bool { return r.Host != "example.com" }},
		{"host_wildcard", audit.Filter{Host: host("*.svc.example.com")}, func(r *audit.Record) bool { return strings.HasSuffix(r.Host, ".svc.example.com") }},
		{"host_wildcard_underscore_is_a_letter", audit.Filter{Host: host("*.my_api.svc.example.com")}, func(r *audit.Record) bool { return r.Host == "x.my_api.svc.example.com" }},
		{"request_id", audit.Filter{RequestID: "req-7"}, func(r *audit.Record) bool { return r.RequestID == "req-7" }},
		{"cluster", audit.Filter{Cluster: "eu-west"}, func(r *audit.Record) bool { return r.Cluster == "eu-west" }},
		{"processor", audit.Filter{Processor: "stripe"}, func(r *audit.Record) bool { return r.Processor == "stripe" }},
		{"port", audit.Filter{Port: 8443}, func(r *audit.Record) bool { return r.Port == 8443 }},
		{"method", audit.Filter{Method: "GET"}, func(r *audit.Record) bool { return r.Method == "GET" }},
		{"reason", audit.Filter{Reason: "denied-by-rule"}, func(r *audit.Record) bool { return r.Reason == "denied-by-rule" }},
		{"enforced", audit.Filter{Enforced: &yes}, func(r *audit.Record) bool { return r.Enforced }},
		{"not_enforced", audit.Filter{Enforced: &no}, func(r *audit.Record) bool { return !r.Enforced }},
		{"rule", audit.Filter{Rule: "rule-1"}, func(r *audit.Record) bool { return r.Rule == "rule-1" }},
		{"decision", audit.Filter{Decision: audit.Allow}, func(r *audit.Record) bool { return r.Decision == audit.Allow }},
		{"dry_run", audit.Filter{DryRun: true}, func(r *audit.Record) bool { return !r.Enforced }},
		{"combined", audit.Filter{Namespace: "ns0", Decision: audit.Deny, Since: t0.Add(30 * time.Second)}, func(r *audit.Record) bool {
			return r.Namespace == "ns0" && r.Decision == audit.Deny && !r.Time.Before(t0.Add(30*time.Second))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := queryAll(t, s, tt.f)
			want := count(tt.want)
			if len(got) != want || want == 0 {
				t.Fatalf("got %d records, want %d (and more than 0)", len(got), want)
			}
			for i := range got {
				if !tt.want(&got[i]) {
					t.Fatalf("record %+v does not match the filter", got[i])
				}
				if i > 0 && got[i].Time.After(got[i-1].Time) {
					t.Fatal("not newest first")
				}
			}
		})
	}
}

func TestQueryPagination(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) { testQueryPagination(t, kind) })
	}
}

func testQueryPagination(t *testing.T, kind string) {
	f := newFixtureOn(t, kind, audit.Options{})
	for i := 0; i < 25; i++ {
		r := sample(i)
		r.Time = t0 // equal times: the cursor must still make progress
		record(t, f.w, r)
	}
	f.drain(t)
	s := f.reader(t)
	seen := map[uint64]bool{}
	cursor, pages := "", 0
	for {
		var page []audit.Record
		next, err := s.Query(context.Background(), audit.Filter{Limit: 10, Cursor: cursor}, func(r *audit.Record) error {
			page = append(page, *r)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, r := range page {
			if seen[r.Seq] {
				t.Fatalf("record %d on two pages", r.Seq)
			}
			seen[r.Seq] = true
		}
		if next == "" {
			if len(page) != 5 {
				t.Fatalf("last page has %d records, want 5", len(page))
			}
			break
		}
		if len(page) != 10 {
			t.Fatalf("page has %d records, want 10", len(page))
		}
		cursor = next
	}
	if pages != 3 || len(seen) != 25 {
		t.Fatalf("%d pages, %d records", pages, len(seen))
	}
	if _, err := s.Query(context.Background(), audit.Filter{Cursor: "garbage!"}, func(*audit.Record) error { return nil }); err == nil {
		t.Fatal("invalid cursor accepted")
	}
}

// tamper runs SQL against the log, as someone with sqlite3 and write access.
func tamper(t *testing.T, f *fixture, stmts ...string) {
	t.Helper()
	driver := map[string]string{"sqlite": "sqlite", "postgres": "pgx"}[f.kind]
	db, err := sql.Open(driver, f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) { testVerifyDetectsTampering(t, kind) })
	}
}

func testVerifyDetectsTampering(t *testing.T, kind string) {
	cols := columns
	if kind == "postgres" {
		cols += ", ts"
	}
	tests := []struct {
		name    string
		sql     []string
		seq     uint64
		problem string
	}{
		{"intact", nil, 0, ""},
		{"edited_decision", []string{"UPDATE decisions SET decision = CASE decision WHEN 'allow' THEN 'deny' ELSE 'allow' END WHERE seq = 4"}, 4, "edited"},
		{"edited_host", []string{"UPDATE decisions SET host = 'evil.example' WHERE seq = 8"}, 8, "edited"},
		{"deleted", []string{"DELETE FROM decisions WHERE seq = 6"}, 7, "deleted"},
		{"deleted_first", []string{"DELETE FROM decisions WHERE seq = 1"}, 2, "deleted"},
		{"inserted", []string{
			"UPDATE decisions SET seq = seq + 1000 WHERE seq >= 5",
			"UPDATE decisions SET seq = seq - 999 WHERE seq >= 1000",
			"INSERT INTO decisions (" + cols + ") SELECT " + strings.Replace(cols, "seq,", "5,", 1) + " FROM decisions WHERE seq = 3",
		}, 5, "edited"},
		{"reordered", []string{
			"UPDATE decisions SET seq = -1 WHERE seq = 3",
			"UPDATE decisions SET seq = 3 WHERE seq = 4",
			"UPDATE decisions SET seq = 4 WHERE seq = -1",
		}, 3, "edited"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureOn(t, kind, audit.Options{})
			for i := 1; i <= 9; i++ {
				record(t, f.w, sample(i))
			}
			f.drain(t)
			tamper(t, f, tt.sql...)
			v, err := audit.Verify(context.Background(), f.reader(t), audit.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tt.problem == "" {
				if !v.OK() || v.Records != 9 {
					t.Fatalf("intact log reported %+v", v)
				}
				return
			}
			if v.OK() {
				t.Fatalf("tampering not detected: %+v", v)
			}
			b := v.Breaks[0]
			if b.Seq != tt.seq || !strings.Contains(b.Problem, tt.problem) {
				t.Fatalf("break %q, want record %d: %s", b.String(), tt.seq, tt.problem)
			}
		})
	}
}

func TestVerifyDetectsForgedRecordSpliceWithValidHash(t *testing.T) {
	// The attacker deletes record 5 and re-creates a record 5 with the same
	// seq and a correctly computed hash but different content: its own hash
	// checks out, the link from record 6 does not.
	f := newFixture(t, audit.Options{})
	for i := 1; i <= 8; i++ {
		record(t, f.w, sample(i))
	}
	f.drain(t)
	s := f.reader(t)
	recs := map[uint64]audit.Record{}
	_ = s.Chains(context.Background(), func(r *audit.Record) error { recs[r.Seq] = *r; return nil })
	forged := recs[5]
	forged.Decision = audit.Allow
	forged.Hash = audit.ComputeHash(&forged)
	tamper(t, f, fmt.Sprintf("UPDATE decisions SET decision = 'allow', hash = '%s' WHERE seq = 5", forged.Hash))
	v, _ := audit.Verify(context.Background(), s, audit.VerifyOptions{})
	if v.OK() || v.Breaks[0].Seq != 6 || !strings.Contains(v.Breaks[0].Problem, "does not follow") {
		t.Fatalf("forged record not detected where expected: %+v", v)
	}
}

// TestMigrationsRunOnceAndRefuseANewerSchema: reopening a log keeps its
// records and schema; a log written by a newer build is refused rather
// than written with an old understanding of its tables.
func TestMigrationsRunOnceAndRefuseANewerSchema(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixtureOn(t, kind, audit.Options{})
			record(t, f.w, sample(1))
			f.drain(t)
			if got := queryAll(t, f.reader(t), audit.Filter{}); len(got) != 1 {
				t.Fatalf("after reopening: %d records, want 1", len(got))
			}
			tamper(t, f, "UPDATE schema_version SET version = version + 1")
			var err error
			if kind == "postgres" {
				_, err = OpenPostgres(context.Background(), f.dsn, PostgresOptions{})
			} else {
				_, err = OpenSQLite(context.Background(), f.dsn)
			}
			if err == nil || !strings.Contains(err.Error(), "newer than this build") {
				t.Fatalf("opening a newer schema: %v", err)
			}
		})
	}
}

// TestSchemaOneUpgradesAndItsChainsVerify: a SQLite log written before
// the cluster and processor columns (schema version 1) gains them on
// open, empty, and its records read back and verify as they did: records
// without those fields keep the EA1 encoding their hashes were made with.
func TestSchemaOneUpgradesAndItsChainsVerify(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	old := &sqlStore{db: db, d: sqliteDialect}
	if err := old.migrate(ctx, sqliteMigrations[:1]); err != nil {
		t.Fatal(err)
	}
	prev := ""
	var want []audit.Record
	for i := 1; i <= 5; i++ {
		r := sample(i)
		r.Writer, r.Seq, r.PrevHash = "w", uint64(i), prev
		r.Hash = audit.ComputeHash(&r)
		prev = r.Hash
		want = append(want, r)
		if _, err := db.Exec(`INSERT INTO decisions (writer, seq, ts_ns, request_id, trace_id, principal, trust_domain, namespace,
			service_account, host, port, method, path, decision, enforced, rule, owner, ticket, ruleset, reason, cache_hit,
			latency_ns, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			r.Writer, r.Seq, r.Time.UnixNano(), r.RequestID, r.TraceID, r.Principal, r.TrustDomain, r.Namespace,
			r.ServiceAccount, r.Host, r.Port, r.Method, r.Path, r.Decision, r.Enforced, r.Rule, r.Owner, r.Ticket,
			r.RuleSet, r.Reason, r.CacheHit, int64(r.Latency), r.PrevHash, r.Hash); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	st, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got := queryAll(t, st, audit.Filter{})
	if len(got) != len(want) {
		t.Fatalf("%d records after the upgrade, want %d", len(got), len(want))
	}
	for i := range got {
		if d := audittest.Diff(got[i], want[len(want)-1-i]); d != "" {
			t.Errorf("record %d:%s", got[i].Seq, d)
		}
	}
	if v, err := audit.Verify(ctx, st, audit.VerifyOptions{}); err != nil || !v.OK() || v.Records != 5 {
		t.Fatalf("verify after the upgrade: %+v %v", v, err)
	}
}

// TestVerifyNamesEveryBreak: three breaks in one chain (an edit, a
// deletion, another edit) are three breaks, each with its kind, record,
// request and time; a time range reports only the breaks in it.
func TestVerifyNamesEveryBreak(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixtureOn(t, kind, audit.Options{})
			for i := 1; i <= 60; i++ {
				record(t, f.w, sample(i))
			}
			f.drain(t)
			tamper(t, f, "UPDATE decisions SET host = 'evil.example.com' WHERE seq = 14",
				"DELETE FROM decisions WHERE seq = 20",
				"UPDATE decisions SET decision = 'deny' WHERE seq = 50")
			v, err := audit.Verify(context.Background(), f.reader(t), audit.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want := []struct {
				kind string
				seq  uint64
			}{{audit.BreakEdited, 14}, {audit.BreakDeleted, 21}, {audit.BreakEdited, 50}}
			if len(v.Breaks) != len(want) {
				t.Fatalf("%d breaks, want %d: %+v", len(v.Breaks), len(want), v.Breaks)
			}
			for i, w := range want {
				b := v.Breaks[i]
				if b.Kind != w.kind || b.Seq != w.seq || b.RequestID != sample(int(w.seq)).RequestID || !b.Time.Equal(sample(int(w.seq)).Time) {
					t.Errorf("break %d: %+v, want a %s break at record %d with its request and time", i, b, w.kind, w.seq)
				}
			}
			// Records 1..30 hold the first two.
			v, _ = audit.Verify(context.Background(), f.reader(t), audit.VerifyOptions{Until: sample(31).Time})
			if len(v.Breaks) != 2 || v.Records != 29 {
				t.Errorf("until record 31: %d records, breaks %+v; want 29 records and the first two breaks", v.Records, v.Breaks)
			}
		})
	}
}

// TestVerifyChecksTheEndWithTheWriteAheadLog: the newest records of a
// chain have no later record to vouch for them. Verify says so, and with
// the writer's write-ahead log it finds them deleted.
func TestVerifyChecksTheEndWithTheWriteAheadLog(t *testing.T) {
	f := newFixtureOn(t, "sqlite", audit.Options{})
	for i := 1; i <= 10; i++ {
		record(t, f.w, sample(i))
	}
	f.drain(t)
	tamper(t, f, "DELETE FROM decisions WHERE seq >= 9")
	v, _ := audit.Verify(context.Background(), f.reader(t), audit.VerifyOptions{})
	if !v.OK() || len(v.Unchecked) != 1 || !strings.Contains(v.Unchecked[0], "end of writer") {
		t.Fatalf("without the log: %+v; want OK, saying the end is unchecked", v)
	}
	v, _ = audit.Verify(context.Background(), f.reader(t), audit.VerifyOptions{Logs: []string{filepath.Join(f.dir, "wal")}})
	if v.OK() || v.Breaks[0].Kind != audit.BreakUnstored || v.Breaks[0].Seq != 9 || !strings.Contains(v.Breaks[0].Problem, "records 9..10") || len(v.Unchecked) != 0 {
		t.Fatalf("with the log: %+v; want records 9..10 named, and nothing unchecked", v)
	}
	// An edit of a record whose hash was recomputed too: only the log's
	// copy shows it.
	recs := map[uint64]audit.Record{}
	_ = f.reader(t).Chains(context.Background(), func(r *audit.Record) error { recs[r.Seq] = *r; return nil })
	forged := recs[8]
	forged.Host = "evil.example.com"
	forged.Hash = audit.ComputeHash(&forged)
	tamper(t, f, fmt.Sprintf("UPDATE decisions SET host = 'evil.example.com', hash = '%s' WHERE seq = 8", forged.Hash))
	v, _ = audit.Verify(context.Background(), f.reader(t), audit.VerifyOptions{Logs: []string{filepath.Join(f.dir, "wal")}})
	if len(v.Breaks) != 2 || v.Breaks[0].Seq != 8 || v.Breaks[0].Kind != audit.BreakEdited {
		t.Fatalf("a record forged with its hash, at the end: %+v; want record 8 named", v.Breaks)
	}
}
