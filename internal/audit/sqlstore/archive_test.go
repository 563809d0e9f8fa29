package sqlstore

import (
	"testing"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
)

// TestRuleSetArchive: each SQL store keeps rule sets in its rulesets
// table, read back by a second handle as an auditor's would be.
func TestRuleSetArchive(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixtureOn(t, kind, audit.Options{})
			audittest.ArchiveConformance(t, f.sink.(audit.RuleSetArchive))
			if _, err := f.reader(t).(audit.RuleSetArchive).RuleSet(t.Context(), "0123456789abcdef"); err != nil {
				t.Errorf("a second handle: %v", err)
			}
		})
	}
}
