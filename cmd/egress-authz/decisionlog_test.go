package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/internal/checkreq"
)

// load sends allowed Checks from several goroutines, each with a unique
// x-request-id, and remembers which request ids were answered allow.
type load struct {
	answered atomic.Int64
	failed   atomic.Int64 // gRPC errors: the server was going or gone

	mu      sync.Mutex
	allowed []string
	denied  int
	odd     []string // answers that are neither a proper allow nor a proper deny

	stop chan struct{}
	wg   sync.WaitGroup
}

// startLoad starts workers goroutines sending Checks to addr until stopped.
func startLoad(t *testing.T, addr, prefix string, workers int) *load {
	t.Helper()
	client := authv3.NewAuthorizationClient(authztest.Dial(t, addr))
	l := &load{stop: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				id := fmt.Sprintf("%s-%d-%d", prefix, w, i)
				req, err := checkreq.HTTP{Principal: checkoutID, Method: "POST", URL: "https://api.stripe.com/v1/charges", RequestID: id}.Build()
				if err != nil {
					panic(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, err := client.Check(ctx, req)
				cancel()
				if err != nil {
					l.failed.Add(1)
					time.Sleep(5 * time.Millisecond) // the server is going: do not spin
					continue
				}
				l.answered.Add(1)
				md := authztest.Metadata(resp)
				l.mu.Lock()
				switch {
				case md["request_id"] != id:
					l.odd = append(l.odd, fmt.Sprintf("%s: answered for request %q", id, md["request_id"]))
				case resp.GetStatus().GetCode() == int32(code.Code_OK) && md["decision"] == "allow":
					l.allowed = append(l.allowed, id)
				case resp.GetStatus().GetCode() == int32(code.Code_PERMISSION_DENIED) && md["decision"] == "deny":
					l.denied++
				default:
					l.odd = append(l.odd, fmt.Sprintf("%s: status %v, metadata %v", id, resp.GetStatus(), md))
				}
				l.mu.Unlock()
			}
		}()
	}
	t.Cleanup(l.halt)
	return l
}

// halt stops the workers and waits for them.
func (l *load) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// waitAnswered waits until at least n Checks were answered.
func (l *load) waitAnswered(t *testing.T, n int64) {
	t.Helper()
	eventually(t, 15*time.Second, 5*time.Millisecond, fmt.Sprintf("%d Checks answered", n), func() (bool, string) {
		return l.answered.Load() >= n, fmt.Sprintf("%d answered, %d failed", l.answered.Load(), l.failed.Load())
	})
}

// recordedRequestIDs returns how often each request id has an enforced
// record in the decision log dsn, as audit query reads it (with filters,
// the flags of audit query).
func recordedRequestIDs(t *testing.T, dir, dsn string, filters ...string) map[string]int {
	t.Helper()
	r := runCLI(t, dir, append([]string{"audit", "query", "--audit", dsn, "--format", "ndjson"}, filters...)...)
	if r.code != 0 {
		t.Fatalf("audit query: %s", r)
	}
	out := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if line == "" {
			continue
		}
		var rec struct {
			RequestID string `json:"request_id"`
			Enforced  bool   `json:"enforced"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("audit query: %v: %s", err, line)
		}
		if rec.Enforced {
			out[rec.RequestID]++
		}
	}
	return out
}

// checkAllRecorded fails the test unless every id in allowed is recorded
// exactly once.
func checkAllRecorded(t *testing.T, recorded map[string]int, allowed []string) {
	t.Helper()
	missing, twice := 0, 0
	for _, id := range allowed {
		switch n := recorded[id]; {
		case n == 0:
			if missing++; missing <= 5 {
				t.Errorf("allowed request %s is not in the decision log", id)
			}
		case n > 1:
			if twice++; twice <= 5 {
				t.Errorf("allowed request %s is in the decision log %d times", id, n)
			}
		}
	}
	if missing+twice > 0 {
		t.Errorf("%d of %d allowed requests missing from the decision log, %d recorded more than once", missing, len(allowed), twice)
	}
}

func verifyLog(t *testing.T, srv *proc, dsn string) {
	t.Helper()
	r := runCLI(t, srv.dir, "audit", "verify", "--audit", dsn)
	if r.code != 0 {
		t.Errorf("audit verify: want exit 0\n%s", r)
	} else {
		t.Logf("audit verify: %s", r.stdout)
	}
}

// TestGracefulShutdown sends SIGTERM while 8 clients send Checks: the
// server exits 0 within the grace period, every answer is a proper allow
// or deny, and every allow it answered is in the decision log afterwards
// (SIGTERM drains the log).
func TestGracefulShutdown(t *testing.T) {
	const grace = 5 * time.Second
	dir := t.TempDir()
	srv := startServer(t, dir, "--rules", examplesPath(t), "--shutdown-grace", grace.String())
	l := startLoad(t, srv.grpcAddr, "graceful", 8)
	l.waitAnswered(t, 200)

	code, took := srv.terminate(3 * grace)
	l.halt()
	t.Logf("exit %d %s after SIGTERM; %d answered (%d allow, %d deny), %d failed calls",
		code, took.Round(time.Millisecond), l.answered.Load(), len(l.allowed), l.denied, l.failed.Load())
	if code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", code)
	}
	if took > grace {
		t.Errorf("took %s to exit, longer than the %s grace period", took, grace)
	}
	for _, s := range l.odd {
		t.Errorf("improper answer: %s", s)
	}
	if len(l.allowed) == 0 {
		t.Fatal("no Check was allowed: the load did not reach the server")
	}
	checkAllRecorded(t, recordedRequestIDs(t, srv.dir, srv.auditDSN()), l.allowed)
	verifyLog(t, srv, srv.auditDSN())
}

// TestCrashLosesNoDecision is the decision log's promise: a decision that
// was returned is recorded, even when the process is killed (SIGKILL) under
// load before the record reached its store. Every allowed request is found
// by audit query at once (the Parquet log's readers add the write-ahead
// log's records no segment holds yet); the restarted server replays its
// write-ahead log, SIGTERM drains it, and every allowed request id is in
// the store exactly once, in an intact hash chain that continues across
// the crash.
//
// The default Parquet log holds the newest records in its open segment,
// so most are only in the write-ahead log at the kill. With the SQLite
// file locked by another writer (a stalled sink), every record is.
func TestCrashLosesNoDecision(t *testing.T) {
	for _, c := range []struct {
		name  string
		stall bool
	}{
		{"parquet_default", false},
		{"sqlite_sink_stalled", true},
	} {
		t.Run(c.name, func(t *testing.T) { crashTest(t, c.stall) })
	}
}

func crashTest(t *testing.T, stall bool) {
	start := time.Now()
	dir := t.TempDir()
	args := []string{"--rules", examplesPath(t)}
	dsn := "parquet:" + filepath.Join(dir, "data", "decisions")
	if stall {
		db := filepath.Join(dir, "data", "decisions.db")
		dsn = "sqlite:" + db
		args = append(args, "--audit", dsn)
	}
	srv := startServer(t, dir, args...)
	var release func()
	if stall {
		// Another writer holds SQLite's write lock: the server's inserts
		// wait (busy_timeout) and records pile up in the write-ahead log.
		ctx := context.Background()
		conn, err := openDB(t, strings.TrimPrefix(dsn, "sqlite:")).Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
			t.Fatalf("lock the decision log: %v", err)
		}
		release = func() {
			if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
				t.Errorf("unlock the decision log: %v", err)
			}
			conn.Close()
		}
	}
	l := startLoad(t, srv.grpcAddr, "crash", 8)
	l.waitAnswered(t, 1)
	time.Sleep(1500 * time.Millisecond)
	srv.kill() // while the load is still running
	l.halt()
	if release != nil {
		release()
	}
	for _, s := range l.odd {
		t.Errorf("improper answer: %s", s)
	}
	if len(l.allowed) == 0 {
		t.Fatal("no Check was allowed: the load did not reach the server")
	}
	if stall {
		stored := sqliteRequestIDs(t, strings.TrimPrefix(dsn, "sqlite:"))
		pending := 0
		for _, id := range l.allowed {
			if stored[id] == 0 {
				pending++
			}
		}
		t.Logf("at the kill, %d of %d allowed requests were in the write-ahead log only, not yet in SQLite", pending, len(l.allowed))
		if pending == 0 {
			t.Errorf("the stalled sink stored every record: the test did not exercise the replay")
		}
	} else {
		// Found by audit query while the server is dead: the segments
		// and the write-ahead log's tail.
		checkAllRecorded(t, recordedRequestIDs(t, dir, dsn), l.allowed)
	}

	// Restart on the same data directory, decide a few more requests, and
	// stop cleanly.
	srv2 := startServer(t, dir, args...)
	after := startLoad(t, srv2.grpcAddr, "after-restart", 1)
	after.waitAnswered(t, 10)
	after.halt()
	if code, _ := srv2.terminate(20 * time.Second); code != 0 {
		t.Errorf("restarted server exited %d after SIGTERM, want 0", code)
	}

	recorded := recordedRequestIDs(t, dir, dsn)
	t.Logf("%d Checks answered before SIGKILL (%d allow, %d deny), %d failed calls; %d request ids recorded; %d allowed after the restart",
		l.answered.Load(), len(l.allowed), l.denied, l.failed.Load(), len(recorded), len(after.allowed))
	checkAllRecorded(t, recorded, l.allowed)
	checkAllRecorded(t, recorded, after.allowed)
	for id, n := range recorded {
		if n != 1 {
			t.Errorf("request %s recorded %d times: a replay after the crash stored it again", id, n)
		}
	}
	verifyLog(t, srv2, dsn)
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
}

// sqliteRequestIDs returns how often each request id has an enforced
// record in the SQLite decision log at path, read with SQL: what the
// store itself holds, without the write-ahead log.
func sqliteRequestIDs(t *testing.T, path string) map[string]int {
	t.Helper()
	rows, err := openDB(t, path).Query(`SELECT request_id, count(*) FROM decisions WHERE enforced GROUP BY request_id`)
	if err != nil {
		t.Fatalf("query the decision log: %v", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		out[id] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTwoSQLiteSinksHaveTheirOwnMetrics: two sinks of one kind are two
// series on /metrics, each named by its DSN, so that one failing cannot
// hide behind the other keeping up.
func TestTwoSQLiteSinksHaveTheirOwnMetrics(t *testing.T) {
	cfg := inprocConfig(t)
	a, b := filepath.Join(cfg.DataDir, "a.db"), filepath.Join(cfg.DataDir, "b.db")
	cfg.Audit = []string{"sqlite:" + a, "sqlite:" + b}
	s := inprocStart(t, cfg)
	metrics := metricsClient{url: "http://" + s.adminAddr() + "/metrics"}
	client := authv3.NewAuthorizationClient(authztest.Dial(t, s.grpcAddr()))
	check := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		resp, err := client.Check(ctx, httpCheck(t, paymentsCaller, "https://api.example.com/v1/a", nil))
		if err != nil || decisionOf(resp) != "allow" {
			t.Fatalf("Check: %v %v", err, resp)
		}
	}
	series := func(name, path string) string { return name + `{sink="sqlite:` + path + `"}` }
	state := func() (behindA, behindB, failingA, failingB float64, detail string) {
		m := metrics.scrape(t)
		var found []string
		for k := range m {
			if strings.HasPrefix(k, "egress_authz_audit_sink_") {
				found = append(found, fmt.Sprintf("%s %v", k, m[k]))
			}
		}
		return m[series("egress_authz_audit_sink_behind_records", a)], m[series("egress_authz_audit_sink_behind_records", b)],
			m[series("egress_authz_audit_sink_failing", a)], m[series("egress_authz_audit_sink_failing", b)],
			strings.Join(found, "; ")
	}

	check()
	eventually(t, 15*time.Second, 20*time.Millisecond, "a series per sink, both caught up", func() (bool, string) {
		ba, bb, fa, fb, detail := state()
		return ba == 0 && bb == 0 && fa == 0 && fb == 0 && strings.Count(detail, "egress_authz_audit_sink_failing") == 2, detail
	})

	// b loses its table: its writes fail, and a's go on.
	if _, err := openDB(t, b).Exec("ALTER TABLE decisions RENAME TO decisions_gone"); err != nil {
		t.Fatal(err)
	}
	check()
	eventually(t, 15*time.Second, 20*time.Millisecond, "b failing while a keeps up", func() (bool, string) {
		ba, bb, fa, fb, detail := state()
		return fb == 1 && bb >= 1 && fa == 0 && ba == 0, detail
	})

	// b gets its table back and catches up, so the server drains at exit.
	if _, err := openDB(t, b).Exec("ALTER TABLE decisions_gone RENAME TO decisions"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, 20*time.Millisecond, "b recovered", func() (bool, string) {
		_, bb, _, fb, detail := state()
		return fb == 0 && bb == 0, detail
	})
}
