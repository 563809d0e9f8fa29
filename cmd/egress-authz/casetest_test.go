package main

// Tests of rules test, run in-process on the example rules.

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestComplianceExampleCases runs the example test cases shipped beside
// the example rules, as make test does.
func TestComplianceExampleCases(t *testing.T) {
	out, errs, code := runCompliance(t, "rules", "test", exampleRules, "--cases", exampleCases, "--at", complianceAt)
	if code != exitOK || strings.Contains(out, "FAIL") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	if !strings.HasSuffix(out, " passed, 0 failed\n") || strings.HasPrefix(out, "0 passed") {
		t.Errorf("summary: %q", out)
	}
}

func TestComplianceRulesTestReportsFailures(t *testing.T) {
	dir := t.TempDir()
	cases := filepath.Join(dir, "cases.yaml")
	writeTestFile(t, cases, `cases:
  - name: checkout charges Stripe
    principal: spiffe://cluster.local/ns/payments/sa/checkout
    method: POST
    url: https://api.stripe.com/v1/charges
    expect: allow
    rule: payments-stripe-charges
  - name: refunds may charge too
    principal: spiffe://cluster.local/ns/payments/sa/refunds
    method: POST
    url: https://api.stripe.com/v1/charges
    expect: allow
  - name: the indexer reaches Gemini
    principal: spiffe://cluster.local/ns/search/sa/indexer
    url: https://generativelanguage.googleapis.com/v1/models
    expect: deny
    rule: search-google-apis
`)
	out, _, code := runCompliance(t, "rules", "test", exampleRules, "--cases", cases, "--at", complianceAt)
	if code != exitFail {
		t.Fatalf("exit %d, want %d\n%s", code, exitFail, out)
	}
	for _, want := range []string{
		"ok    checkout charges Stripe\n",
		"FAIL  refunds may charge too  (" + cases + ":8:5)\n",
		"      request:  POST https://api.stripe.com/v1/charges from spiffe://cluster.local/ns/payments/sa/refunds\n",
		"      expected: allow\n",
		"      got:      deny (no-matching-rule)\n",
		"      - expected allow, got deny\n",
		"      why:      egress-authz rules explain " + exampleRules + " --principal spiffe://cluster.local/ns/payments/sa/refunds -X POST https://api.stripe.com/v1/charges",
		"FAIL  the indexer reaches Gemini",
		"      - expected rule search-google-apis to decide, got rule deny-generative-language\n",
		"1 passed, 2 failed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q\n%s", want, out)
		}
	}

	out, _, code = runCompliance(t, "rules", "test", exampleRules, "--cases", cases, "--at", complianceAt, "--format", "json")
	var res struct {
		Passed, Failed int
		Results        []struct {
			Name     string
			Passed   bool
			Got      struct{ Decision, Rule, Reason string }
			Problems []string
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != exitFail {
		t.Fatalf("exit %d, %v\n%s", code, err, out)
	}
	if res.Passed != 1 || res.Failed != 2 || len(res.Results) != 3 || res.Results[2].Got.Rule != "deny-generative-language" {
		t.Errorf("json: %+v", res)
	}
}

func TestComplianceRulesTestInvalidFiles(t *testing.T) {
	dir := t.TempDir()
	cases := filepath.Join(dir, "cases.yaml")
	writeTestFile(t, cases, "cases:\n  - name: a\n    url: api.stripe.com/v1\n    expect: allow\n    colour: red\n")
	out, _, code := runCompliance(t, "rules", "test", exampleRules, "--cases", cases)
	if code != exitFail || !strings.Contains(out, cases+":5:5: case: unknown key \"colour\"") {
		t.Errorf("exit %d\n%s", code, out)
	}
	writeTestFile(t, cases, "cases:\n  - name: a\n    url: api.stripe.com/v1\n    expect: allow\n")
	out, _, code = runCompliance(t, "rules", "test", exampleRules, "--cases", cases, "--format", "json")
	var res struct {
		Errors []struct{ Pos, Message string }
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != exitFail {
		t.Fatalf("exit %d, %v\n%s", code, err, out)
	}
	if len(res.Errors) != 1 || res.Errors[0].Pos != cases+":3:10" || !strings.Contains(res.Errors[0].Message, "want scheme://host/path") {
		t.Errorf("errors %+v", res.Errors)
	}
	broken := filepath.Join(dir, "rules.yaml")
	writeTestFile(t, broken, "apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules:\n  - id: Bad\n    action: allow\n")
	out, _, code = runCompliance(t, "rules", "test", broken, "--cases", exampleCases)
	if code != exitFail || !strings.Contains(out, broken+":5:9: id \"Bad\"") {
		t.Errorf("exit %d\n%s", code, out)
	}
	if _, _, code := runCompliance(t, "rules", "test", exampleRules); code != exitUsage {
		t.Errorf("without --cases: exit %d, want %d", code, exitUsage)
	}
}

// TestRulesTestJSONContract: the JSON of rules test, and of an invalid
// case file, has the keys CI reads, every one of them, and no other.
func TestRulesTestJSONContract(t *testing.T) {
	dir := t.TempDir()
	cases := filepath.Join(dir, "cases.yaml")
	writeTestFile(t, cases, `cases:
  - name: refunds may charge after the expiry
    principal: spiffe://cluster.local/ns/payments/sa/refunds
    method: POST
    url: https://api.stripe.com/v1/charges
    expect: allow
    rule: payments-stripe-charges
    reason: allowed-by-rule
    at: 2027-07-01
  - name: sendgrid over TLS
    principal: spiffe://cluster.local/ns/notify/sa/mailer
    sni: api.sendgrid.com
    port: 8443
    expect: allow
`)
	out, _, code := runCompliance(t, "rules", "test", exampleRules, "--cases", cases, "--at", complianceAt, "--format", "json")
	if code != exitFail {
		t.Fatalf("exit %d\n%s", code, out)
	}
	var res rulesTestOutput
	checkJSON(t, out, &res, map[string]string{
		"":                   "at cases failed passed results rules ruleset",
		"results[]":          "name pos passed request expected got problems",
		"results[].request":  "principal method url sni port at",
		"results[].expected": "decision rule reason",
		"results[].got":      "decision rule reason",
	})
	if res.Passed != 1 || res.Failed != 1 || res.Rules != exampleRules || res.Cases != cases || res.At != complianceAt ||
		len(res.Results) != 2 || res.Results[0].Request.At != "2027-07-01T00:00:00Z" || res.Results[1].Request.Port != 8443 {
		t.Errorf("rules test JSON %+v", res)
	}

	writeTestFile(t, cases, "cases:\n  - name: a\n    url: api.stripe.com/v1\n    expect: allow\n")
	out, _, code = runCompliance(t, "rules", "test", exampleRules, "--cases", cases, "--format", "json")
	var inv invalidOutput
	checkJSON(t, out, &inv, map[string]string{"": "errors", "errors[]": "pos message"})
	if code != exitFail || len(inv.Errors) != 1 || inv.Errors[0].Pos != cases+":3:10" {
		t.Errorf("exit %d, errors %+v", code, inv.Errors)
	}
}
