package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// Postgres is the decision log shared by many replicas: one table
// partitioned by day, written with COPY, queried and verified like the
// SQLite log. Chains stay per writer, so replicas never contend for a chain.
// It is both an audit.Sink and an audit.Store.
type Postgres struct {
	sqlStore
	name        string // the DSN without credentials
	pool        *pgxpool.Pool
	retention   time.Duration // 0 keeps everything
	now         func() time.Time
	log         *slog.Logger
	lockTimeout time.Duration // how long a DROP waits for its lock

	// Retention runs in the background (see maybePrune) until Close
	// cancels stop and waits for it.
	stop    context.CancelFunc
	stopped context.Context
	pruners sync.WaitGroup
	pruneMu sync.Mutex // one Prune at a time

	mu            sync.Mutex
	partitions    map[string]bool // days known to have a partition
	nextPrune     time.Time       // when retention runs next
	pruneFailures int             // failed runs in a row, for the backoff
	pruning       bool            // a background run is under way
	closed        bool
}

// PostgresOptions configures OpenPostgres; the zero value keeps every
// partition and uses the real clock.
type PostgresOptions struct {
	// Retention drops daily partitions older than this; 0 keeps them all.
	// Writes start it in the background, at most once an hour; a failed
	// run is logged and retried, and never fails a write.
	// Before a partition is dropped, each writer's last record in it is
	// kept as a checkpoint, so that verify can tell retention from deletion.
	Retention time.Duration
	Now       func() time.Time
	// Logger for retention failures; default slog.Default().
	Logger *slog.Logger
}

// Retention runs at most every pruneEvery. A run that fails is retried
// after pruneRetry, doubling up to pruneEvery, while writes go on: a
// partition that cannot be dropped yet (a lock held by a long query, an
// auditor's view on it) is no reason to stop logging decisions.
const (
	pruneEvery = time.Hour
	pruneRetry = time.Minute
	// pruneLockTimeout bounds how long a DROP waits for its lock. Dropping
	// a partition locks the whole decisions table, and every insert, of
	// every replica, queues behind the waiting DROP.
	pruneLockTimeout = 5 * time.Second
)

var pgMigrations = []string{
	`CREATE TABLE decisions (
		writer          text    NOT NULL,
		seq             bigint  NOT NULL,
		ts              timestamptz NOT NULL,
		ts_ns           bigint  NOT NULL,
		request_id      text    NOT NULL,
		trace_id        text    NOT NULL,
		principal       text    NOT NULL,
		trust_domain    text    NOT NULL,
		namespace       text    NOT NULL,
		service_account text    NOT NULL,
		host            text    NOT NULL,
		port            bigint  NOT NULL, -- a uint32 on the wire and in the hash
		method          text    NOT NULL,
		path            text    NOT NULL,
		decision        text    NOT NULL,
		enforced        boolean NOT NULL,
		rule            text    NOT NULL,
		owner           text    NOT NULL,
		ticket          text    NOT NULL,
		ruleset         text    NOT NULL,
		reason          text    NOT NULL,
		cache_hit       boolean NOT NULL,
		latency_ns      bigint  NOT NULL,
		prev_hash       text    NOT NULL,
		hash            text    NOT NULL,
		PRIMARY KEY (writer, seq, ts)
	) PARTITION BY RANGE (ts);
	CREATE INDEX decisions_ts ON decisions (ts_ns);
	CREATE INDEX decisions_principal_ts ON decisions (principal, ts_ns);
	CREATE INDEX decisions_namespace_ts ON decisions (namespace, ts_ns);
	CREATE INDEX decisions_host_ts ON decisions (host, ts_ns);
	CREATE INDEX decisions_rule_ts ON decisions (rule, ts_ns);
	CREATE TABLE chain_checkpoints (
		writer     text        PRIMARY KEY,
		seq        bigint      NOT NULL,
		hash       text        NOT NULL,
		dropped_at timestamptz NOT NULL
	);`,
	// 2: the fleet's cluster and the GDPR processor. A column with a
	// constant default is added without rewriting the table (PostgreSQL
	// 11 and later), so no partition is locked for long.
	`ALTER TABLE decisions ADD COLUMN cluster text NOT NULL DEFAULT '';
	ALTER TABLE decisions ADD COLUMN processor text NOT NULL DEFAULT '';`,
	// 3: the rule-set archive (audit.RuleSetArchive).
	`CREATE TABLE rulesets (
		version  text PRIMARY KEY,
		content  text NOT NULL,
		archived timestamptz NOT NULL
	);`,
}

// pgCopyColumns are the columns COPY fills: the partition key ts, then
// the record's columns.
var pgCopyColumns = func() []string {
	cols := []string{"ts"}
	for _, f := range recordFields {
		cols = append(cols, f.Column)
	}
	return cols
}()

var pgDialect = dialect{
	placeholder: func(n int) string { return "$" + strconv.Itoa(n) },
	// One migrator at a time across replicas.
	migrationLock: `SELECT pg_advisory_xact_lock(7263547812)`,
	partitioned:   true,
}

// OpenPostgres connects to the PostgreSQL decision log at dsn and brings
// its schema up to date.
func OpenPostgres(ctx context.Context, dsn string, opts PostgresOptions) (*Postgres, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres decision log: %w", err)
	}
	p := &Postgres{name: Redact(dsn), pool: pool, retention: opts.Retention, now: opts.Now, log: opts.Logger,
		lockTimeout: pruneLockTimeout, partitions: map[string]bool{}}
	if p.now == nil {
		p.now = time.Now
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.stopped, p.stop = context.WithCancel(context.Background())
	p.sqlStore = sqlStore{db: stdlib.OpenDBFromPool(pool), d: pgDialect}
	if err := p.migrate(ctx, pgMigrations); err != nil {
		p.Close()
		return nil, fmt.Errorf("open postgres decision log: %w", err)
	}
	return p, nil
}

// Name implements audit.Sink: the DSN without its credentials (Redact).
func (p *Postgres) Name() string { return p.name }

func partitionName(day time.Time) string { return "decisions_" + day.Format("20060102") }

// ensurePartitions creates the daily partitions the days need, and the next
// two days' ahead of time.
func (p *Postgres) ensurePartitions(ctx context.Context, days []time.Time) error {
	today := p.now().UTC().Truncate(24 * time.Hour)
	days = append(days, today, today.Add(24*time.Hour), today.Add(48*time.Hour))
	for _, d := range days {
		name := partitionName(d)
		p.mu.Lock()
		known := p.partitions[name]
		p.mu.Unlock()
		if known {
			continue
		}
		q := fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF decisions FOR VALUES FROM ('%s') TO ('%s')`,
			name, d.Format(time.RFC3339), d.Add(24*time.Hour).Format(time.RFC3339))
		if _, err := p.pool.Exec(ctx, q); err != nil {
			var pgErr interface{ SQLState() string }
			// Another replica created it between our check and ours.
			if !errors.As(err, &pgErr) || (pgErr.SQLState() != "42P07" && pgErr.SQLState() != "23505") {
				return fmt.Errorf("create partition %s: %w", name, err)
			}
		}
		p.mu.Lock()
		p.partitions[name] = true
		p.mu.Unlock()
	}
	return nil
}

// Write implements audit.Sink: COPY into a staging table, then insert what is
// not already there, so a replayed batch stores nothing twice.
func (p *Postgres) Write(ctx context.Context, recs []audit.Record) error {
	var days []time.Time
	seen := map[time.Time]bool{}
	for i := range recs {
		d := recs[i].Time.UTC().Truncate(24 * time.Hour)
		if !seen[d] {
			seen[d] = true
			days = append(days, d)
		}
	}
	if err := p.ensurePartitions(ctx, days); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS decisions_in (LIKE decisions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`); err != nil {
			return err
		}
		rows := pgx.CopyFromSlice(len(recs), func(i int) ([]any, error) {
			r := &recs[i]
			return recordArgs(append(make([]any, 0, 1+numColumns), r.Time), r), nil
		})
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"decisions_in"}, pgCopyColumns, rows); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO decisions SELECT * FROM decisions_in ON CONFLICT DO NOTHING`)
		if err != nil || tag.RowsAffected() == int64(len(recs)) {
			return err
		}
		// Some were there: replayed after a crash, or another process's
		// records of the same chain, committed before this insert (which
		// waited for them) and visible to the next statement.
		return pgCheckFork(ctx, tx, recs)
	})
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	p.maybePrune()
	return nil
}

// pgCheckFork is sqlStore.checkFork in a pgx transaction.
func pgCheckFork(ctx context.Context, tx pgx.Tx, recs []audit.Record) error {
	if len(recs) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, forkQuery(pgDialect.placeholder), forkArgs(recs)...)
	if err != nil {
		return err
	}
	defer rows.Close()
	return forkIn(rows, recs)
}

// maybePrune starts retention in the background when it is due. Its
// failure is logged and retried later, never returned from Write: the
// records are committed by then, and a writer that saw an error would
// send them again, forever.
func (p *Postgres) maybePrune() {
	if p.retention <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pruning || p.closed || p.now().Before(p.nextPrune) {
		return
	}
	p.pruning = true
	p.pruners.Add(1)
	go func() {
		defer p.pruners.Done()
		dropped, err := p.Prune(p.stopped)
		p.mu.Lock()
		p.pruning = false
		var wait time.Duration
		if err != nil {
			p.pruneFailures++
			wait = pruneEvery
			if n := p.pruneFailures - 1; n < 6 && pruneRetry<<n < pruneEvery {
				wait = pruneRetry << n
			}
			p.nextPrune = p.now().Add(wait)
		} else {
			p.pruneFailures = 0
		}
		p.mu.Unlock()
		switch {
		case err != nil && p.stopped.Err() == nil:
			p.log.Warn("decision log retention failed; records are still written", "sink", p.Name(),
				"dropped", dropped, "retry_in", wait, "err", err)
		case len(dropped) > 0:
			p.log.Info("decision log retention dropped partitions", "sink", p.Name(), "dropped", dropped)
		}
	}()
}

// Prune drops the daily partitions that ended before now minus the
// retention, recording each writer's last record in them as a checkpoint
// first. It returns the partitions dropped. A DROP that cannot have its
// lock within pruneLockTimeout fails, rather than hold up every insert.
func (p *Postgres) Prune(ctx context.Context) ([]string, error) {
	if p.retention <= 0 {
		return nil, nil
	}
	p.pruneMu.Lock()
	defer p.pruneMu.Unlock()
	cutoff := p.now().UTC().Add(-p.retention)
	rows, err := p.pool.Query(ctx, `
		SELECT c.relname FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid
		JOIN pg_class parent ON parent.oid = i.inhparent
		WHERE parent.relname = 'decisions' ORDER BY c.relname`)
	if err != nil {
		return nil, fmt.Errorf("list partitions: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list partitions: %w", err)
	}
	var dropped []string
	for _, name := range names {
		day, err := time.Parse("decisions_20060102", name)
		if err != nil || day.Add(24*time.Hour).After(cutoff) {
			continue
		}
		err = pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, p.lockTimeout.Milliseconds())); err != nil {
				return err
			}
			// Locked before the checkpoint is read: a late record written
			// into this partition between the read and the DROP would be
			// dropped without a checkpoint, and verify would call it deleted.
			if _, err := tx.Exec(ctx, `LOCK TABLE `+pgx.Identifier{name}.Sanitize()+` IN ACCESS EXCLUSIVE MODE`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf(`
				INSERT INTO chain_checkpoints (writer, seq, hash, dropped_at)
				SELECT DISTINCT ON (writer) writer, seq, hash, now() FROM %s ORDER BY writer, seq DESC
				ON CONFLICT (writer) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, dropped_at = excluded.dropped_at
				WHERE chain_checkpoints.seq < excluded.seq`, pgx.Identifier{name}.Sanitize())); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `DROP TABLE `+pgx.Identifier{name}.Sanitize())
			return err
		})
		if err != nil {
			return dropped, fmt.Errorf("drop partition %s: %w", name, err)
		}
		p.mu.Lock()
		delete(p.partitions, name)
		p.mu.Unlock()
		dropped = append(dropped, name)
	}
	p.mu.Lock()
	p.nextPrune = p.now().Add(pruneEvery)
	p.mu.Unlock()
	return dropped, nil
}

// Cursor implements audit.Sink. Retention may have dropped a writer's last
// records: its checkpoint says they were stored, so they are not sent
// again (into partitions retention already dropped).
func (p *Postgres) Cursor(ctx context.Context, writer string) (uint64, error) {
	var n int64
	err := p.pool.QueryRow(ctx, `SELECT coalesce(greatest(
		(SELECT max(seq) FROM decisions WHERE writer = $1),
		(SELECT seq FROM chain_checkpoints WHERE writer = $1)), 0)`, writer).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("read cursor: %w", err)
	}
	return uint64(n), nil
}

// Checkpoints implements audit.Checkpointer: per writer, the last record
// removed by retention, from which that writer's chain continues.
func (p *Postgres) Checkpoints(ctx context.Context) (map[string]audit.Checkpoint, error) {
	rows, err := p.pool.Query(ctx, `SELECT writer, seq, hash FROM chain_checkpoints`)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	defer rows.Close()
	out := map[string]audit.Checkpoint{}
	for rows.Next() {
		var w string
		var c audit.Checkpoint
		var seq int64
		if err := rows.Scan(&w, &seq, &c.Hash); err != nil {
			return nil, err
		}
		c.Seq = uint64(seq)
		out[w] = c
	}
	return out, rows.Err()
}

// Close implements audit.Sink and audit.Store. It stops a retention run under way.
func (p *Postgres) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.stop()
	p.pruners.Wait()
	err := p.db.Close()
	p.pool.Close()
	return err
}
