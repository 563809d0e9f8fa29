// Package telemetry holds the server's metrics and tracing set-up.
//
// Metrics use the Prometheus client library rather than OpenTelemetry's
// Prometheus exporter: on the Check path a counter increment must cost a
// few nanoseconds with no allocation, and every label value the Check path
// uses is bound once to a counter of its own: at start-up, or for a dry-run
// rule the first time it is seen in its rule set. Labels are
// bounded: decision × reason (fixed sets), dry-run rule ids (bounded by the
// rule set), sink names; never principals, hosts or paths.
package telemetry

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/rules"
)

// Metrics is the server's Prometheus registry and its instruments. It is
// safe for concurrent use.
type Metrics struct {
	reg       *prometheus.Registry
	check     prometheus.Histogram
	decisions map[rules.Reason]prometheus.Counter
	other     prometheus.Counter // a reason not in the fixed set (none today)
	cacheHit  prometheus.Counter
	cacheMiss prometheus.Counter
	dryRun    *prometheus.CounterVec
	dryRunSet atomic.Pointer[dryRunCounters]                // bound counters of the latest rule set seen
	bind      func(rule, outcome string) prometheus.Counter // dryRun.WithLabelValues; counted in tests
	refused   *prometheus.CounterVec
	certs     *prometheus.CounterVec
	reloads   *prometheus.CounterVec
}

// NewMetrics returns the metrics, registered with Go runtime and process
// collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &Metrics{reg: reg, decisions: map[rules.Reason]prometheus.Counter{}}
	m.check = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "egress_authz_check_duration_seconds",
		Help:    "Time to decide a Check, from request to response, excluding gRPC transport.",
		Buckets: []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 0.1},
	})
	f(m.check)
	dec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "egress_authz_decisions_total",
		Help: "Enforced decisions, by decision and reason.",
	}, []string{"decision", "reason"})
	f(dec)
	for _, r := range rules.Reasons() {
		d := "deny"
		if r == rules.ReasonAllowed {
			d = "allow"
		}
		m.decisions[r] = dec.WithLabelValues(d, string(r))
	}
	m.other = dec.WithLabelValues("deny", "other")
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "egress_authz_cache_requests_total",
		Help: "Decision cache lookups, by result (hit or miss).",
	}, []string{"result"})
	f(cache)
	m.cacheHit, m.cacheMiss = cache.WithLabelValues("hit"), cache.WithLabelValues("miss")
	m.dryRun = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "egress_authz_dry_run_outcomes_total",
		Help: "Would-be outcomes of matching dry-run rules, by rule and outcome (allow or deny).",
	}, []string{"rule", "outcome"})
	f(m.dryRun)
	m.bind = func(rule, outcome string) prometheus.Counter { return m.dryRun.WithLabelValues(rule, outcome) }
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "egress_authz_refused_clients_total",
		Help: "Callers refused at the TLS handshake of the gRPC or HTTP authorization listener, by reason.",
	}, []string{"reason"})
	f(m.refused)
	m.certs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "egress_authz_forwarded_certs_refused_total",
		Help: "Client certificates forwarded by a proxy to the HTTP authorization listener that are no identity, by reason (malformed or untrusted); each such request is denied no-identity.",
	}, []string{"reason"})
	f(m.certs)
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "egress_authz_rules_reloads_total",
		Help: "Rule reloads that found changed files, by result (ok or error).",
	}, []string{"result"})
	f(m.reloads)
	return m
}

// Checked records one decided Check. It implements authz.Observer.
func (m *Metrics) Checked(d *rules.Decision, elapsed time.Duration) {
	m.check.Observe(elapsed.Seconds())
	if c, ok := m.decisions[d.Reason]; ok {
		c.Inc()
	} else {
		m.other.Inc()
	}
	if d.Reason != rules.ReasonInvalidRequest && d.Reason != rules.ReasonAuditUnavailable {
		if d.Cached {
			m.cacheHit.Inc()
		} else {
			m.cacheMiss.Inc()
		}
	}
	if len(d.DryRun) > 0 {
		set := m.dryRunCounters(d.Version)
		for _, o := range d.DryRun {
			set.counter(m.bind, o).Inc()
		}
	}
}

// dryRunCounters binds the dry-run counters of one rule set, per outcome
// and rule (keyed by the compiled rule's pointer, so each map is bounded by
// the rule set). Binding with WithLabelValues hashes the labels and takes a
// lock; once bound, a Check only loads from a map.
type dryRunCounters struct {
	version     string
	allow, deny sync.Map // *rules.Rule -> prometheus.Counter
}

// dryRunCounters returns the bound counters of the rule set version. A new
// version replaces the set, dropping the bindings of the old rules (their
// series stay in the CounterVec, and are bound again if they come back).
// Around a reload, Checks decided by the old and the new set may replace
// it back and forth a few times; that only costs re-binding.
func (m *Metrics) dryRunCounters(version string) *dryRunCounters {
	set := m.dryRunSet.Load()
	if set != nil && set.version == version {
		return set
	}
	fresh := &dryRunCounters{version: version}
	if m.dryRunSet.CompareAndSwap(set, fresh) {
		return fresh
	}
	if set = m.dryRunSet.Load(); set.version == version {
		return set
	}
	return fresh // lost a race with another version: bind in a set of our own
}

func (s *dryRunCounters) counter(bind func(rule, outcome string) prometheus.Counter, o rules.Outcome) prometheus.Counter {
	bound, outcome := &s.deny, "deny"
	if o.Allow {
		bound, outcome = &s.allow, "allow"
	}
	if c, ok := bound.Load(o.Rule); ok {
		return c.(prometheus.Counter)
	}
	c := bind(o.Rule.ID, outcome)
	bound.Store(o.Rule, c)
	return c
}

// Refused counts a caller refused at the TLS handshake.
func (m *Metrics) Refused(reason string) { m.refused.WithLabelValues(reason).Inc() }

// ForwardedCertRefused counts a forwarded client certificate that is no
// identity: authz.HTTPOptions.OnCertRefused.
func (m *Metrics) ForwardedCertRefused(reason string) { m.certs.WithLabelValues(reason).Inc() }

// Reloaded counts a rule reload attempt.
func (m *Metrics) Reloaded(err error) {
	if err != nil {
		m.reloads.WithLabelValues("error").Inc()
		return
	}
	m.reloads.WithLabelValues("ok").Inc()
}

// WatchRules exports the served rule set's state, read at scrape time.
func (m *Metrics) WatchRules(status func() rules.Status) {
	g := func(name, help string, v func(rules.Status) float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return v(status()) }))
	}
	m.reg.MustRegister(rulesInfo{status})
	g("egress_authz_rules_generation", "Generation of the served rule set: 1 at start, +1 per successful reload.",
		func(s rules.Status) float64 { return float64(s.Generation) })
	g("egress_authz_rules", "Rules in the served rule set.", func(s rules.Status) float64 { return float64(s.Rules) })
	g("egress_authz_rules_loaded_timestamp_seconds", "When the served rule set was loaded.",
		func(s rules.Status) float64 { return unix(s.LoadedAt) })
	g("egress_authz_rules_next_expiry_timestamp_seconds", "When the next rule expires (0: none will).",
		func(s rules.Status) float64 { return unix(s.NextExpiry) })
	g("egress_authz_rules_bundle_expiry_timestamp_seconds", "When the served rule bundle expires (0: rule files, not a bundle). New replicas refuse it from then on.",
		func(s rules.Status) float64 {
			if s.Bundle == nil {
				return 0
			}
			return unix(s.Bundle.Expires)
		})
	g("egress_authz_rules_last_check_timestamp_seconds", "When the bundle source was last asked for a new bundle (0: rule files).",
		func(s rules.Status) float64 { return unix(s.LastCheck) })
	g("egress_authz_rules_last_reload_failed", "1 while the last reload failed and an older rule set is served.",
		func(s rules.Status) float64 {
			if s.LastError != "" {
				return 1
			}
			return 0
		})
}

// rulesInfo exports the served rule set's version as a label of a
// constant 1, the Prometheus way of exporting a string.
type rulesInfo struct{ status func() rules.Status }

var rulesInfoDesc = prometheus.NewDesc("egress_authz_rules_info", "1, labelled with the served rule set's version (the ruleset of its decision records).", []string{"version"}, nil)

func (c rulesInfo) Describe(ch chan<- *prometheus.Desc) { ch <- rulesInfoDesc }
func (c rulesInfo) Collect(ch chan<- prometheus.Metric) {
	if v := c.status().Version; v != "" {
		ch <- prometheus.MustNewConstMetric(rulesInfoDesc, prometheus.GaugeValue, 1, v)
	}
}

// WatchArchive exports how many rule-set versions are not yet in every
// store that keeps the archive, read at scrape time.
func (m *Metrics) WatchArchive(pending func() int) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "egress_authz_ruleset_archive_pending",
		Help: "Rule-set versions served but not yet archived in every decision-log store (kept in DATA/rulesets meanwhile)."},
		func() float64 { return float64(pending()) }))
}

// WatchServingCertificate exports when the serving certificate expires,
// read at scrape time; nil (plaintext) exports 0.
func (m *Metrics) WatchServingCertificate(expiry func() time.Time) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "egress_authz_serving_certificate_expiry_timestamp_seconds",
		Help: "When the certificate of the gRPC and HTTP authorization listeners expires (0: plaintext).",
	}, func() float64 {
		if expiry == nil {
			return 0
		}
		return unix(expiry())
	}))
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// WatchAudit exports the decision log's state, read at scrape time.
func (m *Metrics) WatchAudit(stats func() audit.Stats) {
	m.reg.MustRegister(&auditCollector{stats: stats})
}

var (
	auditWritten  = prometheus.NewDesc("egress_authz_audit_records_written_total", "Records written to the write-ahead log.", nil, nil)
	auditPending  = prometheus.NewDesc("egress_authz_audit_pending_records", "Records in the write-ahead log not yet in every sink (queue depth and spill).", nil, nil)
	auditOverflow = prometheus.NewDesc("egress_authz_audit_overflows_total", "Decisions refused or timed out because the decision-log buffer was full.", nil, nil)
	auditForks    = prometheus.NewDesc("egress_authz_audit_forks_total", "Times another process was found writing this writer's chain (a copied data directory), and the writer became a new one.", nil, nil)
	auditWALFail  = prometheus.NewDesc("egress_authz_audit_wal_write_failures_total", "Decision records refused because the write-ahead log could not be written (a full disk).", nil, nil)
	auditWALFree  = prometheus.NewDesc("egress_authz_audit_wal_free_bytes", "Space left on the file system of the write-ahead log (--data-dir).", nil, nil)
	auditBehind   = prometheus.NewDesc("egress_authz_audit_sink_behind_records", "Records a sink has not stored yet.", []string{"sink"}, nil)
	auditFailing  = prometheus.NewDesc("egress_authz_audit_sink_failing", "1 while a sink's writes fail (records wait in the write-ahead log).", []string{"sink"}, nil)
)

type auditCollector struct{ stats func() audit.Stats }

func (c *auditCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{auditWritten, auditPending, auditOverflow, auditForks, auditWALFail, auditWALFree, auditBehind, auditFailing} {
		ch <- d
	}
}

func (c *auditCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(auditWritten, prometheus.CounterValue, float64(s.Written))
	ch <- prometheus.MustNewConstMetric(auditPending, prometheus.GaugeValue, float64(s.Pending))
	ch <- prometheus.MustNewConstMetric(auditOverflow, prometheus.CounterValue, float64(s.Overflows))
	ch <- prometheus.MustNewConstMetric(auditForks, prometheus.CounterValue, float64(s.Forks))
	ch <- prometheus.MustNewConstMetric(auditWALFail, prometheus.CounterValue, float64(s.WALFailures))
	if s.WALFreeBytes >= 0 {
		ch <- prometheus.MustNewConstMetric(auditWALFree, prometheus.GaugeValue, float64(s.WALFreeBytes))
	}
	for sink, behind := range s.Sinks {
		ch <- prometheus.MustNewConstMetric(auditBehind, prometheus.GaugeValue, float64(behind), sink)
		failing := 0.0
		if s.Failing[sink] {
			failing = 1
		}
		ch <- prometheus.MustNewConstMetric(auditFailing, prometheus.GaugeValue, failing, sink)
	}
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
