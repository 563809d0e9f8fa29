package main

// Tests of rules suggest, run in-process on a real decision log (see
// TestComplianceDecisionLog).

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/stores"
	"github.com/egress-authz/egress-authz/internal/compliance"
	"github.com/egress-authz/egress-authz/rules"
)

func testSuggest(t *testing.T, log *decisionLog) {
	out, errs, code := runCompliance(t, "rules", "suggest", "--from", log.dsn, "--namespace", "payments", "--since", "7d")
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{
		// The 50 partner.example callers claim namespace payments in a
		// trust domain we do not trust: the log records no namespace for
		// them, so they are not in the namespace's traffic at all.
		"# 1990 requests from namespace payments",
		"# Left out, since no rule can allow them: 20 unsafe-path.\n",
		// Methods per path: POST created charges, GET and DELETE were on one.
		"      methods: [POST]\n      paths: [/v1/charges]\n",
		"      methods: [DELETE, GET]\n      paths: [\"/v1/charges/*\"]\n",
		`principals: ["` + refundsSA + `"]`,
		"      paths: [/v2/score]\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("suggestion lacks %q\n%s", want, out)
		}
	}
	if strings.Contains(out, "sendgrid") || strings.Contains(out, "partner.example") {
		t.Errorf("suggestion covers other namespaces or untrusted callers:\n%s", out)
	}

	// It is valid, and lint says what is left to fill in: --strict fails
	// on the TODO placeholders, and a policy requiring owner, ticket and
	// expires rejects it.
	path := filepath.Join(t.TempDir(), "suggested.yaml")
	writeTestFile(t, path, out)
	lint, lintErr, code := runCompliance(t, "rules", "lint", path)
	if code != exitOK || !strings.Contains(lint, `: warning: rule "payments-checkout-api-stripe-com-`) || !strings.Contains(lint, "owner is the placeholder TODO") {
		t.Errorf("rules lint: exit %d, want 0 and placeholder warnings\n%s%s", code, lint, lintErr)
	}
	if _, _, code := runCompliance(t, "rules", "lint", "--strict", path); code != exitFail {
		t.Errorf("rules lint --strict: exit %d, want 1 on the placeholders", code)
	}
	lint, _, code = runCompliance(t, "rules", "lint", "--require", "owner,ticket,expires", "--max-expiry", "180d", path)
	if code != exitFail || !strings.Contains(lint, "owner is the placeholder TODO, which the lint policy does not accept") || !strings.Contains(lint, "no expires, which the lint policy requires") {
		t.Errorf("rules lint --require owner,ticket,expires: exit %d, want 1\n%s", code, lint)
	}
	// ...and allows every request of the namespace it was built from that
	// a rule can allow (all but the unsafe paths).
	set, err := rules.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := rules.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	st, err := stores.Open(context.Background(), log.dsn, stores.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reqs, _, err := compliance.Requests(context.Background(), st, audit.Filter{Namespace: "payments", Since: log.now.Add(-7 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	unsafe := 0
	for _, req := range reqs {
		d := tab.Decide(req, log.now)
		switch {
		case d.Reason == rules.ReasonUnsafePath:
			unsafe++
		case !d.Allow:
			t.Errorf("the suggestion denies %+v: %s", req, d.Reason)
		}
	}
	if len(reqs) != 1990 || unsafe != 20 {
		t.Errorf("%d requests, %d unsafe", len(reqs), unsafe)
	}

	out, _, code = runCompliance(t, "rules", "suggest", "--from", log.dsn, "--namespace", "payments", "--format", "json")
	var js suggestOutput
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, out)
	}
	checkJSON(t, out, &js, map[string]string{
		"":        "by_reason from left_out namespace requests rules since skipped used yaml",
		"rules[]": "id requests principals hosts ports methods paths",
	})
	if js.Requests != 1990 || js.Used != 1970 || js.Skipped[rules.ReasonUnsafePath] != 20 || js.Skipped[rules.ReasonUntrustedDomain] != 0 || len(js.Rules) == 0 || !strings.HasPrefix(js.YAML, "apiVersion:") {
		t.Errorf("json: %+v", js)
	}

	_, errs, code = runCompliance(t, "rules", "suggest", "--from", log.dsn, "--namespace", "nobody")
	if code != exitFail || !strings.Contains(errs, "no usable recorded requests from namespace nobody") {
		t.Errorf("empty namespace: exit %d, %s", code, errs)
	}
	if _, _, code := runCompliance(t, "rules", "suggest", "--from", log.dsn); code != exitUsage {
		t.Errorf("without --namespace: exit %d", code)
	}
	if _, errs, code := runCompliance(t, "rules", "suggest", "--from", log.dsn, "--namespace", "payments", "--max-paths", "3"); code != exitUsage || !strings.Contains(errs, "add --widen") {
		t.Errorf("--max-paths without --widen: exit %d, %s", code, errs)
	}
	out, _, code = runCompliance(t, "rules", "suggest", "--from", log.dsn, "--namespace", "payments", "--widen", "--max-paths", "3")
	if code != exitOK || !strings.Contains(out, "kind: RuleSet") {
		t.Errorf("--widen: exit %d\n%s", code, out)
	}
}
