package audit

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"
)

// The kinds of Break.
const (
	BreakEdited     = "edited"     // a record's content does not give its hash
	BreakDeleted    = "deleted"    // records are missing from the chain
	BreakInserted   = "inserted"   // a record that is no part of the chain, or one stored twice
	BreakReordered  = "reordered"  // a record does not follow the one before it
	BreakUnreadable = "unreadable" // part of the log cannot be read
	BreakUnstored   = "unstored"   // records in the write-ahead log that the store does not hold
)

// Break is a place where a writer's chain does not hold.
type Break struct {
	Kind      string    `json:"kind"`
	Writer    string    `json:"writer"`
	Seq       uint64    `json:"seq"`
	RequestID string    `json:"request_id,omitempty"`
	Time      time.Time `json:"time,omitzero"`
	Problem   string    `json:"problem"`
}

func (b *Break) String() string {
	s := fmt.Sprintf("%s: writer %s, record %d", b.Kind, b.Writer, b.Seq)
	if b.RequestID != "" {
		s += " (request " + b.RequestID + ")"
	}
	if !b.Time.IsZero() {
		s += " at " + b.Time.UTC().Format(time.RFC3339Nano)
	}
	return s + ": " + b.Problem
}

// Verification is the result of Verify.
type Verification struct {
	Records int               `json:"records"` // records read (within Since and Until)
	Writers map[string]uint64 `json:"writers"` // writer -> last sequence number
	Breaks  []Break           `json:"breaks"`  // every break found, by writer and sequence number
	// Unchecked says, in words, what the verification could not check:
	// the end of a chain that no later record, write-ahead log or running
	// writer vouches for.
	Unchecked []string `json:"unchecked"`

	// Checkpoints are where retention left each chain.
	Checkpoints map[string]Checkpoint `json:"-"`

	openEnds map[string]uint64 // writer -> last record, for chains whose end nothing vouched for
	notes    []string          // the other lines of Unchecked
}

// OpenEnd notes that nothing vouched for the end of writer's chain, its
// record last and before: a deletion of its newest records would not show.
func (v *Verification) OpenEnd(writer string, last uint64) {
	if v.openEnds == nil {
		v.openEnds = map[string]uint64{}
	}
	v.openEnds[writer] = last
	v.render()
}

// Note adds a line to Unchecked.
func (v *Verification) Note(format string, args ...any) {
	v.notes = append(v.notes, fmt.Sprintf(format, args...))
	v.render()
}

func (v *Verification) render() {
	v.Unchecked = slices.Clone(v.notes)
	for w, last := range v.openEnds {
		v.Unchecked = append(v.Unchecked, fmt.Sprintf("the end of writer %s's chain (record %d): no later record links to it, so deleted newest records would not show; give its write-ahead log (--data-dir), or ask its running server (GET /v1/verify)", w, last))
	}
	sort.Strings(v.Unchecked)
}

// VerifyOptions says what Verify checks beyond the store. The zero value
// checks every record of the store alone.
type VerifyOptions struct {
	// Since and Until limit the breaks reported, and the records counted,
	// to records of that time (the chain is walked whole, so that the first
	// record of the range is checked against the one before it).
	Since, Until time.Time
	// Logs are write-ahead log directories (a writer's DATA/wal) whose
	// records, each with its full hash, are compared with the store's:
	// the newest records of a chain, which no later record links to, are
	// vouched for by the log.
	Logs []string
}

// inRange reports whether a record of time t is one the options report on.
func (o *VerifyOptions) inRange(t time.Time) bool {
	return (o.Since.IsZero() || !t.Before(o.Since)) && (o.Until.IsZero() || t.Before(o.Until))
}

// Add records a break, if its time is in range (a zero time always is).
func (v *Verification) Add(o *VerifyOptions, b Break) {
	if b.Time.IsZero() || o.inRange(b.Time) {
		v.Breaks = append(v.Breaks, b)
	}
}

// Sort orders the breaks by writer and sequence number.
func (v *Verification) Sort() {
	sort.SliceStable(v.Breaks, func(i, j int) bool {
		if v.Breaks[i].Writer != v.Breaks[j].Writer {
			return v.Breaks[i].Writer < v.Breaks[j].Writer
		}
		return v.Breaks[i].Seq < v.Breaks[j].Seq
	})
}

// ChainVerifier is a Store that verifies its own chains, because it does
// not keep every record's hash for Verify to compare (the Parquet store
// recomputes them from the columns, and finds its writers' logs itself).
type ChainVerifier interface {
	VerifyChains(ctx context.Context, opts VerifyOptions) (*Verification, error)
}

// OK reports whether every chain is intact.
func (v *Verification) OK() bool { return len(v.Breaks) == 0 }

// Verify walks every writer's chain in s and reports every record whose
// content, order or presence was altered, not only the first of a chain:
//   - a record whose fields no longer give its hash was edited;
//   - a gap in the sequence numbers means records were deleted;
//   - a sequence number stored twice means a record was inserted;
//   - a record whose previous-hash is not the hash of the record before it
//     was inserted, or the records around it were reordered or replaced.
//
// After a break the walk goes on from the record it stopped at, taking its
// stored hash for the chain's, so that one edit is one break and the
// records after it are checked too.
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
//
// The end of a chain has no later record to vouch for it: with the
// writer's write-ahead log (opts.Logs), its records are compared with the
// store's; without, the end is named in Unchecked.
func Verify(ctx context.Context, s Store, opts VerifyOptions) (*Verification, error) {
	if cv, ok := s.(ChainVerifier); ok {
		return cv.VerifyChains(ctx, opts)
	}
	v := &Verification{Writers: map[string]uint64{}, Checkpoints: map[string]Checkpoint{}}
	if c, ok := s.(Checkpointer); ok {
		var err error
		if v.Checkpoints, err = c.Checkpoints(ctx); err != nil {
			return nil, err
		}
	}
	logs, err := readLogs(ctx, opts.Logs)
	if err != nil {
		return nil, err
	}
	var (
		writer   string
		cp       Checkpoint // zero when retention left none: the chain starts at 1
		havePrev bool       // a record of writer was seen: lastSeq, lastHash
		lastSeq  uint64
		lastHash string
		logged   *logCopy
	)
	brk := func(r *Record, kind, format string, args ...any) {
		v.Add(&opts, Break{Kind: kind, Writer: r.Writer, Seq: r.Seq, RequestID: r.RequestID, Time: r.Time, Problem: fmt.Sprintf(format, args...)})
	}
	err = s.Chains(ctx, func(r *Record) error {
		if opts.inRange(r.Time) {
			v.Records++
		}
		if r.Writer != writer {
			writer, havePrev, lastSeq, lastHash = r.Writer, false, 0, ""
			cp = v.Checkpoints[r.Writer]
			logged = logs[r.Writer]
		}
		v.Writers[r.Writer] = max(v.Writers[r.Writer], r.Seq)
		switch {
		case ComputeHash(r) != r.Hash:
			brk(r, BreakEdited, "edited: its content does not match its hash")
		case logged != nil && logged.hashes[r.Seq] != "" && logged.hashes[r.Seq] != r.Hash:
			brk(r, BreakEdited, "edited: it is not the record the write-ahead log holds (its hash was recomputed)")
		case r.Seq == 0:
			brk(r, BreakInserted, "sequence number 0, before any chain: it was inserted")
		case havePrev && r.Seq == lastSeq:
			brk(r, BreakInserted, "stored twice: a second record %d was inserted", r.Seq)
		case havePrev && r.Seq < lastSeq:
			brk(r, BreakReordered, "out of order: stored after record %d", lastSeq)
		case r.Seq <= cp.Seq:
			// Beside the checkpoint, retention dropped some of its neighbours.
			switch {
			case r.Seq == cp.Seq && r.Hash != cp.Hash:
				brk(r, BreakInserted, "does not match the retention checkpoint of record %d: it was replaced", cp.Seq)
			case havePrev && r.Seq == lastSeq+1 && r.PrevHash != lastHash:
				brk(r, BreakReordered, "does not follow record %d: a record was inserted, replaced or reordered here", lastSeq)
			}
		case r.Seq == cp.Seq+1:
			if r.PrevHash != cp.Hash && cp.Seq == 0 {
				brk(r, BreakInserted, "does not start the chain: a record was inserted or replaced here")
			} else if r.PrevHash != cp.Hash {
				brk(r, BreakReordered, "does not follow record %d: a record was inserted, replaced or reordered here", cp.Seq)
			}
		case !havePrev || lastSeq <= cp.Seq:
			// The first record above the checkpoint, after a gap.
			if cp.Seq == 0 {
				brk(r, BreakDeleted, "chain starts at record %d: records 1..%d were deleted", r.Seq, r.Seq-1)
			} else {
				brk(r, BreakDeleted, "records %d..%d were deleted", cp.Seq+1, r.Seq-1)
			}
		case r.Seq != lastSeq+1:
			brk(r, BreakDeleted, "records %d..%d were deleted", lastSeq+1, r.Seq-1)
		case r.PrevHash != lastHash:
			brk(r, BreakReordered, "does not follow record %d: a record was inserted, replaced or reordered here", lastSeq)
		}
		if !havePrev || r.Seq > lastSeq {
			havePrev, lastSeq, lastHash = true, r.Seq, r.Hash
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for writer, last := range v.Writers {
		if l := logs[writer]; l != nil {
			l.checkEnd(v, &opts, writer, last)
		} else {
			v.OpenEnd(writer, last)
		}
	}
	v.Sort()
	return v, nil
}

// logCopy is what a write-ahead log holds of its writer's chain: every
// record's hash by sequence number, and whether its writer is running.
type logCopy struct {
	dir     string
	hashes  map[uint64]string
	first   uint64
	last    uint64
	times   map[uint64]time.Time
	running bool
}

// readLogs reads the write-ahead logs in dirs, by writer.
func readLogs(ctx context.Context, dirs []string) (map[string]*logCopy, error) {
	out := map[string]*logCopy{}
	for _, dir := range dirs {
		writer, err := LogWriter(dir)
		if err != nil || writer == "" {
			continue // no log there
		}
		l := &logCopy{dir: dir, hashes: map[uint64]string{}, times: map[uint64]time.Time{}, running: LogInUse(dir)}
		err = ReadLog(dir, 0, func(r *Record) error {
			if l.first == 0 {
				l.first = r.Seq
			}
			l.last = r.Seq
			l.hashes[r.Seq], l.times[r.Seq] = r.Hash, r.Time
			return ctx.Err()
		})
		if err != nil {
			return nil, err
		}
		out[writer] = l
	}
	return out, nil
}

// checkEnd reports the records the log holds beyond the store's last: a
// deletion of the chain's end, unless the writer is running (its sink may
// not have stored them yet) or was stopped before its sink caught up.
func (l *logCopy) checkEnd(v *Verification, o *VerifyOptions, writer string, last uint64) {
	if l.last <= last {
		return
	}
	from := max(last+1, l.first)
	if l.running {
		v.Note("records %d..%d of writer %s are in its write-ahead log (%s), whose server is running, and not yet in the store: its sink may not have stored them yet", from, l.last, writer, l.dir)
		return
	}
	v.Add(o, Break{Kind: BreakUnstored, Writer: writer, Seq: from, Time: l.times[from],
		Problem: fmt.Sprintf("records %d..%d are in the write-ahead log (%s) and not in the store: deleted from it, or never written if the server stopped before its sink caught up (start it, and it writes them)", from, l.last, l.dir)})
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
		v.Breaks = append(v.Breaks, Break{Kind: BreakDeleted, Writer: writer, Seq: last + 1, Problem: problem})
	}
	// The running writer vouches for the end of its chain.
	for w := range heads {
		delete(v.openEnds, w)
	}
	v.render()
	v.Sort()
}
