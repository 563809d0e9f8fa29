// Package sqlstore is the decision log in SQL: SQLite, embedded in the
// server, and PostgreSQL, shared by replicas. Both keep one row per record
// with a column per audit.Field, and share the query, the cursor, the
// schema migrations and the idempotent insert; what differs is the driver,
// the dialect, and what PostgreSQL adds (daily partitions, COPY, and
// retention that leaves checkpoints). Each store is both an audit.Sink and
// an audit.Store.
package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// columns are the SQL columns of a Record, in the order of audit.Fields,
// which is also the order of scan and insert.
var columns = func() string {
	var names []string
	for _, f := range audit.Fields() {
		names = append(names, f.Column)
	}
	return strings.Join(names, ", ")
}()

// recordFields are audit.Fields, read once.
var recordFields = audit.Fields()

var numColumns = len(recordFields)

func recordArgs(args []any, r *audit.Record) []any {
	for i := range recordFields {
		args = append(args, recordFields[i].Value(r))
	}
	return args
}

// scanner scans rows of columns into a Record.
type scanner struct {
	dest []any
	ints []int64 // the integer columns, converted after the scan
	r    *audit.Record
}

func newScanner(r *audit.Record) *scanner {
	s := &scanner{r: r, ints: make([]int64, len(recordFields))}
	for i := range recordFields {
		f := &recordFields[i]
		switch f.Kind {
		case audit.KindString:
			s.dest = append(s.dest, f.Str(r))
		case audit.KindBool:
			s.dest = append(s.dest, f.Bool(r))
		default:
			s.dest = append(s.dest, &s.ints[i])
		}
	}
	return s
}

func (s *scanner) scan(rows *sql.Rows) error {
	if err := rows.Scan(s.dest...); err != nil {
		return err
	}
	for i := range recordFields {
		if k := recordFields[i].Kind; k == audit.KindInt || k == audit.KindTime {
			recordFields[i].SetInt(s.r, s.ints[i])
		}
	}
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

// likeEscape escapes LIKE's wildcards, which hosts may hold ('_').
func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`).Replace(s)
}

func (s *sqlStore) Query(ctx context.Context, f audit.Filter, fn func(*audit.Record) error) (string, error) {
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
		{"request_id", f.RequestID}, {"cluster", f.Cluster}, {"principal", f.Principal}, {"namespace", f.Namespace},
		{"method", f.Method}, {"rule", f.Rule}, {"processor", f.Processor}, {"decision", f.Decision}, {"reason", f.Reason},
	} {
		if c.v != "" {
			add(c.col+" = ?", c.v)
		}
	}
	// Hosts are recorded normalized (lower case, no trailing dot) unless
	// they could not be parsed: compare in lower case, as Match does.
	switch h := f.Host; {
	case h.Name != "":
		add("lower(host) = ?", h.Name)
	case h.Suffix != "":
		add("lower(host) LIKE ? ESCAPE '\\'", "%_"+likeEscape(h.Suffix))
	}
	if port := f.Host.Port; port != 0 {
		add("port = ?", port)
	}
	if f.Port != 0 {
		add("port = ?", f.Port)
	}
	if f.Enforced != nil {
		add("enforced = ?", *f.Enforced)
	}
	if f.DryRun {
		where = append(where, "enforced = false")
	}
	if f.Cursor != "" {
		p, err := audit.ParseCursor(f.Cursor)
		if err != nil {
			return "", err
		}
		args = append(args, p.Time, p.Writer, p.Seq)
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
	var last audit.Record
	sc := newScanner(&last)
	for rows.Next() {
		if f.Limit > 0 && n == f.Limit {
			return audit.PositionOf(&last).Cursor(), rows.Close()
		}
		if err := sc.scan(rows); err != nil {
			return "", fmt.Errorf("query decisions: %w", err)
		}
		if err := fn(&last); err != nil {
			return "", err
		}
		n++
	}
	return "", rows.Err()
}

func (s *sqlStore) Chains(ctx context.Context, fn func(*audit.Record) error) error {
	rows, err := s.db.QueryContext(ctx, "SELECT "+columns+" FROM decisions ORDER BY writer, seq")
	if err != nil {
		return fmt.Errorf("read decisions: %w", err)
	}
	defer rows.Close()
	var r audit.Record
	sc := newScanner(&r)
	for rows.Next() {
		if err := sc.scan(rows); err != nil {
			return fmt.Errorf("read decisions: %w", err)
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Cursor implements audit.Sink.
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
func (s *sqlStore) writeTx(ctx context.Context, full *sql.Stmt, recs []audit.Record) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := s.checkFork(ctx, tx, recs); err != nil {
		return err
	}
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

// PutRuleSet implements audit.RuleSetArchive: a row of the rulesets table.
func (s *sqlStore) PutRuleSet(ctx context.Context, rs audit.RuleSet) error {
	if !audit.ValidVersion(rs.Version) {
		return fmt.Errorf("archive rule set: version %q is not 16 hex digits", rs.Version)
	}
	data, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	var archived any = time.Now().UTC()
	if !s.d.partitioned { // SQLite: Unix nanoseconds, as ts_ns
		archived = time.Now().UnixNano()
	}
	p := s.d.placeholder
	_, err = s.db.ExecContext(ctx, `INSERT INTO rulesets (version, content, archived) VALUES (`+p(1)+`, `+p(2)+`, `+p(3)+`) ON CONFLICT (version) DO NOTHING`,
		rs.Version, string(data), archived)
	if err != nil {
		return fmt.Errorf("archive rule set %s: %w", rs.Version, err)
	}
	return nil
}

// RuleSet implements audit.RuleSetArchive.
func (s *sqlStore) RuleSet(ctx context.Context, version string) (audit.RuleSet, error) {
	var content string
	err := s.db.QueryRowContext(ctx, `SELECT content FROM rulesets WHERE version = `+s.d.placeholder(1), version).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) {
		return audit.RuleSet{}, fmt.Errorf("rule set %s: %w", version, audit.ErrRuleSetNotFound)
	}
	if err != nil {
		return audit.RuleSet{}, fmt.Errorf("rule set %s: %w", version, err)
	}
	return audit.DecodeRuleSet(version, []byte(content))
}

// checkFork returns an *audit.ForkError when the store holds, at the
// writer and sequence number of one of recs, a record with another hash:
// another process writes the same chain. A record stored before (replayed
// after a crash) has the same hash. recs are one writer's, in sequence
// order.
func (s *sqlStore) checkFork(ctx context.Context, tx *sql.Tx, recs []audit.Record) error {
	if len(recs) == 0 {
		return nil
	}
	rows, err := tx.QueryContext(ctx, forkQuery(s.d.placeholder), forkArgs(recs)...)
	if err != nil {
		return err
	}
	defer rows.Close()
	return forkIn(rows, recs)
}

// forkQuery selects the stored (seq, hash) of forkArgs' writer and range.
func forkQuery(ph func(int) string) string {
	return "SELECT seq, hash FROM decisions WHERE writer = " + ph(1) + " AND seq >= " + ph(2) + " AND seq <= " + ph(3) + " ORDER BY seq"
}

func forkArgs(recs []audit.Record) []any {
	return []any{recs[0].Writer, int64(recs[0].Seq), int64(recs[len(recs)-1].Seq)}
}

// seqHashRows are the rows of forkQuery: database/sql's and pgx's alike.
type seqHashRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// forkIn returns an *audit.ForkError for the first stored record whose
// hash differs from that of the record of recs at its sequence number.
func forkIn(rows seqHashRows, recs []audit.Record) error {
	for rows.Next() {
		var seq int64
		var hash string
		if err := rows.Scan(&seq, &hash); err != nil {
			return err
		}
		if h, ok := hashAt(recs, uint64(seq)); ok && h != hash {
			return &audit.ForkError{Writer: recs[0].Writer, Seq: uint64(seq)}
		}
	}
	return rows.Err()
}

// hashAt returns the hash of the record of recs (in sequence order) with
// sequence number seq.
func hashAt(recs []audit.Record, seq uint64) (string, bool) {
	if i := seq - recs[0].Seq; seq >= recs[0].Seq && i < uint64(len(recs)) && recs[i].Seq == seq {
		return recs[i].Hash, true
	}
	for i := range recs {
		if recs[i].Seq == seq {
			return recs[i].Hash, true
		}
	}
	return "", false
}
