package parquetlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// Retention removes whole days. Before a day's directory goes, each
// writer's last record in it is kept as a checkpoint (in
// DIR/_checkpoints/<writer>.json), so that verify tells retention from
// deletion: the writer's chain continues from the checkpoint. Like the
// PostgreSQL store's checkpoint table, the checkpoint files must be
// trusted: whoever can write them can hide a deletion of whole days.

const checkpointDir = "_checkpoints"

type checkpointFile struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

func checkpointPath(dir, writer string) string {
	return filepath.Join(dir, checkpointDir, writerFile(writer)+".json")
}

// readCheckpoints returns every writer's retention checkpoint.
func readCheckpoints(dir string) (map[string]audit.Checkpoint, error) {
	out := map[string]audit.Checkpoint{}
	entries, err := os.ReadDir(filepath.Join(dir, checkpointDir))
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("parquet decision log: %w", err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		writer, err := url.PathUnescape(name)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, checkpointDir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("parquet decision log: %w", err)
		}
		var cp checkpointFile
		if err := json.Unmarshal(b, &cp); err != nil {
			return nil, fmt.Errorf("parquet decision log: checkpoint %s: %w", e.Name(), err)
		}
		out[writer] = audit.Checkpoint{Seq: cp.Seq, Hash: cp.Hash}
	}
	return out, nil
}

// writeCheckpoint durably records that writer's chain continues after cp.
func writeCheckpoint(dir, writer string, cp audit.Checkpoint) error {
	path := checkpointPath(dir, writer)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	b, _ := json.Marshal(checkpointFile{Seq: cp.Seq, Hash: cp.Hash})
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// Prune removes the day directories wholly older than retention at now,
// checkpointing each writer's chain first. It returns the days removed.
func Prune(dir string, retention time.Duration, now time.Time) ([]string, error) {
	if retention <= 0 {
		return nil, nil
	}
	cutoff := now.Add(-retention)
	refs, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	cps, err := readCheckpoints(dir)
	if err != nil {
		return nil, err
	}
	// The newest record of each writer in the days that go.
	last := map[string]segmentRef{}
	days := map[string]bool{}
	for _, ref := range refs {
		if ref.day.Add(24 * time.Hour).After(cutoff) {
			continue
		}
		days[dayDir(ref.day)] = true
		if l, ok := last[ref.writer]; !ok || ref.last > l.last {
			last[ref.writer] = ref
		}
	}
	for writer, ref := range last {
		if ref.last <= cps[writer].Seq {
			continue
		}
		seg, err := openSegment(ref)
		if err != nil {
			return nil, fmt.Errorf("retention: %w", err)
		}
		cp := audit.Checkpoint{Seq: seg.meta.LastSeq, Hash: seg.meta.LastHash}
		seg.close()
		if err := writeCheckpoint(dir, writer, cp); err != nil {
			return nil, fmt.Errorf("retention: checkpoint of writer %s: %w", writer, err)
		}
	}
	// Empty day directories (from a crash before the first segment
	// closed) older than the cutoff go too.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if day, ok := parseDayDir(e.Name()); ok && !day.Add(24*time.Hour).After(cutoff) {
			days[e.Name()] = true
		}
	}
	var removed []string
	for day := range days {
		if err := os.RemoveAll(filepath.Join(dir, day)); err != nil {
			return removed, fmt.Errorf("retention: %w", err)
		}
		removed = append(removed, day)
	}
	if len(removed) > 0 {
		if err := syncDir(dir); err != nil {
			return removed, err
		}
	}
	return removed, nil
}
