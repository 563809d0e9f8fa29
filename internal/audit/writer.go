package audit

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Sink stores decision records. Each sink is driven by one goroutine of the
// Writer, so its methods are never called concurrently.
type Sink interface {
	// Name says which sink this is, for logs and metrics ("sqlite", ...).
	Name() string
	// Cursor returns the highest sequence number of writer the sink has
	// stored, or 0 when it has none.
	Cursor(ctx context.Context, writer string) (uint64, error)
	// Write stores records of one writer in sequence order. Storing a
	// record the sink already has (same writer and sequence number) is
	// not an error: after a crash, records are written again.
	Write(ctx context.Context, recs []Record) error
	// Close releases the sink.
	Close() error
}

// Overflow says what Record does when the buffer of records not yet in
// every sink is full.
type Overflow int

// The overflow policies.
const (
	// OverflowDeny refuses the record, so the request is denied with
	// reason audit-unavailable. The default: nothing is decided unrecorded,
	// and latency stays bounded.
	OverflowDeny Overflow = iota
	// OverflowBlock waits for room, up to the request's deadline.
	OverflowBlock
)

// ErrUnavailable is returned by Record when a decision cannot be recorded.
var ErrUnavailable = errors.New("decision log unavailable")

// Options configures a Writer. The zero value of each field means its
// default.
type Options struct {
	// Dir holds the write-ahead log and the writer id. Required.
	Dir string
	// Buffer is how many records may wait for the slowest sink (in the
	// write-ahead log on disk) before the Overflow policy applies.
	// Default 1,000,000.
	Buffer uint64
	// Overflow is the policy when Buffer is full. Default OverflowDeny.
	Overflow Overflow
	// SegmentRecords is how many records a write-ahead segment file holds
	// before a new one is started. Default 100,000.
	SegmentRecords int
	// BatchSize is the most records handed to a sink at once. Default 10,000.
	BatchSize int
	// Linger is the shortest time between two writes to a sink unless a
	// whole batch is waiting. A store's cost per commit is mostly the index
	// pages it rewrites, so fewer, larger commits cost far less per record;
	// the records are safe in the write-ahead log meanwhile. Default 200 ms;
	// negative writes as soon as records arrive.
	Linger time.Duration
	// SyncInterval is how often the log is fsynced, bounding what a power
	// loss (not a process crash, which loses nothing) can take. Sinks are
	// fed only records that are fsynced, so that no store can ever hold a
	// record the log lost. Default 200 ms.
	SyncInterval time.Duration
	// Logger for sink failures; default slog.Default().
	Logger *slog.Logger
}

// Writer chains decision records by hash, writes each to the write-ahead log
// before its decision is returned, and feeds every sink from that log in
// batches, off the request path. It is safe for concurrent use.
//
// The write-ahead log is both the queue and the spill buffer: a sink that is
// slow or down simply falls behind in the log and catches up, in order,
// when it returns; a restarted process resumes each sink from the highest
// sequence number the sink reports, so records are neither lost nor stored
// twice.
type Writer struct {
	opts Options
	id   string
	lock *os.File // flock on Dir: one process per write-ahead log

	mu       sync.Mutex
	seq      uint64 // last sequence number written
	prev     string // hash of record seq
	head     *os.File
	headLeft int      // records the head segment still takes
	headSize int64    // bytes of whole frames in the head segment
	segs     []uint64 // first sequence numbers of the segment files
	buf      []byte
	closed   atomic.Bool
	room     chan struct{} // closed and replaced whenever a sink progresses

	written   atomic.Uint64 // published: every record <= written is in the log
	recovered uint64        // the last sequence number recovery found; set once by Open
	synced    atomic.Uint64 // published: every record <= synced is fsynced; sinks read up to it
	overflows atomic.Uint64
	runners   []*runner
	stopSync  chan struct{}
	syncDone  chan struct{}
}

// Open opens (or creates) the write-ahead log in opts.Dir, recovers it after
// a crash, and starts feeding the sinks.
func Open(opts Options, sinks ...Sink) (*Writer, error) {
	if opts.Dir == "" {
		return nil, errors.New("audit: no directory for the write-ahead log")
	}
	if opts.Buffer == 0 {
		opts.Buffer = 1_000_000
	}
	if opts.SegmentRecords <= 0 {
		opts.SegmentRecords = 100_000
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 10000
	}
	if opts.Linger == 0 {
		opts.Linger = 200 * time.Millisecond
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = 200 * time.Millisecond
	}
	// Before a sink reports its position, every record of the log counts
	// as waiting for it; segments must therefore be well inside the buffer,
	// or a restart would refuse records until the sinks answered.
	if uint64(opts.SegmentRecords) > opts.Buffer/2 {
		opts.SegmentRecords = int(max(1, opts.Buffer/2))
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	w := &Writer{opts: opts, room: make(chan struct{}), stopSync: make(chan struct{}), syncDone: make(chan struct{})}
	var err error
	if w.lock, err = lockDir(opts.Dir); err != nil {
		return nil, err
	}
	if w.id, err = writerID(opts.Dir); err != nil {
		w.lock.Close()
		return nil, err
	}
	if err := w.recover(); err != nil {
		w.lock.Close()
		return nil, err
	}
	for _, s := range sinks {
		r := &runner{w: w, sink: s, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
		w.runners = append(w.runners, r)
	}
	// Until a sink reports its position, count every record still in the
	// log as waiting for it: a lower bound that never refuses a record the
	// log has room for, whatever the sink's state.
	for _, r := range w.runners {
		r.stored.Store(w.segs[0] - 1)
	}
	for _, r := range w.runners {
		go r.run()
	}
	go w.syncLoop()
	return w, nil
}

// ID is the writer id that names this log's hash chain.
func (w *Writer) ID() string { return w.id }

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %s is in use by another egress-authz process: %w", dir, err)
	}
	return f, nil
}

// writerID reads the writer id kept in dir, or makes one: the host name
// (the pod name in Kubernetes) and a random suffix, so that two replicas
// never share a chain.
func writerID(dir string) (string, error) {
	path := filepath.Join(dir, "writer-id")
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "writer"
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	id := host + "-" + hex.EncodeToString(r[:])
	if err := os.WriteFile(path, []byte(id+"\n"), 0o640); err != nil {
		return "", fmt.Errorf("audit: %w", err)
	}
	return id, nil
}

// recover finds the end of the chain in the write-ahead log and opens the
// head segment for appending.
func (w *Writer) recover() error {
	segs, err := segments(w.opts.Dir)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	// Empty segments (made just before a crash, or left by a failed
	// write) hold nothing; a reader looking for a record by segment name
	// would stop in one of them.
	w.segs = segs[:0:0]
	for _, first := range segs {
		path := filepath.Join(w.opts.Dir, segmentName(first))
		if st, err := os.Stat(path); err == nil && st.Size() == 0 {
			_ = os.Remove(path)
			continue
		}
		w.segs = append(w.segs, first)
	}
	segs = append([]uint64(nil), w.segs...)
	for i := len(segs) - 1; i >= 0; i-- {
		last, n, err := recoverSegment(filepath.Join(w.opts.Dir, segmentName(segs[i])))
		if err != nil {
			return fmt.Errorf("audit: recover write-ahead log: %w", err)
		}
		if n == 0 {
			// Only a torn frame: as empty as an empty file.
			_ = os.Remove(filepath.Join(w.opts.Dir, segmentName(segs[i])))
			w.segs = append(w.segs[:i:i], w.segs[i+1:]...)
			continue
		}
		if last.Writer != w.id {
			return fmt.Errorf("audit: write-ahead log in %s belongs to writer %q, not %q", w.opts.Dir, last.Writer, w.id)
		}
		w.seq, w.prev = last.Seq, last.Hash
		if i == len(segs)-1 && n < w.opts.SegmentRecords {
			w.headLeft = w.opts.SegmentRecords - n
			w.head, err = os.OpenFile(filepath.Join(w.opts.Dir, segmentName(segs[i])), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return fmt.Errorf("audit: %w", err)
			}
			st, err := w.head.Stat()
			if err != nil {
				return fmt.Errorf("audit: %w", err)
			}
			w.headSize = st.Size()
		}
		break
	}
	// Drop empty trailing segments: they hold nothing and would confuse
	// the next segment's name.
	for len(w.segs) > 0 && w.segs[len(w.segs)-1] > w.seq {
		_ = os.Remove(filepath.Join(w.opts.Dir, segmentName(w.segs[len(w.segs)-1])))
		w.segs = w.segs[:len(w.segs)-1]
	}
	if w.head == nil {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	// What recovery read may be in the page cache only, if the process
	// died before its last fsync: make it durable before any sink sees
	// it, or a power loss now could leave a sink ahead of the log.
	for _, first := range w.segs {
		if err := syncFile(filepath.Join(w.opts.Dir, segmentName(first))); err != nil {
			return fmt.Errorf("audit: fsync the write-ahead log: %w", err)
		}
	}
	if err := syncFile(w.opts.Dir); err != nil {
		return fmt.Errorf("audit: fsync the write-ahead log directory: %w", err)
	}
	w.recovered = w.seq
	w.written.Store(w.seq)
	w.synced.Store(w.seq)
	return nil
}

// syncFile fsyncs the file or directory at path.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// rotate starts a new head segment for the records after w.seq. The old
// head is fsynced first, so every record written so far is durable.
func (w *Writer) rotate() error {
	if w.head != nil {
		if err := w.head.Sync(); err == nil {
			w.publishSynced(w.seq)
		}
		_ = w.head.Close()
	}
	first := w.seq + 1
	f, err := os.OpenFile(filepath.Join(w.opts.Dir, segmentName(first)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("audit: new write-ahead segment: %w", err)
	}
	w.head, w.headLeft, w.headSize = f, w.opts.SegmentRecords, 0
	if len(w.segs) == 0 || w.segs[len(w.segs)-1] != first {
		w.segs = append(w.segs, first)
	}
	return nil
}

// Record chains recs (one decision: the enforced record and its dry-run
// outcomes) and writes them to the write-ahead log. When it returns nil the
// records survive a crash of this process; when it returns an error
// nothing was recorded and the decision must not be acted on.
func (w *Writer) Record(ctx context.Context, recs []Record) error {
	for i := range recs {
		recs[i].clean()
	}
	w.mu.Lock()
	for {
		if w.closed.Load() {
			w.mu.Unlock()
			return fmt.Errorf("%w: closing", ErrUnavailable)
		}
		if w.seq+uint64(len(recs))-w.minStored() <= w.opts.Buffer {
			break
		}
		if w.opts.Overflow == OverflowDeny {
			w.mu.Unlock()
			w.overflows.Add(1)
			return fmt.Errorf("%w: buffer of %d records full", ErrUnavailable, w.opts.Buffer)
		}
		room := w.room
		w.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			w.overflows.Add(1)
			return fmt.Errorf("%w: buffer full until the deadline: %v", ErrUnavailable, ctx.Err())
		}
		w.mu.Lock()
	}
	err := w.appendLocked(recs)
	w.written.Store(w.seq)
	w.mu.Unlock()
	if err != nil {
		return err
	}
	for _, r := range w.runners {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

func (w *Writer) appendLocked(recs []Record) error {
	if w.headLeft < len(recs) {
		if err := w.rotate(); err != nil {
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	seq, prev := w.seq, w.prev
	buf := w.buf[:0]
	var scratch [512]byte
	for i := range recs {
		r := &recs[i]
		seq++
		r.Writer, r.Seq, r.PrevHash = w.id, seq, prev
		payload := appendCanonical(scratch[:0], r)
		if len(payload) > maxFrame {
			// The reader would take such a frame for a torn one: refuse the
			// record (its Check is denied) rather than write it.
			return fmt.Errorf("%w: a record of %d bytes is over the write-ahead log's limit of %d", ErrUnavailable, len(payload), maxFrame)
		}
		sum := sha256.Sum256(payload)
		r.Hash = hex.EncodeToString(sum[:])
		prev = r.Hash
		buf = appendFrame(buf, payload)
	}
	w.buf = buf
	if _, err := w.head.Write(buf); err != nil {
		// A short write may have left whole frames of records that were
		// never acknowledged: cut the segment back to its last good frame.
		// Only if that fails, start a fresh segment (the old one then
		// ends in frames that recovery would take for records).
		if terr := w.head.Truncate(w.headSize); terr != nil {
			_ = w.rotate()
		}
		return fmt.Errorf("%w: write-ahead log: %v", ErrUnavailable, err)
	}
	w.seq, w.prev = seq, prev
	w.headLeft -= len(recs)
	w.headSize += int64(len(buf))
	return nil
}

func (w *Writer) isClosed() bool { return w.closed.Load() }

// publishSynced records that every record up to seq is fsynced and wakes
// the sinks, which read only that far.
func (w *Writer) publishSynced(seq uint64) {
	for {
		old := w.synced.Load()
		if seq <= old || w.synced.CompareAndSwap(old, seq) {
			break
		}
	}
	for _, r := range w.runners {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// sync fsyncs the head segment and publishes what it made durable. A
// rotation that raced it fsynced the records itself.
func (w *Writer) sync() {
	w.mu.Lock()
	f, seq := w.head, w.seq
	w.mu.Unlock()
	if seq <= w.synced.Load() || f == nil {
		return
	}
	if f.Sync() == nil {
		w.publishSynced(seq)
	}
}

// minStored is the highest sequence number every sink has stored.
func (w *Writer) minStored() uint64 {
	if len(w.runners) == 0 {
		return w.seq
	}
	m := w.runners[0].stored.Load()
	for _, r := range w.runners[1:] {
		m = min(m, r.stored.Load())
	}
	return m
}

// Stored returns how far the sink named sink has stored this writer's
// chain (a lower bound until the sink has reported its position).
func (w *Writer) Stored(sink string) (uint64, bool) {
	for _, r := range w.runners {
		if r.sink.Name() == sink {
			return r.stored.Load(), true
		}
	}
	return 0, false
}

// Stats is a snapshot of the writer for metrics.
type Stats struct {
	Written   uint64           // last sequence number written to the log
	Pending   uint64           // records written but not yet in every sink
	Overflows uint64           // records refused (or timed out) because the buffer was full
	Sinks     map[string]int64 // per sink: records behind the log
	Failing   map[string]bool  // per sink: last write failed
}

// Stats returns the writer's counters.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	s := Stats{Written: w.seq, Pending: w.seq - w.minStored(), Overflows: w.overflows.Load(),
		Sinks: map[string]int64{}, Failing: map[string]bool{}}
	for _, r := range w.runners {
		s.Sinks[r.sink.Name()] = int64(w.seq - r.stored.Load())
		s.Failing[r.sink.Name()] = r.failing.Load()
	}
	w.mu.Unlock()
	return s
}

// progressed is called by a runner after storing records: it wakes writers
// waiting for room and removes segments every sink is done with.
func (w *Writer) progressed() {
	var done []uint64
	w.mu.Lock()
	close(w.room)
	w.room = make(chan struct{})
	stored := w.minStored()
	// Segment i holds records segs[i] .. segs[i+1]-1; the head is kept.
	for len(w.segs) > 1 && w.segs[1]-1 <= stored {
		done = append(done, w.segs[0])
		w.segs = w.segs[1:]
	}
	w.mu.Unlock()
	for _, first := range done { // no file I/O under the lock every Check takes
		_ = os.Remove(filepath.Join(w.opts.Dir, segmentName(first)))
	}
}

func (w *Writer) syncLoop() {
	defer close(w.syncDone)
	t := time.NewTicker(w.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-w.stopSync:
			return
		case <-t.C:
			w.sync()
		}
	}
}

// Close stops taking records, waits until every sink has stored every
// record or ctx is done, and releases everything. Records not yet stored
// stay in the write-ahead log and are stored after the next Open.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if w.closed.Load() {
		w.mu.Unlock()
		return nil
	}
	w.closed.Store(true)
	target := w.seq
	w.mu.Unlock()
	w.sync() // the sinks may take everything now

	var err error
	for _, r := range w.runners {
		for r.stored.Load() < target {
			select {
			case <-ctx.Done():
				err = errors.Join(err, fmt.Errorf("audit: %d records not yet in sink %s stay in the write-ahead log: %w",
					target-r.stored.Load(), r.sink.Name(), ctx.Err()))
			case <-time.After(5 * time.Millisecond):
				continue
			}
			break
		}
	}
	for _, r := range w.runners {
		close(r.stop)
		<-r.done
		err = errors.Join(err, r.sink.Close())
	}
	close(w.stopSync)
	<-w.syncDone
	w.mu.Lock()
	if w.head != nil {
		err = errors.Join(err, w.head.Sync(), w.head.Close())
		w.head = nil
	}
	w.mu.Unlock()
	return errors.Join(err, w.lock.Close())
}

// runner feeds one sink from the write-ahead log.
type runner struct {
	w       *Writer
	sink    Sink
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	stored  atomic.Uint64 // highest sequence number the sink has stored
	failing atomic.Bool

	strings interner // shared strings of decoded records

	f        *os.File
	fr       *frameReader
	segFirst uint64 // first sequence number of the open segment
	segEnd   uint64 // first sequence number after the open segment (0: unknown, the head)
}

func (r *runner) run() {
	defer close(r.done)
	defer func() {
		if r.f != nil {
			r.f.Close()
		}
	}()
	log := r.w.opts.Logger.With("sink", r.sink.Name())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-r.stop
		cancel()
	}()

	// Where the sink stands: retried until the sink answers.
	backoff := newBackoff()
	var cursor uint64
	for {
		// Compared with what the log held when it was opened, not with
		// what it holds now: new records would catch up with the sink's
		// position, and the ones up to it would be skipped as stored.
		c, err := r.sink.Cursor(ctx, r.w.id)
		if err == nil && c <= r.w.recovered {
			cursor = c
			break
		}
		r.failing.Store(true)
		if err != nil {
			log.Warn("decision-log sink unavailable; records wait in the write-ahead log", "error", err.Error())
		} else {
			// The store holds records of this chain that the log does not:
			// the log's directory was replaced, or a disk lost what it had
			// fsynced. New records reuse those sequence numbers, and the
			// store would drop them as already stored: none is written
			// until a person decides. Records wait in the log, and once
			// --audit-buffer is full, Checks are denied.
			log.Error("decision-log sink is ahead of the write-ahead log: nothing is written to it, so that new records with reused sequence numbers are not dropped; move the write-ahead log directory aside to start a new chain",
				"writer", r.w.id, "sink_seq", c, "log_seq", r.w.recovered, "dir", r.w.opts.Dir)
		}
		if !backoff.wait(r.stop) {
			return
		}
	}
	r.failing.Store(false)
	r.w.mu.Lock()
	oldest := r.w.segs[0]
	r.w.mu.Unlock()
	if cursor+1 < oldest {
		log.Warn("decision-log sink is missing records that are no longer in the write-ahead log",
			"writer", r.w.id, "from", cursor+1, "to", oldest-1)
		cursor = oldest - 1
	}
	r.stored.Store(cursor)
	r.w.progressed()

	batch := make([]Record, 0, r.w.opts.BatchSize)
	var lastWrite time.Time
	for {
		target := r.w.synced.Load()
		if r.stored.Load() >= target {
			select {
			case <-r.stop:
				return
			case <-r.wake:
			case <-time.After(time.Second):
			}
			continue
		}
		if wait := r.w.opts.Linger - time.Since(lastWrite); wait > 0 && target-r.stored.Load() < uint64(r.w.opts.BatchSize) && !r.w.isClosed() {
			select {
			case <-r.stop:
				return
			case <-time.After(wait):
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
		for {
			err := r.sink.Write(ctx, batch)
			if err == nil {
				break
			}
			if !r.failing.Swap(true) {
				log.Warn("decision-log sink write failed; records wait in the write-ahead log and will be replayed",
					"error", err.Error(), "pending", target-r.stored.Load())
			}
			if !backoff.wait(r.stop) {
				return
			}
		}
		if r.failing.Swap(false) {
			log.Info("decision-log sink recovered")
		}
		backoff.reset()
		lastWrite = time.Now()
		r.stored.Store(batch[len(batch)-1].Seq)
		r.w.progressed()
	}
}

// read reads the records after r.stored, up to target and the batch size.
func (r *runner) read(batch []Record, target uint64) ([]Record, error) {
	next := r.stored.Load() + 1
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
		if r.strings == nil {
			r.strings = interner{}
		}
		rec, err := decodeInterned(p, r.strings)
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
	r.w.mu.Lock()
	segs := append([]uint64(nil), r.w.segs...)
	r.w.mu.Unlock()
	idx := -1
	for i, first := range segs {
		if first <= seq {
			idx = i
		}
	}
	if idx < 0 {
		return fmt.Errorf("record %d is no longer in the write-ahead log (oldest segment starts at %v)", seq, segs)
	}
	f, err := os.Open(filepath.Join(r.w.opts.Dir, segmentName(segs[idx])))
	if err != nil {
		return err
	}
	r.f, r.fr, r.segFirst, r.segEnd = f, &frameReader{r: bufio.NewReaderSize(f, 1<<16)}, segs[idx], 0
	if idx+1 < len(segs) {
		r.segEnd = segs[idx+1]
	}
	return nil
}

func (r *runner) closeSegment() {
	if r.f != nil {
		r.f.Close()
	}
	r.f, r.fr, r.segEnd = nil, nil, 0
}

// backoff waits 50 ms, doubling to 5 s, between retries.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 50 * time.Millisecond} }
func (b *backoff) reset()  { b.d = 50 * time.Millisecond }

// wait sleeps; it reports false when stop was closed first.
func (b *backoff) wait(stop <-chan struct{}) bool {
	t := time.NewTimer(b.d)
	defer t.Stop()
	b.d = min(b.d*2, 5*time.Second)
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}
