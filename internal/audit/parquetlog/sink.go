package parquetlog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// Options configures a Sink. The zero value of each field means its
// default.
type Options struct {
	// MaxRecords closes a segment once it holds this many records.
	// Default 262,144 (a few MB on disk).
	MaxRecords int
	// MaxAge closes a segment this long after its first record, so that
	// a quiet gateway's records still reach a closed segment. Default 10
	// minutes.
	MaxAge time.Duration
	// Retention removes the day directories older than this; 0 keeps all.
	Retention time.Duration
	// WAL is the write-ahead log directory of the writer feeding the sink,
	// recorded beside the segments (in _tails/) so that a reader in
	// another process can add the records not yet in a segment (the tail)
	// to its answers. Only a sink sets it.
	WAL string
	// Cluster, when set, puts the segments under a cluster=NAME directory
	// above the days: the layout of a fleet's bucket (internal/audit/s3log
	// stages its segments so).
	Cluster string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger for retention; nil means slog.Default().
	Logger *slog.Logger
}

// Log is a segment directory: an audit.Buffered sink for one writer's
// records and an audit.Store of every writer's. As a sink, its methods are
// called by one goroutine of the audit writer (see audit.Sink), except
// Durable and FlushBy, which are safe for concurrent use; as a store it
// is safe for concurrent use.
//
// Records handed to Write are held in the open segment and become durable
// when it closes (by size, by age, at a day boundary, on Flush or Close);
// Durable reports how far that is, and the writer releases its
// write-ahead log only that far.
type Log struct {
	dir  string  // the local directory segments are written to; "" for a log that is only read
	st   Storage // where readers find the segments: the directory, or a bucket
	opts Options

	writer    string // set by Cursor: a sink serves one writer's chain
	seg       *segmentWriter
	rows      []row                       // a closed segment's row buffer, for the next one
	pw        *parquet.GenericWriter[row] // a closed segment's parquet writer, for the next one
	durable   atomic.Uint64
	flushBy   atomic.Int64 // unix nanoseconds; 0 when no segment is open
	nextPrune time.Time    // when retention runs next
}

// pruneEvery is how often retention runs; a run that fails is logged and
// tried again then, and never fails a write.
const pruneEvery = time.Hour

// Open opens the segment directory dir, creating it if needed.
func Open(dir string, opts Options) (*Log, error) {
	if opts.MaxRecords <= 0 {
		opts.MaxRecords = 1 << 18
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = 10 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open parquet decision log: %w", err)
	}
	if opts.WAL != "" {
		if err := writeTail(dir, opts.WAL); err != nil {
			return nil, err
		}
	}
	l := &Log{dir: dir, st: Dir(dir), opts: opts}
	if opts.Cluster != "" {
		if err := os.MkdirAll(l.segmentRoot(), 0o750); err != nil {
			return nil, fmt.Errorf("open parquet decision log: %w", err)
		}
		if err := syncDir(dir); err != nil {
			return nil, fmt.Errorf("open parquet decision log: %w", err)
		}
	}
	return l, nil
}

// OpenStorage opens a log kept in st (a bucket) for reading only: Query,
// Chains, VerifyChains.
func OpenStorage(st Storage) *Log { return &Log{st: st} }

// segmentRoot is the directory the day directories are in.
func (s *Log) segmentRoot() string {
	if s.opts.Cluster == "" {
		return s.dir
	}
	return filepath.Join(s.dir, clusterPrefix+s.opts.Cluster)
}

// OpenExisting opens the segment directory dir for reading. It must
// exist: a mistyped path must not read as an empty, intact log.
func OpenExisting(dir string, opts Options) (*Log, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("parquet decision log: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("parquet decision log %s: not a directory", dir)
	}
	return Open(dir, opts)
}

// Name implements audit.Sink: the DSN.
func (s *Log) Name() string { return "parquet:" + s.dir }

// Cursor implements audit.Sink: the last record of writer in a closed
// segment. It also removes the writer's unfinished segments, left by a
// crash (their records are in the write-ahead log), and records where the
// writer's log is, for readers of the tail.
func (s *Log) Cursor(ctx context.Context, writer string) (uint64, error) {
	segs, err := listSegments(ctx, Dir(s.dir))
	if err != nil {
		return 0, err
	}
	var last uint64
	for _, sg := range segs {
		if sg.writer == writer {
			last = max(last, sg.last)
		}
	}
	if s.seg != nil && s.seg.meta.Writer != writer {
		// The writer became a new one (a fork): what it gave as the old
		// one is chained again under the new id.
		s.seg.abort()
		s.seg = nil
		s.flushBy.Store(0)
	}
	if err := s.removeUnfinished(writer); err != nil {
		return 0, err
	}
	s.writer = writer
	s.durable.Store(last)
	return last, nil
}

// removeUnfinished removes writer's temporary segment files.
func (s *Log) removeUnfinished(writer string) error {
	objs, err := Dir(s.dir).List(context.Background(), "")
	if err != nil {
		return err
	}
	var names []string
	for _, o := range objs {
		if _, ok := dayOf(o.Name); !ok {
			continue
		}
		if w, ok := parseTmpName(path.Base(o.Name)); ok && w == writer {
			names = append(names, o.Name)
		}
	}
	return Dir(s.dir).Remove(context.Background(), names...)
}

// Write implements audit.Sink: it appends recs to the open segment,
// closing segments as they fill, age or cross midnight (UTC).
//
// It keeps nothing of recs once it returns (audit.Copying): segments copy
// what they store.
func (s *Log) Write(ctx context.Context, recs []audit.Record) error {
	for len(recs) > 0 {
		r := &recs[0]
		if r.Seq <= s.durable.Load() && s.seg == nil {
			recs = recs[1:] // already in a closed segment: written again after a crash
			continue
		}
		if s.seg != nil && s.seg.meta.Records > 0 && r.Seq <= s.seg.meta.LastSeq {
			recs = recs[1:]
			continue
		}
		day := r.Time.UTC().Truncate(24 * time.Hour)
		if s.seg != nil && day.After(s.seg.day) {
			if err := s.closeSegment(); err != nil {
				return err
			}
		}
		if s.seg == nil {
			seg, err := createSegment(s.segmentRoot(), day, r.Writer, r.Seq, s.opts.Now(), s.pw)
			s.pw = nil
			if err != nil {
				return err
			}
			s.seg, seg.rows, s.rows = seg, s.rows, nil
			s.flushBy.Store(seg.opened.Add(s.opts.MaxAge).UnixNano())
		}
		// As many records as fit in the segment and its day.
		n := 1
		for n < len(recs) && int(s.seg.meta.Records)+n < s.opts.MaxRecords &&
			!recs[n].Time.UTC().Truncate(24*time.Hour).After(s.seg.day) {
			n++
		}
		if err := s.seg.append(recs[:n]); err != nil {
			s.seg.abort()
			s.seg = nil
			s.flushBy.Store(0)
			return err
		}
		recs = recs[n:]
		if int(s.seg.meta.Records) >= s.opts.MaxRecords {
			if err := s.closeSegment(); err != nil {
				return err
			}
		}
	}
	if s.seg != nil && !s.opts.Now().Before(s.seg.opened.Add(s.opts.MaxAge)) {
		return s.closeSegment()
	}
	return nil
}

// CopiesRecords implements audit.Copying.
func (s *Log) CopiesRecords() {}

func (s *Log) closeSegment() error {
	seg := s.seg
	s.seg, s.rows = nil, seg.rows[:0]
	s.flushBy.Store(0)
	if err := CheckFork(context.Background(), Dir(s.dir), "", seg.meta.Writer, seg.meta.FirstSeq, seg.meta.LastSeq); err != nil {
		seg.abort()
		return err
	}
	if _, err := seg.close(); err != nil {
		seg.abort()
		return err
	}
	s.pw = seg.w
	s.durable.Store(seg.meta.LastSeq)
	s.maybePrune()
	return nil
}

// maybePrune runs retention when it is due.
func (s *Log) maybePrune() {
	if s.opts.Retention <= 0 {
		return
	}
	now := s.opts.Now()
	if now.Before(s.nextPrune) {
		return
	}
	s.nextPrune = now.Add(pruneEvery)
	removed, err := Prune(context.Background(), s.st, s.opts.Retention, now, "")
	if err != nil {
		s.opts.Logger.Warn("decision-log retention failed; it runs again in an hour", "dir", s.dir, "error", err.Error())
	}
	if len(removed) > 0 {
		s.opts.Logger.Info("decision-log retention removed whole days", "dir", s.dir, "days", removed)
	}
}

// Durable reports the last record stored in a closed segment.
func (s *Log) Durable() uint64 { return s.durable.Load() }

// FlushBy reports when the open segment must be closed at the latest, or
// the zero time when none is open.
func (s *Log) FlushBy() time.Time {
	if n := s.flushBy.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Flush closes the open segment, making every record written durable.
func (s *Log) Flush(ctx context.Context) error {
	if s.seg == nil {
		return nil
	}
	return s.closeSegment()
}

// Close implements audit.Sink: it closes the open segment. A segment that
// cannot be closed is removed; its records stay in the write-ahead log.
func (s *Log) Close() error {
	if s.seg == nil {
		return nil
	}
	return s.closeSegment()
}

// A segment directory says, in _tails/, which write-ahead logs feed it:
// one file per log, named after a hash of its path, holding the path.
// Readers add the records of those logs that no segment holds yet.
const tailDir = "_tails"

type tailInfo struct {
	WAL string `json:"wal"`
}

func writeTail(dir, wal string) error {
	abs, err := filepath.Abs(wal)
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(abs))
	path := filepath.Join(dir, tailDir, hex.EncodeToString(sum[:8])+".json")
	b, _ := json.Marshal(tailInfo{WAL: abs})
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("parquet decision log: %w", err)
	}
	if cur, err := os.ReadFile(path); err == nil && string(cur) == string(b) {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return fmt.Errorf("parquet decision log: %w", err)
	}
	return os.Rename(tmp, path)
}

// readTails returns, by writer, the write-ahead log directories that feed
// the segment directory and still hold a log.
func readTails(dir string) (map[string]string, error) {
	out := map[string]string{}
	entries, err := os.ReadDir(filepath.Join(dir, tailDir))
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("parquet decision log: %w", err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, tailDir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("parquet decision log: %w", err)
		}
		var t tailInfo
		if err := json.Unmarshal(b, &t); err != nil {
			return nil, fmt.Errorf("parquet decision log: %s: %w", e.Name(), err)
		}
		writer, err := audit.LogWriter(t.WAL)
		if err != nil {
			return nil, err
		}
		if writer != "" {
			out[writer] = t.WAL
		}
	}
	return out, nil
}

// CheckFork returns an *audit.ForkError when st holds, under prefix, a
// closed segment of writer with any of the records first..last: a sink
// skips what it has stored, so a segment of the same records means that
// another process writes the same chain (a copied data directory).
func CheckFork(ctx context.Context, st Storage, prefix, writer string, first, last uint64) error {
	segs, err := ListSegments(ctx, st, prefix)
	if err != nil {
		return err
	}
	var fork *audit.ForkError
	for _, sg := range segs {
		if sg.Writer == writer && sg.First <= last && sg.Last >= first {
			if seq := max(first, sg.First); fork == nil || seq < fork.Seq {
				fork = &audit.ForkError{Writer: writer, Seq: seq}
			}
		}
	}
	if fork != nil {
		return fork
	}
	return nil
}
