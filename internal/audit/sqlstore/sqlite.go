package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	_ "modernc.org/sqlite" // the CGO-free SQLite driver, so the binary stays static

	"github.com/egress-authz/egress-authz/internal/audit"
)

// SQLite is the embedded decision log: one file in WAL mode, so auditors'
// queries run while the server writes. It is both an audit.Sink and an
// audit.Store.
//
// As a sink it trusts the file no further than it can see: before and
// after each write it checks that the path still names the file it opened
// (not deleted, not replaced), and it reads back the last record it
// stored, so that a file overwritten in place or restored from an older
// copy fails the write instead of taking records the write-ahead log then
// releases. After a failed write it opens the file again, so that a store
// that was read-only, or full, recovers once it is writable.
type SQLite struct {
	sqlStore
	path   string
	insert *sql.Stmt
	mu     sync.Mutex // Write and Cursor (a test calls Write beside the writer's feeder)
	file   fileID     // the file opened
	appID  int32      // its application_id, a random mark in its header
	reopen bool       // the last write failed: open the file again first

	// The last record stored through this handle (or the writer's
	// position, hash unknown, as Cursor found it), read back before the
	// next write.
	lastWriter string
	lastSeq    uint64
	lastHash   string
}

// fileID is a file's identity: its device and inode.
type fileID struct{ dev, ino uint64 }

func statID(path string) (fileID, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, nil
	}
	return fileID{dev: uint64(sys.Dev), ino: sys.Ino}, nil
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
	s := &SQLite{path: path}
	if err := s.open(ctx); err != nil {
		return nil, fmt.Errorf("open sqlite decision log %s: %w", path, err)
	}
	return s, nil
}

func (s *SQLite) open(ctx context.Context) error {
	if dir := filepath.Dir(s.path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return err
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
	db, err := sql.Open("sqlite", "file:"+s.path+"?"+q.Encode())
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(4)
	s.sqlStore = sqlStore{db: db, d: sqliteDialect}
	if err := s.migrate(ctx, sqliteMigrations); err != nil {
		db.Close()
		return err
	}
	if s.insert, err = db.PrepareContext(ctx, s.insertSQL(insertRows)); err != nil {
		db.Close()
		return err
	}
	if s.file, err = statID(s.path); err == nil {
		s.appID, err = s.markFile(ctx)
	}
	if err != nil {
		s.insert.Close()
		db.Close()
		return err
	}
	return nil
}

// markFile returns the file's application_id (a field of the SQLite
// header), giving it a random one first if it has none, so that a file
// copied over it in place shows in its header.
func (s *SQLite) markFile(ctx context.Context) (int32, error) {
	tx, err := s.db.BeginTx(ctx, nil) // immediate: one opener marks a new file
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var id int32
	if err := tx.QueryRowContext(ctx, `PRAGMA application_id`).Scan(&id); err != nil || id != 0 {
		return id, err
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	id = int32(binary.BigEndian.Uint32(b[:]) | 1)
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA application_id = %d`, id)); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	// In WAL mode the header reaches the file at a checkpoint.
	if _, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return 0, err
	}
	return id, nil
}

// headerAppID reads the application_id from the header of the file at
// path, past SQLite's cache.
func headerAppID(path string) (int32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var b [4]byte
	if _, err := f.ReadAt(b[:], 68); err != nil {
		return 0, err
	}
	return int32(binary.BigEndian.Uint32(b[:])), nil
}

// again closes the file and opens it anew, after a failed write.
func (s *SQLite) again(ctx context.Context) error {
	if s.insert != nil {
		s.insert.Close()
	}
	s.db.Close()
	s.insert = nil
	return s.open(ctx)
}

// check fails when the path no longer names the file opened, or the file
// lacks the last record stored through it.
func (s *SQLite) check(ctx context.Context) error {
	id, err := statID(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return errors.New("the database file was deleted while in use")
	}
	if err != nil {
		return err
	}
	if id != s.file {
		return errors.New("the database file was replaced by another while in use")
	}
	if app, err := headerAppID(s.path); err != nil {
		return err
	} else if app != s.appID {
		return errors.New("the database file was overwritten by another while in use")
	}
	if s.lastSeq == 0 {
		return nil
	}
	var hash string
	err = s.db.QueryRowContext(ctx, `SELECT hash FROM decisions WHERE writer = ? AND seq = ?`, s.lastWriter, int64(s.lastSeq)).Scan(&hash)
	if errors.Is(err, sql.ErrNoRows) || err == nil && s.lastHash != "" && hash != s.lastHash {
		return fmt.Errorf("the database no longer holds record %d of writer %s, which it stored: it was overwritten, or restored from an older copy (restart to continue from what it holds)", s.lastSeq, s.lastWriter)
	}
	return err
}

// Name implements audit.Sink: "sqlite:" and the path it was opened with.
func (s *SQLite) Name() string { return "sqlite:" + s.path }

// Cursor implements audit.Sink.
func (s *SQLite) Cursor(ctx context.Context, writer string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.recover(ctx); err != nil {
		return 0, fmt.Errorf("sqlite %s: %w", s.path, err)
	}
	c, err := s.sqlStore.Cursor(ctx, writer)
	if err != nil {
		s.reopen = true
		return 0, err
	}
	s.lastWriter, s.lastSeq, s.lastHash = writer, c, ""
	return c, nil
}

// recover opens the file again after a failed write.
func (s *SQLite) recover(ctx context.Context) error {
	if !s.reopen {
		return nil
	}
	if err := s.again(ctx); err != nil {
		return err
	}
	s.reopen = false
	return nil
}

// Write implements audit.Sink: the records are stored in one transaction,
// between checks of the file (see SQLite).
func (s *SQLite) Write(ctx context.Context, recs []audit.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.write(ctx, recs); err != nil {
		s.reopen = true
		return fmt.Errorf("sqlite %s: %w", s.path, err)
	}
	return nil
}

func (s *SQLite) write(ctx context.Context, recs []audit.Record) error {
	if len(recs) == 0 {
		return nil
	}
	if err := s.recover(ctx); err != nil {
		return err
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := s.writeTx(ctx, s.insert, recs); err != nil {
		return err
	}
	last := &recs[len(recs)-1]
	s.lastWriter, s.lastSeq, s.lastHash = last.Writer, last.Seq, last.Hash
	// Read back: the records are where the path leads.
	return s.check(ctx)
}

// Close implements audit.Sink and audit.Store.
func (s *SQLite) Close() error {
	if s.insert != nil {
		s.insert.Close()
	}
	return s.db.Close()
}
