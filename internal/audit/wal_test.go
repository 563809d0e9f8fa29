package audit_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
)

// TestCorruptFrameStopsTheSinkVisibly: a frame inside a segment that
// cannot be read (disk corruption) must not send the sink's reader round
// in circles: the records before it are stored, the sink is reported
// failing, and Close gives up at its deadline instead of hanging.
func TestCorruptFrameStopsTheSinkVisibly(t *testing.T) {
	dir := t.TempDir()
	dbPath, walDir := filepath.Join(dir, "d.db"), filepath.Join(dir, "wal")
	fl := &flaky{Sink: openSQLite(t, dbPath)}
	fl.fails.Store(1 << 30) // the first run stores nothing
	w, err := audit.Open(audit.Options{Dir: walDir, SegmentRecords: 10}, fl)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		record(t, w, sample(i))
	}
	_ = w.Close(cancelled())

	// Flip a byte inside record 5's payload, in the first (sealed) segment.
	seg := filepath.Join(walDir, audit.SegmentName(1))
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	offs, err := audit.FrameOffsets(seg)
	if err != nil {
		t.Fatal(err)
	}
	b[offs[4]+int64(audit.FrameHeader)+3] ^= 0xff
	if err := os.WriteFile(seg, b, 0o640); err != nil {
		t.Fatal(err)
	}

	// On a fake clock, the feeder's retries wait for the test: once it
	// waits on its backoff, beside the sync loop, it has met the bad frame.
	clk := audittest.NewClock(audittest.T0)
	st2 := openSQLite(t, dbPath)
	w2, err := audit.Open(audit.Options{Dir: walDir, SegmentRecords: 10, Linger: -1, Now: clk.Now, After: clk.After}, st2)
	if err != nil {
		t.Fatal(err)
	}
	clk.WaitTimers(t, 2)
	if !w2.Stats().Failing[st2.Name()] {
		t.Errorf("the sink is not reported failing: %+v", w2.Stats())
	}
	if stored, _ := w2.Stored(st2.Name()); stored != 4 {
		t.Errorf("the sink stored up to record %d, want 4 (the records before the corrupt one)", stored)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = w2.Close(ctx)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Close took %v with a 100 ms deadline", took)
	}
	if err == nil || !strings.Contains(err.Error(), "26 records not yet in sink "+st2.Name()) {
		t.Errorf("Close: %v, want the 26 records the sink could not get", err)
	}
}

// TestRecordOverTheFrameLimitIsRefused: a record whose encoding the reader
// would take for a torn frame is refused (its Check is denied), and the
// chain goes on without a gap.
func TestRecordOverTheFrameLimitIsRefused(t *testing.T) {
	f := newFixture(t, audit.Options{})
	record(t, f.w, sample(1))
	big := sample(2)
	big.Path = "/" + strings.Repeat("a", audit.MaxFrame)
	err := f.w.Record(context.Background(), []audit.Record{big})
	if !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("Record of a %d-byte path: %v, want ErrUnavailable", len(big.Path), err)
	}
	record(t, f.w, sample(3))
	f.drain(t)
	if v := verified(t, f.reader(t)); !v.OK() || v.Records != 2 {
		t.Fatalf("verify: %+v; want 2 records, intact", v)
	}
}

// TestSinkAheadOfTheLogIsNotWritten: when the store holds records of this
// chain that the write-ahead log lost (its directory replaced, say), new
// records would reuse their sequence numbers and an idempotent store would
// drop them as already stored. Nothing is written to that sink; the
// records wait in the log, and the sink is reported failing.
func TestSinkAheadOfTheLogIsNotWritten(t *testing.T) {
	dir := t.TempDir()
	dbPath, walDir := filepath.Join(dir, "d.db"), filepath.Join(dir, "wal")
	w, err := audit.Open(audit.Options{Dir: walDir}, openSQLite(t, dbPath))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		record(t, w, sample(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// The log loses its records but keeps its writer id.
	segs, _ := filepath.Glob(filepath.Join(walDir, "*.wal"))
	for _, s := range segs {
		if err := os.Remove(s); err != nil {
			t.Fatal(err)
		}
	}

	// More new records than the store holds: they catch up with its
	// position, and must not then be taken for stored. On a fake clock,
	// the feeder asks the sink again at each retry the test lets happen.
	clk := audittest.NewClock(audittest.T0)
	st := openSQLite(t, dbPath)
	w2, err := audit.Open(audit.Options{Dir: walDir, Now: clk.Now, After: clk.After}, st)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 15 {
		record(t, w2, sample(100+i))
	}
	clk.WaitTimers(t, 2) // the sync loop, and the feeder's backoff
	for range 4 {
		if !w2.Stats().Failing[st.Name()] {
			t.Fatalf("the sink is not reported failing: %+v", w2.Stats())
		}
		clk.Advance(10 * time.Second) // past the longest backoff and the sync interval
		clk.WaitTimers(t, 2)          // the feeder asked again, and waits again
	}
	if err := w2.Close(cancelled()); err == nil {
		t.Error("Close reported every record stored in a sink that took none")
	}
	r := openSQLite(t, dbPath)
	defer r.Close()
	got := queryAll(t, r, audit.Filter{})
	if len(got) != 10 {
		t.Fatalf("the store holds %d records, want the first run's 10", len(got))
	}
	left, _ := filepath.Glob(filepath.Join(walDir, "*.wal"))
	if len(left) == 0 {
		t.Error("the new records are no longer in the write-ahead log")
	}
}

// TestRecoveryRefusesToCutCorruptionInsideTheLog: a bad frame followed by
// good ones is not a torn tail. Recovery must not cut the acknowledged
// records after it; Open fails, naming the segment and offset, and leaves
// the file as it was. A torn tail is still cut.
func TestRecoveryRefusesToCutCorruptionInsideTheLog(t *testing.T) {
	for _, tc := range []struct {
		name    string
		damage  func(b []byte, frame3 int64) []byte
		opens   bool
		records int // in the log after a successful Open
	}{
		{"flipped_byte_in_record_3", func(b []byte, at int64) []byte { b[at+int64(audit.FrameHeader)+2] ^= 0xff; return b }, false, 0},
		{"cut_inside_record_10", func(b []byte, _ int64) []byte { return b[:len(b)-5] }, true, 9},
		{"zeros_after_record_10", func(b []byte, _ int64) []byte { return append(b, make([]byte, 4096)...) }, true, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w, err := audit.Open(audit.Options{Dir: dir, SegmentRecords: 100})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 10 {
				record(t, w, sample(i))
			}
			if err := w.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			seg := filepath.Join(dir, audit.SegmentName(1))
			b, _ := os.ReadFile(seg)
			offs, err := audit.FrameOffsets(seg)
			if err != nil {
				t.Fatal(err)
			}
			b = tc.damage(b, offs[2])
			if err := os.WriteFile(seg, b, 0o640); err != nil {
				t.Fatal(err)
			}

			w2, err := audit.Open(audit.Options{Dir: dir, SegmentRecords: 100})
			if !tc.opens {
				if err == nil {
					w2.Close(context.Background())
					t.Fatal("Open cut a corrupt log")
				}
				if !strings.Contains(err.Error(), audit.SegmentName(1)) || !strings.Contains(err.Error(), "corrupt at offset") {
					t.Errorf("error %q does not name the segment and offset", err)
				}
				if after, _ := os.ReadFile(seg); len(after) != len(b) {
					t.Errorf("the segment went from %d to %d bytes", len(b), len(after))
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer w2.Close(context.Background())
			if got := w2.Stats().Written; got != uint64(tc.records) {
				t.Errorf("the log holds records up to %d, want %d", got, tc.records)
			}
		})
	}
}
