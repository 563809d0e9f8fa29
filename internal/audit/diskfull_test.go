package audit_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
)

// syncBuffer is a log sink safe for the writer's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDiskFull: the write-ahead log on a small file system that fills
// while its sink is down, all in its head segment. Decisions are refused
// (fail closed), counted, and logged once; the free space is reported.
// Once a little room is made (64 KB) and the sink is back and has stored
// everything, the log compacts its head to the newest record, so that the
// disk is free again and decisions are recorded. It mounts a tmpfs,
// and is skipped where mounting is not allowed.
func TestDiskFull(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	logs := &syncBuffer{}
	dbPath := filepath.Join(t.TempDir(), "d.db")
	fl := &flaky{Sink: openSQLite(t, dbPath)}
	fl.fails.Store(1 << 30) // down
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 64<<10), 0o640); err != nil {
		t.Fatal(err)
	}
	w, err := audit.Open(audit.Options{Dir: filepath.Join(mnt, "wal"), Linger: -1,
		SyncInterval: 5 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil))}, fl)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(cancelled())
	big := func(i int) audit.Record {
		r := audittest.Sample(i)
		r.Path = "/" + strings.Repeat("p", 2000) // about 2 KB a record: the disk fills in about 1,000
		return r
	}
	n, refused := 0, 0
	for ; refused < 5 && n < 100_000; n++ {
		if err := w.Record(context.Background(), []audit.Record{big(n)}); err != nil {
			if !errors.Is(err, audit.ErrUnavailable) {
				t.Fatal(err)
			}
			refused++
		}
	}
	s := w.Stats()
	if refused == 0 || s.WALFailures < uint64(refused) {
		t.Fatalf("after %d records, %d refused, %d counted: want the full disk to refuse records, and count them", n, refused, s.WALFailures)
	}
	if s.WALFreeBytes < 0 || s.WALFreeBytes > 64<<10 {
		t.Errorf("free space reported %d bytes on a full disk", s.WALFreeBytes)
	}
	if c := strings.Count(logs.String(), "the write-ahead log cannot be written"); c != 1 {
		t.Errorf("the failure was logged %d times, want once per episode:\n%s", c, logs.String())
	}

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	fl.fails.Store(0) // back
	// With no decision coming to roll it, the stored head is compacted.
	audittest.WaitUntil(t, "every record stored and the disk freed", func() bool {
		s := w.Stats()
		return s.Pending == 0 && s.WALFreeBytes > 1<<20
	})
	audittest.WaitUntil(t, "records taken again", func() bool {
		err := w.Record(context.Background(), []audit.Record{big(n)})
		n++
		return err == nil
	})
	if !strings.Contains(logs.String(), "the write-ahead log is written again") {
		t.Error("the recovery was not logged")
	}
	// A restart finds the chain where it stands, in the compacted head.
	written := w.Stats().Written
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	w2, err := audit.Open(audit.Options{Dir: filepath.Join(mnt, "wal"), Linger: -1}, openSQLite(t, dbPath))
	if err != nil {
		t.Fatal(err)
	}
	record(t, w2, big(n))
	if err := w2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := w2.Stats(); got.Written != written+1 || got.Forks != 0 {
		t.Errorf("after a restart: record %d, %d forks; want record %d of the same chain", got.Written, got.Forks, written+1)
	}
}
