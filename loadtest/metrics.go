package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// The egress-authz metrics compare reads (internal/telemetry/metrics.go).
const (
	metricWritten   = "egress_authz_audit_records_written_total" // records in the write-ahead log
	metricPending   = "egress_authz_audit_pending_records"       // records not yet in every sink
	metricCacheHit  = `egress_authz_cache_requests_total{result="hit"}`
	metricCacheMiss = `egress_authz_cache_requests_total{result="miss"}`
)

// samples are the values of a Prometheus text exposition, by series: the
// metric name followed by its labels as the server prints them.
type samples map[string]float64

// scrape reads the metrics of the server whose admin listener is addr.
func scrape(ctx context.Context, addr string) (samples, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the text format: "# ..." lines are comments, others
// "series value [timestamp]". A label value may hold spaces, so a series
// with labels ends at its closing brace.
func parseMetrics(r io.Reader) (samples, error) {
	s := samples{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		var series, rest string
		if i := strings.IndexByte(line, '{'); i >= 0 && i < strings.IndexByte(line+" ", ' ') {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return nil, fmt.Errorf("metrics: unclosed labels in %q", line)
			}
			series, rest = line[:j+1], line[j+1:]
		} else {
			series, rest, _ = strings.Cut(line, " ")
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %q: %w", line, err)
		}
		s[series] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return s, nil
}
