// Package stores opens the decision-log store or sink a DSN names: the one
// place that knows every DSN form and imports every store, so that the
// packages that only record or read decisions (authz, the compliance
// tools) depend on internal/audit's interfaces and nothing else.
package stores

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/otlpsink"
	"github.com/egress-authz/egress-authz/internal/audit/parquetlog"
	"github.com/egress-authz/egress-authz/internal/audit/s3log"
	"github.com/egress-authz/egress-authz/internal/audit/sqlstore"
)

// Options are what some stores need besides their DSN. The zero value
// opens every store with its defaults.
type Options struct {
	// DataDir is where a sink keeps what it needs between runs (the OTLP
	// sink's cursor, the S3 sink's staged segments).
	DataDir string
	// Cluster names the writer's cluster; the S3 sink requires it (it is
	// the first level of a fleet's bucket).
	Cluster string
	// Retention drops PostgreSQL's daily partitions older than this; 0
	// keeps everything.
	Retention time.Duration
	// Logger for what a store does in the background (PostgreSQL's
	// retention); default slog.Default().
	Logger *slog.Logger
	// Stdout is where the stdout sink writes; default os.Stdout.
	Stdout io.Writer
	// WAL is the write-ahead log the sink is fed from: the Parquet store
	// records where it is, so that readers in other processes find the
	// records not yet in a segment.
	WAL string
	// SegmentAge closes a Parquet or S3 segment this long after its first
	// record; 0 means parquetlog's default.
	SegmentAge time.Duration
	// Now is the clock of the stores that read one (Parquet segments'
	// age); nil means time.Now.
	Now func() time.Time
}

// store is a decision log that is both written and queried.
type store interface {
	audit.Store
	audit.Sink
}

// backend is one form of DSN. To add a store, add a backend to backends.
type backend struct {
	// forms is how the DSN is written, for error messages.
	forms string
	// match reports whether dsn is this backend's, and returns what opens
	// it (a path, or the DSN itself).
	match func(dsn string) (target string, ok bool)
	// key is the sink's name for target (see audit.Sink.Name).
	key func(target string) string
	// open opens a queryable store; nil when the backend is a sink only.
	open func(ctx context.Context, target string, opts Options) (store, error)
	// sink opens a sink that open does not; nil when open is set.
	sink func(ctx context.Context, target string, opts Options) (audit.Sink, error)
	// read, with sink, opens the store the sink writes for queries only;
	// nil when the sink's records cannot be queried.
	read func(ctx context.Context, target string) (audit.Store, error)
	// exists, when set, fails unless the store at target already exists:
	// opening creates a store, and a reader with a mistyped path would
	// get an empty log, which verify calls intact.
	exists func(target string) error
}

var backends = []backend{
	{
		forms: "parquet:DIR",
		match: func(dsn string) (string, bool) { return strings.CutPrefix(dsn, "parquet:") },
		key:   func(dir string) string { return "parquet:" + dir },
		open: func(_ context.Context, dir string, opts Options) (store, error) {
			return parquetlog.Open(dir, parquetlog.Options{Retention: opts.Retention, WAL: opts.WAL, MaxAge: opts.SegmentAge, Now: opts.Now, Logger: opts.Logger})
		},
		exists: func(dir string) error {
			st, err := os.Stat(dir)
			if err != nil {
				return fmt.Errorf("decision log %s: %w", dir, err)
			}
			if !st.IsDir() {
				return fmt.Errorf("decision log %s: not a directory of Parquet segments", dir)
			}
			return nil
		},
	},
	{
		forms: "sqlite:PATH",
		match: sqlitePath,
		key:   func(path string) string { return "sqlite:" + path },
		open: func(ctx context.Context, path string, _ Options) (store, error) {
			return sqlstore.OpenSQLite(ctx, path)
		},
		exists: func(path string) error {
			if _, err := os.Stat(path); err != nil {
				return fmt.Errorf("decision log %s: %w", path, err)
			}
			return nil
		},
	},
	{
		forms: "postgres://...",
		match: func(dsn string) (string, bool) {
			return dsn, strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
		},
		key: sqlstore.Redact,
		open: func(ctx context.Context, dsn string, opts Options) (store, error) {
			return sqlstore.OpenPostgres(ctx, dsn, sqlstore.PostgresOptions{Retention: opts.Retention, Logger: opts.Logger})
		},
	},
	{
		forms: "s3://BUCKET/PREFIX",
		match: func(dsn string) (string, bool) { return dsn, strings.HasPrefix(dsn, "s3://") },
		key:   s3log.Key,
		sink: func(ctx context.Context, dsn string, opts Options) (audit.Sink, error) {
			return s3log.OpenSink(ctx, dsn, s3log.Options{Staging: s3log.StagingDir(opts.DataDir, dsn), Cluster: opts.Cluster,
				Retention: opts.Retention, WAL: opts.WAL, MaxAge: opts.SegmentAge, Now: opts.Now, Logger: opts.Logger})
		},
		read: func(ctx context.Context, dsn string) (audit.Store, error) {
			b, err := s3log.NewBucket(ctx, dsn)
			if err != nil {
				return nil, err
			}
			if err := b.Check(ctx); err != nil {
				return nil, err
			}
			return parquetlog.OpenStorage(b), nil
		},
	},
	{
		forms: "otlp",
		match: func(dsn string) (string, bool) { return dsn, dsn == "otlp" },
		key:   func(string) string { return "otlp" },
		sink: func(ctx context.Context, _ string, opts Options) (audit.Sink, error) {
			s, err := otlpsink.New(ctx, otlpsink.CursorPath(opts.DataDir))
			if err != nil {
				return nil, fmt.Errorf("otlp: %w", err)
			}
			return s, nil
		},
	},
	{
		forms: "stdout",
		match: func(dsn string) (string, bool) { return dsn, dsn == "stdout" },
		key:   func(string) string { return "stdout" },
		sink: func(_ context.Context, _ string, opts Options) (audit.Sink, error) {
			w := opts.Stdout
			if w == nil {
				w = os.Stdout
			}
			return audit.NewStdout(w), nil
		},
	},
}

// sqlitePath returns the file of a SQLite DSN: sqlite:PATH, or a bare
// path ending in .db.
func sqlitePath(dsn string) (string, bool) {
	if path, ok := strings.CutPrefix(dsn, "sqlite:"); ok {
		return path, true
	}
	return dsn, strings.HasSuffix(dsn, ".db")
}

func find(dsn string) (*backend, string, bool) {
	for i := range backends {
		if target, ok := backends[i].match(dsn); ok {
			return &backends[i], target, true
		}
	}
	return nil, "", false
}

// forms lists the DSN forms of the backends for which keep is true.
func forms(keep func(*backend) bool) string {
	var out []string
	for i := range backends {
		if keep(&backends[i]) {
			out = append(out, backends[i].forms)
		}
	}
	if len(out) < 2 {
		return strings.Join(out, "")
	}
	return strings.Join(out[:len(out)-1], ", ") + " or " + out[len(out)-1]
}

func queryable(b *backend) bool { return b.open != nil || b.read != nil }

// Queryable reports whether the decision log dsn names can be queried
// (Open takes it).
func Queryable(dsn string) bool {
	b, _, ok := find(dsn)
	return ok && queryable(b)
}

// Open opens the queryable store dsn names: "parquet:DIR", "sqlite:PATH"
// (or a path ending in .db) or "postgres://...", creating it if needed, or
// "s3://BUCKET/PREFIX", whose bucket must exist.
func Open(ctx context.Context, dsn string, opts Options) (audit.Store, error) {
	b, target, ok := find(dsn)
	if !ok || !queryable(b) {
		return nil, fmt.Errorf("decision log %q: want %s", dsn, forms(queryable))
	}
	if b.read != nil {
		return b.read(ctx, target)
	}
	return b.open(ctx, target, opts)
}

// OpenExisting is Open for readers (audit query and verify, the compliance
// tools): a store that opening would create must exist already.
func OpenExisting(ctx context.Context, dsn string) (audit.Store, error) {
	b, target, ok := find(dsn)
	if ok && b.exists != nil {
		if err := b.exists(target); err != nil {
			return nil, err
		}
	}
	return Open(ctx, dsn, Options{})
}

// OpenSink opens the sink a --audit DSN names: any store Open takes,
// "otlp" or "stdout". Where Queryable(dsn), open a second handle with Open
// for queries, so that they do not take the connections the sink writes
// through.
func OpenSink(ctx context.Context, dsn string, opts Options) (audit.Sink, error) {
	b, target, ok := find(dsn)
	if !ok {
		return nil, fmt.Errorf("decision log %q: want %s", dsn, forms(func(*backend) bool { return true }))
	}
	if b.sink != nil {
		return b.sink(ctx, target, opts)
	}
	return b.open(ctx, target, opts)
}

// Key returns the name the sink dsn names goes by (audit.Sink.Name): the
// DSN without its credentials, in logs, metrics and Writer.Stored. A DSN
// no backend takes loses what looks like credentials too.
func Key(dsn string) string {
	b, target, ok := find(dsn)
	if !ok {
		return sqlstore.Redact(dsn)
	}
	return b.key(target)
}
