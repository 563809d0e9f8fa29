package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // the CGO-free SQLite driver, so the binary stays static

	"github.com/egress-authz/egress-authz/internal/audit"
)

// SQLite is the embedded decision log: one file in WAL mode, so auditors'
// queries run while the server writes. It is both an audit.Sink and an
// audit.Store.
type SQLite struct {
	sqlStore
	path   string
	insert *sql.Stmt
}

// sqliteMigrations are the SQLite schema, in the order sqlStore.migrate
// applies them. Never edit one that has shipped: append a new one.
var sqliteMigrations = []string{
	`CREATE TABLE decisions (
		writer          TEXT    NOT NULL,
		seq             INTEGER NOT NULL,
		ts_ns           INTEGER NOT NULL,
		request_id      TEXT    NOT NULL,
		trace_id        TEXT    NOT NULL,
		principal       TEXT    NOT NULL,
		trust_domain    TEXT    NOT NULL,
		namespace       TEXT    NOT NULL,
		service_account TEXT    NOT NULL,
		host            TEXT    NOT NULL,
		port            INTEGER NOT NULL,
		method          TEXT    NOT NULL,
		path            TEXT    NOT NULL,
		decision        TEXT    NOT NULL,
		enforced        BOOLEAN NOT NULL,
		rule            TEXT    NOT NULL,
		owner           TEXT    NOT NULL,
		ticket          TEXT    NOT NULL,
		ruleset         TEXT    NOT NULL,
		reason          TEXT    NOT NULL,
		cache_hit       BOOLEAN NOT NULL,
		latency_ns      INTEGER NOT NULL,
		prev_hash       TEXT    NOT NULL,
		hash            TEXT    NOT NULL,
		PRIMARY KEY (writer, seq)
	) WITHOUT ROWID;
	CREATE INDEX decisions_ts ON decisions (ts_ns);
	CREATE INDEX decisions_principal_ts ON decisions (principal, ts_ns);
	CREATE INDEX decisions_namespace_ts ON decisions (namespace, ts_ns);
	CREATE INDEX decisions_host_ts ON decisions (host, ts_ns);
	CREATE INDEX decisions_rule_ts ON decisions (rule, ts_ns);`,
	// 2: the fleet's cluster and the GDPR processor (records of a chain
	// before them have both empty, and hash as they did).
	`ALTER TABLE decisions ADD COLUMN cluster TEXT NOT NULL DEFAULT '';
	ALTER TABLE decisions ADD COLUMN processor TEXT NOT NULL DEFAULT '';`,
	// 3: the rule-set archive (audit.RuleSetArchive).
	`CREATE TABLE rulesets (
		version  TEXT PRIMARY KEY,
		content  TEXT NOT NULL,
		archived INTEGER NOT NULL
	);`,
}

var sqliteDialect = dialect{
	placeholder: func(int) string { return "?" },
	insert:      "INSERT OR IGNORE INTO",
}

// OpenSQLite opens (creating it and its directory if needed) the SQLite
// decision log at path and brings its schema up to date.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("open sqlite decision log: %w", err)
		}
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	// Keep the indexes' hot pages in memory: with the default 2 MB cache,
	// inserts into six B-trees read pages back through syscalls.
	q.Add("_pragma", "cache_size(-65536)")
	q.Add("_pragma", "mmap_size(268435456)")
	q.Add("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite decision log %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	s := &SQLite{sqlStore: sqlStore{db: db, d: sqliteDialect}, path: path}
	if err := s.migrate(ctx, sqliteMigrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite decision log %s: %w", path, err)
	}
	if s.insert, err = db.PrepareContext(ctx, s.insertSQL(insertRows)); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite decision log %s: %w", path, err)
	}
	return s, nil
}

// Name implements audit.Sink: "sqlite:" and the path it was opened with.
func (s *SQLite) Name() string { return "sqlite:" + s.path }

// Write implements audit.Sink.
func (s *SQLite) Write(ctx context.Context, recs []audit.Record) error {
	if err := s.writeTx(ctx, s.insert, recs); err != nil {
		return fmt.Errorf("sqlite %s: %w", s.path, err)
	}
	return nil
}

// Close implements audit.Sink and audit.Store.
func (s *SQLite) Close() error {
	if s.insert != nil {
		s.insert.Close()
	}
	return s.db.Close()
}
