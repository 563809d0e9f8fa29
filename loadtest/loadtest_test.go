package main

import (
	"context"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

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
