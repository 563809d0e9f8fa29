package s3log

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/parquetlog"
)

// Options configures a Sink.
type Options struct {
	// Staging is the local directory where segments are written, closed
	// and kept until they are uploaded. Required.
	Staging string
	// Cluster names the writer's cluster: the first level of the layout.
	// Required.
	Cluster string
	// Retention removes this writer's days older than this from the
	// bucket; 0 keeps all. (Bucket lifecycle rules or S3 Object Lock can do
	// this instead: see the README.)
	Retention time.Duration
	// WAL is the writer's write-ahead log, recorded in the staging
	// directory for this process's readers.
	WAL string
	// Segment closes a segment after MaxRecords or MaxAge (parquetlog's
	// defaults when zero).
	MaxRecords int
	MaxAge     time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger for uploads and retention; nil means slog.Default().
	Logger *slog.Logger
}

// Sink writes one writer's records into segments in a local staging
// directory and uploads each closed segment to the bucket: an
// audit.Buffered sink whose records are durable once uploaded and
// verified. Until then they are in the write-ahead log and the staging
// directory, which the next start uploads first; a failed upload is
// retried with backoff, the sink reported failing meanwhile, and
// --audit-buffer applies as for every sink.
type Sink struct {
	bucket *Bucket
	local  *parquetlog.Log
	opts   Options

	writer    string
	uploaded  atomic.Uint64
	retryAt   atomic.Int64 // unix nanoseconds; when a failed upload is tried again, 0 when none failed
	backoff   time.Duration
	nextPrune time.Time
}

// OpenSink opens the bucket of an s3:// DSN for writing.
func OpenSink(ctx context.Context, dsn string, opts Options) (*Sink, error) {
	if opts.Cluster == "" {
		return nil, errors.New("an s3:// decision log needs --cluster: it is the first level of the fleet's bucket")
	}
	if opts.Staging == "" {
		return nil, errors.New("an s3:// decision log needs a local staging directory")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	b, err := NewBucket(ctx, dsn)
	if err != nil {
		return nil, err
	}
	local, err := parquetlog.Open(opts.Staging, parquetlog.Options{Cluster: opts.Cluster, WAL: opts.WAL,
		MaxRecords: opts.MaxRecords, MaxAge: opts.MaxAge, Now: opts.Now, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	return &Sink{bucket: b, local: local, opts: opts}, nil
}

// Name implements audit.Sink: the DSN.
func (s *Sink) Name() string { return s.bucket.String() }

// Cursor implements audit.Sink: the writer's last record in an uploaded
// segment. Records in segments still staged are not counted: they are
// replayed from the write-ahead log, which the staging segments already
// hold, and uploaded first.
func (s *Sink) Cursor(ctx context.Context, writer string) (uint64, error) {
	if _, err := s.local.Cursor(ctx, writer); err != nil {
		return 0, err
	}
	segs, err := parquetlog.ListSegments(ctx, s.bucket, parquetlog.ClusterPrefix(s.opts.Cluster))
	if err != nil {
		return 0, err
	}
	var last uint64
	for _, sg := range segs {
		if sg.Writer == writer {
			last = max(last, sg.Last)
		}
	}
	s.writer = writer
	s.uploaded.Store(last)
	return last, nil
}

// Write implements audit.Sink: records go into the open staging segment;
// the segments that closed are uploaded.
func (s *Sink) Write(ctx context.Context, recs []audit.Record) error {
	if err := s.local.Write(ctx, recs); err != nil {
		return err
	}
	return s.upload(ctx)
}

// CopiesRecords implements audit.Copying: the records go to a
// parquetlog.Log, which is.
func (s *Sink) CopiesRecords() {}

// Durable implements audit.Buffered: the last record uploaded.
func (s *Sink) Durable() uint64 { return s.uploaded.Load() }

// FlushBy implements audit.Buffered: when the open segment must close, or
// when a failed upload is tried again.
func (s *Sink) FlushBy() time.Time {
	t := s.local.FlushBy()
	if n := s.retryAt.Load(); n != 0 {
		if r := time.Unix(0, n); t.IsZero() || r.Before(t) {
			t = r
		}
	}
	return t
}

// Flush implements audit.Buffered: it closes the open segment and uploads
// every staged one.
func (s *Sink) Flush(ctx context.Context) error {
	if err := s.local.Flush(ctx); err != nil {
		return err
	}
	return s.upload(ctx)
}

// Close implements audit.Sink: it closes the open segment; what is not
// uploaded stays staged for the next start.
func (s *Sink) Close() error { return s.local.Close() }

// upload uploads the writer's staged segments in order, removing each from
// the staging directory once its upload verified.
func (s *Sink) upload(ctx context.Context) error {
	staged, err := parquetlog.ListSegments(ctx, parquetlog.Dir(s.opts.Staging), "")
	if err != nil {
		return err
	}
	for _, sg := range staged {
		if sg.Writer != s.writer {
			continue
		}
		if sg.Last <= s.uploaded.Load() {
			// Uploaded before a crash kept it from being removed.
			if err := parquetlog.Dir(s.opts.Staging).Remove(ctx, sg.Name); err != nil {
				return err
			}
			continue
		}
		if err := parquetlog.CheckFork(ctx, s.bucket, parquetlog.ClusterPrefix(s.opts.Cluster), sg.Writer, sg.First, sg.Last); err != nil {
			if fe := (*audit.ForkError)(nil); errors.As(err, &fe) {
				// Chained again under a new writer id from the write-ahead log.
				_ = parquetlog.Dir(s.opts.Staging).Remove(ctx, sg.Name)
			}
			return err
		}
		err := s.bucket.Upload(ctx, sg.Name, filepath.Join(s.opts.Staging, filepath.FromSlash(sg.Name)))
		if errors.Is(err, ErrExists) {
			_ = parquetlog.Dir(s.opts.Staging).Remove(ctx, sg.Name)
			return fmt.Errorf("%w: %v", &audit.ForkError{Writer: sg.Writer, Seq: sg.First}, err)
		}
		if err != nil {
			s.backoff = min(max(2*s.backoff, time.Second), time.Minute)
			s.retryAt.Store(s.opts.Now().Add(s.backoff).UnixNano())
			return fmt.Errorf("segment of records %d..%d stays staged: %w", sg.First, sg.Last, err)
		}
		s.uploaded.Store(sg.Last)
		if err := parquetlog.Dir(s.opts.Staging).Remove(ctx, sg.Name); err != nil {
			return err
		}
	}
	s.backoff = 0
	s.retryAt.Store(0)
	s.maybePrune(ctx)
	return nil
}

// pruneEvery is how often retention runs.
const pruneEvery = time.Hour

func (s *Sink) maybePrune(ctx context.Context) {
	if s.opts.Retention <= 0 || s.opts.Now().Before(s.nextPrune) {
		return
	}
	s.nextPrune = s.opts.Now().Add(pruneEvery)
	removed, err := parquetlog.Prune(ctx, s.bucket, s.opts.Retention, s.opts.Now(), s.writer)
	if err != nil {
		s.opts.Logger.Warn("decision-log retention failed; it runs again in an hour", "bucket", s.bucket.String(), "error", err.Error())
	}
	if len(removed) > 0 {
		s.opts.Logger.Info("decision-log retention removed whole days", "bucket", s.bucket.String(), "writer", s.writer, "days", removed)
	}
}

// PutRuleSet implements audit.RuleSetArchive: an object beside the
// clusters' segments, shared by the fleet (a version names its content).
func (s *Sink) PutRuleSet(ctx context.Context, rs audit.RuleSet) error {
	return parquetlog.PutRuleSet(ctx, s.bucket, rs)
}

// RuleSet implements audit.RuleSetArchive.
func (s *Sink) RuleSet(ctx context.Context, version string) (audit.RuleSet, error) {
	return parquetlog.GetRuleSet(ctx, s.bucket, version)
}
