// Package duckdbtest runs DuckDB, for tests, as an independent reader of
// the decision log's Parquet segments: a reader nobody here wrote, so that
// "readable by standard engines" is checked, not assumed.
//
// DuckDB comes from the npm registry (the @duckdb/node-api package, with
// its prebuilt engine for this platform), installed once into
// $HOME/.cache/egress-authz/duckdb-VERSION and run with Node.js. A test is
// skipped, saying why, only where Node.js or the package cannot be had.
package duckdbtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Version is the @duckdb/node-api release the tests run.
const Version = "1.5.6-r.1"

// script runs one SQL statement and prints its rows as JSON objects
// (DuckDB's own JSON rendering: BIGINTs as strings, timestamps as text).
const script = `import { DuckDBInstance } from '@duckdb/node-api';
const inst = await DuckDBInstance.create(':memory:');
const con = await inst.connect();
const r = await con.runAndReadAll(process.env.DUCKDB_SQL);
process.stdout.write(JSON.stringify(r.getRowObjectsJson()));
`

var (
	once    sync.Once
	dir     string
	initErr error
)

// install puts the package into the cache directory unless it is there.
func install() (string, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return "", errors.New("node (Node.js) is not installed")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", errors.New("npm is not installed")
	}
	_ = node
	home, err := os.UserCacheDir()
	if err != nil {
		home = os.TempDir()
	}
	d := filepath.Join(home, "egress-authz", "duckdb-"+Version)
	if _, err := os.Stat(filepath.Join(d, "ready")); err == nil {
		return d, nil
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", err
	}
	// One installer at a time across test processes.
	lock, err := os.OpenFile(filepath.Join(d, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(d, "ready")); err == nil {
		return d, nil
	}
	if err := os.WriteFile(filepath.Join(d, "package.json"), []byte(`{"private":true,"type":"module"}`), 0o644); err != nil {
		return "", err
	}
	cmd := exec.Command(npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "@duckdb/node-api@"+Version)
	cmd.Dir = d
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm install @duckdb/node-api@%s: %v\n%s", Version, err, out)
	}
	if err := os.WriteFile(filepath.Join(d, "query.mjs"), []byte(script), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(d, "ready"), nil, 0o644); err != nil {
		return "", err
	}
	return d, nil
}

// Query runs sql in a fresh in-memory DuckDB and returns its rows. It
// skips the test when DuckDB cannot be had, and fails it when the query
// fails.
func Query(tb testing.TB, sql string) []map[string]any {
	tb.Helper()
	once.Do(func() { dir, initErr = install() })
	if initErr != nil {
		tb.Skipf("DuckDB is not available, so the segments are not checked with an independent reader: %v", initErr)
	}
	cmd := exec.Command("node", filepath.Join(dir, "query.mjs"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DUCKDB_SQL="+sql)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("duckdb: %v", err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			tb.Fatalf("duckdb: %s: %v\n%s", sql, err, stderr.String())
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		tb.Fatalf("duckdb: %s: no answer in 2 minutes", sql)
	}
	var rows []map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &rows); err != nil {
		tb.Fatalf("duckdb: %s: %v\n%s", sql, err, stdout.String())
	}
	return rows
}
