package audit

import (
	"context"
	"fmt"
	"sort"
)

// Break is the first place where a writer's chain does not hold.
type Break struct {
	Writer    string `json:"writer"`
	Seq       uint64 `json:"seq"`
	RequestID string `json:"request_id,omitempty"`
	Problem   string `json:"problem"`
}

func (b *Break) String() string {
	s := fmt.Sprintf("writer %s, record %d", b.Writer, b.Seq)
	if b.RequestID != "" {
		s += " (request " + b.RequestID + ")"
	}
	return s + ": " + b.Problem
}

// Verification is the result of Verify.
type Verification struct {
	Records int               `json:"records"`
	Writers map[string]uint64 `json:"writers"` // writer -> last sequence number
	Breaks  []Break           `json:"breaks"`  // the first break of each broken chain

	// Checkpoints are where retention left each chain.
	Checkpoints map[string]Checkpoint `json:"-"`
}

// ChainVerifier is a Store that verifies its own chains, because it does
// not keep every record's hash for Verify to compare (the Parquet store
// recomputes them from the columns).
type ChainVerifier interface {
	VerifyChains(ctx context.Context) (*Verification, error)
}

// OK reports whether every chain is intact.
func (v *Verification) OK() bool { return len(v.Breaks) == 0 }

// Verify walks every writer's chain in s and reports the first record of
// each chain whose content, order or presence was altered:
//   - a record whose fields no longer give its hash was edited;
//   - a gap in the sequence numbers means records were deleted;
//   - a sequence number stored twice means a record was inserted;
//   - a record whose previous-hash is not the hash of the record before it
//     was inserted, or the records around it were reordered or replaced.
//
// Chains start at sequence number 1, or right after the checkpoint that
// retention left; a chain that starts elsewhere lost its beginning.
//
// Retention drops partitions by time, and a checkpoint is the highest
// sequence number dropped; but a record's time is when its Check started,
// and sequence numbers are given later, so around midnight a few records
// at or below the checkpoint can still be stored. Their own hash and
// their links to stored neighbours are checked; gaps among them are what
// retention dropped. The first record above the checkpoint must follow it.
func Verify(ctx context.Context, s Store) (*Verification, error) {
	if cv, ok := s.(ChainVerifier); ok {
		return cv.VerifyChains(ctx)
	}
	v := &Verification{Writers: map[string]uint64{}, Checkpoints: map[string]Checkpoint{}}
	if c, ok := s.(Checkpointer); ok {
		var err error
		if v.Checkpoints, err = c.Checkpoints(ctx); err != nil {
			return nil, err
		}
	}
	var (
		writer   string
		cp       Checkpoint // zero when retention left none: the chain starts at 1
		havePrev bool       // a record of writer was seen: lastSeq, lastHash
		lastSeq  uint64
		lastHash string
		broken   bool
	)
	brk := func(r *Record, format string, args ...any) {
		v.Breaks = append(v.Breaks, Break{Writer: r.Writer, Seq: r.Seq, RequestID: r.RequestID, Problem: fmt.Sprintf(format, args...)})
		broken = true
	}
	err := s.Chains(ctx, func(r *Record) error {
		v.Records++
		if r.Writer != writer {
			writer, havePrev, lastSeq, lastHash, broken = r.Writer, false, 0, "", false
			cp = v.Checkpoints[r.Writer]
		}
		v.Writers[r.Writer] = r.Seq
		if broken {
			return nil
		}
		switch {
		case ComputeHash(r) != r.Hash:
			brk(r, "edited: its content does not match its hash")
		case r.Seq == 0:
			brk(r, "sequence number 0, before any chain: it was inserted")
		case havePrev && r.Seq == lastSeq:
			brk(r, "stored twice: a second record %d was inserted", r.Seq)
		case havePrev && r.Seq < lastSeq:
			brk(r, "out of order: stored after record %d", lastSeq)
		case r.Seq <= cp.Seq:
			// Beside the checkpoint, retention dropped some of its neighbours.
			switch {
			case r.Seq == cp.Seq && r.Hash != cp.Hash:
				brk(r, "does not match the retention checkpoint of record %d: it was replaced", cp.Seq)
			case havePrev && r.Seq == lastSeq+1 && r.PrevHash != lastHash:
				brk(r, "does not follow record %d: a record was inserted, replaced or reordered here", lastSeq)
			}
		case r.Seq == cp.Seq+1:
			if r.PrevHash != cp.Hash && cp.Seq == 0 {
				brk(r, "does not start the chain: a record was inserted or replaced here")
			} else if r.PrevHash != cp.Hash {
				brk(r, "does not follow record %d: a record was inserted, replaced or reordered here", cp.Seq)
			}
		case !havePrev || lastSeq <= cp.Seq:
			// The first record above the checkpoint, after a gap.
			if cp.Seq == 0 {
				brk(r, "chain starts at record %d: records 1..%d were deleted", r.Seq, r.Seq-1)
			} else {
				brk(r, "records %d..%d were deleted", cp.Seq+1, r.Seq-1)
			}
		case r.Seq != lastSeq+1:
			brk(r, "records %d..%d were deleted", lastSeq+1, r.Seq-1)
		case r.PrevHash != lastHash:
			brk(r, "does not follow record %d: a record was inserted, replaced or reordered here", lastSeq)
		}
		havePrev, lastSeq, lastHash = true, r.Seq, r.Hash
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(v.Breaks, func(i, j int) bool { return v.Breaks[i].Writer < v.Breaks[j].Writer })
	return v, nil
}

// CheckHeads adds a break for each writer whose chain in the store, or its
// retention checkpoint, ends before heads says it must: records at its
// end, or the whole chain, were deleted. The store alone cannot show that (the last record of a chain
// has no successor to vouch for it); a running writer knows how far each
// sink stored its chain. heads must be read before the store is scanned,
// since they only grow.
func (v *Verification) CheckHeads(heads map[string]uint64) {
	for writer, head := range heads {
		// Retention may have dropped the end of a chain, or all of it: its
		// checkpoint vouches for what it dropped.
		last := max(v.Writers[writer], v.Checkpoints[writer].Seq)
		if head == 0 || last >= head {
			continue
		}
		problem := fmt.Sprintf("records %d..%d at the end of the chain were deleted (the writer stored up to %d)", last+1, head, head)
		if last == 0 {
			problem = fmt.Sprintf("the whole chain (records 1..%d) was deleted", head)
		}
		v.Breaks = append(v.Breaks, Break{Writer: writer, Seq: last + 1, Problem: problem})
	}
	sort.Slice(v.Breaks, func(i, j int) bool { return v.Breaks[i].Writer < v.Breaks[j].Writer })
}
