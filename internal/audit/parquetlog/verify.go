package parquetlog

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// VerifyChains implements audit.ChainVerifier. It checks every writer's chain through its segments: each record's
// content against its CRC, which names an edited record; the chain,
// recomputed from the columns, against the hashes the segment's metadata
// keeps at its start, every markEvery records and its end, which proves
// the content was not altered even where a CRC was recomputed too; the
// sequence numbers for gaps and repeats; and each segment's start with the
// end of the one before it (or the retention checkpoint). Every break is
// reported, not only the first: after one the chain check resumes at the
// next mark.
//
// A writer's newest records cannot vouch for themselves: no later record
// links to them. The tail (the writer's write-ahead log) covers them when
// it is reachable; see Verification.CheckHeads for a running writer's
// head.
func (s *Log) VerifyChains(ctx context.Context, opts audit.VerifyOptions) (*audit.Verification, error) {
	refs, strays, err := listFiles(ctx, s.st)
	if err != nil {
		return nil, err
	}
	cps, err := readCheckpoints(ctx, s.st)
	if err != nil {
		return nil, err
	}
	tails := map[string]string{}
	if s.dir != "" {
		if tails, err = readTails(s.dir); err != nil {
			return nil, err
		}
	}
	v := &audit.Verification{Writers: map[string]uint64{}, Checkpoints: cps}
	for _, path := range strays {
		v.Add(&opts, audit.Break{Kind: audit.BreakInserted, Problem: fmt.Sprintf("%s is not a segment of the decision log (a segment renamed, or a file put there)", path)})
	}
	byWriter := map[string][]segmentRef{}
	for _, ref := range refs {
		byWriter[ref.writer] = append(byWriter[ref.writer], ref)
	}
	for writer := range tails {
		if _, ok := byWriter[writer]; !ok {
			byWriter[writer] = nil
		}
	}
	for writer, refs := range byWriter {
		if err := s.verifyWriter(ctx, v, &opts, writer, refs, cps[writer], tails[writer]); err != nil {
			return nil, err
		}
	}
	v.Sort()
	return v, nil
}

// verifyWriter checks one writer's chain: its segments, then, when its
// write-ahead log is reachable (wal), the log's records: those also in a
// segment must have the hash recomputed from it (a second copy of the
// chain, with every record's full hash), and the newer ones must continue
// the chain.
func (s *Log) verifyWriter(ctx context.Context, v *audit.Verification, opts *audit.VerifyOptions, writer string, refs []segmentRef, cp audit.Checkpoint, wal string) error {
	brk := func(kind string, seq uint64, requestID string, t time.Time, format string, args ...any) {
		v.Add(opts, audit.Break{Kind: kind, Writer: writer, Seq: seq, RequestID: requestID, Time: t, Problem: fmt.Sprintf(format, args...)})
	}
	var inSegments uint64
	for _, ref := range refs {
		inSegments = max(inSegments, ref.last)
	}
	// The log's copies of records also in segments, by sequence number.
	logged := map[uint64]string{}
	if wal != "" {
		err := audit.ReadLog(wal, cp.Seq, func(r *audit.Record) error {
			if r.Writer == writer && r.Seq <= inSegments {
				logged[r.Seq] = r.Hash
			}
			return ctx.Err()
		})
		if err != nil {
			return err
		}
	}
	// Each segment's records are checked on their own, by as many workers
	// as there are CPUs; the links between segments, in order, after.
	results := make([]segmentCheck, len(refs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, ref := range refs {
		g.Go(func() error {
			results[i] = checkSegment(gctx, s.st, opts, writer, ref, logged)
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	expect := cp.Seq + 1 // the next sequence number the chain must hold
	prevHash := cp.Hash
	for i, ref := range refs {
		r := &results[i]
		if r.meta == nil {
			brk(audit.BreakUnreadable, ref.first, "", time.Time{}, "segment %s cannot be read: %v", ref.name, r.openErr)
			expect, prevHash = ref.last+1, ""
			continue
		}
		m := r.meta
		at := time.Unix(0, m.MinTime).UTC()
		switch {
		case m.FirstSeq > expect && expect == 1:
			brk(audit.BreakDeleted, m.FirstSeq, "", at, "chain starts at record %d: records 1..%d were deleted (no segment holds them)", m.FirstSeq, m.FirstSeq-1)
		case m.FirstSeq > expect:
			brk(audit.BreakDeleted, m.FirstSeq, "", at, "records %d..%d were deleted (no segment holds them)", expect, m.FirstSeq-1)
		case m.FirstSeq < expect:
			brk(audit.BreakInserted, m.FirstSeq, "", at, "records %d..%d are stored twice (segment %s overlaps the one before it)", m.FirstSeq, expect-1, ref.name)
		case m.PrevHash != prevHash && prevHash != "" || m.PrevHash != prevHash && expect == 1:
			brk(audit.BreakReordered, m.FirstSeq, "", at, "segment %s does not follow record %d: a segment was inserted, replaced or reordered here", ref.name, expect-1)
		}
		for _, b := range r.breaks {
			v.Add(opts, b)
		}
		v.Records += r.records
		v.Writers[writer] = max(v.Writers[writer], m.LastSeq)
		expect, prevHash = max(expect, m.LastSeq+1), m.LastHash
	}
	if wal == "" {
		v.OpenEnd(writer, v.Writers[writer])
		return nil
	}
	// The records only in the log continue the chain. While its server
	// runs, they wait for the open segment to close; a stopped server
	// closed it, so that records only in the log then were deleted from
	// the segments, or the server was killed before it closed them.
	running := audit.LogInUse(wal)
	var onlyLogged, firstOnly uint64
	var firstAt time.Time
	err := audit.ReadLog(wal, inSegments, func(r *audit.Record) error {
		if r.Writer != writer {
			return nil
		}
		if opts.Since.IsZero() || !r.Time.Before(opts.Since) {
			if opts.Until.IsZero() || r.Time.Before(opts.Until) {
				v.Records++
			}
		}
		if onlyLogged == 0 {
			firstOnly, firstAt = r.Seq, r.Time
		}
		onlyLogged++
		switch {
		case r.Seq > expect && expect == 1:
			brk(audit.BreakDeleted, r.Seq, r.RequestID, r.Time, "chain starts at record %d: records 1..%d were deleted", r.Seq, r.Seq-1)
		case r.Seq > expect:
			brk(audit.BreakDeleted, r.Seq, r.RequestID, r.Time, "records %d..%d were deleted (neither a segment nor the write-ahead log holds them)", expect, r.Seq-1)
		case r.PrevHash != prevHash && (prevHash != "" || expect == 1):
			brk(audit.BreakReordered, r.Seq, r.RequestID, r.Time, "does not follow record %d: the write-ahead log and the segments disagree", expect-1)
		}
		expect, prevHash = r.Seq+1, r.Hash
		v.Writers[writer] = max(v.Writers[writer], r.Seq)
		return ctx.Err()
	})
	if err != nil {
		return err
	}
	if onlyLogged > 0 && !running {
		brk(audit.BreakUnstored, firstOnly, "", firstAt, "records %d..%d are in the write-ahead log (%s) and in no segment, and its server is not running: a segment was deleted, or the server was killed before it closed one (start it, and it writes them)",
			firstOnly, expect-1, wal)
	}
	return nil
}

// segmentCheck is what checking one segment's records found.
type segmentCheck struct {
	meta    *chainMeta // nil when the segment could not be opened
	openErr error
	records int
	breaks  []audit.Break
}

// checkSegment checks the records of one segment against its CRCs, its
// chain hashes and, where it has one, the write-ahead log's copy (logged:
// hashes by sequence number); the links to the segments around it are
// the caller's.
func checkSegment(ctx context.Context, st Storage, opts *audit.VerifyOptions, writer string, ref segmentRef, logged map[uint64]string) (res segmentCheck) {
	brk := func(kind string, seq uint64, requestID string, t time.Time, format string, args ...any) {
		// A clone: a decoded id shares its row group's text of every id.
		res.breaks = append(res.breaks, audit.Break{Kind: kind, Writer: writer, Seq: seq, RequestID: strings.Clone(requestID), Time: t, Problem: fmt.Sprintf(format, args...)})
	}
	seg, err := openSegment(ctx, st, ref)
	if err != nil {
		res.openErr = err
		return res
	}
	res.meta = &seg.meta
	var recs []audit.Record
	m := &seg.meta
	if m.Writer != ref.writer || m.FirstSeq != ref.first || m.LastSeq != ref.last {
		brk(audit.BreakReordered, ref.first, "", time.Unix(0, m.MinTime).UTC(), "segment %s holds records %d..%d of writer %s by its metadata: it was renamed or replaced",
			ref.name, m.FirstSeq, m.LastSeq, m.Writer)
	}
	c := chainer{prev: m.PrevHash}
	valid := true        // c.prev is the true hash before the next record
	blockEdited := false // a record since the last mark failed its CRC
	next := m.FirstSeq
	var buf []byte
	err = func() error {
		dec, err := newDecoder(seg.pf.Schema())
		if err != nil {
			return err
		}
		for _, sp := range seg.rowGroups() {
			if err := ctx.Err(); err != nil {
				return err
			}
			recs = slices.Grow(recs[:0], int(sp.rg.NumRows()))[:sp.rg.NumRows()]
			clear(recs)
			err := dec.decode(sp.rg, recs, allColumns)
			if err == nil {
				for i := range recs {
					rec := &recs[i]
					if opts.Since.IsZero() || !rec.Time.Before(opts.Since) {
						if opts.Until.IsZero() || rec.Time.Before(opts.Until) {
							res.records++
						}
					}
					switch {
					case rec.Writer != writer:
						brk(audit.BreakInserted, rec.Seq, rec.RequestID, rec.Time, "a record of writer %s is stored in segment %s of writer %s", rec.Writer, ref.name, writer)
						valid = false
						continue
					case rec.Seq > next:
						brk(audit.BreakDeleted, rec.Seq, rec.RequestID, rec.Time, "records %d..%d were deleted from segment %s", next, rec.Seq-1, ref.name)
						valid = false
					case rec.Seq < next:
						brk(audit.BreakReordered, rec.Seq, rec.RequestID, rec.Time, "out of order: stored after record %d in segment %s", next-1, ref.name)
						valid = false
					}
					if h, ok := m.mark(rec.Seq); ok {
						if valid && c.prev != h && !blockEdited {
							brk(audit.BreakEdited, rec.Seq, rec.RequestID, rec.Time, "the records before record %d in segment %s do not give the chain hash kept there: records, and their CRCs, were altered", rec.Seq, ref.name)
						}
						c.prev, valid, blockEdited = h, true, false
					}
					if h, ok := logged[rec.Seq-1]; ok && !valid {
						// The write-ahead log's copy of the record before
						// vouches for the chain from here.
						c.prev, valid = h, true
					}
					var crc uint32
					crc, buf = recordCRC(rec, buf)
					edited := crc != dec.crcs[i]
					if edited {
						brk(audit.BreakEdited, rec.Seq, rec.RequestID, rec.Time, "edited: its content does not match its hash")
						blockEdited = true
					}
					if valid {
						c.next(rec)
						if h, ok := logged[rec.Seq]; ok {
							if h != rec.Hash && !edited {
								brk(audit.BreakEdited, rec.Seq, rec.RequestID, rec.Time, "edited: its content does not match the write-ahead log's copy (its CRC was recomputed too)")
								blockEdited = true
							}
							c.prev = h // the true hash, whatever the segment holds
						} else if edited {
							valid = false
						}
					}
					next = max(next, rec.Seq+1)
				}
			}
			if err != nil {
				return err
			}
		}
		return nil
	}()
	seg.close()
	if err != nil {
		brk(audit.BreakUnreadable, next, "", time.Time{}, "segment %s cannot be read after record %d: %v", ref.name, next-1, err)
		valid = false
	}
	if next <= m.LastSeq && err == nil {
		brk(audit.BreakDeleted, next, "", time.Unix(0, m.MaxTime).UTC(), "records %d..%d were deleted from segment %s", next, m.LastSeq, ref.name)
	} else if valid && c.prev != m.LastHash && !blockEdited {
		brk(audit.BreakEdited, m.LastSeq, "", time.Unix(0, m.MaxTime).UTC(), "the records of segment %s do not give the hash it ends with: records, and their CRCs, were altered, or its metadata was", ref.name)
	}
	return res
}
