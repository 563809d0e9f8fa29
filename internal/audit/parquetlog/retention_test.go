package parquetlog

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// TestRetentionRemovesWholeDaysAndVerifyTellsItFromDeletion: retention
// removes the day directories older than the retention, leaving each
// writer's checkpoint; verify then finds the chain intact from the
// checkpoint on. The same days deleted by hand are a deletion.
func TestRetentionRemovesWholeDaysAndVerifyTellsItFromDeletion(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	// 4 days of records, 3,000 a day, for two writers.
	a := chain("writer-a", 0, "", 12000, start, 4*24*time.Hour/12000, nil)
	b := chain("writer-b", 0, "", 6000, start, 4*24*time.Hour/6000, nil)
	writeAll(t, dir, Options{MaxRecords: 1000}, a, b)
	days := func() []string {
		m, _ := filepath.Glob(filepath.Join(dir, "day=*"))
		for i := range m {
			m[i] = filepath.Base(m[i])
		}
		return m
	}
	if got := days(); len(got) != 5 { // 12:00 on the 1st to 12:00 on the 5th
		t.Fatalf("days %v", got)
	}
	tampered := t.TempDir()
	if err := os.CopyFS(tampered, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}

	now := start.Add(4 * 24 * time.Hour)
	removed, err := Prune(context.Background(), Dir(dir), 48*time.Hour, now, "") // keep the 3rd (from 12:00), 4th and 5th
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(removed, ",") != "day=2026-11-01,day=2026-11-02" && strings.Join(removed, ",") != "day=2026-11-02,day=2026-11-01" {
		t.Fatalf("removed %v, want the 1st and the 2nd", removed)
	}
	if got := days(); len(got) != 3 {
		t.Fatalf("left %v", got)
	}
	v := verify(t, dir)
	if !v.OK() {
		t.Fatalf("verify after retention: %v", v.Breaks)
	}
	if v.Checkpoints["writer-a"].Seq == 0 || v.Checkpoints["writer-b"].Seq == 0 {
		t.Fatalf("checkpoints %v", v.Checkpoints)
	}
	// What verify still reads starts right after the checkpoints.
	st, _ := OpenExisting(dir, Options{})
	got, _ := query(t, st, audit.Filter{})
	if want := 12000 - int(v.Checkpoints["writer-a"].Seq) + 6000 - int(v.Checkpoints["writer-b"].Seq); len(got) != want {
		t.Errorf("%d records after retention, want %d", len(got), want)
	}

	// The same days removed by hand, without checkpoints: deletions.
	os.RemoveAll(filepath.Join(tampered, "day=2026-11-01"))
	os.RemoveAll(filepath.Join(tampered, "day=2026-11-02"))
	v = verify(t, tampered)
	if v.OK() || len(v.Breaks) != 2 || !strings.Contains(v.Breaks[0].Problem, "were deleted") {
		t.Fatalf("days deleted by hand: want a deletion per writer, got %v", v.Breaks)
	}

	// Retention runs from the sink, at most hourly, and never fails a write.
	s, err := Open(dir, Options{Retention: 24 * time.Hour, Now: func() time.Time { return now.Add(24 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	last := a[len(a)-1]
	more := chain("writer-a", last.Seq, last.Hash, 10, now.Add(24*time.Hour), time.Second, nil)
	if _, err := s.Cursor(context.Background(), "writer-a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), more); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := days(); len(got) != 2 || got[0] != "day=2026-11-05" || got[1] != "day=2026-11-06" {
		t.Fatalf("after the sink's retention: %v", got)
	}
	if v := verify(t, dir); !v.OK() {
		t.Fatalf("verify after the sink's retention: %v", v.Breaks)
	}
}
