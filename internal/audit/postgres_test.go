package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

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
	w, err := Open(Options{Dir: filepath.Join(t.TempDir(), "wal")}, pg)
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
	left := queryAll(t, pg2, Filter{})
	for _, r := range left {
		if r.Time.Before(time.Date(2026, 11, 17, 0, 0, 0, 0, time.UTC)) {
			t.Fatalf("record from %s survived retention", r.Time)
		}
	}
	v, err := Verify(context.Background(), pg2)
	if err != nil || !v.OK() || v.Records != len(left) || v.Records == 0 {
		t.Fatalf("after retention the remaining chain must verify from its checkpoint: %+v %v", v, err)
	}
	// Deleting the first record after the checkpoint is still caught.
	f := &fixture{kind: "postgres", dsn: dsn}
	tamper(t, f, fmt.Sprintf("DELETE FROM decisions WHERE seq = %d", left[len(left)-1].Seq))
	if v, _ := Verify(context.Background(), pg2); v.OK() {
		t.Fatal("deletion right after the retention checkpoint not detected")
	}
}

func TestPostgresTwoWritersInterleaveAndBothChainsVerify(t *testing.T) {
	dsn := newPostgresDB(t)
	var writers []*Writer
	for i := 0; i < 2; i++ {
		pg, err := OpenPostgres(context.Background(), dsn, PostgresOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w, err := Open(Options{Dir: filepath.Join(t.TempDir(), "wal"), BatchSize: 7}, pg)
		if err != nil {
			t.Fatal(err)
		}
		writers = append(writers, w)
	}
	var wg sync.WaitGroup
	for _, w := range writers {
		wg.Add(1)
		go func(w *Writer) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				if err := w.Record(context.Background(), []Record{sample(i)}); err != nil {
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
	v, err := Verify(context.Background(), r)
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
	w, err := Open(Options{Dir: filepath.Join(t.TempDir(), "wal"), BatchSize: 50}, pg)
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
	if v, err := Verify(context.Background(), r); err != nil || !v.OK() {
		t.Fatalf("%+v %v", v, err)
	}
}

// BenchmarkPostgresWrite measures sustained inserts into PostgreSQL in the
// batches the writer hands the sink, for the two key spreads of
// BenchmarkSQLiteWrite.
func BenchmarkPostgresWrite(b *testing.B) {
	open := func(b *testing.B) Sink {
		pg, err := OpenPostgres(context.Background(), newPostgresDB(b), PostgresOptions{})
		if err != nil {
			b.Fatal(err)
		}
		return pg
	}
	b.Run("few-keys", func(b *testing.B) { benchSinkWrite(b, open(b), 0, sample) })
	b.Run("realistic", func(b *testing.B) { benchSinkWrite(b, open(b), 300_000, spread) })
}
