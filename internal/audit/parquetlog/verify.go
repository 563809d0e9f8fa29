package parquetlog

import (
	"context"
	"fmt"
	"slices"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// Verify checks every writer's chain through its segments: each record's
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
func (s *Store) Verify(ctx context.Context) (*audit.Verification, error) {
	refs, strays, err := listFiles(s.dir)
	if err != nil {
		return nil, err
	}
	cps, err := readCheckpoints(s.dir)
	if err != nil {
		return nil, err
	}
	v := &audit.Verification{Writers: map[string]uint64{}}
	for _, path := range strays {
		v.Breaks = append(v.Breaks, audit.Break{Problem: fmt.Sprintf("%s is not a segment of the decision log (a segment renamed, or a file put there)", path)})
	}
	for i := 0; i < len(refs); {
		j := i
		for j < len(refs) && refs[j].writer == refs[i].writer {
			j++
		}
		if err := s.verifyWriter(ctx, v, refs[i:j], cps[refs[i].writer]); err != nil {
			return nil, err
		}
		i = j
	}
	slices.SortStableFunc(v.Breaks, func(a, b audit.Break) int {
		if a.Writer != b.Writer {
			if a.Writer < b.Writer {
				return -1
			}
			return 1
		}
		return cmpUint(a.Seq, b.Seq)
	})
	return v, nil
}

func (s *Store) verifyWriter(ctx context.Context, v *audit.Verification, refs []segmentRef, cp audit.Checkpoint) error {
	writer := refs[0].writer
	brk := func(seq uint64, requestID, format string, args ...any) {
		v.Breaks = append(v.Breaks, audit.Break{Writer: writer, Seq: seq, RequestID: requestID, Problem: fmt.Sprintf(format, args...)})
	}
	expect := cp.Seq + 1 // the next sequence number the chain must hold
	prevHash := cp.Hash
	var rec audit.Record
	for _, ref := range refs {
		if err := ctx.Err(); err != nil {
			return err
		}
		seg, err := openSegment(ref)
		if err != nil {
			brk(ref.first, "", "segment %s cannot be read: %v", ref.path, err)
			expect, prevHash = ref.last+1, ""
			continue
		}
		m := &seg.meta
		if m.Writer != ref.writer || m.FirstSeq != ref.first || m.LastSeq != ref.last {
			brk(ref.first, "", "segment %s holds records %d..%d of writer %s by its metadata: it was renamed or replaced",
				ref.path, m.FirstSeq, m.LastSeq, m.Writer)
		}
		switch {
		case m.FirstSeq > expect && expect == 1:
			brk(m.FirstSeq, "", "chain starts at record %d: records 1..%d were deleted (no segment holds them)", m.FirstSeq, m.FirstSeq-1)
		case m.FirstSeq > expect:
			brk(m.FirstSeq, "", "records %d..%d were deleted (no segment holds them)", expect, m.FirstSeq-1)
		case m.FirstSeq < expect:
			brk(m.FirstSeq, "", "records %d..%d are stored twice (segment %s overlaps the one before it)", m.FirstSeq, expect-1, ref.path)
		case m.PrevHash != prevHash && prevHash != "" || m.PrevHash != prevHash && expect == 1:
			brk(m.FirstSeq, "", "segment %s does not follow record %d: a segment was inserted, replaced or reordered here", ref.path, expect-1)
		}
		c := chainer{prev: m.PrevHash}
		valid := true        // c.prev is the true hash before the next record
		blockEdited := false // a record since the last mark failed its CRC
		next := m.FirstSeq
		var buf []byte
		err = func() error {
			for _, sp := range seg.rowGroups() {
				err := readRows(sp.rg, func(rows []row) error {
					for i := range rows {
						w := &rows[i]
						fromRow(w, &rec)
						v.Records++
						switch {
						case rec.Writer != writer:
							brk(rec.Seq, rec.RequestID, "a record of writer %s is stored in segment %s of writer %s", rec.Writer, ref.path, writer)
							valid = false
							continue
						case rec.Seq > next:
							brk(rec.Seq, rec.RequestID, "records %d..%d were deleted from segment %s", next, rec.Seq-1, ref.path)
							valid = false
						case rec.Seq < next:
							brk(rec.Seq, rec.RequestID, "out of order: stored after record %d in segment %s", next-1, ref.path)
							valid = false
						}
						if h, ok := m.mark(rec.Seq); ok {
							if valid && c.prev != h && !blockEdited {
								brk(rec.Seq, rec.RequestID, "the records before record %d in segment %s do not give the chain hash kept there: records, and their CRCs, were altered", rec.Seq, ref.path)
							}
							c.prev, valid, blockEdited = h, true, false
						}
						var crc uint32
						if crc, buf = recordCRC(&rec, buf); crc != w.RecordCRC {
							brk(rec.Seq, rec.RequestID, "edited: its content does not match its hash")
							blockEdited = true
						}
						if valid {
							c.next(&rec)
						}
						next = max(next, rec.Seq+1)
					}
					return nil
				})
				if err != nil {
					return err
				}
			}
			return nil
		}()
		seg.close()
		if err != nil {
			brk(next, "", "segment %s cannot be read after record %d: %v", ref.path, next-1, err)
			valid = false
		}
		if next <= m.LastSeq && err == nil {
			brk(next, "", "records %d..%d were deleted from segment %s", next, m.LastSeq, ref.path)
		} else if valid && c.prev != m.LastHash && !blockEdited {
			brk(m.LastSeq, "", "the records of segment %s do not give the hash it ends with: records, and their CRCs, were altered, or its metadata was", ref.path)
		}
		v.Writers[writer] = max(v.Writers[writer], m.LastSeq)
		expect, prevHash = max(expect, m.LastSeq+1), m.LastHash
	}
	return nil
}
