package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// target is a server under load and what is measured of it besides
// latency.
type target struct {
	name  string
	send  sender
	pid   int    // its process, for CPU time; 0: not measured
	admin string // egress-authz's admin address, for its metrics; "" for the no-op server
}

// round warms up, then measures one run. With a pid, the result holds the
// server's CPU time for the measured requests: sampled after the warm-up's
// work is done and again once the round's own is (see settle).
func round(ctx context.Context, t target, m *mix, l *load, mode string, rate float64, seed uint64) Result {
	var warm int64
	if l.warmup > 0 {
		c, _ := closedLoop(ctx, t.send, m, l.concurrency, l.warmup, seed+1000)
		warm = c.requests.Load()
	}
	settle(ctx, t)
	before, errBefore := sampleCPU(t.pid)
	var c *counts
	var d time.Duration
	if mode == "open" {
		c, d = openLoop(ctx, t.send, m, rate, l.duration, seed)
	} else {
		c, d = closedLoop(ctx, t.send, m, l.concurrency, l.duration, seed)
	}
	settle(ctx, t)
	after, errAfter := sampleCPU(t.pid)
	r := summarize(t.name, mode, c.hist, d, c.requests.Load(), c.errors.Load(), c.allowed.Load())
	r.Warmup = warm
	if err := errors.Join(errBefore, errAfter); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest: server CPU not measured:", err)
	} else if t.pid != 0 {
		r.setCPU(after.since(before))
	}
	return r
}

func sampleCPU(pid int) (cpuSample, error) {
	if pid == 0 {
		return cpuSample{}, nil
	}
	return procCPU(pid)
}

// settle waits until t has done the work that the requests it already
// answered gave it: it has gone idle, and its decision log has caught up
// with the write-ahead log or stays idle with records pending (a sink that
// waits for its timer, or for a segment to fill). A round's CPU time then
// includes storing the round's own records and none of the warm-up's. It
// watches the CPU time, which costs the server nothing, and reads the
// metrics only once the server is idle, because rendering them costs it
// about 2 ms of CPU. The no-op server has nothing left to do.
func settle(ctx context.Context, t target) {
	if t.admin == "" || t.pid == 0 {
		return
	}
	const (
		poll  = 100 * time.Millisecond
		quiet = 3 // idle polls with the same records pending: longer than SQLite's 200 ms group commit
		limit = 2 * time.Minute
	)
	start := time.Now()
	last, err := procCPU(t.pid)
	if err != nil {
		return
	}
	lastPending, still := -1.0, 0
	for time.Since(start) < limit {
		time.Sleep(poll)
		now, err := procCPU(t.pid)
		if err != nil {
			return
		}
		busy := now.since(last) >= poll/100 // 1 % of a core
		last = now
		if busy {
			still = 0
			continue
		}
		s, err := scrape(ctx, t.admin)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadtest: waiting for the decision log:", err)
			return
		}
		pending, ok := s[metricPending]
		if !ok || pending == 0 {
			return
		}
		if pending == lastPending {
			still++
		} else {
			still = 1
		}
		if still >= quiet {
			return
		}
		lastPending = pending
		if last, err = procCPU(t.pid); err != nil { // the scrape's own CPU is not the sink's
			return
		}
	}
	fmt.Fprintf(os.Stderr, "loadtest: %s still busy or with records pending after %s; measuring anyway\n", t.name, limit)
}

// logSpec is one value of compare's --audit: the decision log a server
// runs with, and where its files are.
type logSpec string

// parseLogs splits compare's --audit value into its logs.
func parseLogs(v string) ([]logSpec, error) {
	var ls []logSpec
	seen := map[logSpec]bool{}
	for _, s := range strings.Split(v, ",") {
		l := logSpec(strings.TrimSpace(s))
		if l == "" {
			return nil, fmt.Errorf("--audit %q: an empty decision log", v)
		}
		if seen[l] {
			return nil, fmt.Errorf("--audit %q: %s twice", v, l)
		}
		seen[l] = true
		ls = append(ls, l)
	}
	return ls, nil
}

// label names the log in reports: its kind, never a DSN's credentials.
func (l logSpec) label() string {
	s := string(l)
	if scheme, _, ok := strings.Cut(s, "://"); ok {
		return scheme
	}
	if kind, _, ok := strings.Cut(s, ":"); ok {
		return kind
	}
	return s
}

// dsn is the --audit value egress-authz is started with: sqlite and
// parquet keep their files in the server's data directory, anything else
// is passed as it is.
func (l logSpec) dsn(dataDir string) string {
	switch l {
	case "sqlite":
		return "sqlite:" + filepath.Join(dataDir, "decisions.db")
	case "parquet":
		return "parquet:" + filepath.Join(dataDir, "decisions")
	}
	return string(l)
}

// storeBytes returns the size of the decision log's files in dataDir, once
// the server has stopped (a graceful stop checkpoints SQLite and closes the
// open Parquet segment): the database and its -wal (its -shm is an index of
// the -wal, not data), or every file under the segments' directory but the
// rule-set archive, which costs once per rule-set version, not per
// decision (archive; SQLite keeps it in the database). ok is false for a
// log whose files compare does not place.
func (l logSpec) storeBytes(dataDir string) (n, archive int64, ok bool, err error) {
	switch l {
	case "sqlite":
		db := filepath.Join(dataDir, "decisions.db")
		for _, f := range []string{db, db + "-wal"} {
			st, err := os.Stat(f)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return 0, 0, true, fmt.Errorf("decision log size: %w", err)
			}
			n += st.Size()
		}
		return n, 0, true, nil
	case "parquet":
		dir := filepath.Join(dataDir, "decisions")
		all, err := dirBytes(dir)
		if err != nil {
			return 0, 0, true, err
		}
		archive, err := dirBytes(filepath.Join(dir, "_rulesets"))
		return all - archive, archive, true, err
	}
	return 0, 0, false, nil
}

// dirBytes is the size of the regular files under dir (0 if it does not
// exist).
func dirBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", dir, err)
	}
	return n, nil
}
