package parquetlog

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// rowGroupRows is how many records a row group holds: a whole number of
// marks, so that each row group's chain starts at a mark.
const rowGroupRows = 64 * markEvery

// yieldEvery is how many records the sink converts and hands to
// parquet-go before it lets other goroutines run.
const yieldEvery = 512

// pageBufferSize is how many bytes of a column's values are buffered
// before they are encoded and compressed as a page. parquet-go's default,
// 256 KiB, held a whole row group of each dictionary column's indexes
// (65,536 of 4 bytes) in memory; a quarter of that costs 0.4 % more bytes
// on disk and a third of the sink's memory.
const pageBufferSize = 64 << 10

// segmentWriter writes one segment to its temporary file.
type segmentWriter struct {
	dir    string // the day's directory
	tmp    string
	day    time.Time
	f      *os.File
	w      *parquet.GenericWriter[row]
	meta   chainMeta
	rows   []row // the batch being converted for w
	buf    []byte
	opened time.Time
}

// tmpName is where a segment is written until it is complete: a hidden
// name, which no reader's glob of *.parquet matches, with a random part,
// so that two processes writing the same chain (a copied data directory)
// never write one file.
func tmpName(writer string, first uint64) string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return "." + segmentName(writer, first, first) + "." + hex.EncodeToString(r[:]) + ".tmp"
}

// parseTmpName returns the writer of a temporary segment file.
func parseTmpName(name string) (writer string, ok bool) {
	base, ok1 := strings.CutPrefix(name, ".")
	base, ok2 := strings.CutSuffix(base, ".tmp")
	if !ok1 || !ok2 {
		return "", false
	}
	if i := strings.LastIndexByte(base, '.'); i >= 0 && base[i+1:] != "parquet" {
		base = base[:i]
	}
	writer, _, _, ok = parseSegmentName(base)
	return writer, ok
}

// createSegment starts a segment of writer's records from first. pw, when
// not nil, is the parquet writer of a segment that closed, reset to write
// this one: its buffers and dictionaries are reused, not allocated again.
func createSegment(root string, day time.Time, writer string, first uint64, opened time.Time, pw *parquet.GenericWriter[row]) (*segmentWriter, error) {
	dir := filepath.Join(root, dayDir(day))
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		// A new day: its directory entry must be durable before the
		// segments in it are.
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("new segment: %w", err)
		}
		if err := syncDir(root); err != nil {
			return nil, fmt.Errorf("new segment: %w", err)
		}
	}
	tmp := filepath.Join(dir, tmpName(writer, first))
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, fmt.Errorf("new segment: %w", err)
	}
	s := &segmentWriter{dir: dir, tmp: tmp, day: day, f: f, opened: opened,
		meta: chainMeta{Format: 1, Writer: strings.Clone(writer), FirstSeq: first, LastSeq: first - 1}}
	if pw != nil {
		pw.Reset(f)
		s.w = pw
		return s, nil
	}
	s.w = parquet.NewGenericWriter[row](f,
		parquet.MaxRowsPerRowGroup(rowGroupRows),
		parquet.PageBufferSize(pageBufferSize),
		parquet.Compression(codec),
		parquet.CreatedBy("egress-authz", "", ""),
	)
	return s, nil
}

// append adds records, which must continue the segment's chain.
func (s *segmentWriter) append(recs []audit.Record) error {
	for i := range recs {
		r := &recs[i]
		if r.Writer != s.meta.Writer || r.Seq != s.meta.LastSeq+1 || (s.meta.Records > 0 && r.PrevHash != s.meta.LastHash) {
			return fmt.Errorf("segment of writer %s after record %d: record %d of writer %s does not continue the chain",
				s.meta.Writer, s.meta.LastSeq, r.Seq, r.Writer)
		}
		if s.meta.Records%markEvery == 0 {
			s.meta.Marks = append(s.meta.Marks, strings.Clone(r.PrevHash))
		}
		if s.meta.Records == 0 {
			s.meta.PrevHash, s.meta.MinTime, s.meta.MaxTime = strings.Clone(r.PrevHash), r.Time.UnixNano(), r.Time.UnixNano()
		}
		t := r.Time.UnixNano()
		s.meta.MinTime, s.meta.MaxTime = min(s.meta.MinTime, t), max(s.meta.MaxTime, t)
		s.meta.LastSeq, s.meta.LastHash = r.Seq, r.Hash
		s.meta.Records++
		s.rows = append(s.rows, row{})
		s.buf = toRow(r, &s.rows[len(s.rows)-1], s.buf)
		if len(s.rows) == yieldEvery {
			if err := s.flushRows(); err != nil {
				return err
			}
			// A batch is a burst of work on one core, while Checks wait
			// for it on a small machine: let them run between chunks.
			runtime.Gosched()
		}
	}
	// Nothing of recs is kept past this call (the sink is audit.Copying):
	// parquet-go copies the rows' values into its buffers.
	if len(recs) > 0 {
		s.meta.LastHash = strings.Clone(s.meta.LastHash)
	}
	return s.flushRows()
}

func (s *segmentWriter) flushRows() error {
	if len(s.rows) == 0 {
		return nil
	}
	if _, err := s.w.Write(s.rows); err != nil {
		return fmt.Errorf("write segment %s: %w", s.tmp, err)
	}
	clear(s.rows)
	s.rows = s.rows[:0]
	return nil
}

// close completes the segment: footer with the chain metadata, fsync,
// rename to its final name, fsync of the directory. It returns the final
// path. Only then are its records durable here.
func (s *segmentWriter) close() (string, error) {
	if err := s.flushRows(); err != nil {
		return "", err
	}
	meta, err := json.Marshal(s.meta)
	if err != nil {
		return "", err
	}
	s.w.SetKeyValueMetadata(metaKey, string(meta))
	if err := s.w.Close(); err != nil {
		return "", fmt.Errorf("close segment %s: %w", s.tmp, err)
	}
	if err := s.f.Sync(); err != nil {
		return "", fmt.Errorf("fsync segment %s: %w", s.tmp, err)
	}
	if err := s.f.Close(); err != nil {
		return "", fmt.Errorf("close segment %s: %w", s.tmp, err)
	}
	final := filepath.Join(s.dir, segmentName(s.meta.Writer, s.meta.FirstSeq, s.meta.LastSeq))
	// A link, unlike a rename, never replaces a segment: one of the same
	// records already there was written by another process writing the
	// same chain (a copied data directory), and is kept.
	if err := os.Link(s.tmp, final); errors.Is(err, fs.ErrExist) {
		return "", &audit.ForkError{Writer: s.meta.Writer, Seq: s.meta.FirstSeq}
	} else if err != nil {
		return "", fmt.Errorf("segment %s: %w", final, err)
	}
	if err := os.Remove(s.tmp); err != nil {
		return "", fmt.Errorf("segment %s: %w", s.tmp, err)
	}
	if err := syncDir(s.dir); err != nil {
		return "", fmt.Errorf("fsync %s: %w", s.dir, err)
	}
	return final, nil
}

// abort removes the unfinished segment; its records are still in the
// write-ahead log.
func (s *segmentWriter) abort() {
	s.f.Close()
	os.Remove(s.tmp)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
