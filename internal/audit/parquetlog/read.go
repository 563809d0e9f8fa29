package parquetlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// segmentRef is a closed segment found in a listing, known by its name
// alone.
type segmentRef struct {
	name    string // in its Storage
	cluster string // "" when the layout has no cluster level
	day     time.Time
	writer  string
	first   uint64
	last    uint64
}

// listSegments lists the closed segments of st, by writer and first
// sequence number.
func listSegments(ctx context.Context, st Storage, prefixes ...string) ([]segmentRef, error) {
	refs, _, err := listFiles(ctx, st, prefixes...)
	return refs, err
}

// listFiles lists the closed segments of st under the given prefixes (all
// of it when there are none), by writer and first sequence number, and
// the files in its day directories that are not segments (nor a segment
// being written).
func listFiles(ctx context.Context, st Storage, prefixes ...string) (refs []segmentRef, strays []string, err error) {
	if len(prefixes) == 0 {
		prefixes = []string{""}
	}
	for _, prefix := range prefixes {
		objs, err := st.List(ctx, prefix)
		if err != nil {
			return nil, nil, err
		}
		for _, o := range objs {
			ref, ok, stray := parseObjectName(o.Name)
			switch {
			case ok:
				refs = append(refs, ref)
			case stray:
				strays = append(strays, o.Name)
			}
		}
	}
	slices.SortFunc(refs, func(a, b segmentRef) int {
		if a.writer != b.writer {
			if a.writer < b.writer {
				return -1
			}
			return 1
		}
		return cmpUint(a.first, b.first)
	})
	refs = slices.CompactFunc(refs, func(a, b segmentRef) bool { return a.name == b.name })
	return refs, strays, nil
}

// parseObjectName reads a name of the layout: a segment (ok), or a file
// in a day directory that is no segment (stray); anything else (the
// checkpoints, the tails, a segment being written) is neither.
func parseObjectName(name string) (ref segmentRef, ok, stray bool) {
	parts := strings.Split(name, "/")
	if len(parts) == 3 {
		c, isCluster := strings.CutPrefix(parts[0], clusterPrefix)
		if !isCluster {
			return ref, false, false
		}
		ref.cluster, parts = c, parts[1:]
	}
	if len(parts) != 2 {
		return ref, false, false
	}
	day, isDay := parseDayDir(parts[0])
	if !isDay {
		return ref, false, false
	}
	file := parts[1]
	if strings.HasPrefix(file, ".") {
		return ref, false, false // a segment being written
	}
	writer, first, last, isSeg := parseSegmentName(file)
	if !isSeg {
		return ref, false, true
	}
	ref.name, ref.day, ref.writer, ref.first, ref.last = name, day, writer, first, last
	return ref, true, false
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
	f    ObjectReader
	pf   *parquet.File
	meta chainMeta
}

// openSegment opens a segment of st and reads its footer and chain
// metadata.
func openSegment(ctx context.Context, st Storage, ref segmentRef) (*segment, error) {
	f, err := st.Open(ctx, ref.name)
	if err != nil {
		return nil, err
	}
	pf, err := parquet.OpenFile(f, f.Size(), parquet.SkipBloomFilters(true))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("segment %s: %w", ref.name, err)
	}
	s := &segment{ref: ref, f: f, pf: pf}
	v, ok := pf.Lookup(metaKey)
	if !ok {
		f.Close()
		return nil, fmt.Errorf("segment %s: %w", ref.name, errNoMeta)
	}
	if s.meta, err = readMeta(v); err != nil {
		f.Close()
		return nil, fmt.Errorf("segment %s: %w", ref.name, err)
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
	refs, err := listSegments(ctx, s.st)
	if err != nil {
		return err
	}
	for _, ref := range refs {
		seg, err := openSegment(ctx, s.st, ref)
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
