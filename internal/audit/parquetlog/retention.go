package parquetlog

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
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

func checkpointName(writer string) string { return checkpointDir + "/" + writerFile(writer) + ".json" }

// readCheckpoints returns every writer's retention checkpoint.
func readCheckpoints(ctx context.Context, st Storage) (map[string]audit.Checkpoint, error) {
	out := map[string]audit.Checkpoint{}
	objs, err := st.List(ctx, checkpointDir+"/")
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		name, ok := strings.CutSuffix(strings.TrimPrefix(o.Name, checkpointDir+"/"), ".json")
		if !ok || strings.Contains(name, "/") {
			continue
		}
		writer, err := url.PathUnescape(name)
		if err != nil {
			continue
		}
		b, err := readObject(ctx, st, o.Name)
		if err != nil {
			return nil, fmt.Errorf("parquet decision log: checkpoint %s: %w", o.Name, err)
		}
		var cp checkpointFile
		if err := json.Unmarshal(b, &cp); err != nil {
			return nil, fmt.Errorf("parquet decision log: checkpoint %s: %w", o.Name, err)
		}
		out[writer] = audit.Checkpoint{Seq: cp.Seq, Hash: cp.Hash}
	}
	return out, nil
}

// Prune removes, from st, the days wholly older than retention at now,
// checkpointing each writer's chain first: every writer's segments, or
// only writer's when it is not "" (a replica prunes its own chain in a
// fleet's bucket). It returns the days removed (as their directories:
// "day=2026-11-01", or "cluster=NAME/day=...").
func Prune(ctx context.Context, st Storage, retention time.Duration, now time.Time, writer string) ([]string, error) {
	if retention <= 0 {
		return nil, nil
	}
	cutoff := now.Add(-retention)
	objs, err := st.List(ctx, "")
	if err != nil {
		return nil, err
	}
	cps, err := readCheckpoints(ctx, st)
	if err != nil {
		return nil, err
	}
	// The newest record of each writer in the days that go, and every
	// object in them.
	last := map[string]segmentRef{}
	days := map[string][]string{}
	for _, o := range objs {
		dir, ok := dayOf(o.Name)
		if !ok {
			continue
		}
		day, _ := parseDayDir(dir[strings.LastIndexByte("/"+dir, '/'):])
		if day.Add(24 * time.Hour).After(cutoff) {
			continue
		}
		ref, isSeg, _ := parseObjectName(o.Name)
		if writer != "" && (!isSeg || ref.writer != writer) {
			continue
		}
		days[dir] = append(days[dir], o.Name)
		if isSeg {
			if l, seen := last[ref.writer]; !seen || ref.last > l.last {
				last[ref.writer] = ref
			}
		}
	}
	for w, ref := range last {
		if ref.last <= cps[w].Seq {
			continue
		}
		seg, err := openSegment(ctx, st, ref)
		if err != nil {
			return nil, fmt.Errorf("retention: %w", err)
		}
		b, _ := json.Marshal(checkpointFile{Seq: seg.meta.LastSeq, Hash: seg.meta.LastHash})
		seg.close()
		if err := st.Put(ctx, checkpointName(w), b); err != nil {
			return nil, fmt.Errorf("retention: checkpoint of writer %s: %w", w, err)
		}
	}
	var removed []string
	for dir, names := range days {
		if err := st.Remove(ctx, names...); err != nil {
			return removed, fmt.Errorf("retention: %w", err)
		}
		removed = append(removed, dir)
	}
	slices.Sort(removed)
	return removed, nil
}

// dayOf returns the day directory an object is in.
func dayOf(name string) (string, bool) {
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return "", false
	}
	dir := name[:i]
	parts := strings.Split(dir, "/")
	switch {
	case len(parts) == 1:
	case len(parts) == 2 && strings.HasPrefix(parts[0], clusterPrefix):
	default:
		return "", false
	}
	if _, ok := parseDayDir(parts[len(parts)-1]); !ok {
		return "", false
	}
	return dir, true
}
