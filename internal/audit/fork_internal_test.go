package audit

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestForkCrashRecovery: a fork interrupted by a crash at each step of its
// staging and commit leaves, at the next Open, either the old chain whole
// (the staging was partial) or the new one whole.
func TestForkCrashRecovery(t *testing.T) {
	for _, step := range []string{"partial", "staged", "committed", "moved"} {
		t.Run(step, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "wal")
			w, err := Open(Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			old := w.ID()
			for i := range 5 {
				if err := w.Record(context.Background(), []Record{{Time: time.Unix(int64(i), 0), RequestID: "r", Decision: Allow}}); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			var recs []Record
			if err := ReadLog(dir, 2, func(r *Record) error { recs = append(recs, *r); return nil }); err != nil {
				t.Fatal(err)
			}
			id := "forked-1"
			if err := stageFork(dir, id, chainAgain(recs, id), (*os.File).Sync); err != nil {
				t.Fatal(err)
			}
			fd := filepath.Join(dir, forkDir)
			switch step {
			case "partial":
				must(t, os.Remove(filepath.Join(fd, writerIDFile)))
			case "committed":
				must(t, os.Rename(filepath.Join(fd, writerIDFile), filepath.Join(dir, writerIDFile)))
			case "moved":
				must(t, os.Rename(filepath.Join(fd, writerIDFile), filepath.Join(dir, writerIDFile)))
				segs, _ := segments(dir)
				for _, first := range segs {
					must(t, os.Remove(filepath.Join(dir, segmentName(first))))
				}
				must(t, os.Rename(filepath.Join(fd, forkSegment), filepath.Join(dir, forkSegment)))
			}
			w, err = Open(Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close(context.Background())
			wantID, wantSeq := id, uint64(3)
			if step == "partial" {
				wantID, wantSeq = old, 5
			}
			if w.ID() != wantID || w.Stats().Written != wantSeq {
				t.Errorf("after a crash %s: writer %s at record %d, want %s at %d", step, w.ID(), w.Stats().Written, wantID, wantSeq)
			}
			if _, err := os.Stat(fd); !os.IsNotExist(err) {
				t.Errorf("the fork directory is left: %v", err)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
