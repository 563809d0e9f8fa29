package telemetry_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/telemetry"
	"github.com/egress-authz/egress-authz/rules"
)

// scrape fetches the metrics as Prometheus would and parses them.
func scrape(t *testing.T, m *telemetry.Metrics) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", rec.Code)
	}
	body := rec.Body.String()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams, body
}

// value is the value of the sample of family name whose labels include
// labels: a counter's or gauge's value, a histogram's count. It fails the
// test when there is no such sample.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount())
		case dto.MetricType_UNTYPED:
			return m.GetUntyped().GetValue()
		}
	}
	t.Fatalf("no sample %s%v", name, labels)
	return 0
}

func TestMetricsCountDecisionsByReasonCacheAndDryRun(t *testing.T) {
	m := telemetry.NewMetrics()
	trial := &rules.Rule{ID: "fraud-vendor-trial"}
	allow := &rules.Rule{ID: "payments-stripe"}
	checks := []rules.Decision{
		{Allow: true, Reason: rules.ReasonAllowed, Rule: allow, Host: "api.stripe.com"},
		{Allow: true, Reason: rules.ReasonAllowed, Rule: allow, Host: "api.stripe.com", Cached: true},
		{Allow: true, Reason: rules.ReasonAllowed, Rule: allow, Host: "api.stripe.com", Cached: true},
		{Reason: rules.ReasonDeniedByRule, Rule: &rules.Rule{ID: "deny-gemini"}, Host: "generativelanguage.googleapis.com"},
		{Reason: rules.ReasonNoMatchingRule, Host: "api.fraudscore.example", DryRun: []rules.Outcome{{Rule: trial, Allow: true}}},
		{Reason: rules.ReasonNoMatchingRule, Host: "api.fraudscore.example", Cached: true, DryRun: []rules.Outcome{{Rule: trial, Allow: true}}},
		{Reason: rules.ReasonNoIdentity},
		// Neither consulted the cache.
		{Reason: rules.ReasonInvalidRequest},
		{Reason: rules.ReasonAuditUnavailable},
		// A reason outside the fixed set is counted, not lost.
		{Reason: rules.Reason("something-new")},
	}
	for i := range checks {
		m.Checked(&checks[i], 3*time.Microsecond)
	}
	fams, body := scrape(t, m)

	for _, tc := range []struct {
		decision, reason string
		want             float64
	}{
		{"allow", "allowed-by-rule", 3},
		{"deny", "denied-by-rule", 1},
		{"deny", "no-matching-rule", 2},
		{"deny", "no-identity", 1},
		{"deny", "invalid-request", 1},
		{"deny", "audit-unavailable", 1},
		{"deny", "other", 1},
		{"deny", "untrusted-trust-domain", 0}, // bound at start-up: present at zero
	} {
		if got := value(t, fams, "egress_authz_decisions_total", "decision", tc.decision, "reason", tc.reason); got != tc.want {
			t.Errorf("decisions_total{%s,%s} = %v, want %v", tc.decision, tc.reason, got, tc.want)
		}
	}
	if got := value(t, fams, "egress_authz_cache_requests_total", "result", "hit"); got != 3 {
		t.Errorf("cache hits %v, want 3", got)
	}
	if got := value(t, fams, "egress_authz_cache_requests_total", "result", "miss"); got != 5 {
		t.Errorf("cache misses %v, want 5 (invalid and audit-unavailable requests never reach the cache)", got)
	}
	if got := value(t, fams, "egress_authz_check_duration_seconds"); got != float64(len(checks)) {
		t.Errorf("check_duration_seconds count %v, want %d", got, len(checks))
	}
	if got := fams["egress_authz_check_duration_seconds"].GetMetric()[0].GetHistogram().GetSampleSum(); got < 29e-6 || got > 31e-6 {
		t.Errorf("check_duration_seconds sum %v, want %d × 3 µs", got, len(checks))
	}
	if got := value(t, fams, "egress_authz_dry_run_outcomes_total", "rule", "fraud-vendor-trial", "outcome", "allow"); got != 2 {
		t.Errorf("dry-run allow outcomes %v, want 2", got)
	}
	// Labels stay bounded: hosts (and principals, paths) never become labels.
	for _, leak := range []string{"api.stripe.com", "generativelanguage", "fraudscore"} {
		if strings.Contains(body, leak) {
			t.Errorf("/metrics mentions %q: hosts must not be label values", leak)
		}
	}
}

func TestMetricsCountRefusedClientsAndReloads(t *testing.T) {
	m := telemetry.NewMetrics()
	m.Refused("not-allowed")
	m.Refused("not-allowed")
	m.Refused("not-spiffe")
	m.ForwardedCertRefused("untrusted")
	m.Reloaded(nil)
	m.Reloaded(errors.New("rules.yaml:3:1: bad"))
	m.Reloaded(nil)
	fams, _ := scrape(t, m)
	for _, tc := range []struct {
		name, label, value string
		want               float64
	}{
		{"egress_authz_refused_clients_total", "reason", "not-allowed", 2},
		{"egress_authz_refused_clients_total", "reason", "not-spiffe", 1},
		{"egress_authz_forwarded_certs_refused_total", "reason", "untrusted", 1},
		{"egress_authz_rules_reloads_total", "result", "ok", 2},
		{"egress_authz_rules_reloads_total", "result", "error", 1},
	} {
		if got := value(t, fams, tc.name, tc.label, tc.value); got != tc.want {
			t.Errorf("%s{%s=%q} = %v, want %v", tc.name, tc.label, tc.value, got, tc.want)
		}
	}
}

func TestMetricsReadRulesAndAuditStateAtScrapeTime(t *testing.T) {
	m := telemetry.NewMetrics()
	loaded := time.Date(2026, 5, 1, 12, 0, 0, 500_000_000, time.UTC)
	status := rules.Status{Version: "v1", Generation: 1, Rules: 7, LoadedAt: loaded}
	// Two sinks of one kind, by name: one failing, one keeping up.
	stats := audit.Stats{Written: 10, Pending: 2, Overflows: 1,
		Sinks:   map[string]int64{"sqlite:a.db": 2, "sqlite:b.db": 0},
		Failing: map[string]bool{"sqlite:a.db": true, "sqlite:b.db": false}}
	m.WatchRules(func() rules.Status { return status })
	m.WatchAudit(func() audit.Stats { return stats })
	pending := 3
	m.WatchArchive(func() int { return pending })

	fams, _ := scrape(t, m)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"egress_authz_rules_generation", nil, 1},
		{"egress_authz_rules_info", []string{"version", "v1"}, 1},
		{"egress_authz_ruleset_archive_pending", nil, 3},
		{"egress_authz_rules", nil, 7},
		{"egress_authz_rules_loaded_timestamp_seconds", nil, 1777636800.5},
		{"egress_authz_rules_next_expiry_timestamp_seconds", nil, 0},
		{"egress_authz_rules_last_reload_failed", nil, 0},
		{"egress_authz_rules_bundle_expiry_timestamp_seconds", nil, 0},
		{"egress_authz_rules_last_check_timestamp_seconds", nil, 0},
		{"egress_authz_audit_records_written_total", nil, 10},
		{"egress_authz_audit_pending_records", nil, 2},
		{"egress_authz_audit_overflows_total", nil, 1},
		{"egress_authz_audit_sink_behind_records", []string{"sink", "sqlite:a.db"}, 2},
		{"egress_authz_audit_sink_failing", []string{"sink", "sqlite:a.db"}, 1},
		{"egress_authz_audit_sink_behind_records", []string{"sink", "sqlite:b.db"}, 0},
		{"egress_authz_audit_sink_failing", []string{"sink", "sqlite:b.db"}, 0},
	} {
		if got := value(t, fams, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}

	// A reload that fails, then more records: the next scrape sees both.
	status.Generation, status.LastError, status.NextExpiry = 2, "rules.yaml:3:1: bad", loaded.Add(time.Hour)
	stats.Written, stats.Failing = 25, map[string]bool{"sqlite:a.db": false, "sqlite:b.db": false}
	fams, _ = scrape(t, m)
	if got := value(t, fams, "egress_authz_rules_generation"); got != 2 {
		t.Errorf("generation %v, want 2", got)
	}
	status.Version, pending = "v2", 0
	fams, _ = scrape(t, m)
	if got := value(t, fams, "egress_authz_rules_info", "version", "v2"); got != 1 || len(fams["egress_authz_rules_info"].GetMetric()) != 1 {
		t.Errorf("rules_info after a reload: %v", fams["egress_authz_rules_info"])
	}
	if got := value(t, fams, "egress_authz_ruleset_archive_pending"); got != 0 {
		t.Errorf("archive pending %v, want 0", got)
	}
	if got := value(t, fams, "egress_authz_rules_last_reload_failed"); got != 1 {
		t.Errorf("last_reload_failed %v, want 1", got)
	}
	if got := value(t, fams, "egress_authz_rules_next_expiry_timestamp_seconds"); got != 1777640400.5 {
		t.Errorf("next_expiry %v, want 1777640400.5", got)
	}
	// Served from a bundle: its expiry and the last look at its source.
	status.Bundle = &rules.BundleInfo{Revision: "7", Expires: loaded.Add(30 * 24 * time.Hour)}
	status.LastCheck = loaded.Add(time.Minute)
	fams, _ = scrape(t, m)
	if got := value(t, fams, "egress_authz_rules_bundle_expiry_timestamp_seconds"); got != 1777636800.5+30*86400 {
		t.Errorf("bundle expiry %v, want %v", got, 1777636800.5+30*86400)
	}
	if got := value(t, fams, "egress_authz_rules_last_check_timestamp_seconds"); got != 1777636860.5 {
		t.Errorf("last check %v, want 1777636860.5", got)
	}
	if got := value(t, fams, "egress_authz_audit_records_written_total"); got != 25 {
		t.Errorf("records written %v, want 25", got)
	}
	if got := value(t, fams, "egress_authz_audit_sink_failing", "sink", "sqlite:a.db"); got != 0 {
		t.Errorf("sink_failing %v, want 0", got)
	}
}

// The package promises that counting a Check costs no allocation.
func TestCheckedDoesNotAllocate(t *testing.T) {
	m := telemetry.NewMetrics()
	trial, other := &rules.Rule{ID: "fraud-vendor-trial"}, &rules.Rule{ID: "other-trial"}
	for _, tc := range []struct {
		name string
		d    rules.Decision
	}{
		{"allow", rules.Decision{Allow: true, Reason: rules.ReasonAllowed, Cached: true, Version: "v1"}},
		{"dry_run_outcomes", rules.Decision{Reason: rules.ReasonNoMatchingRule, Version: "v1",
			DryRun: []rules.Outcome{{Rule: trial, Allow: true}, {Rule: other}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, func() { m.Checked(&tc.d, time.Microsecond) }); n != 0 {
				t.Errorf("Checked allocates %v times per call, want 0", n)
			}
		})
	}
}

// A new rule set version rebinds its rules' counters; counts carry on
// across versions for a rule id that stays.
func TestDryRunCountsAcrossRuleSetVersions(t *testing.T) {
	m := telemetry.NewMetrics()
	for _, version := range []string{"v1", "v2", "v1", "v2"} {
		d := rules.Decision{Reason: rules.ReasonNoMatchingRule, Version: version,
			DryRun: []rules.Outcome{{Rule: &rules.Rule{ID: "trial"}, Allow: true}, {Rule: &rules.Rule{ID: "trial-" + version}}}}
		m.Checked(&d, time.Microsecond)
	}
	fams, _ := scrape(t, m)
	for _, tc := range []struct {
		rule, outcome string
		want          float64
	}{{"trial", "allow", 4}, {"trial-v1", "deny", 2}, {"trial-v2", "deny", 2}} {
		if got := value(t, fams, "egress_authz_dry_run_outcomes_total", "rule", tc.rule, "outcome", tc.outcome); got != tc.want {
			t.Errorf("dry-run %s %s: %v, want %v", tc.rule, tc.outcome, got, tc.want)
		}
	}
}

func BenchmarkCheckedDryRun(b *testing.B) {
	m := telemetry.NewMetrics()
	d := rules.Decision{Reason: rules.ReasonNoMatchingRule, Version: "v1",
		DryRun: []rules.Outcome{{Rule: &rules.Rule{ID: "fraud-vendor-trial"}, Allow: true}}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Checked(&d, time.Microsecond)
		}
	})
}

func TestMetricsExportTheServingCertificatesExpiry(t *testing.T) {
	plain := telemetry.NewMetrics()
	plain.WatchServingCertificate(nil)
	fams, _ := scrape(t, plain)
	if v := value(t, fams, "egress_authz_serving_certificate_expiry_timestamp_seconds"); v != 0 {
		t.Errorf("plaintext: %v, want 0", v)
	}

	notAfter := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	m := telemetry.NewMetrics()
	m.WatchServingCertificate(func() time.Time { return notAfter })
	fams, _ = scrape(t, m)
	if v := value(t, fams, "egress_authz_serving_certificate_expiry_timestamp_seconds"); v != float64(notAfter.Unix()) {
		t.Errorf("got %v, want %d", v, notAfter.Unix())
	}
	notAfter = notAfter.AddDate(0, 1, 0) // rotated: read at scrape time
	fams, _ = scrape(t, m)
	if v := value(t, fams, "egress_authz_serving_certificate_expiry_timestamp_seconds"); v != float64(notAfter.Unix()) {
		t.Errorf("after rotation: got %v, want %d", v, notAfter.Unix())
	}
}
