package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
	"github.com/egress-authz/egress-authz/internal/pgtest"
)

// storeKinds are the stores the shared tests run against.
var storeKinds = []string{"sqlite", "postgres"}

var (
	pgOnce   sync.Once
	pgServer *pgtest.Server
	pgErr    error
)

// postgresServer starts the package's PostgreSQL server on first use; it
// is stopped by TestMain. A missing server fails the test: it is installed
// by scripts/ensure-postgres, which make test runs.
func postgresServer(t testing.TB) *pgtest.Server {
	t.Helper()
	pgOnce.Do(func() { pgServer, pgErr = pgtest.Start() })
	if pgErr != nil {
		t.Fatal(pgErr)
	}
	return pgServer
}

func newPostgresDB(t testing.TB) string {
	t.Helper()
	dsn, err := postgresServer(t).NewDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pgServer != nil {
		pgServer.Stop()
	}
	os.Exit(code)
}

func TestPostgresRetentionDropsOldPartitionsAndChainsStillVerify(t *testing.T) {
	dsn := newPostgresDB(t)
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	// The writer's own sink keeps everything, so that Prune below is the
	// one that drops (a sink with a retention prunes while it writes).
	pg, err := OpenPostgres(context.Background(), dsn, PostgresOptions{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	w, err := audit.Open(audit.Options{Dir: filepath.Join(t.TempDir(), "wal")}, pg)
	if err != nil {
		t.Fatal(err)
	}
	// Ten days of decisions, one record every 6 hours.
	for i := 0; i < 40; i++ {
		r := sample(i)
		r.Time = now.Add(-10*24*time.Hour + time.Duration(i)*6*time.Hour)
		record(t, w, r)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	pg2, err := OpenPostgres(context.Background(), dsn, PostgresOptions{Retention: 5 * 24 * time.Hour, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer pg2.Close()
	dropped, err := pg2.Prune(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Days 2026-11-12 .. 2026-11-16 ended before the cutoff (11-17 12:00).
	if len(dropped) != 5 || dropped[0] != "decisions_20261112" || dropped[4] != "decisions_20261116" {
		t.Fatalf("dropped %v", dropped)
	}
	left := queryAll(t, pg2, audit.Filter{})
	for _, r := range left {
		if r.Time.Before(time.Date(2026, 11, 17, 0, 0, 0, 0, time.UTC)) {
			t.Fatalf("record from %s survived retention", r.Time)
		}
	}
	v, err := audit.Verify(context.Background(), pg2, audit.VerifyOptions{})
	if err != nil || !v.OK() || v.Records != len(left) || v.Records == 0 {
		t.Fatalf("after retention the remaining chain must verify from its checkpoint: %+v %v", v, err)
	}
	// Deleting the first record after the checkpoint is still caught.
	f := &fixture{kind: "postgres", dsn: dsn}
	tamper(t, f, fmt.Sprintf("DELETE FROM decisions WHERE seq = %d", left[len(left)-1].Seq))
	if v, _ := audit.Verify(context.Background(), pg2, audit.VerifyOptions{}); v.OK() {
		t.Fatal("deletion right after the retention checkpoint not detected")
	}
}

func TestPostgresTwoWritersInterleaveAndBothChainsVerify(t *testing.T) {
	dsn := newPostgresDB(t)
	var writers []*audit.Writer
	for i := 0; i < 2; i++ {
		pg, err := OpenPostgres(context.Background(), dsn, PostgresOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w, err := audit.Open(audit.Options{Dir: filepath.Join(t.TempDir(), "wal"), BatchSize: 7}, pg)
		if err != nil {
			t.Fatal(err)
		}
		writers = append(writers, w)
	}
	var wg sync.WaitGroup
	for _, w := range writers {
		wg.Add(1)
		go func(w *audit.Writer) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				if err := w.Record(context.Background(), []audit.Record{sample(i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	for _, w := range writers {
		if err := w.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := OpenPostgres(context.Background(), dsn, PostgresOptions{})
	defer r.Close()
	v, err := audit.Verify(context.Background(), r, audit.VerifyOptions{})
	if err != nil || !v.OK() || v.Records != 600 || len(v.Writers) != 2 {
		t.Fatalf("%+v %v", v, err)
	}
}

// TestPostgresOutage stops the database mid-load and starts it again:
// afterwards every record is stored exactly once and the chain verifies.
// It uses a server of its own, since it stops it.
func TestPostgresOutage(t *testing.T) {
	srv, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	dsn, err := srv.NewDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pg, err := OpenPostgres(context.Background(), dsn, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := audit.Open(audit.Options{Dir: filepath.Join(t.TempDir(), "wal"), BatchSize: 50}, pg)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for i := 0; i < n; i++ {
		if i == n/3 {
			if err := srv.Kill(); err != nil {
				t.Fatal(err)
			}
		}
		if i == 2*n/3 {
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
		}
		// Decisions keep being made during the outage: they wait in the
		// write-ahead log.
		record(t, w, sample(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := OpenPostgres(context.Background(), dsn, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var count, distinct int
	if err := r.db.QueryRow(`SELECT count(*), count(DISTINCT (writer, seq)) FROM decisions`).Scan(&count, &distinct); err != nil {
		t.Fatal(err)
	}
	if count != n || distinct != n {
		t.Fatalf("%d rows, %d distinct, want %d exactly once", count, distinct, n)
	}
	if v, err := audit.Verify(context.Background(), r, audit.VerifyOptions{}); err != nil || !v.OK() {
		t.Fatalf("%+v %v", v, err)
	}
}

// BenchmarkPostgresWrite measures sustained inserts into PostgreSQL in the
// batches the writer hands the sink, for the two key spreads of
// BenchmarkSQLiteWrite.
func BenchmarkPostgresWrite(b *testing.B) {
	open := func(b *testing.B) audit.Sink {
		pg, err := OpenPostgres(context.Background(), newPostgresDB(b), PostgresOptions{})
		if err != nil {
			b.Fatal(err)
		}
		return pg
	}
	b.Run("few-keys", func(b *testing.B) { benchSinkWrite(b, open(b), 0, sample) })
	b.Run("realistic", func(b *testing.B) { benchSinkWrite(b, open(b), 300_000, spread) })
}

// pgLogBuffer is a log destination the test reads while a sink writes it.
type pgLogBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *pgLogBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *pgLogBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// pgClock is a clock a test moves by hand.
type pgClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *pgClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *pgClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func partitionExists(t *testing.T, dsn, name string) bool {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ok bool
	if err := db.QueryRow(`SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// oldPartition stores one record on 2026-11-10, long before the clock,
// with a sink that keeps everything, and returns the clock (2026-11-22).
func oldPartition(t *testing.T, dsn string) *pgClock {
	t.Helper()
	clock := &pgClock{now: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
	pg, err := OpenPostgres(context.Background(), dsn, PostgresOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	old := sample(1)
	old.Writer, old.Seq, old.Time = "old", 1, time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	if err := pg.Write(context.Background(), []audit.Record{old}); err != nil {
		t.Fatal(err)
	}
	return clock
}

// TestPostgresFailedRetentionDoesNotFailWrites: a partition that cannot
// be dropped (an auditor's view depends on it) is logged and retried with
// backoff; the records, committed, are not reported as failed, so the
// writer does not send them again forever and stall.
func TestPostgresFailedRetentionDoesNotFailWrites(t *testing.T) {
	dsn := newPostgresDB(t)
	clock := oldPartition(t, dsn)
	f := &fixture{kind: "postgres", dsn: dsn}
	tamper(t, f, "CREATE VIEW old_day AS SELECT * FROM decisions_20261110")
	var logs pgLogBuffer
	pg, err := OpenPostgres(context.Background(), dsn, PostgresOptions{
		Retention: 5 * 24 * time.Hour, Now: clock.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	write := func(seq uint64) {
		t.Helper()
		r := sample(int(seq))
		r.Writer, r.Seq, r.Time = "new", seq, clock.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := pg.Write(ctx, []audit.Record{r}); err != nil {
			t.Fatalf("write %d: %v", seq, err)
		}
	}
	failures := func() int { return strings.Count(logs.String(), "retention failed") }

	// Retention runs in the background; pruners.Wait waits for the run a
	// write started, if it started one.
	write(1)
	pg.pruners.Wait()
	if failures() != 1 {
		t.Fatalf("want the failed retention logged once:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "depend on it") {
		t.Fatalf("the log does not say why retention failed:\n%s", logs.String())
	}
	// Within the backoff, writes do not try again.
	clock.Add(30 * time.Second)
	write(2)
	pg.pruners.Wait()
	if failures() != 1 {
		t.Fatalf("retention retried within its backoff:\n%s", logs.String())
	}
	// Once the view is gone, the next attempt after the backoff drops it.
	tamper(t, f, "DROP VIEW old_day")
	clock.Add(2 * time.Minute)
	write(3)
	pg.pruners.Wait()
	if partitionExists(t, dsn, "decisions_20261110") {
		t.Fatalf("the expired partition was not dropped:\n%s", logs.String())
	}
	if got := len(queryAll(t, pg, audit.Filter{})); got != 3 {
		t.Fatalf("%d records stored, want the 3 written after the old day", got)
	}
}

// TestPostgresRetentionWaitsForItsLockOnlySoLong: a long query on an old
// partition holds a lock the DROP needs. Writes go on; the DROP gives up
// after its lock timeout instead of queueing every insert behind it.
func TestPostgresRetentionWaitsForItsLockOnlySoLong(t *testing.T) {
	dsn := newPostgresDB(t)
	clock := oldPartition(t, dsn)
	auditor, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer auditor.Close(context.Background())
	tx, err := auditor.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(context.Background(), "LOCK TABLE decisions_20261110 IN ACCESS SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	var logs pgLogBuffer
	pg, err := OpenPostgres(context.Background(), dsn, PostgresOptions{
		Retention: 5 * 24 * time.Hour, Now: clock.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	pg.lockTimeout = 200 * time.Millisecond
	for seq := uint64(1); seq <= 3; seq++ {
		r := sample(int(seq))
		r.Writer, r.Seq, r.Time = "new", seq, clock.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err := pg.Write(ctx, []audit.Record{r})
		cancel()
		if err != nil {
			t.Fatalf("write %d while an old partition is locked: %v", seq, err)
		}
	}
	pg.pruners.Wait()
	if !strings.Contains(logs.String(), "lock timeout") {
		t.Fatalf("the DROP did not give up at its lock timeout:\n%s", logs.String())
	}
	if err := tx.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestPostgresStoresPortsAboveInt32: a port is a uint32 in the record's
// hash; stored as a 32-bit integer, one above 2^31-1 came back wrapped and
// verify called an intact record edited.
func TestPostgresStoresPortsAboveInt32(t *testing.T) {
	f := newFixtureOn(t, "postgres", audit.Options{})
	ports := []int{443, 1<<31 - 1, 1 << 31, 1<<32 - 1}
	for i, port := range ports {
		r := sample(i)
		r.Port = port
		record(t, f.w, r)
	}
	f.drain(t)
	s := f.reader(t)
	var got []int
	if err := s.Chains(context.Background(), func(r *audit.Record) error { got = append(got, r.Port); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(ports) {
		t.Fatalf("ports stored as %v, want %v", got, ports)
	}
	if v, err := audit.Verify(context.Background(), s, audit.VerifyOptions{}); err != nil || !v.OK() {
		t.Fatalf("%+v %v", v, err)
	}
}

// retainedChain writes records at the given times with one writer, then
// prunes with a retention of 2 days at 2026-11-23 12:00, which drops the
// partitions of 2026-11-20 and before. It returns the writer's id, how
// far it stored, and the pruned store.
func retainedChain(t *testing.T, dsn string, times ...time.Time) (string, uint64, *Postgres) {
	t.Helper()
	clock := &pgClock{now: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	pg, err := OpenPostgres(context.Background(), dsn, PostgresOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	w, err := audit.Open(audit.Options{Dir: filepath.Join(t.TempDir(), "wal")}, pg)
	if err != nil {
		t.Fatal(err)
	}
	for i, ts := range times {
		r := sample(i)
		r.Time = ts
		record(t, w, r)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	head, _ := w.Stored(pg.Name())
	pg2, err := OpenPostgres(context.Background(), dsn, PostgresOptions{Retention: 2 * 24 * time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg2.Close() })
	dropped, err := pg2.Prune(context.Background())
	if err != nil || len(dropped) == 0 {
		t.Fatalf("prune: %v %v", dropped, err)
	}
	return w.ID(), head, pg2
}

// TestPostgresRetentionAtMidnightVerifies: a record's time is when its
// Check started, its sequence number comes later, so record 2 can belong
// to the day before record 1. Dropping that day checkpoints record 2
// while record 1 stays: the chain is intact, and tampering is still seen.
func TestPostgresRetentionAtMidnightVerifies(t *testing.T) {
	midnight := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)
	times := []time.Time{
		midnight.Add(10 * time.Microsecond),  // seq 1, kept
		midnight.Add(-10 * time.Microsecond), // seq 2, dropped: the checkpoint
		midnight.Add(time.Second),            // seq 3
		midnight.Add(2 * time.Second),        // seq 4
	}
	forge := func(t *testing.T, pg *Postgres, seq uint64, edit func(*audit.Record)) string {
		var r audit.Record
		_ = pg.Chains(context.Background(), func(c *audit.Record) error {
			if c.Seq == seq {
				r = *c
			}
			return nil
		})
		edit(&r)
		r.Hash = audit.ComputeHash(&r)
		return fmt.Sprintf("UPDATE decisions SET decision = '%s', prev_hash = '%s', hash = '%s' WHERE seq = %d", r.Decision, r.PrevHash, r.Hash, seq)
	}
	tests := []struct {
		name    string
		sql     func(t *testing.T, pg *Postgres) []string
		seq     uint64
		problem string
	}{
		{"intact", nil, 0, ""},
		{"edited_below_checkpoint", func(*testing.T, *Postgres) []string {
			return []string{"UPDATE decisions SET host = 'evil.example' WHERE seq = 1"}
		}, 1, "edited"},
		{"deleted_after_checkpoint", func(*testing.T, *Postgres) []string {
			return []string{"DELETE FROM decisions WHERE seq = 3"}
		}, 4, "records 3..3 were deleted"},
		{"replaced_after_checkpoint", func(t *testing.T, pg *Postgres) []string {
			return []string{forge(t, pg, 3, func(r *audit.Record) { r.Decision, r.PrevHash = audit.Allow, "" })}
		}, 3, "does not follow record 2"},
		{"edited_after_checkpoint_with_valid_hash", func(t *testing.T, pg *Postgres) []string {
			return []string{forge(t, pg, 3, func(r *audit.Record) { r.Decision = audit.Deny })}
		}, 4, "does not follow record 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dsn := newPostgresDB(t)
			_, _, pg := retainedChain(t, dsn, times...)
			cps, err := pg.Checkpoints(context.Background())
			if err != nil || len(cps) != 1 {
				t.Fatalf("checkpoints %v %v", cps, err)
			}
			for _, cp := range cps {
				if cp.Seq != 2 {
					t.Fatalf("checkpoint at %d, want 2: the test no longer crosses midnight", cp.Seq)
				}
			}
			if tt.sql != nil {
				tamper(t, &fixture{kind: "postgres", dsn: dsn}, tt.sql(t, pg)...)
			}
			v, err := audit.Verify(context.Background(), pg, audit.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tt.problem == "" {
				if !v.OK() || v.Records != 3 {
					t.Fatalf("intact chain after retention reported %+v", v)
				}
				return
			}
			if v.OK() {
				t.Fatalf("tampering not detected: %+v", v)
			}
			if b := v.Breaks[0]; b.Seq != tt.seq || !strings.Contains(b.Problem, tt.problem) {
				t.Fatalf("break %q, want record %d: %s", b.String(), tt.seq, tt.problem)
			}
		})
	}
}

// TestPostgresCheckHeadsAfterRetentionDroppedAWholeChain: a quiet writer
// whose every record expired has a checkpoint at its head; that is
// retention, not a deleted chain. A head beyond the checkpoint is still a
// deleted tail.
func TestPostgresCheckHeadsAfterRetentionDroppedAWholeChain(t *testing.T) {
	day := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	id, head, pg := retainedChain(t, newPostgresDB(t), day, day.Add(time.Second), day.Add(2*time.Second), day.Add(3*time.Second))
	if head != 4 {
		t.Fatalf("writer stored up to %d, want 4", head)
	}
	v, err := audit.Verify(context.Background(), pg, audit.VerifyOptions{})
	if err != nil || !v.OK() || v.Records != 0 {
		t.Fatalf("%+v %v", v, err)
	}
	v.CheckHeads(map[string]uint64{id: head})
	if !v.OK() {
		t.Fatalf("a chain retention dropped whole reported as %+v", v.Breaks)
	}
	v.CheckHeads(map[string]uint64{id: head + 2})
	if v.OK() || v.Breaks[0].Seq != 5 || !strings.Contains(v.Breaks[0].Problem, "records 5..6 at the end") {
		t.Fatalf("a tail deleted after the checkpoint reported as %+v", v.Breaks)
	}
}

// TestPostgresCursorCountsTheCheckpoint: after retention dropped all of a
// writer's records, the sink still says it stored them, so a restarted
// writer does not send them again into partitions that expired.
func TestPostgresCursorCountsTheCheckpoint(t *testing.T) {
	day := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	id, _, pg := retainedChain(t, newPostgresDB(t), day, day.Add(time.Second), day.Add(2*time.Second))
	if n, err := pg.Cursor(context.Background(), id); err != nil || n != 3 {
		t.Fatalf("cursor %d %v, want 3", n, err)
	}
	if n, err := pg.Cursor(context.Background(), "other"); err != nil || n != 0 {
		t.Fatalf("cursor of an unknown writer %d %v, want 0", n, err)
	}
}

// TestVerifyReportsAStoredTwiceSeq: PostgreSQL's key includes the time, so
// a copy of a record at another time (its hash recomputed) can be stored
// beside it. Verify says so, not "records 4..2 were deleted".
func TestVerifyReportsAStoredTwiceSeq(t *testing.T) {
	f := newFixtureOn(t, "postgres", audit.Options{})
	for i := 1; i <= 6; i++ {
		record(t, f.w, sample(i))
	}
	f.drain(t)
	s := f.reader(t)
	var copy3 audit.Record
	_ = s.Chains(context.Background(), func(r *audit.Record) error {
		if r.Seq == 3 {
			copy3 = *r
		}
		return nil
	})
	copy3.Time = copy3.Time.Add(time.Second)
	copy3.Hash = audit.ComputeHash(&copy3)
	cols := "ts, " + strings.TrimSuffix(columns, ", hash")
	tamper(t, f, fmt.Sprintf("INSERT INTO decisions (%s, hash) SELECT %s, '%s' FROM decisions WHERE seq = 3", cols,
		strings.Replace(strings.Replace(cols, "ts_ns", fmt.Sprint(copy3.Time.UnixNano()), 1), "ts,", "ts + interval '1 second',", 1), copy3.Hash))
	v, err := audit.Verify(context.Background(), s, audit.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v.OK() || v.Breaks[0].Seq != 3 || !strings.Contains(v.Breaks[0].Problem, "stored twice") {
		t.Fatalf("a duplicate record 3 reported as %+v", v.Breaks)
	}
}

// TestPostgresFork: two writers from one copied data directory into one
// PostgreSQL database lose nothing, and the fork is reported.
func TestPostgresFork(t *testing.T) {
	for _, ahead := range []bool{false, true} {
		t.Run(fmt.Sprintf("ahead=%v", ahead), func(t *testing.T) {
			dsn := newPostgresDB(t)
			open := func(t *testing.T) *Postgres {
				pg, err := OpenPostgres(context.Background(), dsn, PostgresOptions{})
				if err != nil {
					t.Fatal(err)
				}
				return pg
			}
			audittest.Fork(t, audittest.ForkStore{
				Sink: func(t *testing.T, _ string) audit.Sink { return open(t) },
				Reader: func(t *testing.T) audit.Store {
					pg := open(t)
					t.Cleanup(func() { pg.Close() })
					return pg
				},
			}, ahead)
		})
	}
}
