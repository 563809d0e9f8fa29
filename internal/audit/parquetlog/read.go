package parquetlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// segmentRef is a closed segment found in a directory listing, known by
// its name alone.
type segmentRef struct {
	path   string
	day    time.Time
	writer string
	first  uint64
	last   uint64
}

// listSegments lists the closed segments under dir, by writer and first
// sequence number.
func listSegments(dir string) ([]segmentRef, error) {
	refs, _, err := listFiles(dir)
	return refs, err
}

// listFiles lists the closed segments under dir, by writer and first
// sequence number, and the files in its day directories that are not
// segments (nor a segment being written).
func listFiles(dir string) (refs []segmentRef, strays []string, err error) {
	days, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("parquet decision log %s: %w", dir, err)
	}
	var out []segmentRef
	for _, d := range days {
		day, ok := parseDayDir(d.Name())
		if !ok || !d.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(dir, d.Name()))
		if err != nil {
			return nil, nil, fmt.Errorf("parquet decision log: %w", err)
		}
		for _, f := range files {
			writer, first, last, ok := parseSegmentName(f.Name())
			if !ok || f.IsDir() {
				if _, tmp := parseTmpName(f.Name()); !tmp {
					strays = append(strays, filepath.Join(dir, d.Name(), f.Name()))
				}
				continue
			}
			out = append(out, segmentRef{path: filepath.Join(dir, d.Name(), f.Name()), day: day, writer: writer, first: first, last: last})
		}
	}
	slices.SortFunc(out, func(a, b segmentRef) int {
		if a.writer != b.writer {
			if a.writer < b.writer {
				return -1
			}
			return 1
		}
		return cmpUint(a.first, b.first)
	})
	return out, strays, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// segment is an open segment file.
type segment struct {
	ref  segmentRef
	f    *os.File
	pf   *parquet.File
	meta chainMeta
}

// openSegment opens a segment and reads its footer and chain metadata.
func openSegment(ref segmentRef) (*segment, error) {
	f, err := os.Open(ref.path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	pf, err := parquet.OpenFile(f, st.Size(), parquet.SkipBloomFilters(true))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("segment %s: %w", ref.path, err)
	}
	s := &segment{ref: ref, f: f, pf: pf}
	v, ok := pf.Lookup(metaKey)
	if !ok {
		f.Close()
		return nil, fmt.Errorf("segment %s: %w", ref.path, errNoMeta)
	}
	if s.meta, err = readMeta(v); err != nil {
		f.Close()
		return nil, fmt.Errorf("segment %s: %w", ref.path, err)
	}
	return s, nil
}

func (s *segment) close() { s.f.Close() }

// mark returns the chain hash the segment keeps for the record before seq
// when seq starts a mark block, and whether it has one.
func (m *chainMeta) mark(seq uint64) (string, bool) {
	if seq < m.FirstSeq || (seq-m.FirstSeq)%markEvery != 0 {
		return "", false
	}
	k := (seq - m.FirstSeq) / markEvery
	if k >= uint64(len(m.Marks)) {
		return "", false
	}
	return m.Marks[k], true
}

// rowGroupSpan says which rows of the segment one of its row groups holds,
// and the bounds of its time column.
type rowGroupSpan struct {
	rg               parquet.RowGroup
	minTime, maxTime int64
	known            bool // the bounds were read from the column's statistics
}

func (s *segment) rowGroups() []rowGroupSpan {
	timeCol := -1
	if leaf, ok := s.pf.Schema().Lookup("time"); ok {
		timeCol = leaf.ColumnIndex
	}
	var out []rowGroupSpan
	for _, rg := range s.pf.RowGroups() {
		sp := rowGroupSpan{rg: rg}
		if timeCol >= 0 {
			if cc, isFile := rg.ColumnChunks()[timeCol].(*parquet.FileColumnChunk); isFile {
				if lo, hi, ok := cc.Bounds(); ok {
					sp.minTime, sp.maxTime, sp.known = lo.Int64(), hi.Int64(), true
				}
			}
		}
		out = append(out, sp)
	}
	return out
}

// readRows calls fn with every row of the row group, in order, in batches
// (valid until fn returns).
func readRows(rg parquet.RowGroup, fn func([]row) error) error {
	r := parquet.NewGenericRowGroupReader[row](rg)
	defer r.Close()
	buf := make([]row, 512)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if ferr := fn(buf[:n]); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// chainer recomputes hashes along a writer's chain: each record's
// PrevHash is the hash of the one before it.
type chainer struct{ prev string }

// next sets r's PrevHash and Hash from the chain so far and advances it.
func (c *chainer) next(r *audit.Record) {
	r.PrevHash = c.prev
	r.Hash = audit.ComputeHash(r)
	c.prev = r.Hash
}

// Chains implements audit.Store: every record, by writer and sequence
// number, with its hash recomputed from its columns and each segment's
// first record linked to the hash the segment says precedes it. Such a
// walk cannot show an edit inside a segment (the recomputed hashes agree
// with themselves); VerifyChains checks the records against the hashes
// the segments keep, and audit.Verify calls it.
func (s *Log) Chains(ctx context.Context, fn func(*audit.Record) error) error {
	refs, err := listSegments(s.dir)
	if err != nil {
		return err
	}
	for _, ref := range refs {
		seg, err := openSegment(ref)
		if err != nil {
			return err
		}
		c := chainer{prev: seg.meta.PrevHash}
		var rec audit.Record
		for _, sp := range seg.rowGroups() {
			err := readRows(sp.rg, func(rows []row) error {
				for i := range rows {
					fromRow(&rows[i], &rec)
					c.next(&rec)
					if err := fn(&rec); err != nil {
						return err
					}
				}
				return ctx.Err()
			})
			if err != nil {
				seg.close()
				return err
			}
		}
		seg.close()
	}
	return nil
}
