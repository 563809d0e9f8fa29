package audit

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Filter selects decision records. Zero fields select everything.
type Filter struct {
	Since, Until time.Time // Since inclusive, Until exclusive
	Principal    string
	Namespace    string
	Host         string
	Rule         string
	Decision     string // Allow or Deny
	DryRun       bool   // only dry-run outcomes (Enforced false)
	Limit        int    // 0: no limit
	Cursor       string // continue after the page that returned it
}

// Store is a decision log that can be queried and verified.
type Store interface {
	// Query calls fn for the records matching f, newest first. When f.Limit
	// cut the result short it returns the cursor of the next page.
	Query(ctx context.Context, f Filter, fn func(*Record) error) (next string, err error)
	// Chains calls fn for every record, ordered by writer and sequence.
	Chains(ctx context.Context, fn func(*Record) error) error
	Close() error
}

// columns of the decisions table, in the order of scan and insert.
const columns = "writer, seq, ts_ns, request_id, trace_id, principal, trust_domain, namespace, service_account, " +
	"host, port, method, path, decision, enforced, rule, owner, ticket, ruleset, reason, cache_hit, latency_ns, prev_hash, hash"

const numColumns = 24

func recordArgs(args []any, r *Record) []any {
	return append(args, r.Writer, int64(r.Seq), r.Time.UnixNano(), r.RequestID, r.TraceID, r.Principal,
		r.TrustDomain, r.Namespace, r.ServiceAccount, r.Host, r.Port, r.Method, r.Path, r.Decision,
		r.Enforced, r.Rule, r.Owner, r.Ticket, r.RuleSet, r.Reason, r.CacheHit, int64(r.Latency), r.PrevHash, r.Hash)
}

func scanRecord(rows *sql.Rows, r *Record) error {
	var seq, ts, lat int64
	if err := rows.Scan(&r.Writer, &seq, &ts, &r.RequestID, &r.TraceID, &r.Principal, &r.TrustDomain,
		&r.Namespace, &r.ServiceAccount, &r.Host, &r.Port, &r.Method, &r.Path, &r.Decision, &r.Enforced,
		&r.Rule, &r.Owner, &r.Ticket, &r.RuleSet, &r.Reason, &r.CacheHit, &lat, &r.PrevHash, &r.Hash); err != nil {
		return err
	}
	r.Seq, r.Time, r.Latency = uint64(seq), time.Unix(0, ts).UTC(), time.Duration(lat)
	return nil
}

// dialect is what differs between the SQL stores.
type dialect struct {
	placeholder func(n int) string // n from 1
	insert      string             // "INSERT INTO" or "INSERT OR IGNORE INTO"
	onConflict  string             // "" or " ON CONFLICT DO NOTHING"
	partitioned bool               // also filter on the ts partition key, for pruning
	// migrationLock, when set, is run first in the migration transaction
	// to serialize migrators (SQLite's immediate transactions already do).
	migrationLock string
}

// sqlStore is the query side shared by the SQL stores.
type sqlStore struct {
	db *sql.DB
	d  dialect
}

// migrate brings the schema up to date: schema_version holds how many of
// migrations ran; the others run in order, in one transaction with the
// version update, so a crash leaves the schema at a version it had.
func (s *sqlStore) migrate(ctx context.Context, migrations []string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if s.d.migrationLock != "" {
		if _, err := tx.ExecContext(ctx, s.d.migrationLock); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return err
	}
	var v int
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_version`).Scan(&v); err != nil {
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this build knows (%d)", v, len(migrations))
	}
	if v == len(migrations) {
		return nil
	}
	for i := v; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM schema_version`); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (`+s.d.placeholder(1)+`)`, len(migrations)); err != nil {
		return err
	}
	return tx.Commit()
}

// cursor encodes the position after the last record of a page.
func encodeCursor(r *Record) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(r.Time.UnixNano(), 10) + "|" + strconv.FormatUint(r.Seq, 10) + "|" + r.Writer))
}

func decodeCursor(s string) (ts int64, seq int64, writer string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, 0, "", errors.New("invalid cursor")
	}
	parts := strings.SplitN(string(b), "|", 3)
	if len(parts) != 3 {
		return 0, 0, "", errors.New("invalid cursor")
	}
	if ts, err = strconv.ParseInt(parts[0], 10, 64); err != nil {
		return 0, 0, "", errors.New("invalid cursor")
	}
	if seq, err = strconv.ParseInt(parts[1], 10, 64); err != nil {
		return 0, 0, "", errors.New("invalid cursor")
	}
	return ts, seq, parts[2], nil
}

func (s *sqlStore) Query(ctx context.Context, f Filter, fn func(*Record) error) (string, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", s.d.placeholder(len(args))))
	}
	if !f.Since.IsZero() {
		add("ts_ns >= ?", f.Since.UnixNano())
		if s.d.partitioned {
			add("ts >= ?", f.Since.Truncate(time.Microsecond))
		}
	}
	if !f.Until.IsZero() {
		add("ts_ns < ?", f.Until.UnixNano())
		if s.d.partitioned {
			add("ts <= ?", f.Until.Truncate(time.Microsecond).Add(time.Microsecond))
		}
	}
	for _, c := range []struct{ col, v string }{
		{"principal", f.Principal}, {"namespace", f.Namespace}, {"host", f.Host}, {"rule", f.Rule}, {"decision", f.Decision},
	} {
		if c.v != "" {
			add(c.col+" = ?", c.v)
		}
	}
	if f.DryRun {
		where = append(where, "enforced = false")
	}
	if f.Cursor != "" {
		ts, seq, writer, err := decodeCursor(f.Cursor)
		if err != nil {
			return "", err
		}
		args = append(args, ts, writer, seq)
		n := len(args)
		where = append(where, fmt.Sprintf("(ts_ns, writer, seq) < (%s, %s, %s)", s.d.placeholder(n-2), s.d.placeholder(n-1), s.d.placeholder(n)))
	}
	q := "SELECT " + columns + " FROM decisions"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY ts_ns DESC, writer DESC, seq DESC"
	if f.Limit > 0 {
		q += " LIMIT " + strconv.Itoa(f.Limit+1)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return "", fmt.Errorf("query decisions: %w", err)
	}
	defer rows.Close()
	n := 0
	var last Record
	for rows.Next() {
		if f.Limit > 0 && n == f.Limit {
			return encodeCursor(&last), rows.Close()
		}
		if err := scanRecord(rows, &last); err != nil {
			return "", fmt.Errorf("query decisions: %w", err)
		}
		if err := fn(&last); err != nil {
			return "", err
		}
		n++
	}
	return "", rows.Err()
}

func (s *sqlStore) Chains(ctx context.Context, fn func(*Record) error) error {
	rows, err := s.db.QueryContext(ctx, "SELECT "+columns+" FROM decisions ORDER BY writer, seq")
	if err != nil {
		return fmt.Errorf("read decisions: %w", err)
	}
	defer rows.Close()
	var r Record
	for rows.Next() {
		if err := scanRecord(rows, &r); err != nil {
			return fmt.Errorf("read decisions: %w", err)
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Cursor implements Sink.
func (s *sqlStore) Cursor(ctx context.Context, writer string) (uint64, error) {
	var n sql.NullInt64
	err := s.db.QueryRowContext(ctx, "SELECT max(seq) FROM decisions WHERE writer = "+s.d.placeholder(1), writer).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("read cursor: %w", err)
	}
	return uint64(n.Int64), nil
}

// insertRows is how many records one INSERT statement carries.
const insertRows = 100

func (s *sqlStore) insertSQL(rows int) string {
	var b strings.Builder
	b.WriteString(s.d.insert + " decisions (" + columns + ") VALUES ")
	n := 0
	for i := 0; i < rows; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		for j := 0; j < numColumns; j++ {
			if j > 0 {
				b.WriteByte(',')
			}
			n++
			b.WriteString(s.d.placeholder(n))
		}
		b.WriteByte(')')
	}
	b.WriteString(s.d.onConflict)
	return b.String()
}

// writeTx inserts records in one transaction, idempotently.
func (s *sqlStore) writeTx(ctx context.Context, full *sql.Stmt, recs []Record) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	args := make([]any, 0, insertRows*numColumns)
	stmt := tx.StmtContext(ctx, full)
	for len(recs) >= insertRows {
		args = args[:0]
		for i := range recs[:insertRows] {
			args = recordArgs(args, &recs[i])
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return err
		}
		recs = recs[insertRows:]
	}
	if len(recs) > 0 {
		args = args[:0]
		for i := range recs {
			args = recordArgs(args, &recs[i])
		}
		if _, err := tx.ExecContext(ctx, s.insertSQL(len(recs)), args...); err != nil {
			return err
		}
	}
	return tx.Commit()
}
