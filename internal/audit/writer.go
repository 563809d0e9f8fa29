package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Sink stores decision records. Each sink is driven by one goroutine of the
// Writer, so its methods are never called concurrently.
type Sink interface {
	// Name identifies the sink among the writer's sinks, in logs, Stats
	// and metrics: its DSN without credentials ("sqlite:data/decisions.db",
	// "postgres://db.example:5432/audit", "otlp", "stdout").
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

// Buffered is a Sink that holds the records it is given until it can make
// many durable at once (the Parquet sink closes a segment of hundreds of
// thousands). Write then only hands records over: the writer counts
// records as stored, and removes them from the write-ahead log, only as
// far as Durable says, calls Flush by the time FlushBy gives, and flushes
// when it closes. Like a Sink's, its methods are called by one goroutine.
type Buffered interface {
	Sink
	// Durable returns the highest sequence number the sink has made
	// durable.
	Durable() uint64
	// FlushBy returns when the records the sink holds must be made
	// durable at the latest, or the zero time when it holds none.
	FlushBy() time.Time
	// Flush makes every record the sink was given durable.
	Flush(ctx context.Context) error
}

// Copying is a Sink whose Write keeps nothing of the records it is given
// (no string of theirs) once it returns: it copies what it keeps. The
// writer then decodes every batch into memory it reuses for the next
// one, instead of memory of its own per batch.
type Copying interface {
	Sink
	// CopiesRecords marks the sink; it does nothing.
	CopiesRecords()
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
	// Now and After are the writer's clock: the time, and a channel that
	// receives once d has passed on that clock (time.After's contract).
	// They time the linger, the fsyncs and the retries of a failing sink.
	// Default the system clock; a test sets both to a fake clock it moves
	// by hand, so that it waits for events instead of sleeping.
	Now   func() time.Time
	After func(d time.Duration) <-chan time.Time

	fsync func(*os.File) error // (*os.File).Sync, unless a test holds it up
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
//
// Three parts share the work, each with its own state: the chain and its
// backpressure (this file: sequence numbers, hashes, room in the buffer),
// the segment log (segments.go: files, rotation, recovery, fsync), and one
// feeder per sink (feeder.go: reads the log, writes the sink, retries).
type Writer struct {
	opts    Options
	id      string
	lock    *os.File // flock on Dir: one process per write-ahead log
	log     *segmentLog
	runners []*runner

	// mu is the chain's lock: a group's leader holds it to take sequence
	// numbers, hash and append, so that records reach the log in chain
	// order and a failed append leaves the chain as it was. It covers the
	// append's write(2) into the page cache, never an fsync.
	mu      sync.Mutex
	seq     uint64 // last sequence number written
	prev    string // hash of record seq
	buf     []byte
	scratch []byte        // a record's encoding, before it is framed into buf
	room    chan struct{} // closed and replaced whenever a sink progresses
	closed  atomic.Bool

	// Group commit: the Checks that arrive while a write is under way
	// join one group, which its first member writes with one write(2)
	// as soon as the write before is done (see Record).
	gmu     sync.Mutex
	filling *group        // the group new Records join; nil when none waits
	taken   atomic.Uint64 // records admitted: written, or in a group not yet written
	written atomic.Uint64 // seq, for readers without mu

	overflows   atomic.Uint64
	walFailures atomic.Uint64 // records refused because the log could not be written
	walFailing  atomic.Bool   // since the last failed append; under mu
	waiting     atomic.Int64  // Records waiting for room (OverflowBlock)
	closing     chan struct{} // closed by Close: feeders stop lingering
	syncStop    chan struct{}
	syncDone    chan struct{}

	// A fork (fork.go) stops the feeders and the sync loop and starts
	// them again; forkMu covers that, and forkLoop runs until Close.
	forkMu      sync.Mutex
	forkReq     chan forkAt
	forkStop    chan struct{} // closed by Close once the sinks have everything
	forkDone    chan struct{}
	syncStopped bool // by Close; under forkMu
	forks       atomic.Uint64
	broken      atomic.Bool // a fork failed half-way: nothing is recorded
}

// Open opens (or creates) the write-ahead log in opts.Dir, recovers it after
// a crash, and starts feeding the sinks, which must have distinct names.
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
	if (opts.Now == nil) != (opts.After == nil) {
		return nil, errors.New("audit: Options.Now and Options.After go together")
	}
	if opts.Now == nil {
		opts.Now, opts.After = time.Now, time.After
	}
	if opts.fsync == nil {
		opts.fsync = (*os.File).Sync
	}
	names := map[string]bool{}
	for _, s := range sinks {
		if names[s.Name()] {
			return nil, fmt.Errorf("audit: two decision-log sinks are both %s", s.Name())
		}
		names[s.Name()] = true
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	w := &Writer{opts: opts, room: make(chan struct{}), closing: make(chan struct{}),
		syncStop: make(chan struct{}), syncDone: make(chan struct{}),
		forkReq: make(chan forkAt, 1), forkStop: make(chan struct{}), forkDone: make(chan struct{})}
	var err error
	if w.lock, err = lockDir(opts.Dir); err != nil {
		return nil, err
	}
	if err := commitFork(opts.Dir); err != nil {
		w.lock.Close()
		return nil, err
	}
	if w.id, err = writerID(opts.Dir); err != nil {
		w.lock.Close()
		return nil, err
	}
	log, last, err := openSegmentLog(opts.Dir, opts.SegmentRecords, w.id, opts.fsync, w.wakeFeeders)
	if err != nil {
		w.lock.Close()
		return nil, err
	}
	w.log, w.seq, w.prev = log, last.Seq, last.Hash
	w.taken.Store(last.Seq)
	w.written.Store(last.Seq)
	// Until a sink reports its position, count every record still in the
	// log as waiting for it: a lower bound that never refuses a record the
	// log has room for, whatever the sink's state.
	oldest := log.oldest()
	for _, s := range sinks {
		r := newRunner(w, s)
		r.stored.Store(oldest - 1)
		w.runners = append(w.runners, r)
	}
	for _, r := range w.runners {
		go r.run()
	}
	go w.syncLoop()
	go w.forkLoop()
	return w, nil
}

// ID is the writer id that names this log's hash chain.
// It changes when the writer finds another process writing its chain (a
// fork).
func (w *Writer) ID() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.id
}

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

// writerIDFile is where a write-ahead log directory keeps its writer's id.
const writerIDFile = "writer-id"

// writerID reads the writer id kept in dir, or makes one: the host name
// (the pod name in Kubernetes) and a random suffix, so that two replicas
// never share a chain.
func writerID(dir string) (string, error) {
	path := filepath.Join(dir, writerIDFile)
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	}
	id := newWriterID()
	if err := os.WriteFile(path, []byte(id+"\n"), 0o640); err != nil {
		return "", fmt.Errorf("audit: %w", err)
	}
	return id, nil
}

// group is the decisions of the Checks that arrived while the write
// before was under way, written together. Groups are reused: the last
// member to read its result puts its group back in groups.
type group struct {
	members []member
	done    chan struct{} // closed when the group is written (or failed)
	left    atomic.Int32  // members yet to read their result, once done
}

var groups = sync.Pool{New: func() any { return &group{members: make([]member, 0, 64)} }}

// result returns member i's error and, for the last member to ask,
// releases the group.
func (g *group) result(i int) error {
	err := g.members[i].err
	if g.left.Add(-1) == 0 {
		clear(g.members) // no Check's records stay reachable
		g.members = g.members[:0]
		groups.Put(g)
	}
	return err
}

type member struct {
	recs []Record
	err  error
}

// Record chains recs (one decision: the enforced record and its dry-run
// outcomes) and writes them to the write-ahead log. When it returns nil the
// records survive a crash of this process; when it returns an error
// nothing was recorded and the decision must not be acted on. Record keeps
// no reference to recs after it returns.
//
// Checks that arrive together share one write(2) (group commit, with no
// timer): a Record joins the group that is filling, or starts one and
// leads it; the leader waits for the write before it to finish, closes its
// group and writes every member's records at once, so that under load a
// Check waits for at most the write before its own, and the log makes one
// system call for many decisions.
func (w *Writer) Record(ctx context.Context, recs []Record) error {
	for i := range recs {
		recs[i].clean()
	}
	if err := w.admit(ctx, uint64(len(recs))); err != nil {
		return err
	}
	w.gmu.Lock()
	g, lead := w.filling, false
	if g == nil {
		g, lead = groups.Get().(*group), true
		g.done = make(chan struct{})
		w.filling = g
	}
	i := len(g.members)
	g.members = append(g.members, member{recs: recs})
	w.gmu.Unlock()
	if !lead {
		<-g.done
		return g.result(i)
	}
	// Let the Checks that are ready to run reach their Record first and
	// join this group: on a busy server with few cores they run one after
	// the other, so without this nearly every group would be one Check
	// and one write(2). An idle server has no one else to run, and the
	// leader goes on at once: no timer, no added latency.
	runtime.Gosched()
	w.mu.Lock()
	w.gmu.Lock()
	w.filling = nil // later Records start the next group
	g.left.Store(int32(len(g.members)))
	w.gmu.Unlock()
	w.writeGroup(g)
	w.mu.Unlock()
	close(g.done)
	// The feeders are not woken: they read only what is fsynced, and the
	// sync that makes these records durable wakes them.
	return g.result(0)
}

// admit takes room in the buffer for n records, or applies the overflow
// policy when there is none: the records the log holds beyond what every
// sink stored, and those admitted but not yet written, stay within Buffer.
func (w *Writer) admit(ctx context.Context, n uint64) error {
	for {
		if w.closed.Load() {
			return fmt.Errorf("%w: closing", ErrUnavailable)
		}
		if w.broken.Load() {
			return fmt.Errorf("%w: the write-ahead log could not be reopened after a fork", ErrUnavailable)
		}
		if w.taken.Add(n)-w.minStored() <= w.opts.Buffer {
			return nil
		}
		w.taken.Add(-n)
		if w.opts.Overflow == OverflowDeny {
			w.overflows.Add(1)
			return fmt.Errorf("%w: buffer of %d records full", ErrUnavailable, w.opts.Buffer)
		}
		w.mu.Lock()
		room := w.room
		w.mu.Unlock()
		if w.taken.Load()+n-w.minStored() <= w.opts.Buffer {
			continue // a sink progressed meanwhile
		}
		w.waiting.Add(1)
		select {
		case <-room:
			w.waiting.Add(-1)
		case <-ctx.Done():
			w.waiting.Add(-1)
			w.overflows.Add(1)
			return fmt.Errorf("%w: buffer full until the deadline: %v", ErrUnavailable, ctx.Err())
		}
	}
}

// writeGroup chains the members' records after the last record and appends
// them to the log with one write; the chain moves on only if the append
// succeeded. A member whose record cannot be a frame fails alone. w.mu is
// held.
func (w *Writer) writeGroup(g *group) {
	seq, prev := w.seq, w.prev
	buf := w.buf[:0]
	n, lastOff := 0, 0
	// The group's hashes, in hex, in one allocation: the records' Hash
	// and PrevHash point into it, and it is never written again.
	total := 0
	for m := range g.members {
		total += len(g.members[m].recs)
	}
	hexes := make([]byte, 0, total*sha256.Size*2)
	for m := range g.members {
		mb := &g.members[m]
		mSeq, mPrev, mStart, mLastOff := seq, prev, len(buf), 0
		for i := range mb.recs {
			r := &mb.recs[i]
			mSeq++
			r.Writer, r.Seq, r.PrevHash = w.id, mSeq, mPrev
			payload := appendCanonical(w.scratch[:0], r)
			w.scratch = payload[:0]
			if len(payload) > maxFrame {
				// The reader would take such a frame for a torn one: refuse
				// the record (its Check is denied) rather than write it.
				mb.err = fmt.Errorf("%w: a record of %d bytes is over the write-ahead log's limit of %d", ErrUnavailable, len(payload), maxFrame)
				break
			}
			sum := sha256.Sum256(payload)
			at := len(hexes)
			hexes = hex.AppendEncode(hexes, sum[:])
			r.Hash = unsafe.String(&hexes[at], len(hexes)-at)
			mPrev = r.Hash
			mLastOff = len(buf)
			buf = appendFrame(buf, payload)
		}
		if mb.err != nil {
			buf = buf[:mStart]
			w.taken.Add(-uint64(len(mb.recs)))
			continue
		}
		seq, prev, lastOff = mSeq, mPrev, mLastOff
		n += len(mb.recs)
	}
	w.buf = buf
	if n == 0 {
		return
	}
	if err := w.log.append(buf, n, seq, buf[lastOff:]); err != nil {
		w.walFailures.Add(uint64(n))
		if !w.walFailing.Swap(true) {
			w.opts.Logger.Error("decision log: the write-ahead log cannot be written; decisions are denied until it can (a full disk?)",
				"dir", w.opts.Dir, "error", err.Error(), "free_bytes", freeBytes(w.opts.Dir))
		}
		err = fmt.Errorf("%w: %v", ErrUnavailable, err)
		for m := range g.members {
			if g.members[m].err == nil {
				g.members[m].err = err
				w.taken.Add(-uint64(len(g.members[m].recs)))
			}
		}
		return
	}
	w.seq, w.prev = seq, prev
	w.written.Store(seq)
	if w.walFailing.Load() && w.walFailing.Swap(false) { // a load, not a write, per group
		w.opts.Logger.Info("decision log: the write-ahead log is written again", "dir", w.opts.Dir)
	}
}

// freeBytes is the space left to an unprivileged user on dir's file
// system, or -1 when it cannot be read.
func freeBytes(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * st.Bsize
}

func (w *Writer) isClosed() bool { return w.closed.Load() }

// wakeFeeders tells every feeder that there is more to read.
func (w *Writer) wakeFeeders() {
	for _, r := range w.runners {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// minStored is the highest sequence number every sink has stored.
func (w *Writer) minStored() uint64 {
	if len(w.runners) == 0 {
		return w.written.Load()
	}
	m := w.runners[0].stored.Load()
	for _, r := range w.runners[1:] {
		m = min(m, r.stored.Load())
	}
	return m
}

// Stored returns how far the sink named name (see Sink.Name) has stored
// this writer's chain (a lower bound until the sink has reported its
// position).
func (w *Writer) Stored(name string) (uint64, bool) {
	for _, r := range w.runners {
		if r.sink.Name() == name {
			return r.stored.Load(), true
		}
	}
	return 0, false
}

// Stats is a snapshot of the writer for metrics.
type Stats struct {
	Written   uint64 // last sequence number written to the log
	Pending   uint64 // records written but not yet in every sink
	Overflows uint64 // records refused (or timed out) because the buffer was full
	Forks     uint64 // times another process was found writing this chain, and this writer became a new one
	// WALFailures counts records refused because the write-ahead log
	// could not be written (a full disk), WALFreeBytes the space left on
	// its file system (-1 when unknown).
	WALFailures  uint64
	WALFreeBytes int64
	Sinks        map[string]int64 // per sink, by name: records behind the log
	Failing      map[string]bool  // per sink, by name: last write failed
}

// Stats returns the writer's counters.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	s := Stats{Written: w.seq, Pending: w.seq - w.minStored(), Overflows: w.overflows.Load(),
		Forks: w.forks.Load(), WALFailures: w.walFailures.Load(), Sinks: map[string]int64{}, Failing: map[string]bool{}}
	for _, r := range w.runners {
		s.Sinks[r.sink.Name()] = int64(w.seq - r.stored.Load())
		s.Failing[r.sink.Name()] = r.failing.Load()
	}
	w.mu.Unlock()
	s.WALFreeBytes = freeBytes(w.opts.Dir)
	return s
}

// progressed is called by a feeder after its sink stored records: it wakes
// writers waiting for room and removes the segments every sink is done
// with (outside the chain's lock, which every Check takes).
func (w *Writer) progressed() {
	w.mu.Lock()
	close(w.room)
	w.room = make(chan struct{})
	stored := w.minStored()
	w.mu.Unlock()
	w.log.release(stored)
	w.log.compact()
}

// syncLoop fsyncs the log every SyncInterval, and at once after a
// rotation closed a segment.
func (w *Writer) syncLoop() {
	defer close(w.syncDone)
	failing := false
	tick := w.opts.After(w.opts.SyncInterval)
	for {
		select {
		case <-w.syncStop:
			return
		case <-tick:
			tick = w.opts.After(w.opts.SyncInterval)
		case <-w.log.kick:
		}
		err := w.log.sync()
		switch {
		case err != nil && !failing:
			w.opts.Logger.Error("decision log: fsync of the write-ahead log failed; sinks get no new records until it succeeds", "error", err.Error())
		case err == nil && failing:
			w.opts.Logger.Info("decision log: fsync of the write-ahead log works again")
		}
		failing = err != nil
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
	w.mu.Unlock()
	close(w.closing)
	w.forkMu.Lock()
	close(w.syncStop)
	<-w.syncDone
	w.syncStopped = true
	// The sinks may take everything now.
	err := w.log.sync()
	w.forkMu.Unlock()
	// A fork found meanwhile is resolved, and its chain stored, too.
	err = errors.Join(err, w.waitStored(ctx))
	close(w.forkStop)
	<-w.forkDone
	for _, r := range w.runners {
		close(r.stop)
		<-r.done
		err = errors.Join(err, r.sink.Close())
	}
	err = errors.Join(err, w.log.close())
	return errors.Join(err, w.lock.Close())
}

// waitStored waits until every sink has stored every record or ctx is
// done.
func (w *Writer) waitStored(ctx context.Context) error {
	for {
		w.mu.Lock()
		room, target := w.room, w.seq
		w.mu.Unlock()
		done := true
		for _, r := range w.runners {
			done = done && r.stored.Load() >= target
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			var err error
			for _, r := range w.runners {
				if n := r.stored.Load(); n < target {
					err = errors.Join(err, fmt.Errorf("audit: %d records not yet in sink %s stay in the write-ahead log: %w",
						target-n, r.sink.Name(), ctx.Err()))
				}
			}
			return err
		case <-room:
		}
	}
}
