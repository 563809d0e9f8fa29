package audit

import (
	"context"
	"fmt"
	"sort"
	"strings"
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
}

// OK reports whether every chain is intact.
func (v *Verification) OK() bool { return len(v.Breaks) == 0 }

// Checkpoint is the last record of a writer's chain that retention removed:
// the chain continues from it.
type Checkpoint struct {
	Seq  uint64
	Hash string
}

// checkpointer is a Store whose retention leaves checkpoints.
type checkpointer interface {
	Checkpoints(ctx context.Context) (map[string]Checkpoint, error)
}

// Verify walks every writer's chain in s and reports the first record of
// each chain whose content, order or presence was altered:
//   - a record whose fields no longer give its hash was edited;
//   - a gap in the sequence numbers means records were deleted;
//   - a record whose previous-hash is not the hash of the record before it
//     was inserted, or the records around it were reordered or replaced.
//
// Chains start at sequence number 1, or right after the checkpoint that
// retention left; a chain that starts elsewhere lost its beginning.
func Verify(ctx context.Context, s Store) (*Verification, error) {
	v := &Verification{Writers: map[string]uint64{}}
	checkpoints := map[string]Checkpoint{}
	if c, ok := s.(checkpointer); ok {
		var err error
		if checkpoints, err = c.Checkpoints(ctx); err != nil {
			return nil, err
		}
	}
	var (
		writer   string
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
			writer, lastSeq, lastHash, broken = r.Writer, 0, "", false
			if cp, ok := checkpoints[r.Writer]; ok {
				lastSeq, lastHash = cp.Seq, cp.Hash
			}
		}
		v.Writers[r.Writer] = r.Seq
		if broken {
			return nil
		}
		switch {
		case ComputeHash(r) != r.Hash:
			brk(r, "edited: its content does not match its hash")
		case r.Seq != lastSeq+1 && lastSeq == 0:
			brk(r, "chain starts at record %d: records 1..%d were deleted", r.Seq, r.Seq-1)
		case r.Seq != lastSeq+1:
			brk(r, "records %d..%d were deleted", lastSeq+1, r.Seq-1)
		case r.PrevHash != lastHash:
			brk(r, "does not follow record %d: a record was inserted, replaced or reordered here", lastSeq)
		}
		lastSeq, lastHash = r.Seq, r.Hash
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(v.Breaks, func(i, j int) bool { return v.Breaks[i].Writer < v.Breaks[j].Writer })
	return v, nil
}

// CheckHeads adds a break for each writer whose chain in the store ends
// before heads says it must: records at its end, or the whole chain, were
// deleted. The store alone cannot show that (the last record of a chain
// has no successor to vouch for it); a running writer knows how far each
// sink stored its chain. heads must be read before the store is scanned,
// since they only grow.
func (v *Verification) CheckHeads(heads map[string]uint64) {
	for writer, head := range heads {
		last := v.Writers[writer]
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

// OpenStore opens the Store a DSN names (for reading, or as a sink with
// default options; the server opens PostgreSQL with OpenPostgres to set a
// retention): "sqlite:PATH" (or a path ending in
// .db) or "postgres://...".
func OpenStore(ctx context.Context, dsn string) (Store, error) {
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		return OpenSQLite(ctx, strings.TrimPrefix(dsn, "sqlite:"))
	case strings.HasSuffix(dsn, ".db"):
		return OpenSQLite(ctx, dsn)
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return OpenPostgres(ctx, dsn, PostgresOptions{})
	}
	return nil, fmt.Errorf("decision log %q: want sqlite:PATH or postgres://...", dsn)
}
