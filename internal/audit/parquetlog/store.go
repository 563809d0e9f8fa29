package parquetlog

import (
	"cmp"
	"container/heap"
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/parquet-go/parquet-go"
	"golang.org/x/sync/errgroup"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// Query implements audit.Store: the records f selects, newest first (by
// time, then writer and sequence number, as the SQL stores order them),
// read from the segments whose days, times and writers can hold a match,
// plus the writers' tails.
//
// Segments are opened newest first and merged: a segment is read only once
// the records already found are no newer than its newest one, so a query
// with a limit reads a few segments, and one without holds in memory only
// the matches of the segments that overlap in time.
func (s *Log) Query(ctx context.Context, f audit.Filter, fn func(*audit.Record) error) (string, error) {
	until := f.Until
	var cur cursorPos
	if f.Cursor != "" {
		var err error
		if cur, err = decodeCursor(f.Cursor); err != nil {
			return "", err
		}
		if t := time.Unix(0, cur.Time+1); until.IsZero() || t.Before(until) {
			until = t
		}
	}
	// The tail first, then the segments again: a record that left the
	// write-ahead log while the tail was read was in a closed segment
	// first, which the second listing sees.
	before, err := s.segmentsFor(ctx, f.Cluster, f.Since, until)
	if err != nil {
		return "", err
	}
	tail, err := s.tailMatches(ctx, f, cur, until, lastSeqs(before))
	if err != nil {
		return "", err
	}
	refs, err := s.segmentsFor(ctx, f.Cluster, f.Since, until)
	if err != nil {
		return "", err
	}
	inSegments := lastSeqs(refs)
	tail = slices.DeleteFunc(tail, func(r audit.Record) bool { return r.Seq <= inSegments[r.Writer] })
	var cands []*candidate
	for _, ref := range refs {
		if dayMayHold(ref.day, f.Since, until) {
			cands = append(cands, &candidate{ref: ref})
		}
	}
	// Footers give each segment's time span: only those can be ordered.
	for _, c := range cands {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		seg, err := openSegment(ctx, s.st, c.ref)
		if err != nil {
			return "", err
		}
		c.minTime, c.maxTime = seg.meta.MinTime, seg.meta.MaxTime
		seg.close()
	}
	cands = slices.DeleteFunc(cands, func(c *candidate) bool {
		return (!f.Since.IsZero() && c.maxTime < f.Since.UnixNano()) || (!until.IsZero() && c.minTime >= until.UnixNano())
	})
	if len(tail) > 0 {
		cands = append(cands, &candidate{loaded: true, recs: tail, maxTime: tail[0].Time.UnixNano()})
	}
	slices.SortFunc(cands, func(a, b *candidate) int { return cmp.Compare(b.maxTime, a.maxTime) })

	m := &merger{}
	next := 0
	emitted := 0
	var last *audit.Record
	for {
		// Load every segment that may hold a record newer than the
		// newest one waiting.
		for next < len(cands) && (m.Len() == 0 || cands[next].maxTime >= m.top().Time.UnixNano()) {
			c := cands[next]
			next++
			if !c.loaded {
				if c.recs, err = s.matches(ctx, c.ref, f, cur, until); err != nil {
					return "", err
				}
			}
			if len(c.recs) > 0 {
				heap.Push(m, &iter{recs: c.recs})
			}
		}
		if m.Len() == 0 {
			return "", nil
		}
		if f.Limit > 0 && emitted == f.Limit {
			return encodeCursor(last), nil
		}
		it := m.its[0]
		r := &it.recs[it.i]
		if err := fn(r); err != nil {
			return "", err
		}
		last = r
		emitted++
		it.i++
		if it.i == len(it.recs) {
			heap.Pop(m)
		} else {
			heap.Fix(m, 0)
		}
	}
}

// dayMayHold reports whether a day directory may hold records in
// [since, until): a segment's day is its first record's, and a record
// stamped just before midnight may arrive after the day's last segment
// closed, so a directory holds records of its own day and the few last
// milliseconds of the day before.
// segmentsFor lists the segments that may hold records of cluster (any
// when "") between since and until (either zero: unbounded). Only the
// directories of the cluster and of those days are listed, so that a
// query of one cluster's last day in a fleet's bucket costs a few
// listings, not a listing of the whole bucket.
func (s *Log) segmentsFor(ctx context.Context, cluster string, since, until time.Time) ([]segmentRef, error) {
	if cluster == "" && since.IsZero() && until.IsZero() {
		return listSegments(ctx, s.st)
	}
	tops, err := s.st.Dirs(ctx, "")
	if err != nil {
		return nil, err
	}
	var prefixes []string
	for _, top := range tops {
		name := strings.TrimSuffix(top, "/")
		if c, ok := strings.CutPrefix(name, clusterPrefix); ok {
			switch {
			case cluster != "" && c != cluster:
			case since.IsZero() && until.IsZero():
				prefixes = append(prefixes, top)
			default:
				days, err := s.st.Dirs(ctx, top)
				if err != nil {
					return nil, err
				}
				for _, d := range days {
					if day, ok := parseDayDir(strings.TrimSuffix(strings.TrimPrefix(d, top), "/")); ok && dayMayHold(day, since, until) {
						prefixes = append(prefixes, d)
					}
				}
			}
			continue
		}
		// A layout without clusters: the records' cluster column decides.
		if day, ok := parseDayDir(name); ok && dayMayHold(day, since, until) {
			prefixes = append(prefixes, top)
		}
	}
	if len(prefixes) == 0 {
		return nil, nil
	}
	return listSegments(ctx, s.st, prefixes...)
}

func dayMayHold(day, since, until time.Time) bool {
	if !since.IsZero() && day.Add(24*time.Hour).Before(since) {
		return false
	}
	if !until.IsZero() && !day.Add(-24*time.Hour).Before(until) {
		return false
	}
	return true
}

// candidate is a segment, or the tail, that may hold matches.
type candidate struct {
	ref              segmentRef
	minTime, maxTime int64
	loaded           bool
	recs             []audit.Record // matches, newest first
}

// newer orders records newest first, the query order.
func newer(a, b *audit.Record) int {
	if c := b.Time.Compare(a.Time); c != 0 {
		return c
	}
	if a.Writer != b.Writer {
		if a.Writer > b.Writer {
			return -1
		}
		return 1
	}
	return cmpUint(b.Seq, a.Seq)
}

// matches reads the records of a segment that f selects (and that come
// after the cursor), newest first, with their chain hashes.
func (s *Log) matches(ctx context.Context, ref segmentRef, f audit.Filter, cur cursorPos, until time.Time) ([]audit.Record, error) {
	seg, err := openSegment(ctx, s.st, ref)
	if err != nil {
		return nil, err
	}
	defer seg.close()
	var spans []rowGroupSpan
	for _, sp := range seg.rowGroups() {
		if !sp.known || ((f.Since.IsZero() || sp.maxTime >= f.Since.UnixNano()) && (until.IsZero() || sp.minTime < until.UnixNano())) {
			spans = append(spans, sp)
		}
	}
	// Row groups start at a mark, so each can be read and hashed alone:
	// by as many workers as there are CPUs.
	found := make([][]audit.Record, len(spans))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i := range spans {
		g.Go(func() error {
			var err error
			found[i], err = rowGroupMatches(gctx, seg, spans[i].rg, &f, cur, until)
			if err != nil {
				return fmt.Errorf("segment %s: %w", ref.name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := slices.Concat(found...)
	slices.SortFunc(out, func(a, b audit.Record) int { return newer(&a, &b) })
	return out, nil
}

// rowGroupMatches returns the records of one row group that f selects,
// with their chain hashes. It decodes the columns of the filter's exact
// matches first, and stops there when no value of the row group's
// dictionary matches; then the other columns the filter reads, and the
// rest only when a record matches.
func rowGroupMatches(ctx context.Context, seg *segment, rg parquet.RowGroup, f *audit.Filter, cur cursorPos, until time.Time) ([]audit.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dec := decoders.Get().(*decoder)
	defer decoders.Put(dec)
	if err := dec.reset(seg.pf.Schema()); err != nil {
		return nil, err
	}
	dec.start(rg)
	// Rows are dropped early only by what Match would drop them for, which
	// then decides.
	eqs := equalities(f)
	var eqCols columnSet
	for _, e := range eqs {
		eqCols |= setOf(e.col)
	}
	if err := dec.decodeColumns(rg, eqCols); err != nil {
		return nil, err
	}
	eq := make([][]bool, len(eqs))
	for k, e := range eqs {
		if !dec.have.has(e.col) {
			continue // an older segment without the column: Match sees ""
		}
		var any bool
		if eq[k], any = dec.equal(e.col, e.want, nil); !any {
			return nil, nil // not in the row group's dictionary
		}
	}
	filterCols := filterColumns(f)
	if err := dec.decodeColumns(rg, filterCols); err != nil {
		return nil, err
	}
	var lo, hi int64 = math.MinInt64, math.MaxInt64
	if !f.Since.IsZero() {
		lo = f.Since.UnixNano()
	}
	if !until.IsZero() {
		hi = until.UnixNano()
	}
	times := dec.cols[colTime].ints
	var match []int
	var rec audit.Record
rows:
	for i := range dec.rows {
		if t := times[i]; t < lo || t >= hi {
			continue
		}
		for k, e := range eqs {
			if eq[k] != nil {
				if j := dec.cols[e.col].idx[i]; j < 0 || !eq[k][j] {
					continue rows
				}
			}
		}
		dec.record(i, &rec)
		if matchRecord(f, &rec, until) && cur.before(&rec) {
			match = append(match, i)
		}
	}
	if len(match) == 0 {
		return nil, nil // the other columns are never decoded
	}
	if err := dec.decodeColumns(rg, allColumns&^setOf(colCRC)); err != nil {
		return nil, err
	}
	// Hashes are recomputed along the chain from the mark that starts each
	// block of records with a match, up to its last match; blocks without
	// one are not hashed.
	out := make([]audit.Record, 0, len(match))
	for j := 0; j < len(match); {
		start := match[j] - match[j]%markEvery
		end := j
		for end+1 < len(match) && match[end+1] < start+markEvery {
			end++
		}
		dec.prepareIDs(start, match[end]+1)
		c := chainer{prev: blockPrev(&seg.meta, uint64(dec.int(colSeq, start)))}
		for i := start; j <= end; i++ {
			dec.record(i, &rec)
			c.next(&rec)
			if i == match[j] {
				out = append(out, rec)
				// Not the block's text of every id.
				r := &out[len(out)-1]
				r.RequestID, r.TraceID = strings.Clone(r.RequestID), strings.Clone(r.TraceID)
				j++
			}
		}
	}
	return out, nil
}

// decoders are the query's decoders, kept with their buffers.
var decoders = sync.Pool{New: func() any { return &decoder{} }}

// equality is an exact match of a string field that the filter asks for.
type equality struct {
	col  column
	want string
}

// equalities are the filter's exact matches of string columns, as Match
// checks them.
func equalities(f *audit.Filter) []equality {
	var out []equality
	for _, e := range []equality{
		{colCluster, f.Cluster}, {colPrincipal, f.Principal}, {colNamespace, f.Namespace}, {colMethod, f.Method},
		{colRule, f.Rule}, {colProcessor, f.Processor}, {colDecision, f.Decision}, {colReason, f.Reason},
	} {
		if e.want != "" {
			out = append(out, e)
		}
	}
	return out
}

// filterColumns are the columns matchRecord and the cursor read.
func filterColumns(f *audit.Filter) columnSet {
	cols := setOf(colTime, colWriter, colSeq)
	for _, e := range equalities(f) {
		cols |= setOf(e.col)
	}
	for _, c := range []struct {
		set bool
		col column
	}{
		{f.RequestID != "", colRequestID}, {f.RequestID != "", colRequestUUID}, {!f.Host.IsZero(), colHost},
		{f.Host.Port != 0 || f.Port != 0, colPort}, {f.DryRun || f.Enforced != nil, colEnforced},
	} {
		if c.set {
			cols |= setOf(c.col)
		}
	}
	return cols
}

// blockPrev is the hash before the record at seq, which starts a block:
// the segment's mark there. A block that does not start at a mark (rows
// before it were removed) has no known previous hash.
func blockPrev(m *chainMeta, seq uint64) string {
	if h, ok := m.mark(seq); ok {
		return h
	}
	return ""
}

// matchRecord reports whether f selects r; until replaces f.Until (it
// also carries the cursor's bound).
func matchRecord(f *audit.Filter, r *audit.Record, until time.Time) bool {
	g := *f
	g.Until = until
	return g.Match(r)
}

// iter walks one candidate's matches, newest first.
type iter struct {
	recs []audit.Record
	i    int
}

// merger is a heap of iters by their current record, newest on top.
type merger struct{ its []*iter }

func (m *merger) Len() int { return len(m.its) }
func (m *merger) Less(i, j int) bool {
	return newer(&m.its[i].recs[m.its[i].i], &m.its[j].recs[m.its[j].i]) < 0
}
func (m *merger) Swap(i, j int) { m.its[i], m.its[j] = m.its[j], m.its[i] }
func (m *merger) Push(x any)    { m.its = append(m.its, x.(*iter)) }
func (m *merger) Pop() any {
	it := m.its[len(m.its)-1]
	m.its = m.its[:len(m.its)-1]
	return it
}
func (m *merger) top() *audit.Record { return &m.its[0].recs[m.its[0].i] }

// lastSeqs returns each writer's last record in segments.
func lastSeqs(refs []segmentRef) map[string]uint64 {
	last := map[string]uint64{}
	for _, ref := range refs {
		last[ref.writer] = max(last[ref.writer], ref.last)
	}
	return last
}

// tailMatches reads, for every writer whose write-ahead log the directory
// names (see Options.WAL), the records after its last segment that f
// selects, newest first.
func (s *Log) tailMatches(ctx context.Context, f audit.Filter, cur cursorPos, until time.Time, last map[string]uint64) ([]audit.Record, error) {
	if s.dir == "" {
		return nil, nil // a bucket: its writers' logs are on their own machines
	}
	tails, err := readTails(s.dir)
	if err != nil {
		return nil, err
	}
	var out []audit.Record
	for writer, wal := range tails {
		err := audit.ReadLog(wal, last[writer], func(r *audit.Record) error {
			if r.Writer == writer && matchRecord(&f, r, until) && cur.before(r) {
				out = append(out, *r)
			}
			return ctx.Err()
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b audit.Record) int { return newer(&a, &b) })
	return out, nil
}
