package main

// Tests of rules explain, run in-process on the example rules.

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/egress-authz/egress-authz/rules"
)

func TestComplianceExplain(t *testing.T) {
	out, _, code := runCompliance(t, "rules", "explain", exampleRules, "--principal", "spiffe://cluster.local/ns/payments/sa/checkout",
		"https://api.stripe.com/v1/charges", "-X", "DELETE", "--at", complianceAt)
	if code != exitDeny {
		t.Fatalf("exit %d\n%s", code, out)
	}
	for _, want := range []string{
		"decision:   deny\n",
		"reason:     no-matching-rule\n",
		"request:    DELETE https://api.stripe.com/v1/charges from spiffe://cluster.local/ns/payments/sa/checkout\n",
		"Matching rules:\n  (none)\n",
		"Nearest rules that did not match:\n  payments-stripe-charges  (" + exampleRules + ":" + positionOf(t, exampleRules, "id: payments-stripe-charges") + ", allow)\n    - method DELETE is not GET or POST\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q\n%s", want, out)
		}
	}

	out, _, code = runCompliance(t, "rules", "explain", exampleRules, "--principal", "spiffe://cluster.local/ns/search/sa/indexer",
		"https://generativelanguage.googleapis.com/v1/models", "--at", complianceAt)
	if code != exitDeny || !strings.Contains(out, "  search-google-apis  ("+exampleRules+":"+positionOf(t, exampleRules, "id: search-google-apis")+")\n    allow, overridden: a matching deny rule wins\n") ||
		!strings.Contains(out, "  deny-generative-language  ("+exampleRules+":"+positionOf(t, exampleRules, "id: deny-generative-language")+")\n    decides: deny\n") {
		t.Errorf("exit %d\n%s", code, out)
	}

	out, _, code = runCompliance(t, "rules", "explain", exampleRules, "--principal", "spiffe://cluster.local/ns/notify/sa/mailer",
		"--sni", "api.sendgrid.com", "--format", "json", "--at", complianceAt)
	var e struct {
		Decision, Rule string
		Request        struct {
			Host           string
			Port           int
			TLSPassthrough bool `json:"tls_passthrough"`
		}
		Rules []struct {
			ID      string
			Matched bool
			Role    string
		}
	}
	if err := json.Unmarshal([]byte(out), &e); err != nil || code != exitOK {
		t.Fatalf("exit %d, %v\n%s", code, err, out)
	}
	if e.Decision != "allow" || e.Rule != "notify-sendgrid" || !e.Request.TLSPassthrough || e.Request.Port != 443 {
		t.Errorf("json: %+v", e)
	}
	if len(e.Rules) != 6 {
		t.Errorf("%d rules in the JSON, want the matching one and 5 near misses", len(e.Rules))
	}

	// After the Stripe rule's expiry day, explain says so.
	out, _, _ = runCompliance(t, "rules", "explain", exampleRules, "--principal", "spiffe://cluster.local/ns/payments/sa/checkout",
		"-X", "POST", "https://api.stripe.com/v1/charges", "--at", "2027-07-01")
	if !strings.Contains(out, "    - the rule expired on 2027-06-30\n") {
		t.Errorf("expired rule not explained:\n%s", out)
	}

	// A path longer than explain takes is refused, saying the limit.
	_, stderr, code := runCompliance(t, "rules", "explain", exampleRules, "--principal", "spiffe://cluster.local/ns/payments/sa/checkout",
		"https://api.stripe.com/"+strings.Repeat("a", rules.MaxExplainField), "--all")
	if code != exitUsage || !strings.Contains(stderr, "the path is 8193 bytes long; explain takes at most 8192 bytes") {
		t.Errorf("a long path: exit %d, stderr %q; want %d and the limit", code, stderr, exitUsage)
	}

	for _, args := range [][]string{
		{"rules", "explain", exampleRules, "--principal", "spiffe://cluster.local/ns/a/sa/b"},
		{"rules", "explain", exampleRules, "--sni", "a.example", "https://a.example/"},
		{"rules", "explain", exampleRules, "--sni", "a.example", "-X", "POST"},
		{"rules", "explain", exampleRules, "no-scheme.example/"},
		{"rules", "explain", exampleRules, "https://a.example/", "--port", "8443"},
		{"rules", "explain", exampleRules, "https://a.example/", "--format", "yaml"},
	} {
		if _, _, code := runCompliance(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}
