package authz_test

import (
	"testing"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/rules"
)

// TestDecisionWordIsTheAuditWord: responses, spans and decision records
// all write a decision with rules.DecisionWord, which must be the word the
// decision log stores.
func TestDecisionWordIsTheAuditWord(t *testing.T) {
	if got := rules.DecisionWord(true); got != audit.Allow {
		t.Errorf("DecisionWord(true) = %q, want %q", got, audit.Allow)
	}
	if got := rules.DecisionWord(false); got != audit.Deny {
		t.Errorf("DecisionWord(false) = %q, want %q", got, audit.Deny)
	}
}
