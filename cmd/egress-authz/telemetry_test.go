package main

// In-process tests of what the server tells its operators: Prometheus
// metrics on the admin listener after real gRPC traffic, and a trace span
// per Check exported by OTLP to an in-process collector.

import (
	"context"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/stores"
	"github.com/egress-authz/egress-authz/internal/otlptest"
)

func TestMetricsMoveWithTraffic(t *testing.T) {
	s := inprocStart(t, inprocConfig(t))
	metrics := metricsClient{url: "http://" + s.adminAddr() + "/metrics"}
	client := authv3.NewAuthorizationClient(authztest.Dial(t, s.grpcAddr()))
	before := metrics.scrape(t)

	checks := []struct {
		principal, url, decision string
	}{
		{paymentsCaller, "https://api.example.com/v1/a", "allow"},                          // miss
		{paymentsCaller, "https://api.example.com/v1/a", "allow"},                          // miss, now cached
		{paymentsCaller, "https://api.example.com/v1/a", "allow"},                          // hit
		{paymentsCaller, "https://api.example.com/v1/a", "allow"},                          // hit
		{paymentsCaller, "https://evil.example.com/", "deny"},                              // denied by rule, miss
		{paymentsCaller, "https://other.example.com/", "deny"},                             // no matching rule, miss
		{paymentsCaller, "https://trial.example.com/x", "deny"},                            // no matching rule, dry-run allow, miss
		{"", "https://api.example.com/v1/a", "deny"},                                       // no identity, miss
		{"spiffe://evil.corp/ns/payments/sa/checkout", "https://api.example.com/", "deny"}, // untrusted domain, miss
	}
	for _, c := range checks {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		resp, err := client.Check(ctx, httpCheck(t, c.principal, c.url, nil))
		cancel()
		if err != nil {
			t.Fatalf("Check %s %s: %v", c.principal, c.url, err)
		}
		if got := decisionOf(resp); got != c.decision {
			t.Fatalf("Check %s %s: %s, want %s (%v)", c.principal, c.url, got, c.decision, authztest.Metadata(resp))
		}
	}
	after := metrics.scrape(t)

	for _, tc := range []struct {
		series string
		delta  float64
	}{
		{`egress_authz_decisions_total{decision="allow",reason="allowed-by-rule"}`, 4},
		{`egress_authz_decisions_total{decision="deny",reason="denied-by-rule"}`, 1},
		{`egress_authz_decisions_total{decision="deny",reason="no-matching-rule"}`, 2},
		{`egress_authz_decisions_total{decision="deny",reason="no-identity"}`, 1},
		{`egress_authz_decisions_total{decision="deny",reason="untrusted-trust-domain"}`, 1},
		{`egress_authz_decisions_total{decision="deny",reason="invalid-request"}`, 0},
		{`egress_authz_decisions_total{decision="deny",reason="audit-unavailable"}`, 0},
		{`egress_authz_cache_requests_total{result="hit"}`, 2},
		{`egress_authz_cache_requests_total{result="miss"}`, 7},
		{`egress_authz_check_duration_seconds_count`, float64(len(checks))},
		{`egress_authz_dry_run_outcomes_total{outcome="allow",rule="payments-trial"}`, 1},
		// One record per enforced decision, plus one for the dry-run outcome.
		{`egress_authz_audit_records_written_total`, float64(len(checks) + 1)},
	} {
		if got := after[tc.series] - before[tc.series]; got != tc.delta {
			t.Errorf("%s moved by %v (%v -> %v), want %v", tc.series, got, before[tc.series], after[tc.series], tc.delta)
		}
	}
	for series, want := range map[string]float64{
		"egress_authz_rules_generation":         1,
		"egress_authz_rules":                    3,
		"egress_authz_rules_last_reload_failed": 0,
		"egress_authz_audit_overflows_total":    0,
	} {
		if got, ok := after[series]; !ok || got != want {
			t.Errorf("%s = %v (present: %v), want %v", series, got, ok, want)
		}
	}
	if after["egress_authz_rules_loaded_timestamp_seconds"] < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("rules_loaded_timestamp_seconds %v, want the start-up time", after["egress_authz_rules_loaded_timestamp_seconds"])
	}
	for series := range after {
		if strings.Contains(series, "example.com") || strings.Contains(series, "spiffe://") {
			t.Errorf("series %s: hosts and principals must not be label values", series)
		}
	}
}

func TestTracingSpanPerCheckWithTheRemoteParent(t *testing.T) {
	collector := otlptest.StartTraceReceiver(t)
	cfg := inprocConfig(t)
	s := inprocStart(t, cfg)
	client := authv3.NewAuthorizationClient(authztest.Dial(t, s.grpcAddr()))

	type sent struct {
		requestID, traceID, parentID string // parent ids empty: no traceparent
		url, decision, rule, host    string
	}
	checks := []sent{
		{"trace-1", "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "https://api.example.com/v1", "allow", "payments-example", "api.example.com"},
		{"trace-2", "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "https://evil.example.com/", "deny", "deny-evil", "evil.example.com"},
		{"trace-3", "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "https://API.Example.com:443/v1", "allow", "payments-example", "api.example.com"},
		{"trace-4", "", "", "https://other.example.com/", "deny", "", "other.example.com"},
	}
	for _, c := range checks {
		headers := map[string]string{"x-request-id": c.requestID}
		if c.traceID != "" {
			headers["traceparent"] = "00-" + c.traceID + "-" + c.parentID + "-01"
		}
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		resp, err := client.Check(ctx, httpCheck(t, paymentsCaller, c.url, headers))
		cancel()
		if err != nil {
			t.Fatalf("Check %s: %v", c.requestID, err)
		}
		if got := decisionOf(resp); got != c.decision {
			t.Fatalf("Check %s: %s, want %s", c.requestID, got, c.decision)
		}
	}
	// Shutting down flushes the span exporter.
	if err := s.stop(); err != nil {
		t.Fatalf("server stop: %v", err)
	}

	spans := map[string]*tracepb.Span{} // by request id
	for _, sp := range collector.Spans() {
		attrs := map[string]string{}
		for _, kv := range sp.GetAttributes() {
			attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
		}
		id := attrs["egress_authz.request_id"]
		if spans[id] != nil {
			t.Errorf("two spans for request %q", id)
		}
		spans[id] = sp
	}
	if len(spans) != len(checks) {
		t.Fatalf("collector received %d spans, want one per Check (%d)", len(collector.Spans()), len(checks))
	}

	traceIDs := map[string]string{} // request id -> trace id the span was exported with
	for _, c := range checks {
		sp := spans[c.requestID]
		if sp == nil {
			t.Errorf("no span for %s", c.requestID)
			continue
		}
		traceID, parentID := hex.EncodeToString(sp.GetTraceId()), hex.EncodeToString(sp.GetParentSpanId())
		traceIDs[c.requestID] = traceID
		if c.traceID != "" && (traceID != c.traceID || parentID != c.parentID) {
			t.Errorf("%s: span in trace %s under %s, want the traceparent's %s under %s", c.requestID, traceID, parentID, c.traceID, c.parentID)
		}
		if c.traceID == "" && (len(sp.GetParentSpanId()) != 0 || len(traceID) != 32 || traceID == strings.Repeat("0", 32)) {
			t.Errorf("%s: without a traceparent, want a root span in a new trace; got trace %s, parent %s", c.requestID, traceID, parentID)
		}
		if sp.GetName() != "egress-authz.Check" || sp.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
			t.Errorf("%s: span %q kind %v, want egress-authz.Check, server", c.requestID, sp.GetName(), sp.GetKind())
		}
		attrs := map[string]string{}
		for _, kv := range sp.GetAttributes() {
			attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
		}
		for k, want := range map[string]string{
			"egress_authz.decision": c.decision, "egress_authz.rule": c.rule, "egress_authz.host": c.host,
		} {
			if attrs[k] != want {
				t.Errorf("%s: attribute %s = %q, want %q", c.requestID, k, attrs[k], want)
			}
		}
		if attrs["egress_authz.reason"] == "" {
			t.Errorf("%s: no egress_authz.reason attribute", c.requestID)
		}
	}

	// Each decision record carries its span's trace id.
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	st, err := stores.Open(ctx, cfg.Audit[0], stores.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recorded := map[string]string{}
	if _, err := st.Query(ctx, audit.Filter{}, func(r *audit.Record) error {
		if r.Enforced {
			recorded[r.RequestID] = r.TraceID
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		if got, want := recorded[c.requestID], traceIDs[c.requestID]; got != want {
			t.Errorf("%s: decision record trace id %q, want the span's %q", c.requestID, got, want)
		}
	}
}
