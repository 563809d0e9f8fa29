package audit_test

import (
	"context"
	"errors"
	"fmt"
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

// TestSinkAheadOfTheLogStartsANewChain: when the store holds records of
// this chain that the write-ahead log lost (its directory replaced, say),
// new records would reuse their sequence numbers and an idempotent store
// would drop them as already stored. The writer becomes a new one, and
// its records are chained under it: none is lost, and both chains verify.
func TestSinkAheadOfTheLogStartsANewChain(t *testing.T) {
	dir := t.TempDir()
	dbPath, walDir := filepath.Join(dir, "d.db"), filepath.Join(dir, "wal")
	w, err := audit.Open(audit.Options{Dir: walDir}, openSQLite(t, dbPath))
	if err != nil {
		t.Fatal(err)
	}
	old := w.ID()
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
	// position, and must not then be taken for stored.
	w2, err := audit.Open(audit.Options{Dir: walDir, Linger: -1}, openSQLite(t, dbPath))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 15 {
		record(t, w2, sample(100+i))
	}
	if err := w2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if w2.ID() == old || w2.Stats().Forks != 1 {
		t.Errorf("writer %s (was %s), %d forks: want a new writer after one fork", w2.ID(), old, w2.Stats().Forks)
	}
	if id, _ := audit.LogWriter(walDir); id != w2.ID() {
		t.Errorf("the log names writer %s, want %s", id, w2.ID())
	}
	r := openSQLite(t, dbPath)
	defer r.Close()
	if got := queryAll(t, r, audit.Filter{}); len(got) != 25 {
		t.Fatalf("the store holds %d records, want both runs' 25", len(got))
	}
	if v := verified(t, r); !v.OK() || v.Writers[old] != 10 || v.Writers[w2.ID()] != 15 {
		t.Errorf("verify: %+v", v)
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

// TestForkSQLite: two writers from one copied data directory into one
// SQLite file lose nothing, and the fork is reported.
func TestForkSQLite(t *testing.T) {
	for _, ahead := range []bool{false, true} {
		t.Run(fmt.Sprintf("ahead=%v", ahead), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "d.db")
			audittest.Fork(t, audittest.ForkStore{
				Sink: func(t *testing.T, _ string) audit.Sink { return openSQLite(t, path) },
				Reader: func(t *testing.T) audit.Store {
					st := openSQLite(t, path)
					t.Cleanup(func() { st.Close() })
					return st
				},
			}, ahead)
		})
	}
}
