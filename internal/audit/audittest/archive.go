package audittest

import (
	"context"
	"errors"
	"testing"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// ArchiveConformance checks a store's rule-set archive: a version stored
// reads back whole, storing it again changes nothing (a version names its
// content, so the first copy stands), an unknown or malformed version is
// ErrRuleSetNotFound, and a version written unlike the rules write one is
// refused.
func ArchiveConformance(t *testing.T, a audit.RuleSetArchive) {
	t.Helper()
	ctx := context.Background()
	rs := audit.RuleSet{Version: "0123456789abcdef", Files: []audit.RuleSetFile{
		{Name: "payments.yaml", Content: "apiVersion: egress-authz/v1\nrules: []\n"},
		{Name: "processors.yaml", Content: "processors:\n  - id: stripe\n    legalName: \"Stripe Payments Europe, Ltd.\" # ü\n"},
	}}
	if err := a.PutRuleSet(ctx, rs); err != nil {
		t.Fatalf("PutRuleSet: %v", err)
	}
	other := rs
	other.Files = []audit.RuleSetFile{{Name: "x.yaml", Content: "changed"}}
	if err := a.PutRuleSet(ctx, other); err != nil {
		t.Fatalf("PutRuleSet of a version kept already: %v", err)
	}
	got, err := a.RuleSet(ctx, rs.Version)
	if err != nil {
		t.Fatalf("RuleSet(%s): %v", rs.Version, err)
	}
	if got.Version != rs.Version || len(got.Files) != 2 || got.Files[0] != rs.Files[0] || got.Files[1] != rs.Files[1] {
		t.Errorf("RuleSet(%s) = %+v, want the first copy stored, %+v", rs.Version, got, rs)
	}
	for _, v := range []string{"fedcba9876543210", "../../etc/passwd", ""} {
		if _, err := a.RuleSet(ctx, v); !errors.Is(err, audit.ErrRuleSetNotFound) {
			t.Errorf("RuleSet(%q): %v, want ErrRuleSetNotFound", v, err)
		}
	}
	if err := a.PutRuleSet(ctx, audit.RuleSet{Version: "../x"}); err == nil {
		t.Error("PutRuleSet of version ../x: no error")
	}
}
