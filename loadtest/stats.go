package main

import (
	"fmt"
	"io"
	"math"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// newHistogram records latencies from 1 µs to 60 s with 3 significant
// digits, in nanoseconds.
func newHistogram() *hdr.Histogram { return hdr.New(1_000, 60_000_000_000, 3) }

// Result is one run against one target.
type Result struct {
	Target     string        `json:"target"`
	Mode       string        `json:"mode"` // closed or open
	Duration   time.Duration `json:"duration_ns"`
	Requests   int64         `json:"requests"`
	Errors     int64         `json:"errors"`
	Allowed    int64         `json:"allowed"`
	Throughput float64       `json:"throughput_rps"`
	P50        time.Duration `json:"p50_ns"`
	P90        time.Duration `json:"p90_ns"`
	P99        time.Duration `json:"p99_ns"`
	P999       time.Duration `json:"p999_ns"`
	Max        time.Duration `json:"max_ns"`
	// Warmup is the requests of the unmeasured warm-ups before the rounds.
	Warmup int64 `json:"warmup_requests"`
	// CPU is the server process's CPU time (user and system) for the
	// measured requests, their decision log's work included; 0 when not
	// measured.
	CPU time.Duration `json:"cpu_ns,omitempty"`
	// CPUPerRequest is CPU over Requests, in nanoseconds.
	CPUPerRequest float64 `json:"cpu_per_request_ns,omitempty"`
	hist          *hdr.Histogram
}

// setCPU records the server's CPU time for the result's requests.
func (r *Result) setCPU(d time.Duration) {
	r.CPU = d
	if r.Requests > 0 {
		r.CPUPerRequest = float64(d) / float64(r.Requests)
	}
}

func summarize(target, mode string, h *hdr.Histogram, d time.Duration, requests, errors, allowed int64) Result {
	r := Result{Target: target, Mode: mode, Duration: d, Requests: requests, Errors: errors, Allowed: allowed, hist: h}
	if d > 0 {
		r.Throughput = float64(requests) / d.Seconds()
	}
	q := func(p float64) time.Duration { return time.Duration(h.ValueAtQuantile(p)) }
	r.P50, r.P90, r.P99, r.P999, r.Max = q(50), q(90), q(99), q(99.9), time.Duration(h.Max())
	return r
}

// merge combines the rounds of one target into one result: requests and
// durations add up, latency histograms merge.
func merge(rs []Result) Result {
	if len(rs) == 0 {
		return Result{}
	}
	h := newHistogram()
	var d time.Duration
	var cpu time.Duration
	var req, errs, allowed, warm int64
	everyCPU := true
	for _, r := range rs {
		h.Merge(r.hist)
		d += r.Duration
		req += r.Requests
		errs += r.Errors
		allowed += r.Allowed
		warm += r.Warmup
		cpu += r.CPU
		everyCPU = everyCPU && r.CPU > 0
	}
	m := summarize(rs[0].Target, rs[0].Mode, h, d, req, errs, allowed)
	m.Warmup = warm
	if everyCPU {
		m.setCPU(cpu) // else per request would divide some rounds' CPU by all rounds' requests
	}
	return m
}

// Ratio is a figure of the server under test divided by the baseline's.
type Ratio struct {
	Throughput float64 `json:"throughput"`
	P50        float64 `json:"p50"`
	P99        float64 `json:"p99"`
	P999       float64 `json:"p999"`
}

func ratio(a, base Result) Ratio {
	div := func(x, y float64) float64 {
		if y == 0 {
			return 0
		}
		return x / y
	}
	return Ratio{
		Throughput: div(a.Throughput, base.Throughput),
		P50:        div(float64(a.P50), float64(base.P50)),
		P99:        div(float64(a.P99), float64(base.P99)),
		P999:       div(float64(a.P999), float64(base.P999)),
	}
}

// Scenario is one comparison: the same load against the baseline and the
// server, alternately. Servers with different decision logs (compare
// --audit none,sqlite) are scenarios of the same name and baseline.
type Scenario struct {
	Name     string `json:"name"`
	Audit    string `json:"audit,omitempty"` // the server's decision log (--audit)
	Baseline Result `json:"baseline"`
	Server   Result `json:"server"`
	Ratio    Ratio  `json:"ratio"`
	Goal     string `json:"goal"`
	Met      bool   `json:"met"`
	// Totals is what the server did over the whole scenario; nil for a
	// single run.
	Totals *Totals `json:"totals,omitempty"`
}

// Totals are the figures of a server over a whole scenario, warm-ups
// included, read from its metrics and files when it stopped.
type Totals struct {
	// Sent is the requests the load client sent it and counted (those cut
	// off by the end of a run, at most one per caller, are not).
	Sent int64 `json:"sent"`
	// Records is the decision records it wrote
	// (egress_authz_audit_records_written_total): one per Check, and one
	// more for each dry-run rule that also matched.
	Records int64 `json:"records"`
	// CacheHitShare is its decision cache's hits over lookups.
	CacheHitShare float64 `json:"cache_hit_share"`
	// LogCPUPerDecision is the server's CPU per request minus that of
	// the same scenario's --audit none server, in nanoseconds: what the
	// decision log costs. Absent without a none server or CPU figures.
	LogCPUPerDecision *float64 `json:"log_cpu_per_decision_ns,omitempty"`
	// StopCPU is the CPU time from the end of the last round to the
	// process's exit: shutting down, and a sink storing what it still
	// held (closing a segment). It is in no round's CPU figure.
	StopCPU time.Duration `json:"stop_cpu_ns"`
	// StoreBytes is the size of the decision log's files after the stop,
	// BytesPerDecision that over Sent (a decision is a Check) and
	// BytesPerRecord over Records; absent for a log whose files compare
	// does not place (none, stdout, a DSN).
	StoreBytes       *int64  `json:"store_bytes,omitempty"`
	BytesPerDecision float64 `json:"bytes_per_decision,omitempty"`
	BytesPerRecord   float64 `json:"bytes_per_record,omitempty"`
	// RuleSetBytes is the rule-set archive beside the Parquet segments,
	// a cost per rule-set version, in no per-decision figure.
	RuleSetBytes int64 `json:"ruleset_archive_bytes,omitempty"`
	// WALBytes is the size of the write-ahead log after the stop.
	WALBytes int64 `json:"wal_bytes"`
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/1e6) }

// us prints nanoseconds as microseconds, or nothing when not measured.
func us(ns float64) string {
	if ns == 0 {
		return ""
	}
	return fmt.Sprintf("%.1f", ns/1e3)
}

// writeTable prints scenarios as a Markdown table (also readable as text).
// A scenario without a baseline (a single run) is one row, without ratio;
// scenarios that share one (several decision logs) print it once.
func writeTable(w io.Writer, ss []Scenario) {
	fmt.Fprintln(w, "| scenario | target | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | CPU µs/req | ratio (req/s, p99, p99.9) | goal | met |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
	for k, s := range ss {
		compared := s.Baseline.Target != ""
		shared := k > 0 && ss[k-1].Name == s.Name && compared
		for i, r := range []Result{s.Baseline, s.Server} {
			if i == 0 && (!compared || shared) {
				continue // a single run: nothing to compare with; or printed already
			}
			name := r.Target
			if i == 1 && s.Audit != "" {
				name += ", log " + s.Audit
			}
			rat, goal, met := "", "", ""
			if i == 1 && compared {
				rat = fmt.Sprintf("%.2f×, %.2f×, %.2f×", s.Ratio.Throughput, s.Ratio.P99, s.Ratio.P999)
				goal = s.Goal
				met = map[bool]string{true: "yes", false: "**no**"}[s.Met]
			}
			fmt.Fprintf(w, "| %s | %s | %.0f | %s | %s | %s | %s | %s | %d | %s | %s | %s | %s |\n",
				s.Name, name, r.Throughput, ms(r.P50), ms(r.P90), ms(r.P99), ms(r.P999), ms(r.Max), r.Errors, us(r.CPUPerRequest), rat, goal, met)
		}
	}
}

// writeLogTable prints what each server's decision log cost, against the
// goals of issue 13 for the default log. It prints nothing for scenarios
// without totals (a single run).
func writeLogTable(w io.Writer, ss []Scenario) {
	have := false
	for _, s := range ss {
		have = have || s.Totals != nil
	}
	if !have {
		return
	}
	fmt.Fprintln(w, "Decision log: server CPU per request, and over --audit none's (goal for the default log ≤ 3 µs);"+
		" bytes on disk per decision (Check) and per record after a graceful stop (goal ≤ 64 per decision with --ids random), without the rule-set archive, which is paid once per rule-set version (10,000 rules: a few MB). Decisions, records and cache hits count the warm-ups too.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | log | server CPU µs/req | over none µs/decision | CPU at stop ms | decisions | records | on disk bytes | bytes/decision | bytes/record | rule-set archive bytes | WAL bytes at stop | cache hits |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, s := range ss {
		t := s.Totals
		if t == nil {
			continue
		}
		over, disk, perDecision, perRecord, archive := "", "", "", "", ""
		if t.LogCPUPerDecision != nil {
			over = fmt.Sprintf("%+.1f", *t.LogCPUPerDecision/1e3)
		}
		if t.StoreBytes != nil {
			disk = fmt.Sprint(*t.StoreBytes)
			perDecision, perRecord = fmt.Sprintf("%.1f", t.BytesPerDecision), fmt.Sprintf("%.1f", t.BytesPerRecord)
			archive = fmt.Sprint(t.RuleSetBytes)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %d | %d | %s | %s | %s | %s | %d | %.1f %% |\n", s.Name, s.Audit, us(s.Server.CPUPerRequest), over,
			ms(t.StopCPU), t.Sent, t.Records, disk, perDecision, perRecord, archive, t.WALBytes, 100*t.CacheHitShare)
	}
}

// plotSVG draws the latency percentiles of each scenario's baseline and
// server on a log scale, as a small self-contained SVG.
func plotSVG(w io.Writer, ss []Scenario) {
	const width, left, top, rowH = 760, 190, 30, 44
	total := top + rowH*len(ss)*2 + 40
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", width, total)
	fmt.Fprintf(w, `<text x="10" y="18" font-size="13">latency percentiles (log scale), baseline vs egress-authz; markers: p50 ● p90 ◆ p99 ▲ p99.9 ■</text>`+"\n")
	// scale: 10 µs .. 1 s, log10
	x := func(d time.Duration) float64 {
		v := float64(d) / 1e3 // µs
		if v < 10 {
			v = 10
		}
		lg := math.Log10(v) - 1 // 10 µs -> 0
		return left + lg/5*float64(width-left-20)
	}
	y := top
	for k, s := range ss {
		for i, r := range []Result{s.Baseline, s.Server} {
			if i == 0 && k > 0 && ss[k-1].Name == s.Name {
				continue // a baseline shared by several logs: drawn once
			}
			label := r.Target
			if i == 1 && s.Audit != "" {
				label += ", log " + s.Audit
			}
			fmt.Fprintf(w, `<text x="10" y="%d">%s: %s</text>`+"\n", y+15, s.Name, label)
			fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ccc"/>`+"\n", left, y+12, width-20, y+12)
			color := "#888"
			if r.Target != "noop" {
				color = "#0a6"
			}
			for i, p := range []time.Duration{r.P50, r.P90, r.P99, r.P999} {
				shape := []string{"circle", "diamond", "triangle", "square"}[i]
				cx := x(p)
				switch shape {
				case "circle":
					fmt.Fprintf(w, `<circle cx="%.1f" cy="%d" r="4" fill="%s"/>`, cx, y+12, color)
				case "diamond":
					fmt.Fprintf(w, `<rect x="%.1f" y="%d" width="7" height="7" fill="%s" transform="rotate(45 %.1f %d)"/>`, cx-3.5, y+9, color, cx, y+12)
				case "triangle":
					fmt.Fprintf(w, `<polygon points="%.1f,%d %.1f,%d %.1f,%d" fill="%s"/>`, cx, y+7, cx-4, y+16, cx+4, y+16, color)
				default:
					fmt.Fprintf(w, `<rect x="%.1f" y="%d" width="7" height="7" fill="%s"/>`, cx-3.5, y+9, color)
				}
			}
			fmt.Fprintln(w)
			y += rowH
		}
	}
	for _, tick := range []time.Duration{10 * time.Microsecond, 100 * time.Microsecond, time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond, time.Second} {
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(tick), y+15, tick)
	}
	fmt.Fprintln(w, "</svg>")
}
