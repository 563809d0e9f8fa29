package audit_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
	"github.com/egress-authz/egress-authz/internal/audit/sqlstore"
)

// The Writer's tests feed a real store, an SQLite file in a temp dir, and
// check what it holds with Verify. The stores' own tests (queries,
// tampering, PostgreSQL) are in internal/audit/sqlstore.

var sample = audittest.Sample

// fixture is a Writer feeding an SQLite store.
type fixture struct {
	dir  string
	path string // the SQLite file
	w    *audit.Writer
	sink audit.Sink
}

func newFixture(t *testing.T, opts audit.Options, wrap ...func(audit.Sink) audit.Sink) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	f.path = filepath.Join(f.dir, "decisions.db")
	var sink audit.Sink = openSQLite(t, f.path)
	for _, w := range wrap {
		sink = w(sink)
	}
	opts.Dir = filepath.Join(f.dir, "wal")
	w, err := audit.Open(opts, sink)
	if err != nil {
		t.Fatal(err)
	}
	f.w, f.sink = w, sink
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = w.Close(ctx)
	})
	return f
}

func openSQLite(t testing.TB, path string) *sqlstore.SQLite {
	t.Helper()
	st, err := sqlstore.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// reader opens a second handle on the fixture's store, as an auditor
// would.
func (f *fixture) reader(t *testing.T) audit.Store {
	t.Helper()
	st := openSQLite(t, f.path)
	t.Cleanup(func() { st.Close() })
	return st
}

// drain closes the writer, which waits until the sink has every record.
func (f *fixture) drain(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.w.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// cancelled is a context that is already done: a Close given it stops
// without waiting for the sinks.
func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func record(t *testing.T, w *audit.Writer, recs ...audit.Record) {
	t.Helper()
	if err := w.Record(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}

func queryAll(t *testing.T, s audit.Store, f audit.Filter) []audit.Record {
	t.Helper()
	var out []audit.Record
	if _, err := s.Query(context.Background(), f, func(r *audit.Record) error { out = append(out, *r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func verified(t *testing.T, s audit.Store) *audit.Verification {
	t.Helper()
	v, err := audit.Verify(context.Background(), s, audit.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestRecordCleansStrings(t *testing.T) {
	f := newFixture(t, audit.Options{})
	r := sample(1)
	r.Principal = "spiffe://cluster.local/\xff\x00x"
	record(t, f.w, r)
	f.drain(t)
	got := queryAll(t, f.reader(t), audit.Filter{})
	if got[0].Principal != "spiffe://cluster.local/\uFFFD\uFFFDx" {
		t.Fatalf("principal stored as %q", got[0].Principal)
	}
	if v := verified(t, f.reader(t)); !v.OK() {
		t.Fatalf("verify after cleaning: %+v", v)
	}
}

func TestTwoWritersInOneStoreVerify(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d.db")
	w1, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "w1")}, openSQLite(t, path))
	if err != nil {
		t.Fatal(err)
	}
	w2, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "w2")}, openSQLite(t, path))
	if err != nil {
		t.Fatal(err)
	}
	if w1.ID() == w2.ID() {
		t.Fatal("two writers share an id")
	}
	for i := 0; i < 50; i++ {
		record(t, w1, sample(i))
		record(t, w2, sample(i))
	}
	_ = w1.Close(context.Background())
	_ = w2.Close(context.Background())
	r := openSQLite(t, path)
	defer r.Close()
	if v := verified(t, r); !v.OK() || v.Records != 100 || len(v.Writers) != 2 {
		t.Fatalf("verify: %+v", v)
	}
}

func TestCloseDrainsEverything(t *testing.T) {
	f := newFixture(t, audit.Options{BatchSize: 64})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				if err := f.w.Record(context.Background(), []audit.Record{sample(g*1000 + i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	f.drain(t)
	if v := verified(t, f.reader(t)); !v.OK() || v.Records != 4000 {
		t.Fatalf("after drain: %+v", v)
	}
	if err := f.w.Record(context.Background(), []audit.Record{sample(1)}); !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("Record after Close: %v", err)
	}
}

// TestSinksAreKeptApartByName: two sinks of one kind are two entries of
// Stats, and Stored finds each by its name; two sinks of one name would
// be one, and are refused.
func TestSinksAreKeptApartByName(t *testing.T) {
	dir := t.TempDir()
	a, b := openSQLite(t, filepath.Join(dir, "a.db")), openSQLite(t, filepath.Join(dir, "b.db"))
	down := &flaky{Sink: b}
	down.fails.Store(1 << 30)
	w, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "wal"), Linger: -1}, a, down)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(cancelled())
	for i := range 5 {
		record(t, w, sample(i))
	}
	audittest.WaitUntil(t, "a stored and b failing", func() bool {
		n, _ := w.Stored(a.Name())
		return n == 5 && w.Stats().Failing[b.Name()]
	})
	st := w.Stats()
	if len(st.Sinks) != 2 || st.Sinks[a.Name()] != 0 || st.Sinks[b.Name()] != 5 || st.Failing[a.Name()] {
		t.Errorf("stats %+v: want %s caught up and %s 5 behind and failing", st, a.Name(), b.Name())
	}
	if n, ok := w.Stored(b.Name()); !ok || n != 0 {
		t.Errorf("Stored(%s) = %d, %v; want 0, true", b.Name(), n, ok)
	}

	twice := openSQLite(t, filepath.Join(dir, "a.db"))
	defer twice.Close()
	if _, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "wal2")}, openSQLite(t, filepath.Join(dir, "a.db")), twice); err == nil ||
		!strings.Contains(err.Error(), a.Name()) {
		t.Errorf("two sinks named %s: %v, want an error naming it", a.Name(), err)
	}
}

// lockDB takes SQLite's write lock from another connection, so the sink's
// writes fail (busy) until release is called: a real slow store.
func lockDB(t *testing.T, path string) (release func()) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			_, _ = conn.ExecContext(context.Background(), "COMMIT")
			conn.Close()
			db.Close()
		})
	}
}

// fastFail shortens the SQLite busy wait so a locked store fails quickly,
// and says when the writer has asked it where it stands.
type fastFail struct {
	audit.Sink
	timeout    time.Duration
	once       sync.Once
	positioned chan struct{}
}

func newFastFail(s audit.Sink) *fastFail {
	return &fastFail{Sink: s, timeout: 50 * time.Millisecond, positioned: make(chan struct{})}
}

func (s *fastFail) Cursor(ctx context.Context, writer string) (uint64, error) {
	defer s.once.Do(func() { close(s.positioned) })
	return s.Sink.Cursor(ctx, writer)
}

func (s *fastFail) Write(ctx context.Context, recs []audit.Record) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.Sink.Write(ctx, recs)
}

func (s *fastFail) waitPositioned(t *testing.T) {
	t.Helper()
	select {
	case <-s.positioned:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer never asked the sink for its position")
	}
}

func TestOverflowDenyWhenSinkIsStuck(t *testing.T) {
	var ff *fastFail
	f := newFixture(t, audit.Options{Buffer: 20}, func(s audit.Sink) audit.Sink { ff = newFastFail(s); return ff })
	ff.waitPositioned(t)
	release := lockDB(t, f.path)
	defer release()
	var refused int
	for i := 0; i < 40; i++ {
		if err := f.w.Record(context.Background(), []audit.Record{sample(i)}); err != nil {
			if !errors.Is(err, audit.ErrUnavailable) {
				t.Fatalf("unexpected error %v", err)
			}
			refused++
		}
	}
	if refused != 20 {
		t.Fatalf("%d records refused, want 20 (buffer 20 of 40)", refused)
	}
	if st := f.w.Stats(); st.Overflows != 20 || st.Pending != 20 {
		t.Fatalf("stats %+v", st)
	}
	audittest.WaitUntil(t, "the stuck sink reported as failing", func() bool { return f.w.Stats().Failing[f.sink.Name()] })
	release()
	f.drain(t)
	if v := verified(t, f.reader(t)); !v.OK() || v.Records != 20 {
		t.Fatalf("after the store came back: %+v", v)
	}
}

func TestOverflowBlockWaitsForRoom(t *testing.T) {
	var ff *fastFail
	f := newFixture(t, audit.Options{Buffer: 5, Overflow: audit.OverflowBlock}, func(s audit.Sink) audit.Sink { ff = newFastFail(s); return ff })
	ff.waitPositioned(t)
	release := lockDB(t, f.path)
	defer release()
	for i := 0; i < 5; i++ {
		record(t, f.w, sample(i))
	}
	// Full: a Record with a deadline gives up at the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := f.w.Record(ctx, []audit.Record{sample(5)})
	cancel()
	if !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("full buffer with deadline: %v", err)
	}
	// Another waits, and goes through once the store is back.
	done := make(chan error, 1)
	go func() { done <- f.w.Record(context.Background(), []audit.Record{sample(6)}) }()
	audittest.WaitUntil(t, "the Record to wait for room", func() bool { return audit.Waiting(f.w) == 1 })
	select {
	case err := <-done:
		t.Fatalf("Record did not block: %v", err)
	default:
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Record still blocked after the store came back")
	}
	f.drain(t)
	if v := verified(t, f.reader(t)); !v.OK() || v.Records != 6 {
		t.Fatalf("%+v", v)
	}
}

// flaky fails its first n writes: the store is down, then returns.
type flaky struct {
	audit.Sink
	fails atomic.Int32
}

func (s *flaky) Write(ctx context.Context, recs []audit.Record) error {
	if s.fails.Add(-1) >= 0 {
		return errors.New("connection refused")
	}
	return s.Sink.Write(ctx, recs)
}

func TestOutageReplaysInOrderExactlyOnce(t *testing.T) {
	fl := &flaky{}
	fl.fails.Store(3)
	f := newFixture(t, audit.Options{BatchSize: 10, SegmentRecords: 7}, func(s audit.Sink) audit.Sink { fl.Sink = s; return fl })
	for i := 0; i < 100; i++ {
		record(t, f.w, sample(i))
	}
	f.drain(t)
	if v := verified(t, f.reader(t)); !v.OK() || v.Records != 100 {
		t.Fatalf("after outage: %+v", v)
	}
	// Segments the sink finished with were removed; the head stays.
	segs, _ := audit.Segments(filepath.Join(f.dir, "wal"))
	if len(segs) != 1 {
		t.Fatalf("%d segments left, want the head only", len(segs))
	}
}

func TestRestartResumesChainAndReplaysUnstored(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "d.db")
	walDir := filepath.Join(dir, "wal")
	fl := &flaky{Sink: openSQLite(t, dbPath)}
	fl.fails.Store(1 << 30) // the store is down for this whole run
	w, err := audit.Open(audit.Options{Dir: walDir, SegmentRecords: 4}, fl)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		record(t, w, sample(i))
	}
	if err := w.Close(cancelled()); err == nil {
		t.Fatal("Close reported success while the store was down")
	}

	// A torn frame at the tail, as a crash inside write(2) leaves.
	segs, _ := audit.Segments(walDir)
	head := filepath.Join(walDir, audit.SegmentName(segs[len(segs)-1]))
	fh, _ := os.OpenFile(head, os.O_WRONLY|os.O_APPEND, 0)
	_, _ = fh.Write([]byte{0, 0, 1, 0, 9, 9})
	fh.Close()

	w2, err := audit.Open(audit.Options{Dir: walDir, SegmentRecords: 4}, openSQLite(t, dbPath))
	if err != nil {
		t.Fatal(err)
	}
	if w2.ID() != w.ID() {
		t.Fatalf("writer id changed across restart: %s -> %s", w.ID(), w2.ID())
	}
	for i := 10; i < 15; i++ {
		record(t, w2, sample(i))
	}
	if err := w2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := openSQLite(t, dbPath)
	defer r.Close()
	if v := verified(t, r); !v.OK() || v.Records != 15 {
		t.Fatalf("after restart: %+v", v)
	}
}

func TestOneProcessPerLog(t *testing.T) {
	dir := t.TempDir()
	w, err := audit.Open(audit.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	if _, err := audit.Open(audit.Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second writer on the same log: %v", err)
	}
}

// blockedCursor is a sink that is down at start-up: Cursor never answers
// until released.
type blockedCursor struct {
	audit.Sink
	release chan struct{}
}

func (b blockedCursor) Cursor(ctx context.Context, writer string) (uint64, error) {
	select {
	case <-b.release:
		return b.Sink.Cursor(ctx, writer)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// TestRestartWithASinkDownStillRecords: after a restart, a sink that has
// not answered yet must not make the writer refuse records that the log
// has room for (every earlier record was stored).
func TestRestartWithASinkDownStillRecords(t *testing.T) {
	dir := t.TempDir()
	dbPath, walDir := filepath.Join(dir, "d.db"), filepath.Join(dir, "wal")
	w, err := audit.Open(audit.Options{Dir: walDir, SegmentRecords: 5}, openSQLite(t, dbPath))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		record(t, w, sample(i))
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	down := blockedCursor{Sink: openSQLite(t, dbPath), release: make(chan struct{})}
	w2, err := audit.Open(audit.Options{Dir: walDir, Buffer: 10}, down)
	if err != nil {
		t.Fatal(err)
	}
	for i := 30; i < 33; i++ {
		if err := w2.Record(context.Background(), []audit.Record{sample(i)}); err != nil {
			t.Fatalf("record %d refused while the sink was still starting: %v", i, err)
		}
	}
	close(down.release)
	if err := w2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := openSQLite(t, dbPath)
	defer r.Close()
	if v := verified(t, r); !v.OK() || v.Records != 33 {
		t.Fatalf("%+v", v)
	}
}

// countingSink counts the records it stores.
type countingSink struct {
	audit.Sink
	n atomic.Int64
}

func (c *countingSink) Write(ctx context.Context, recs []audit.Record) error {
	if err := c.Sink.Write(ctx, recs); err != nil {
		return err
	}
	c.n.Add(int64(len(recs)))
	return nil
}

// TestSinksSeeOnlyFsyncedRecords: a store must never hold a record the
// log could lose to a power cut, or after one the writer would reuse its
// sequence number. On a fake clock, the sink's feeder looks at the log
// again and again, and finds nothing it may read until the log is
// fsynced: at the sync interval, or at Close.
func TestSinksSeeOnlyFsyncedRecords(t *testing.T) {
	clk := audittest.NewClock(audittest.T0)
	cs := &countingSink{}
	f := newFixture(t, audit.Options{SyncInterval: time.Hour, Linger: -1, Now: clk.Now, After: clk.After},
		func(s audit.Sink) audit.Sink { cs.Sink = s; return cs })
	clk.WaitTimers(t, 2) // the sync loop and the idle feeder
	for i := 0; i < 20; i++ {
		record(t, f.w, sample(i))
	}
	for range 3 {
		clk.Advance(time.Second) // the feeder's idle check
		clk.WaitTimers(t, 2)     // the feeder looked, and waits again
	}
	if n := cs.n.Load(); n != 0 || audit.Synced(f.w) != 0 {
		t.Fatalf("the sink stored %d records before the log was fsynced (to %d)", n, audit.Synced(f.w))
	}
	clk.Advance(time.Hour)
	audittest.WaitUntil(t, "the sink to store the fsynced records", func() bool { return cs.n.Load() == 20 })

	for i := 20; i < 25; i++ {
		record(t, f.w, sample(i))
	}
	f.drain(t)
	if n := cs.n.Load(); n != 25 {
		t.Fatalf("after Close the sink has %d records, want 25", n)
	}
}

// TestFsyncIsNeverOnTheCheckPath: with the log's fsync held up, Records go
// on (rotations included: a segment closed on the Check path is fsynced by
// the sync loop, not by the rotation), and the sink gets none of them until
// the fsync is done.
func TestFsyncIsNeverOnTheCheckPath(t *testing.T) {
	var hold atomic.Bool
	held, resume := make(chan struct{}, 1), make(chan struct{})
	var resumeOnce sync.Once
	unblock := func() { resumeOnce.Do(func() { close(resume) }) }
	defer unblock()
	fsync := func(f *os.File) error {
		if hold.Load() {
			select {
			case held <- struct{}{}:
			default:
			}
			<-resume
		}
		return f.Sync()
	}
	cs := &countingSink{}
	f := newFixture(t, audit.WithFsync(audit.Options{SegmentRecords: 2, SyncInterval: time.Hour, Linger: -1}, fsync),
		func(s audit.Sink) audit.Sink { cs.Sink = s; return cs })
	t.Cleanup(unblock) // before the fixture's Close, which waits for the sync loop
	hold.Store(true)
	wait := func(c <-chan struct{}, failure string) {
		t.Helper()
		select {
		case <-c:
		case <-time.After(10 * time.Second):
			t.Fatal(failure)
		}
	}
	rotated, more := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := range 10 {
			if i == 3 { // the third rotated, and the sync loop starts an fsync
				close(rotated)
				<-more
			}
			if err := f.w.Record(context.Background(), []audit.Record{sample(i)}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	wait(held, "a rotation did not start an fsync")
	wait(rotated, "the Record that rotated waits for the fsync of the segment it closed")
	close(more) // three more rotations, with the fsync still held up
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Record waits for an fsync")
	}
	if st := f.w.Stats(); st.Written != 10 || cs.n.Load() != 0 || audit.Synced(f.w) != 0 {
		t.Fatalf("stats %+v, %d records in the sink, synced to %d: want 10 written, none in the sink", st, cs.n.Load(), audit.Synced(f.w))
	}
	hold.Store(false)
	unblock()
	f.drain(t)
	if n := cs.n.Load(); n != 10 {
		t.Fatalf("the sink has %d records, want 10", n)
	}
	if v := verified(t, f.reader(t)); !v.OK() || v.Records != 10 {
		t.Fatalf("%+v", v)
	}
}

// TestRecoveryDropsEmptySegments: an empty segment left by a crash right
// after a rotation, or after a failed write, must not stall a sink.
func TestRecoveryDropsEmptySegments(t *testing.T) {
	dir := t.TempDir()
	dbPath, walDir := filepath.Join(dir, "d.db"), filepath.Join(dir, "wal")
	fl := &flaky{Sink: openSQLite(t, dbPath)}
	fl.fails.Store(1 << 30) // nothing stored in the first run
	w, err := audit.Open(audit.Options{Dir: walDir, SegmentRecords: 5}, fl)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 12; i++ {
		record(t, w, sample(i))
	}
	_ = w.Close(cancelled())
	// Stray empty segments: one inside the log, one after its end.
	for _, first := range []uint64{3, 13} {
		if err := os.WriteFile(filepath.Join(walDir, audit.SegmentName(first)), nil, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	w2, err := audit.Open(audit.Options{Dir: walDir, SegmentRecords: 5}, openSQLite(t, dbPath))
	if err != nil {
		t.Fatal(err)
	}
	record(t, w2, sample(12))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w2.Close(ctx); err != nil {
		t.Fatalf("the sink did not get every record: %v", err)
	}
	r := openSQLite(t, dbPath)
	defer r.Close()
	if v := verified(t, r); !v.OK() || v.Records != 13 {
		t.Fatalf("%+v", v)
	}
}

// tamper runs SQL against the fixture's store, as someone with sqlite3
// and write access.
func tamper(t *testing.T, f *fixture, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// TestCheckHeadsFindsADeletedTail: deleting the last records of a chain
// leaves an internally consistent chain; only the writer's knowledge of
// how far it stored shows the loss.
func TestCheckHeadsFindsADeletedTail(t *testing.T) {
	f := newFixture(t, audit.Options{})
	for i := 1; i <= 10; i++ {
		record(t, f.w, sample(i))
	}
	f.drain(t)
	head, _ := f.w.Stored(f.sink.Name())
	if head != 10 {
		t.Fatalf("the sink stored up to %d, want 10", head)
	}
	heads := map[string]uint64{f.w.ID(): head}
	tamper(t, f, "DELETE FROM decisions WHERE seq >= 9")
	v := verified(t, f.reader(t))
	if !v.OK() {
		t.Fatalf("a deleted tail leaves an internally consistent chain; verify said %+v", v.Breaks)
	}
	v.CheckHeads(heads)
	if v.OK() || v.Breaks[0].Seq != 9 || !strings.Contains(v.Breaks[0].Problem, "records 9..10 at the end") {
		t.Fatalf("deleted tail not reported: %+v", v.Breaks)
	}
	tamper(t, f, "DELETE FROM decisions")
	v = verified(t, f.reader(t))
	v.CheckHeads(heads)
	if v.OK() || !strings.Contains(v.Breaks[0].Problem, "whole chain") {
		t.Fatalf("deleted chain not reported: %+v", v.Breaks)
	}
}

// keeper is a sink that keeps every record it is given, as the Parquet
// sink keeps a segment's rows until it closes.
type keeper struct {
	mu   sync.Mutex
	recs []audit.Record
}

func (k *keeper) Name() string                                   { return "keeper" }
func (k *keeper) Cursor(context.Context, string) (uint64, error) { return 0, nil }
func (k *keeper) Close() error                                   { return nil }
func (k *keeper) Write(_ context.Context, recs []audit.Record) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.recs = append(k.recs, recs...)
	return nil
}

// The feeder decodes a batch without copying its strings, and takes each
// record's hash from the next one's PrevHash: what a sink keeps must stay
// what was recorded, batch after batch, and every hash must be the
// record's own.
func TestSinksKeepWhatWasRecorded(t *testing.T) {
	k := &keeper{}
	w, err := audit.Open(audit.Options{Dir: t.TempDir(), BatchSize: 7, Linger: -1, SyncInterval: time.Millisecond}, k)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000 // several arenas' worth
	want := make([]audit.Record, n)
	for i := range want {
		want[i] = sample(i)
		want[i].Path = strings.Repeat("/p", 20+i%50)
		if err := w.Record(context.Background(), want[i:i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(k.recs) != n {
		t.Fatalf("the sink got %d records, want %d", len(k.recs), n)
	}
	prev := ""
	for i, got := range k.recs {
		if got.Hash != audit.ComputeHash(&got) || got.PrevHash != prev {
			t.Fatalf("record %d: hash %s prev %s, want %s after %s", got.Seq, got.Hash, got.PrevHash, audit.ComputeHash(&got), prev)
		}
		prev = got.Hash
		if got.Time.Equal(want[i].Time) {
			got.Time = want[i].Time
		}
		if got != want[i] { // Record filled in want's Writer, Seq and hashes
			t.Fatalf("record %d: the sink holds\n%+v\nwant\n%+v", i+1, got, want[i])
		}
	}
}

// Concurrent Checks share groups, and groups are reused: each caller gets
// its own outcome (a record over the frame limit fails alone, in whatever
// group it joined), and the sink gets exactly the records that succeeded,
// chained without a gap.
func TestGroupsGiveEachCheckItsOwnOutcome(t *testing.T) {
	k := &keeper{}
	w, err := audit.Open(audit.Options{Dir: t.TempDir(), Linger: -1, SyncInterval: time.Millisecond}, k)
	if err != nil {
		t.Fatal(err)
	}
	huge := "/" + strings.Repeat("a", audit.MaxFrame)
	const callers, each = 32, 300
	var wg sync.WaitGroup
	var refused atomic.Int64
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r := sample(c*each + i)
				big := c < 4 && i == each/2
				if big {
					r.Path = huge
				}
				err := w.Record(context.Background(), []audit.Record{r})
				switch {
				case big && !errors.Is(err, audit.ErrUnavailable):
					t.Errorf("caller %d: the oversized record gave %v, want ErrUnavailable", c, err)
				case big:
					refused.Add(1)
				case err != nil:
					t.Errorf("caller %d record %d: %v", c, i, err)
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := callers*each - int(refused.Load()); len(k.recs) != want || refused.Load() != 4 {
		t.Fatalf("the sink got %d records and %d were refused, want %d and 4", len(k.recs), refused.Load(), want)
	}
	seen := map[string]bool{}
	prev := ""
	for i, r := range k.recs {
		if r.Seq != uint64(i+1) || r.PrevHash != prev || r.Hash != audit.ComputeHash(&r) || seen[r.RequestID] || r.Path == huge {
			t.Fatalf("record %d (seq %d, request %s) breaks the chain or repeats", i+1, r.Seq, r.RequestID)
		}
		seen[r.RequestID], prev = true, r.Hash
	}
}
