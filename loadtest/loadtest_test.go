package main

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/rules"
)

func TestSummarizePercentiles(t *testing.T) {
	h := newHistogram()
	for i := 1; i <= 1000; i++ { // 1 ms .. 1000 ms
		_ = h.RecordValue(int64(i) * int64(time.Millisecond))
	}
	r := summarize("x", "closed", h, 10*time.Second, 1000, 3, 700)
	near := func(got, want time.Duration) bool {
		d := got - want
		return d < 0 && -d <= want/100 || d >= 0 && d <= want/100 // HDR: 3 significant digits
	}
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{
		{"p50", r.P50, 500 * time.Millisecond}, {"p90", r.P90, 900 * time.Millisecond},
		{"p99", r.P99, 990 * time.Millisecond}, {"p99.9", r.P999, 999 * time.Millisecond},
		{"max", r.Max, 1000 * time.Millisecond},
	} {
		if !near(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if r.Throughput != 100 || r.Errors != 3 || r.Allowed != 700 {
		t.Errorf("throughput %v errors %d allowed %d", r.Throughput, r.Errors, r.Allowed)
	}
}

func TestMergeAddsRoundsAndRatioDivides(t *testing.T) {
	mk := func(ms int64, n int64, d time.Duration) Result {
		h := newHistogram()
		for i := int64(0); i < n; i++ {
			_ = h.RecordValue(ms * int64(time.Millisecond))
		}
		return summarize("t", "closed", h, d, n, 0, n)
	}
	base := merge([]Result{mk(1, 100, time.Second), mk(1, 300, time.Second)})
	if base.Requests != 400 || base.Throughput != 200 || base.Duration != 2*time.Second {
		t.Fatalf("merged %+v", base)
	}
	srv := merge([]Result{mk(2, 180, time.Second), mk(2, 180, time.Second)})
	r := ratio(srv, base)
	if r.Throughput < 0.899 || r.Throughput > 0.901 {
		t.Errorf("throughput ratio %v, want 0.9", r.Throughput)
	}
	if r.P99 < 1.99 || r.P99 > 2.01 {
		t.Errorf("p99 ratio %v, want 2", r.P99)
	}
	if (ratio(srv, Result{})).Throughput != 0 {
		t.Error("a ratio to an empty baseline must be 0, not Inf")
	}
}

// TestTableRows: a comparison prints the baseline, then the server with its
// ratios and verdict; a single run prints one row and claims nothing.
func TestTableRows(t *testing.T) {
	res := func(target string, n int64) Result {
		h := newHistogram()
		for i := int64(0); i < n; i++ {
			_ = h.RecordValue(int64(time.Millisecond))
		}
		return summarize(target, "closed", h, time.Second, n, 0, n)
	}
	var b strings.Builder
	writeTable(&b, []Scenario{
		{Name: "cmp", Baseline: res("noop", 100), Server: res("srv", 95), Ratio: Ratio{Throughput: 0.95, P99: 1, P999: 1}, Goal: "≥ 0.90×", Met: true},
		{Name: "run", Server: res("127.0.0.1:9191", 50)},
	})
	rows := strings.Split(strings.TrimSpace(b.String()), "\n")[2:]
	if len(rows) != 3 {
		t.Fatalf("%d rows, want 3 (baseline, server, single run):\n%s", len(rows), b.String())
	}
	for i, want := range []string{"| cmp | noop | 100 |", "| cmp | srv | 95 |", "| run | 127.0.0.1:9191 | 50 |"} {
		if !strings.HasPrefix(rows[i], want) {
			t.Errorf("row %d = %q, want it to start %q", i, rows[i], want)
		}
	}
	if !strings.Contains(rows[1], "0.95×, 1.00×, 1.00× | ≥ 0.90× | yes |") {
		t.Errorf("server row %q lacks its ratios and verdict", rows[1])
	}
	if strings.Contains(rows[2], "×") || strings.Contains(rows[2], "no") {
		t.Errorf("single-run row %q claims a ratio or a verdict", rows[2])
	}
}

// TestOpenLoopMeasuresFromIntendedTime: a server that takes 20 ms for one
// request in ten, at 200 requests per second, must show the queueing its
// slowness causes in the latency of the requests behind it — measured from
// when each was meant to be sent, not when it finally was.
func TestOpenLoopMeasuresFromIntendedTime(t *testing.T) {
	w := newWorld(100)
	m := newMix(w, 10, 1.0, 0, 1)
	var calls int
	// One sender at a time, as a server with a single worker would be.
	sem := make(chan struct{}, 1)
	send := func(ctx context.Context, req *authv3.CheckRequest) (bool, error) {
		sem <- struct{}{}
		defer func() { <-sem }()
		calls++
		if calls%10 == 0 {
			time.Sleep(20 * time.Millisecond)
		}
		return true, nil
	}
	c, d := openLoop(context.Background(), send, m, 200, time.Second, 1)
	if got := c.requests.Load(); got != 200 {
		t.Fatalf("%d requests sent in %v, want 200 at 200/s for 1 s", got, d)
	}
	if d < 900*time.Millisecond || d > 3*time.Second {
		t.Fatalf("run took %v", d)
	}
	r := summarize("slow", "open", c.hist, d, c.requests.Load(), 0, 0)
	// The requests queued behind a 20 ms stall (interval 5 ms) waited up
	// to ~15 ms: the p90 must show it, although each call itself is fast.
	if r.P90 < 5*time.Millisecond {
		t.Fatalf("p90 %v: queueing behind slow requests is hidden (coordinated omission)", r.P90)
	}
}

func TestGeneratedRulesAreValidAndRequestsDecideAsDesigned(t *testing.T) {
	for _, n := range []int{100, 1000} {
		w := newWorld(n)
		set, err := rules.Parse(rules.Source{Name: "gen.yaml", Data: []byte(w.RulesYAML())})
		if err != nil {
			t.Fatalf("%d rules: %v", n, err)
		}
		table, err := rules.Compile(set)
		if err != nil {
			t.Fatal(err)
		}
		m := newMix(w, 500, 1.0, 0.1, 3)
		var allowed int
		for _, r := range m.pool {
			h := r.msg.Attributes.Request.Http
			d := table.Decide(rules.Request{Principal: r.msg.Attributes.Source.Principal, Host: h.Host, Port: 443, Method: h.Method, Path: h.Path}, time.Now())
			if d.Allow {
				allowed++
			}
		}
		// 10% are sent by a caller the rule does not name, ~1% hit a deny rule.
		if share := float64(allowed) / float64(len(m.pool)); share < 0.75 || share > 0.97 {
			t.Fatalf("%d rules: %.2f of requests allowed, want about 0.9", n, share)
		}
		if !strings.Contains(w.RulesYAML(), "mode: dry-run") || !strings.Contains(w.RulesYAML(), "action: deny") {
			t.Fatal("the generated set lacks dry-run or deny rules")
		}
	}
}

var (
	uuidV4Form       = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	traceparentForm  = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-01$`)
	allZeros         = regexp.MustCompile(`^0+$`)
	pooledForIDsTest = checkreq.HTTP{Principal: "spiffe://cluster.local/ns/a/sa/b", Method: "POST",
		URL: "https://api.example.com/v1/x?q=1", Headers: map[string]string{"content-type": "application/json"}}
)

// TestWithIDsGivesEachRequestFreshValidIDs: every request sent with --ids
// random carries a UUIDv4 x-request-id and a sampled W3C traceparent with
// non-zero ids, none repeated, while the pooled message that all workers
// share keeps its headers as they were.
func TestWithIDsGivesEachRequestFreshValidIDs(t *testing.T) {
	pooled, err := pooledForIDsTest.Build()
	if err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(pooled)
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[string]bool{}
	var own idCopy // as a closed-loop caller reuses it
	for i := 0; i < 4000; i++ {
		var h map[string]string
		if i%2 == 0 {
			h = withIDs(pooled, rng).Attributes.Request.Http.Headers
		} else {
			h = own.fill(pooled, rng).Attributes.Request.Http.Headers
		}
		id, tp := h["x-request-id"], h["traceparent"]
		if !uuidV4Form.MatchString(id) {
			t.Fatalf("x-request-id %q is not a UUIDv4", id)
		}
		m := traceparentForm.FindStringSubmatch(tp)
		if m == nil || allZeros.MatchString(m[1]) || allZeros.MatchString(m[2]) {
			t.Fatalf("traceparent %q is not a W3C traceparent with non-zero ids", tp)
		}
		for _, v := range []string{id, m[1], m[2]} {
			if seen[v] {
				t.Fatalf("request %d repeats the id %q", i, v)
			}
			seen[v] = true
		}
	}
	if !proto.Equal(pooled, want) {
		t.Fatalf("the pooled message changed:\n got %v\nwant %v", pooled, want)
	}
}

// TestWithIDsCopiesEveryField: apart from the two id headers, the copy is
// the request it was made from, so a field added to the generated type and
// not to withIDs' copy fails here.
func TestWithIDsCopiesEveryField(t *testing.T) {
	pooled, err := pooledForIDsTest.Build()
	if err != nil {
		t.Fatal(err)
	}
	// Set every field withIDs copies, so that each one's copy is checked.
	a := pooled.Attributes
	a.ContextExtensions = map[string]string{"k": "v"}
	a.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"f": {}}}
	a.RouteMetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"r": {}}}
	a.TlsSession = &authv3.AttributeContext_TLSSession{Sni: "api.example.com"}
	a.Request.Time = timestamppb.New(time.Unix(1700000000, 5))
	h := a.Request.Http
	h.Query, h.Fragment, h.Size, h.Body, h.RawBody = "q=1", "frag", 42, "body", []byte("raw")
	h.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "k", Value: "v"}}}

	got := withIDs(pooled, rand.New(rand.NewPCG(3, 4)))
	delete(got.Attributes.Request.Http.Headers, "x-request-id")
	delete(got.Attributes.Request.Http.Headers, "traceparent")
	if !proto.Equal(got, pooled) {
		t.Fatalf("the copy lost something:\n got %v\nwant %v", got, pooled)
	}
	// A reused copy is the request it was last filled from, nothing of the
	// one before.
	var own idCopy
	other, err := checkreq.HTTP{Principal: "spiffe://cluster.local/ns/c/sa/d", URL: "http://other.example.com/",
		Headers: map[string]string{"x-extra": "1"}}.Build()
	if err != nil {
		t.Fatal(err)
	}
	own.fill(other, rand.New(rand.NewPCG(3, 4)))
	got = own.fill(pooled, rand.New(rand.NewPCG(3, 4)))
	delete(got.Attributes.Request.Http.Headers, "x-request-id")
	delete(got.Attributes.Request.Http.Headers, "traceparent")
	if !proto.Equal(got, pooled) {
		t.Fatalf("the reused copy kept something of the request before:\n got %v\nwant %v", got, pooled)
	}
	if sni := checkreq.SNI("spiffe://cluster.local/ns/a/sa/b", "api.example.com", 443); withIDs(sni, rand.New(rand.NewPCG(5, 6))) != sni {
		t.Fatal("a TLS-passthrough request has no headers to carry ids; it must be sent as it is")
	}
}

// TestMixWithIDsSendsTheSameRequests: --ids random changes only the ids:
// the same seed gives the same requests in the same order, pooled and
// unique ones alike, and both kinds carry ids.
func TestMixWithIDsSendsTheSameRequests(t *testing.T) {
	w := newWorld(100)
	plain, withIDs := newMix(w, 50, 0.5, 0.1, 1), newMix(w, 50, 0.5, 0.1, 1)
	withIDs.ids = true
	a, b := newStream(7, 1, 0), newStream(7, 1, 0)
	for i := 0; i < 200; i++ {
		x, y := plain.next(a), withIDs.next(b)
		xh, yh := x.Attributes.Request.Http.Headers, y.Attributes.Request.Http.Headers
		if xh[":path"] != yh[":path"] || x.Attributes.Source.Principal != y.Attributes.Source.Principal {
			t.Fatalf("request %d: %s from %s without ids, %s from %s with", i,
				xh[":path"], x.Attributes.Source.Principal, yh[":path"], y.Attributes.Source.Principal)
		}
		if _, ok := xh["x-request-id"]; ok {
			t.Fatalf("request %d has an x-request-id without --ids random", i)
		}
		if !uuidV4Form.MatchString(yh["x-request-id"]) || !traceparentForm.MatchString(yh["traceparent"]) {
			t.Fatalf("request %d (%s) lacks ids: %v", i, yh[":path"], yh)
		}
	}
	for _, r := range plain.pool {
		if _, ok := r.msg.Attributes.Request.Http.Headers["x-request-id"]; ok {
			t.Fatal("a pooled request was given an id in place")
		}
	}
}

func TestParseStatCountsFieldsFromTheLastParenthesis(t *testing.T) {
	for _, c := range []struct {
		name, line string
		want       int64
		bad        bool
	}{
		{"plain", "42 (egress-authz) S 1 42 42 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 9 0 100 0 0", 1801, false},
		{"name with spaces and parentheses", "42 (a) b (c)) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 0 0", 10, false},
		{"truncated", "42 (x) S 1 2 3", 0, true},
		{"no name", "42 x S", 0, true},
		{"not a number", "42 (x) S 1 42 42 0 -1 0 0 0 0 0 seven 3 0", 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseStat([]byte(c.line))
			if c.bad != (err != nil) || got != c.want {
				t.Fatalf("parseStat = %d, %v; want %d, error %v", got, err, c.want, c.bad)
			}
		})
	}
	if _, err := parseSchedstat([]byte("123 456\n")); err == nil {
		t.Error("a schedstat line of two fields must be refused")
	}
	if got, err := parseSchedstat([]byte("123456789 1000 17\n")); err != nil || got != 123456789 {
		t.Errorf("parseSchedstat = %v, %v", got, err)
	}
}

// TestProcCPUReadsThisProcess: the test process's own /proc files parse,
// and CPU it burns shows in both readings.
func TestProcCPUReadsThisProcess(t *testing.T) {
	before, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if before.run <= 0 {
		t.Fatalf("schedstat run time %v: a running process has used some CPU", before.run)
	}
	// Spin until the kernel has counted 5 more ticks.
	var after cpuSample
	x := 0
	for after.ticks < before.ticks+5 {
		for i := 0; i < 1e6; i++ {
			x += i
		}
		if after, err = procCPU(os.Getpid()); err != nil {
			t.Fatal(err)
		}
	}
	_ = x
	// Both readings come from the same run-time counters, the ticks cut
	// down to whole ones, utime and stime each: they agree within 2 ticks.
	ticked := time.Duration(after.ticks-before.ticks) * clockTick
	if d := after.run - before.run; d < ticked-2*clockTick || d > ticked+2*clockTick+clockTick {
		t.Fatalf("ticks went up by %v but the threads' run time by %v", ticked, d)
	}
	if got := after.since(before); got != after.run-before.run {
		t.Fatalf("since = %v, want the nanosecond figure %v: no thread exited", got, after.run-before.run)
	}
}

func TestSinceTrustsTicksWhenAThreadExited(t *testing.T) {
	before := cpuSample{run: time.Second, ticks: 100}
	if got := (cpuSample{run: 1500 * time.Millisecond, ticks: 150}).since(before); got != 500*time.Millisecond {
		t.Errorf("agreeing readings: %v, want the nanosecond figure 500ms", got)
	}
	if got := (cpuSample{run: 1505 * time.Millisecond, ticks: 151}).since(before); got != 505*time.Millisecond {
		t.Errorf("ticks within rounding: %v, want the nanosecond figure 505ms", got)
	}
	// A thread that used 300 ms exited: its time left the sum, not the ticks.
	if got := (cpuSample{run: 1200 * time.Millisecond, ticks: 150}).since(before); got != 500*time.Millisecond {
		t.Errorf("a thread exited: %v, want the ticks' 500ms", got)
	}
}

func TestParseMetricsReadsTheTextFormat(t *testing.T) {
	text := `# HELP egress_authz_cache_requests_total Decision cache lookups, by result (hit or miss).
# TYPE egress_authz_cache_requests_total counter
egress_authz_cache_requests_total{result="hit"} 900
egress_authz_cache_requests_total{result="miss"} 100
egress_authz_audit_records_written_total 1.2345e+06
egress_authz_audit_pending_records 0
weird{label="a b} c"} 7 1700000000000
`
	s, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	for series, want := range map[string]float64{
		metricCacheHit: 900, metricCacheMiss: 100, metricWritten: 1234500, metricPending: 0, `weird{label="a b} c"}`: 7,
	} {
		if got, ok := s[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	if _, err := parseMetrics(strings.NewReader("egress_authz_x{a=\"1\"\n")); err == nil {
		t.Error("a series with unclosed labels must be refused")
	}
}

func TestLogSpecsPlaceTheirFilesInTheServersDirectory(t *testing.T) {
	ls, err := parseLogs("none, sqlite,parquet,postgres://u:secret@db/x")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i, want := range []struct{ label, dsn string }{
		{"none", "none"},
		{"sqlite", "sqlite:" + filepath.Join(dir, "decisions.db")},
		{"parquet", "parquet:" + filepath.Join(dir, "decisions")},
		{"postgres", "postgres://u:secret@db/x"},
	} {
		if ls[i].label() != want.label || ls[i].dsn(dir) != want.dsn {
			t.Errorf("%q: label %q dsn %q, want %q %q", ls[i], ls[i].label(), ls[i].dsn(dir), want.label, want.dsn)
		}
	}
	for _, bad := range []string{"none,,sqlite", "sqlite,sqlite"} {
		if _, err := parseLogs(bad); err == nil {
			t.Errorf("--audit %q accepted", bad)
		}
	}

	write := func(name string, n int) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("decisions.db", 1000)
	write("decisions.db-wal", 200)
	write("decisions.db-shm", 32768) // an index of the -wal, not data
	write("decisions/day=2026-12-04/0001.parquet", 300)
	write("decisions/day=2026-12-05/0002.parquet", 40)
	write("decisions/_rulesets/abc.json", 7000) // once per rule-set version
	write("wal/00000000000000000001.wal", 5)
	for _, c := range []struct {
		log           logSpec
		want, archive int64
		ok            bool
	}{{"sqlite", 1200, 0, true}, {"parquet", 340, 7000, true}, {"none", 0, 0, false}, {"stdout", 0, 0, false}} {
		n, archive, ok, err := c.log.storeBytes(dir)
		if err != nil || n != c.want || archive != c.archive || ok != c.ok {
			t.Errorf("%s: %d bytes and %d archived (measured %v, %v), want %d and %d (%v)", c.log, n, archive, ok, err, c.want, c.archive, c.ok)
		}
	}
	if n, _, ok, err := logSpec("parquet").storeBytes(t.TempDir()); err != nil || !ok || n != 0 {
		t.Errorf("no segments yet: %d, %v, %v; want 0 bytes", n, ok, err)
	}
}

// TestReportCarriesCPUAndLogCost: the tables and the JSON report give the
// CPU per request of both targets, the log's CPU over none's and its bytes
// on disk per decision.
func TestReportCarriesCPUAndLogCost(t *testing.T) {
	res := func(target string, n int64, cpu time.Duration) Result {
		h := newHistogram()
		for i := int64(0); i < n; i++ {
			_ = h.RecordValue(int64(time.Millisecond))
		}
		r := summarize(target, "closed", h, time.Second, n, 0, n)
		r.setCPU(cpu)
		return r
	}
	base := res("noop", 1000, 28*time.Millisecond)
	over := 2500.0
	disk := int64(60000)
	ss := []Scenario{
		{Name: "cmp", Audit: "none", Baseline: base, Server: res("egress-authz", 900, 32400*time.Microsecond), Totals: &Totals{Sent: 1000}},
		{Name: "cmp", Audit: "parquet", Baseline: base, Server: res("egress-authz", 900, 34650*time.Microsecond),
			Totals: &Totals{Sent: 1000, Records: 1010, LogCPUPerDecision: &over, StoreBytes: &disk, BytesPerDecision: 60, BytesPerRecord: 59.4, CacheHitShare: 0.9}},
	}
	var b strings.Builder
	writeTable(&b, ss)
	rows := strings.Split(strings.TrimSpace(b.String()), "\n")[2:]
	if len(rows) != 3 {
		t.Fatalf("%d rows, want 3 (the shared baseline once, then each log):\n%s", len(rows), b.String())
	}
	for i, want := range []string{"| cmp | noop | 1000 |", "| cmp | egress-authz, log none | 900 |", "| cmp | egress-authz, log parquet | 900 |"} {
		if !strings.HasPrefix(rows[i], want) {
			t.Errorf("row %d = %q, want it to start %q", i, rows[i], want)
		}
	}
	for i, want := range []string{"| 0 | 28.0 |", "| 0 | 36.0 |", "| 0 | 38.5 |"} {
		if !strings.Contains(rows[i], want) {
			t.Errorf("row %d = %q lacks errors and CPU µs/req %q", i, rows[i], want)
		}
	}
	b.Reset()
	writeLogTable(&b, ss)
	if !strings.Contains(b.String(), "| cmp | parquet | 38.5 | +2.5 | 0.000 | 1000 | 1010 | 60000 | 60.0 | 59.4 | 0 | 0 | 90.0 % |") {
		t.Errorf("log table lacks the parquet row's cost:\n%s", b.String())
	}
	if !strings.Contains(b.String(), "| cmp | none | 36.0 |  | 0.000 | 1000 | 0 |  |  |  |  | 0 | 0.0 % |") {
		t.Errorf("log table's none row claims a cost or a size:\n%s", b.String())
	}

	out := t.TempDir()
	l := load{duration: time.Second, ids: idsRandom}
	var stdout strings.Builder
	if err := report(&stdout, out, "test", &l, ss); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Meta      struct{ IDs string }
		Scenarios []struct {
			Audit    string
			Baseline struct {
				CPUPerRequest float64 `json:"cpu_per_request_ns"`
			}
			Server struct {
				CPU           int64   `json:"cpu_ns"`
				CPUPerRequest float64 `json:"cpu_per_request_ns"`
			}
			Totals struct {
				LogCPU           *float64 `json:"log_cpu_per_decision_ns"`
				StoreBytes       *int64   `json:"store_bytes"`
				BytesPerDecision float64  `json:"bytes_per_decision"`
			}
		}
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	p := got.Scenarios[1]
	if got.Meta.IDs != "random" || len(got.Scenarios) != 2 || p.Audit != "parquet" || p.Baseline.CPUPerRequest != 28000 ||
		p.Server.CPU != 34650000 || p.Server.CPUPerRequest != 38500 ||
		p.Totals.LogCPU == nil || *p.Totals.LogCPU != 2500 || p.Totals.StoreBytes == nil || *p.Totals.StoreBytes != 60000 || p.Totals.BytesPerDecision != 60 {
		t.Errorf("report.json lacks the figures: %s", raw)
	}
	if n := got.Scenarios[0].Totals; n.LogCPU != nil || n.StoreBytes != nil {
		t.Errorf("the none server's JSON claims a log cost or size: %s", raw)
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "CPU µs/req") || !strings.Contains(string(md), "| cmp | parquet | 38.5 | +2.5 |") {
		t.Errorf("report.md lacks the CPU columns:\n%s", md)
	}
	if !strings.Contains(stdout.String(), "| cmp | parquet | 38.5 | +2.5 |") {
		t.Errorf("the printed report lacks the log table:\n%s", stdout.String())
	}
}

func TestMergeKeepsCPUOnlyWhenEveryRoundHasIt(t *testing.T) {
	r := func(n int64, cpu time.Duration) Result {
		x := summarize("t", "closed", newHistogram(), time.Second, n, 0, n)
		x.setCPU(cpu)
		return x
	}
	if m := merge([]Result{r(100, time.Millisecond), r(300, 3*time.Millisecond)}); m.CPU != 4*time.Millisecond || m.CPUPerRequest != 10000 {
		t.Errorf("merged CPU %v, %v ns/req; want 4ms, 10000", m.CPU, m.CPUPerRequest)
	}
	if m := merge([]Result{r(100, time.Millisecond), r(300, 0)}); m.CPU != 0 || m.CPUPerRequest != 0 {
		t.Errorf("a round without CPU: merged %v, %v ns/req; want none", m.CPU, m.CPUPerRequest)
	}
}

// BenchmarkNext measures what the load client spends choosing a request
// (90 % pooled), with and without --ids random, in a closed loop (one
// reused copy per caller) and an open one (a copy per request): the ids'
// cost per request is the difference, on the cores the server shares.
func BenchmarkNext(b *testing.B) {
	w := newWorld(1000)
	for _, c := range []struct {
		name      string
		ids, open bool
	}{{"ids=none", false, false}, {"ids=random/closed", true, false}, {"ids=random/open", true, true}} {
		m := newMix(w, 1000, 0.9, 0.1, 1)
		m.ids = c.ids
		b.Run(c.name, func(b *testing.B) {
			s := newStream(1, 1, 0)
			if !c.open {
				s.own = new(idCopy) // as closedLoop does
			}
			b.ReportAllocs()
			for b.Loop() {
				_ = m.next(s)
			}
		})
	}
}

// BenchmarkWithIDs is the copy of a pooled request with fresh ids alone.
func BenchmarkWithIDs(b *testing.B) {
	req, err := pooledForIDsTest.Build()
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = withIDs(req, rng)
		}
	})
	b.Run("reused", func(b *testing.B) {
		var own idCopy
		b.ReportAllocs()
		for b.Loop() {
			_ = own.fill(req, rng)
		}
	})
}
