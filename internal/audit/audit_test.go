package audit

import (
	"context"
	"database/sql"

	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// fixture is a Writer feeding a real store: an SQLite file in a temp dir,
// or a fresh database on the test PostgreSQL server.
type fixture struct {
	dir  string
	kind string
	dsn  string
	w    *Writer
	sink Sink
}

func newFixture(t *testing.T, opts Options, wrap ...func(Sink) Sink) *fixture {
	return newFixtureOn(t, "sqlite", opts, wrap...)
}

func newFixtureOn(t *testing.T, kind string, opts Options, wrap ...func(Sink) Sink) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), kind: kind}
	var sink Sink
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
	w, err := Open(opts, sink)
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
func (f *fixture) reader(t *testing.T) Store {
	t.Helper()
	var st Store
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

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 123456789, time.UTC)

func sample(i int) Record {
	return Record{
		Time:           t0.Add(time.Duration(i) * time.Second),
		RequestID:      fmt.Sprintf("req-%d", i),
		TraceID:        "4bf92f3577b34da6a3ce929d0e0e4736",
		Principal:      fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/sa%d", i%3, i%5),
		TrustDomain:    "cluster.local",
		Namespace:      fmt.Sprintf("ns%d", i%3),
		ServiceAccount: fmt.Sprintf("sa%d", i%5),
		Host:           fmt.Sprintf("api%d.example.com", i%4),
		Port:           443,
		Method:         "POST",
		Path:           "/v1/charges",
		Decision:       []string{Allow, Deny}[i%2],
		Enforced:       true,
		Rule:           fmt.Sprintf("rule-%d", i%2),
		Owner:          "team-payments",
		Ticket:         "SEC-1",
		RuleSet:        "abcdef0123456789",
		Reason:         []string{"allowed-by-rule", "denied-by-rule"}[i%2],
		CacheHit:       i%3 == 0,
		Latency:        time.Duration(1000 + i),
	}
}

func record(t *testing.T, w *Writer, recs ...Record) {
	t.Helper()
	if err := w.Record(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}

func queryAll(t *testing.T, s Store, f Filter) []Record {
	t.Helper()
	var out []Record
	if _, err := s.Query(context.Background(), f, func(r *Record) error { out = append(out, *r); return nil }); err != nil {
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
	f := newFixtureOn(t, kind, Options{})
	want := sample(7)
	want.Path = "/v1/ünïcode?dropped"
	dry := want
	dry.Enforced, dry.Decision, dry.Reason, dry.Rule = false, Allow, "dry-run", "trial"
	record(t, f.w, want, dry)
	f.drain(t)

	got := queryAll(t, f.reader(t), Filter{})
	if len(got) != 2 {
		t.Fatalf("got %d records, want 2", len(got))
	}
	// Newest first; equal times are ordered by sequence, descending.
	g, gdry := got[1], got[0]
	if g.Writer == "" || g.Seq != 1 || gdry.Seq != 2 || g.PrevHash != "" || gdry.PrevHash != g.Hash {
		t.Fatalf("chain fields: %+v / %+v", g, gdry)
	}
	if g.Hash != ComputeHash(&g) {
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

func TestRecordCleansStrings(t *testing.T) {
	f := newFixture(t, Options{})
	r := sample(1)
	r.Principal = "spiffe://cluster.local/\xff\x00x"
	record(t, f.w, r)
	f.drain(t)
	got := queryAll(t, f.reader(t), Filter{})
	if got[0].Principal != "spiffe://cluster.local/\uFFFD\uFFFDx" {
		t.Fatalf("principal stored as %q", got[0].Principal)
	}
	if v, err := Verify(context.Background(), f.reader(t)); err != nil || !v.OK() {
		t.Fatalf("verify after cleaning: %+v %v", v, err)
	}
}

func TestQueryFilters(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) { testQueryFilters(t, kind) })
	}
}

func testQueryFilters(t *testing.T, kind string) {
	f := newFixtureOn(t, kind, Options{})
	const n = 60
	for i := 0; i < n; i++ {
		r := sample(i)
		if i == 5 {
			r.Enforced = false
		}
		record(t, f.w, r)
	}
	f.drain(t)
	s := f.reader(t)
	count := func(pred func(*Record) bool) int {
		c := 0
		for i := 0; i < n; i++ {
			r := sample(i)
			if i == 5 {
				r.Enforced = false
			}
			if pred(&r) {
				c++
			}
		}
		return c
	}
	tests := []struct {
		name string
		f    Filter
		want func(*Record) bool
	}{
		{"all", Filter{}, func(*Record) bool { return true }},
		{"since", Filter{Since: t0.Add(50 * time.Second)}, func(r *Record) bool { return !r.Time.Before(t0.Add(50 * time.Second)) }},
		{"until_is_exclusive", Filter{Until: t0.Add(10 * time.Second)}, func(r *Record) bool { return r.Time.Before(t0.Add(10 * time.Second)) }},
		{"window", Filter{Since: t0.Add(10 * time.Second), Until: t0.Add(20 * time.Second)}, func(r *Record) bool {
			return !r.Time.Before(t0.Add(10*time.Second)) && r.Time.Before(t0.Add(20*time.Second))
		}},
		{"principal", Filter{Principal: "spiffe://cluster.local/ns/ns1/sa/sa1"}, func(r *Record) bool { return r.Principal == "spiffe://cluster.local/ns/ns1/sa/sa1" }},
		{"namespace", Filter{Namespace: "ns2"}, func(r *Record) bool { return r.Namespace == "ns2" }},
		{"host", Filter{Host: "api3.example.com"}, func(r *Record) bool { return r.Host == "api3.example.com" }},
		{"rule", Filter{Rule: "rule-1"}, func(r *Record) bool { return r.Rule == "rule-1" }},
		{"decision", Filter{Decision: Allow}, func(r *Record) bool { return r.Decision == Allow }},
		{"dry_run", Filter{DryRun: true}, func(r *Record) bool { return !r.Enforced }},
		{"combined", Filter{Namespace: "ns0", Decision: Deny, Since: t0.Add(30 * time.Second)}, func(r *Record) bool {
			return r.Namespace == "ns0" && r.Decision == Deny && !r.Time.Before(t0.Add(30*time.Second))
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
	f := newFixtureOn(t, kind, Options{})
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
		var page []Record
		next, err := s.Query(context.Background(), Filter{Limit: 10, Cursor: cursor}, func(r *Record) error {
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
	if _, err := s.Query(context.Background(), Filter{Cursor: "garbage!"}, func(*Record) error { return nil }); err == nil {
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
	cols := "writer, seq, ts_ns, request_id, trace_id, principal, trust_domain, namespace, service_account, host, port, method, path, decision, enforced, rule, owner, ticket, ruleset, reason, cache_hit, latency_ns, prev_hash, hash"
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
			f := newFixtureOn(t, kind, Options{})
			for i := 1; i <= 9; i++ {
				record(t, f.w, sample(i))
			}
			f.drain(t)
			tamper(t, f, tt.sql...)
			v, err := Verify(context.Background(), f.reader(t))
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
	f := newFixture(t, Options{})
	for i := 1; i <= 8; i++ {
		record(t, f.w, sample(i))
	}
	f.drain(t)
	s := f.reader(t)
	recs := map[uint64]Record{}
	_ = s.Chains(context.Background(), func(r *Record) error { recs[r.Seq] = *r; return nil })
	forged := recs[5]
	forged.Decision = Allow
	forged.Hash = ComputeHash(&forged)
	tamper(t, f, fmt.Sprintf("UPDATE decisions SET decision = 'allow', hash = '%s' WHERE seq = 5", forged.Hash))
	v, _ := Verify(context.Background(), s)
	if v.OK() || v.Breaks[0].Seq != 6 || !strings.Contains(v.Breaks[0].Problem, "does not follow") {
		t.Fatalf("forged record not detected where expected: %+v", v)
	}
}

func TestTwoWritersInOneStoreVerify(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenSQLite(context.Background(), filepath.Join(dir, "d.db"))
	if err != nil {
		t.Fatal(err)
	}
	st2, err := OpenSQLite(context.Background(), filepath.Join(dir, "d.db"))
	if err != nil {
		t.Fatal(err)
	}
	w1, err := Open(Options{Dir: filepath.Join(dir, "w1")}, st)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := Open(Options{Dir: filepath.Join(dir, "w2")}, st2)
	if err != nil {
		t.Fatal(err)
	}
	if w1.ID() == w2.ID() {
		t.Fatal("two writers share an id")
	}
	for i := 0; i < 50; i++ {
		record(t, w1, sample(i))
		record(t, w2, sample(i))
	}
	_ = w1.Close(context.Background())
	_ = w2.Close(context.Background())
	r, _ := OpenSQLite(context.Background(), filepath.Join(dir, "d.db"))
	defer r.Close()
	v, err := Verify(context.Background(), r)
	if err != nil || !v.OK() || v.Records != 100 || len(v.Writers) != 2 {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

func TestCloseDrainsEverything(t *testing.T) {
	f := newFixture(t, Options{BatchSize: 64})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				if err := f.w.Record(context.Background(), []Record{sample(g*1000 + i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	f.drain(t)
	v, err := Verify(context.Background(), f.reader(t))
	if err != nil || !v.OK() || v.Records != 4000 {
		t.Fatalf("after drain: %+v %v", v, err)
	}
	if err := f.w.Record(context.Background(), []Record{sample(1)}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Record after Close: %v", err)
	}
}

// lockDB takes SQLite's write lock from another connection, so the sink's
// writes fail (busy) until release is called: a real slow store.
func lockDB(t *testing.T, path string) (release func()) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			_, _ = conn.ExecContext(context.Background(), "COMMIT")
			conn.Close()
			db.Close()
		})
	}
}

// fastFail shortens the SQLite busy wait so a locked store fails quickly.
type fastFail struct {
	Sink
	timeout time.Duration
}

func (s fastFail) Write(ctx context.Context, recs []Record) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.Sink.Write(ctx, recs)
}

func TestOverflowDenyWhenSinkIsStuck(t *testing.T) {
	f := newFixture(t, Options{Buffer: 20}, func(s Sink) Sink { return fastFail{s, 50 * time.Millisecond} })
	// Wait for the sink to read its cursor before locking the store.
	time.Sleep(100 * time.Millisecond)
	release := lockDB(t, filepath.Join(f.dir, "decisions.db"))
	defer release()
	var refused int
	for i := 0; i < 40; i++ {
		if err := f.w.Record(context.Background(), []Record{sample(i)}); err != nil {
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("unexpected error %v", err)
			}
			refused++
		}
	}
	if refused != 20 {
		t.Fatalf("%d records refused, want 20 (buffer 20 of 40)", refused)
	}
	if st := f.w.Stats(); st.Overflows != 20 || st.Pending != 20 {
		t.Fatalf("stats %+v", st)
	}
	for deadline := time.Now().Add(5 * time.Second); !f.w.Stats().Failing["sqlite"]; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stuck sink is not reported as failing")
		}
	}
	release()
	f.drain(t)
	v, err := Verify(context.Background(), f.reader(t))
	if err != nil || !v.OK() || v.Records != 20 {
		t.Fatalf("after the store came back: %+v %v", v, err)
	}
}

func TestOverflowBlockWaitsForRoom(t *testing.T) {
	f := newFixture(t, Options{Buffer: 5, Overflow: OverflowBlock}, func(s Sink) Sink { return fastFail{s, 50 * time.Millisecond} })
	time.Sleep(100 * time.Millisecond)
	release := lockDB(t, filepath.Join(f.dir, "decisions.db"))
	for i := 0; i < 5; i++ {
		record(t, f.w, sample(i))
	}
	// Full: a Record with a deadline gives up at the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := f.w.Record(ctx, []Record{sample(5)})
	cancel()
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("full buffer with deadline: %v", err)
	}
	// Another waits, and goes through once the store is back.
	done := make(chan error, 1)
	go func() { done <- f.w.Record(context.Background(), []Record{sample(6)}) }()
	select {
	case err := <-done:
		t.Fatalf("Record did not block: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Record still blocked after the store came back")
	}
	f.drain(t)
	if v, _ := Verify(context.Background(), f.reader(t)); !v.OK() || v.Records != 6 {
		t.Fatalf("%+v", v)
	}
}

// flaky fails its first n writes: the store is down, then returns.
type flaky struct {
	Sink
	fails atomic.Int32
}

func (s *flaky) Write(ctx context.Context, recs []Record) error {
	if s.fails.Add(-1) >= 0 {
		return errors.New("connection refused")
	}
	return s.Sink.Write(ctx, recs)
}

func TestOutageReplaysInOrderExactlyOnce(t *testing.T) {
	fl := &flaky{}
	fl.fails.Store(3)
	f := newFixture(t, Options{BatchSize: 10, SegmentRecords: 7}, func(s Sink) Sink { fl.Sink = s; return fl })
	for i := 0; i < 100; i++ {
		record(t, f.w, sample(i))
	}
	f.drain(t)
	v, err := Verify(context.Background(), f.reader(t))
	if err != nil || !v.OK() || v.Records != 100 {
		t.Fatalf("after outage: %+v %v", v, err)
	}
	// Segments the sink finished with were removed; the head stays.
	segs, _ := segments(filepath.Join(f.dir, "wal"))
	if len(segs) != 1 {
		t.Fatalf("%d segments left, want the head only", len(segs))
	}
}

func TestRestartResumesChainAndReplaysUnstored(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "d.db")
	walDir := filepath.Join(dir, "wal")
	st, _ := OpenSQLite(context.Background(), dbPath)
	fl := &flaky{Sink: st}
	fl.fails.Store(1 << 30) // the store is down for this whole run
	w, err := Open(Options{Dir: walDir, SegmentRecords: 4}, fl)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		record(t, w, sample(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	if err := w.Close(ctx); err == nil {
		t.Fatal("Close reported success while the store was down")
	}
	cancel()

	// A torn frame at the tail, as a crash inside write(2) leaves.
	segs, _ := segments(walDir)
	head := filepath.Join(walDir, segmentName(segs[len(segs)-1]))
	fh, _ := os.OpenFile(head, os.O_WRONLY|os.O_APPEND, 0)
	_, _ = fh.Write([]byte{0, 0, 1, 0, 9, 9})
	fh.Close()

	st2, _ := OpenSQLite(context.Background(), dbPath)
	w2, err := Open(Options{Dir: walDir, SegmentRecords: 4}, st2)
	if err != nil {
		t.Fatal(err)
	}
	if w2.ID() != w.ID() {
		t.Fatalf("writer id changed across restart: %s -> %s", w.ID(), w2.ID())
	}
	for i := 10; i < 15; i++ {
		record(t, w2, sample(i))
	}
	if err := w2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, _ := OpenSQLite(context.Background(), dbPath)
	defer r.Close()
	v, err := Verify(context.Background(), r)
	if err != nil || !v.OK() || v.Records != 15 {
		t.Fatalf("after restart: %+v %v", v, err)
	}
}

func TestOneProcessPerLog(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	if _, err := Open(Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second writer on the same log: %v", err)
	}
}

func TestCanonicalRoundTrip(t *testing.T) {
	r := sample(3)
	r.Writer, r.Seq, r.PrevHash = "w", 42, strings.Repeat("a", 64)
	b := appendCanonical(nil, &r)
	got, err := decodeCanonical(b)
	if err != nil {
		t.Fatal(err)
	}
	r.Hash = ComputeHash(&r)
	if got != r {
		t.Fatalf("got %+v\nwant %+v", got, r)
	}
	for i := 0; i < len(b); i++ {
		if _, err := decodeCanonical(b[:i]); err == nil {
			t.Fatalf("truncated encoding (%d of %d bytes) decoded", i, len(b))
		}
	}
}

// blockedCursor is a sink that is down at start-up: Cursor never answers
// until released.
type blockedCursor struct {
	Sink
	release chan struct{}
}

func (b blockedCursor) Cursor(ctx context.Context, writer string) (uint64, error) {
	select {
	case <-b.release:
		return b.Sink.Cursor(ctx, writer)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// TestRestartWithASinkDownStillRecords: after a restart, a sink that has
// not answered yet must not make the writer refuse records that the log
// has room for (every earlier record was stored).
func TestRestartWithASinkDownStillRecords(t *testing.T) {
	dir := t.TempDir()
	dbPath, walDir := filepath.Join(dir, "d.db"), filepath.Join(dir, "wal")
	st, _ := OpenSQLite(context.Background(), dbPath)
	w, err := Open(Options{Dir: walDir, SegmentRecords: 5}, st)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		record(t, w, sample(i))
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st2, _ := OpenSQLite(context.Background(), dbPath)
	down := blockedCursor{Sink: st2, release: make(chan struct{})}
	w2, err := Open(Options{Dir: walDir, Buffer: 10}, down)
	if err != nil {
		t.Fatal(err)
	}
	for i := 30; i < 33; i++ {
		if err := w2.Record(context.Background(), []Record{sample(i)}); err != nil {
			t.Fatalf("record %d refused while the sink was still starting: %v", i, err)
		}
	}
	close(down.release)
	if err := w2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, _ := OpenSQLite(context.Background(), dbPath)
	defer r.Close()
	if v, err := Verify(context.Background(), r); err != nil || !v.OK() || v.Records != 33 {
		t.Fatalf("%+v %v", v, err)
	}
}

// countingSink counts the records it stores.
type countingSink struct {
	Sink
	n atomic.Int64
}

func (c *countingSink) Write(ctx context.Context, recs []Record) error {
	if err := c.Sink.Write(ctx, recs); err != nil {
		return err
	}
	c.n.Add(int64(len(recs)))
	return nil
}

// TestSinksSeeOnlyFsyncedRecords: a store must never hold a record the
// log could lose to a power cut, or after one the writer would reuse its
// sequence number. With a sync interval of an hour, nothing reaches the
// sink until Close fsyncs the log.
func TestSinksSeeOnlyFsyncedRecords(t *testing.T) {
	cs := &countingSink{}
	f := newFixture(t, Options{SyncInterval: time.Hour, Linger: -1}, func(s Sink) Sink { cs.Sink = s; return cs })
	for i := 0; i < 20; i++ {
		record(t, f.w, sample(i))
	}
	time.Sleep(300 * time.Millisecond)
	if n := cs.n.Load(); n != 0 {
		t.Fatalf("the sink stored %d records before the log was fsynced", n)
	}
	f.drain(t)
	if n := cs.n.Load(); n != 20 {
		t.Fatalf("after Close the sink has %d records, want 20", n)
	}
}

// TestRecoveryDropsEmptySegments: an empty segment left by a crash right
// after a rotation, or after a failed write, must not stall a sink.
func TestRecoveryDropsEmptySegments(t *testing.T) {
	dir := t.TempDir()
	dbPath, walDir := filepath.Join(dir, "d.db"), filepath.Join(dir, "wal")
	st, _ := OpenSQLite(context.Background(), dbPath)
	fl := &flaky{Sink: st}
	fl.fails.Store(1 << 30) // nothing stored in the first run
	w, err := Open(Options{Dir: walDir, SegmentRecords: 5}, fl)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 12; i++ {
		record(t, w, sample(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_ = w.Close(ctx)
	cancel()
	// Stray empty segments: one inside the log, one after its end.
	for _, first := range []uint64{3, 13} {
		if err := os.WriteFile(filepath.Join(walDir, segmentName(first)), nil, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	st2, _ := OpenSQLite(context.Background(), dbPath)
	w2, err := Open(Options{Dir: walDir, SegmentRecords: 5}, st2)
	if err != nil {
		t.Fatal(err)
	}
	record(t, w2, sample(12))
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w2.Close(ctx); err != nil {
		t.Fatalf("the sink did not get every record: %v", err)
	}
	r, _ := OpenSQLite(context.Background(), dbPath)
	defer r.Close()
	if v, err := Verify(context.Background(), r); err != nil || !v.OK() || v.Records != 13 {
		t.Fatalf("%+v %v", v, err)
	}
}

// TestCheckHeadsFindsADeletedTail: deleting the last records of a chain
// leaves an internally consistent chain; only the writer's knowledge of
// how far it stored shows the loss.
func TestCheckHeadsFindsADeletedTail(t *testing.T) {
	f := newFixture(t, Options{Linger: -1, SyncInterval: 10 * time.Millisecond})
	for i := 1; i <= 10; i++ {
		record(t, f.w, sample(i))
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if n, _ := f.w.Stored("sqlite"); n == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sink did not store the records")
		}
	}
	head, _ := f.w.Stored("sqlite")
	heads := map[string]uint64{f.w.ID(): head}
	tamper(t, f, "DELETE FROM decisions WHERE seq >= 9")
	v, err := Verify(context.Background(), f.reader(t))
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK() {
		t.Fatalf("a deleted tail leaves an internally consistent chain; verify said %+v", v.Breaks)
	}
	v.CheckHeads(heads)
	if v.OK() || v.Breaks[0].Seq != 9 || !strings.Contains(v.Breaks[0].Problem, "records 9..10 at the end") {
		t.Fatalf("deleted tail not reported: %+v", v.Breaks)
	}
	tamper(t, f, "DELETE FROM decisions")
	v, _ = Verify(context.Background(), f.reader(t))
	v.CheckHeads(heads)
	if v.OK() || !strings.Contains(v.Breaks[0].Problem, "whole chain") {
		t.Fatalf("deleted chain not reported: %+v", v.Breaks)
	}
}

// TestMigrationsRunOnceAndRefuseANewerSchema: reopening a log keeps its
// records and schema; a log written by a newer build is refused rather
// than written with an old understanding of its tables.
func TestMigrationsRunOnceAndRefuseANewerSchema(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixtureOn(t, kind, Options{})
			record(t, f.w, sample(1))
			f.drain(t)
			if got := queryAll(t, f.reader(t), Filter{}); len(got) != 1 {
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
