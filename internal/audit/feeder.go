package audit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"
)

// runner feeds one sink from the write-ahead log: it asks the sink where
// it stands, then reads the fsynced records after that and writes them in
// batches, retrying with backoff while the sink fails. Its position is
// the sink's: records are removed from the log only once every runner has
// passed them.
type runner struct {
	w        *Writer
	sink     Sink
	buffered Buffered      // the sink, when it is Buffered
	wake     chan struct{} // more records are fsynced
	stop     chan struct{}
	done     chan struct{}
	stored   atomic.Uint64 // highest sequence number the sink has stored (durably, for a Buffered sink)
	handed   uint64        // highest sequence number written to the sink; the runner's own
	failing  atomic.Bool

	arena arena // the frames the records of a batch point into; reused for a Copying sink

	f        *os.File
	fr       *frameReader
	segFirst uint64 // first sequence number of the open segment
	segEnd   uint64 // first sequence number after the open segment (0: unknown, the head)
}

// restart readies a stopped runner to run again, after a fork.
func (r *runner) restart() {
	r.stop, r.done = make(chan struct{}), make(chan struct{})
	r.failing.Store(false)
}

// forked reports a fork the sink found and asks the writer to resolve it,
// which stops this runner.
func (r *runner) forked(writer string, seq uint64) {
	r.failing.Store(true)
	r.w.requestFork(writer, seq)
	<-r.stop
}

func newRunner(w *Writer, s Sink) *runner {
	r := &runner{w: w, sink: s, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	r.buffered, _ = s.(Buffered)
	_, r.arena.reuse = s.(Copying)
	return r
}

// idleCheck is how often an idle runner looks at the log even when it was
// not woken.
const idleCheck = time.Second

func (r *runner) run() {
	defer close(r.done)
	defer r.closeSegment()
	log := r.w.opts.Logger.With("sink", r.sink.Name())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := r.stop // replaced when the runner restarts after a fork
	go func() {
		<-stop
		cancel()
	}()
	backoff := newBackoff(r.w.opts.After)

	cursor, ok := r.position(ctx, backoff, log)
	if !ok {
		return
	}
	r.stored.Store(cursor)
	r.handed = cursor
	r.w.progressed()

	batch := make([]Record, 0, r.w.opts.BatchSize)
	var lastWrite time.Time
	var idle <-chan time.Time // kept across wakes: one timer, not one per wake
	var flushAt time.Time     // when flush fires
	var flush <-chan time.Time
	for {
		target := r.w.log.synced.Load()
		if r.handed >= target {
			if r.buffered != nil && r.stored.Load() < r.handed {
				// Everything read is handed over: make it durable when the
				// sink asks, or now when the writer closes.
				due := r.buffered.FlushBy()
				if r.w.isClosed() || !r.w.opts.Now().Before(due) {
					if !r.flush(ctx, backoff, log) {
						return
					}
					flush, flushAt = nil, time.Time{}
					continue
				}
				if !due.Equal(flushAt) {
					flush, flushAt = r.w.opts.After(due.Sub(r.w.opts.Now())), due
				}
			}
			if idle == nil {
				idle = r.w.opts.After(idleCheck)
			}
			r.closeReleased()
			var closing <-chan struct{}
			if r.buffered != nil && !r.w.isClosed() {
				closing = r.w.closing
			}
			select {
			case <-r.stop:
				return
			case <-r.wake:
			case <-idle:
				idle = nil
			case <-flush:
				flush, flushAt = nil, time.Time{}
			case <-closing:
			}
			continue
		}
		if wait := r.w.opts.Linger - r.w.opts.Now().Sub(lastWrite); wait > 0 && target-r.handed < uint64(r.w.opts.BatchSize) && !r.w.isClosed() {
			select {
			case <-r.stop:
				return
			case <-r.w.closing:
			case <-r.w.opts.After(wait):
			}
			continue
		}
		var err error
		batch, err = r.read(batch[:0], target)
		if err != nil && len(batch) == 0 { // else store what was read first
			r.failing.Store(true)
			log.Error("decision-log sink cannot read the write-ahead log", "error", err.Error())
			if !backoff.wait(r.stop) {
				return
			}
			r.closeSegment()
			continue
		}
		rewound := false
		for {
			err := r.sink.Write(ctx, batch)
			if err == nil {
				break
			}
			if fe := (*ForkError)(nil); errors.As(err, &fe) {
				log.Error("decision-log sink found another process writing this chain", "error", err.Error())
				r.forked(r.w.id, fe.Seq)
				return
			}
			if !r.failing.Swap(true) {
				log.Warn("decision-log sink write failed; records wait in the write-ahead log and will be replayed",
					"error", err.Error(), "pending", target-r.stored.Load())
			}
			if !backoff.wait(r.stop) {
				return
			}
			if r.buffered != nil {
				// A failed write may have cost the sink records it held but
				// had not made durable: hand it everything again from
				// there.
				r.rewind()
				rewound = true
				break
			}
		}
		if rewound {
			continue
		}
		if r.failing.Swap(false) {
			log.Info("decision-log sink recovered")
		}
		backoff.reset()
		lastWrite = r.w.opts.Now()
		r.handed = batch[len(batch)-1].Seq
		r.storedUpTo(r.handed)
	}
}

// storedUpTo records how far the sink has stored, handed records
// included unless the sink is Buffered, and lets the writer release the
// log that far.
func (r *runner) storedUpTo(handed uint64) {
	stored := handed
	if r.buffered != nil {
		stored = min(r.buffered.Durable(), handed)
	}
	if stored > r.stored.Load() {
		r.stored.Store(stored)
		r.w.progressed()
	}
}

// flush makes what a Buffered sink holds durable. When that fails it waits
// out the backoff and rewinds, so that the records are fed again from the
// write-ahead log. It reports false when the runner was stopped first.
func (r *runner) flush(ctx context.Context, backoff *backoff, log *slog.Logger) bool {
	if err := r.buffered.Flush(ctx); err != nil {
		if fe := (*ForkError)(nil); errors.As(err, &fe) {
			log.Error("decision-log sink found another process writing this chain", "error", err.Error())
			r.forked(r.w.id, fe.Seq)
			return false
		}
		if !r.failing.Swap(true) {
			log.Warn("decision-log sink cannot make its records durable; they wait in the write-ahead log and will be replayed",
				"error", err.Error(), "pending", r.handed-r.stored.Load())
		}
		if !backoff.wait(r.stop) {
			return false
		}
		r.rewind()
		return true
	}
	if r.failing.Swap(false) {
		log.Info("decision-log sink recovered")
	}
	backoff.reset()
	r.storedUpTo(r.handed)
	return true
}

// rewind makes the next read start after what a Buffered sink has made
// durable: what it held beyond that may be lost with a failed write or
// flush.
func (r *runner) rewind() {
	r.storedUpTo(r.handed)
	r.handed = r.stored.Load()
	r.closeSegment()
}

// position asks the sink where it stands, until it answers with a position
// the log can continue from. It reports false when the runner was stopped
// first.
func (r *runner) position(ctx context.Context, backoff *backoff, log *slog.Logger) (uint64, bool) {
	var cursor uint64
	for {
		// Compared with what the log held when it was opened, not with
		// what it holds now: new records would catch up with the sink's
		// position, and the ones up to it would be skipped as stored.
		c, err := r.sink.Cursor(ctx, r.w.id)
		if err == nil && c <= r.w.log.recovered {
			cursor = c
			break
		}
		r.failing.Store(true)
		if err != nil {
			log.Warn("decision-log sink unavailable; records wait in the write-ahead log", "error", err.Error())
		} else {
			// The store holds records of this chain that the log does not:
			// another process writes it from a copy of this log, or the
			// log's directory was replaced, or a disk lost what it had
			// fsynced. New records reuse those sequence numbers, and the
			// store would drop them as already stored: this writer becomes
			// a new one, its records since it started chained under it.
			log.Error("decision-log sink is ahead of the write-ahead log: another process writes this chain, or the log lost records; this writer continues as a new one",
				"writer", r.w.id, "sink_seq", c, "log_seq", r.w.log.recovered, "dir", r.w.opts.Dir)
			r.forked(r.w.id, r.w.log.recovered+1)
			return 0, false
		}
		if !backoff.wait(r.stop) {
			return 0, false
		}
	}
	r.failing.Store(false)
	if oldest := r.w.log.oldest(); cursor+1 < oldest {
		log.Warn("decision-log sink is missing records that are no longer in the write-ahead log",
			"writer", r.w.id, "from", cursor+1, "to", oldest-1)
		cursor = oldest - 1
	}
	return cursor, true
}

// read reads the records after those handed to the sink, up to target and
// the batch size. Their strings point into the runner's arena, and each
// record's hash is the next one's PrevHash: the chain as the writer made
// it, in frames whose checksums held; only the last is computed.
func (r *runner) read(batch []Record, target uint64) ([]Record, error) {
	r.arena.reset()
	batch, err := r.readFrames(batch, target)
	for i := range batch {
		if i+1 < len(batch) && batch[i+1].Writer == batch[i].Writer {
			batch[i].Hash = batch[i+1].PrevHash
		} else {
			batch[i].Hash = ComputeHash(&batch[i])
		}
	}
	return batch, err
}

func (r *runner) readFrames(batch []Record, target uint64) ([]Record, error) {
	next := r.handed + 1
	if r.fr == nil {
		if err := r.openAt(next); err != nil {
			return batch, err
		}
	}
	for next <= target && len(batch) < cap(batch) {
		if r.segEnd != 0 && next >= r.segEnd {
			r.closeSegment()
			if err := r.openAt(next); err != nil {
				return batch, err
			}
		}
		p, err := r.fr.next()
		if err == io.EOF || err == errTorn {
			// The segment ended: the next record is in the next one.
			was, at := r.segFirst, r.fr.off
			r.closeSegment()
			if err := r.openAt(next); err != nil {
				return batch, err
			}
			if r.segFirst == was {
				// Record next belongs in the segment just read, which
				// cannot be read past offset at: reading it again would
				// only meet the same frame.
				return batch, fmt.Errorf("write-ahead log segment %s is unreadable at offset %d, where record %d should be",
					segmentName(was), at, next)
			}
			if p, err = r.fr.next(); err != nil {
				return batch, fmt.Errorf("record %d missing from the write-ahead log: %v", next, err)
			}
		} else if err != nil {
			return batch, err
		}
		rec, err := decodeAliased(r.arena.copy(p))
		if err != nil {
			return batch, err
		}
		if rec.Seq < next {
			continue
		}
		if rec.Seq != next {
			return batch, fmt.Errorf("write-ahead log skips from record %d to %d", next-1, rec.Seq)
		}
		batch = append(batch, rec)
		next++
	}
	return batch, nil
}

// openAt opens the segment holding record seq, positioned at its start.
func (r *runner) openAt(seq uint64) error {
	segs := r.w.log.segments()
	idx := -1
	for i, first := range segs {
		if first <= seq {
			idx = i
		}
	}
	if idx < 0 {
		return fmt.Errorf("record %d is no longer in the write-ahead log (oldest segment starts at %v)", seq, segs)
	}
	f, err := os.Open(r.w.log.path(segs[idx]))
	if err != nil {
		return err
	}
	r.f, r.fr, r.segFirst, r.segEnd = f, &frameReader{r: bufio.NewReaderSize(f, 1<<16)}, segs[idx], 0
	if idx+1 < len(segs) {
		r.segEnd = segs[idx+1]
	}
	return nil
}

// closeReleased closes the open segment if the log has released it (a
// compacted head), so that its disk is freed.
func (r *runner) closeReleased() {
	if r.f == nil {
		return
	}
	segs := r.w.log.segments()
	if len(segs) == 0 || segs[0] > r.segFirst {
		r.closeSegment()
	}
}

func (r *runner) closeSegment() {
	if r.f != nil {
		r.f.Close()
	}
	r.f, r.fr, r.segEnd = nil, nil, 0
}

// backoff waits 50 ms, doubling to 5 s, between retries, on the writer's
// clock.
type backoff struct {
	d     time.Duration
	after func(time.Duration) <-chan time.Time
}

const (
	backoffFirst = 50 * time.Millisecond
	backoffMax   = 5 * time.Second
)

func newBackoff(after func(time.Duration) <-chan time.Time) *backoff {
	return &backoff{d: backoffFirst, after: after}
}

func (b *backoff) reset() { b.d = backoffFirst }

// wait waits; it reports false when stop was closed first.
func (b *backoff) wait(stop <-chan struct{}) bool {
	c := b.after(b.d)
	b.d = min(b.d*2, backoffMax)
	select {
	case <-stop:
		return false
	case <-c:
		return true
	}
}
