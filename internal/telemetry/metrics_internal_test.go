package telemetry

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egress-authz/egress-authz/rules"
)

// The package promises that the Check path binds each label value once:
// a dry-run rule's counter is bound the first time the rule is seen in its
// rule set, not on every Check.
func TestDryRunCountersAreBoundOncePerRuleSet(t *testing.T) {
	m := NewMetrics()
	binds := 0
	bind := m.bind
	m.bind = func(rule, outcome string) prometheus.Counter { binds++; return bind(rule, outcome) }
	trial := &rules.Rule{ID: "trial"}
	decide := func(version string, allow bool) {
		d := rules.Decision{Reason: rules.ReasonNoMatchingRule, Version: version, DryRun: []rules.Outcome{{Rule: trial, Allow: allow}}}
		m.Checked(&d, time.Microsecond)
	}
	for range 100 {
		decide("v1", true)
		decide("v1", false)
	}
	if binds != 2 {
		t.Errorf("%d bindings for one rule's two outcomes over 200 Checks, want 2", binds)
	}
	decide("v2", true) // a new rule set: its rules are bound anew
	decide("v2", true)
	if binds != 3 {
		t.Errorf("%d bindings after a new rule set version, want 3", binds)
	}
}
