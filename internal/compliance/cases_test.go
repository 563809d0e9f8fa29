package compliance

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/rules"
)

func TestCaseProblems(t *testing.T) {
	tab := compileYAML(t, explainRules)
	allowed := tab.Decide(httpReq(checkout, "POST", "api.stripe.com", "/v1/charges"), testNow)
	denied := tab.Decide(httpReq(checkout, "DELETE", "api.stripe.com", "/v1/charges"), testNow)
	byRule := tab.Decide(httpReq(indexer, "GET", "generativelanguage.googleapis.com", "/"), testNow)
	for _, tc := range []struct {
		name string
		c    rules.Case
		d    rules.Decision
		want []string
	}{
		{"pass_allow_with_rule", rules.Case{Expect: rules.Allow, Rule: "payments-stripe-charges", HasRule: true}, allowed, nil},
		{"pass_deny_no_rule", rules.Case{Expect: rules.Deny, HasRule: true, Reason: rules.ReasonNoMatchingRule}, denied, nil},
		{"pass_deny_without_rule_key", rules.Case{Expect: rules.Deny}, byRule, nil},
		{"wrong_decision", rules.Case{Expect: rules.Deny}, allowed, []string{"expected deny, got allow"}},
		{"wrong_rule", rules.Case{Expect: rules.Deny, Rule: "search-google-apis", HasRule: true}, byRule,
			[]string{"expected rule search-google-apis to decide, got rule deny-generative-language"}},
		{"expected_no_rule", rules.Case{Expect: rules.Deny, HasRule: true}, byRule,
			[]string{"expected no deciding rule, got rule deny-generative-language"}},
		{"expected_rule_none_decided", rules.Case{Expect: rules.Deny, Rule: "payments-stripe-charges", HasRule: true}, denied,
			[]string{"expected rule payments-stripe-charges to decide, but no rule decided"}},
		{"rule_not_in_set", rules.Case{Expect: rules.Allow, Rule: "payments-stripe-charge", HasRule: true}, allowed,
			[]string{"expected rule payments-stripe-charge, which is not in the rule set"}},
		{"wrong_reason", rules.Case{Expect: rules.Deny, Reason: rules.ReasonUnsafePath}, denied,
			[]string{"expected reason unsafe-path, got no-matching-rule"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := caseProblems(&tc.c, tc.d, tab.Set())
			if len(got) != len(tc.want) {
				t.Fatalf("caseProblems = %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Errorf("caseProblems[%d] = %q, want it to contain %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func parseCases(t *testing.T, src string) []rules.Case {
	t.Helper()
	cases, err := rules.ParseCases(rules.Source{Name: "cases.yaml", Data: []byte(src)})
	if err != nil {
		t.Fatalf("ParseCases: %v\n--- source ---\n%s", err, src)
	}
	return cases
}

func TestRunCases(t *testing.T) {
	tab := compileYAML(t, explainRules)
	cases := parseCases(t, `cases:
  - name: checkout charges Stripe
    principal: spiffe://cluster.local/ns/payments/sa/checkout
    method: POST
    url: https://api.stripe.com/v1/charges
    expect: allow
    rule: payments-stripe-charges
  - name: the charges rule has expired by then
    principal: spiffe://cluster.local/ns/payments/sa/checkout
    url: https://api.stripe.com/v1/charges
    expect: allow
    at: 2027-07-01
  - name: sendgrid over TLS
    principal: spiffe://cluster.local/ns/notify/sa/mailer
    sni: api.sendgrid.com
    expect: allow
    reason: allowed-by-rule
`)
	rep, err := RunCases(tab, cases, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passed != 2 || rep.Failed != 1 || len(rep.Results) != 3 || rep.RuleSet != tab.Version() || !rep.At.Equal(testNow) {
		t.Fatalf("report %+v", rep)
	}
	r := rep.Results[0]
	if !r.Passed || r.Pos != "cases.yaml:2:5" || r.Request != (CaseRequest{Principal: checkout, Method: "POST", URL: "https://api.stripe.com/v1/charges"}) ||
		r.Got != (Outcome{Decision: "allow", Rule: "payments-stripe-charges", Reason: rules.ReasonAllowed}) ||
		r.Expected != (Outcome{Decision: "allow", Rule: "payments-stripe-charges"}) {
		t.Errorf("first case %+v", r)
	}
	r = rep.Results[1]
	if r.Passed || r.Request.Method != "GET" || r.Request.At != "2027-07-01T00:00:00Z" || r.Got.Reason != rules.ReasonNoMatchingRule ||
		len(r.Problems) != 1 || r.Problems[0] != "expected allow, got deny" {
		t.Errorf("the case at: 2027-07-01 %+v: want it decided after the expiry", r)
	}
	r = rep.Results[2]
	if !r.Passed || r.Request != (CaseRequest{Principal: "spiffe://cluster.local/ns/notify/sa/mailer", SNI: "api.sendgrid.com", Port: 443}) {
		t.Errorf("TLS case %+v", r)
	}
}

// TestRunCasesRefusesABadURL: a URL that cannot be a request is an error
// in the case file, reported at the URL, for every such case at once.
func TestRunCasesRefusesABadURL(t *testing.T) {
	cases := parseCases(t, `cases:
  - {name: a, url: api.stripe.com/v1, expect: allow}
  - {name: b, url: "https://api.stripe.com/", expect: deny}
  - {name: c, url: "stripe", expect: deny}
`)
	rep, err := RunCases(compileYAML(t, explainRules), cases, time.Now())
	var list rules.ErrorList
	if !errors.As(err, &list) || rep != nil || len(list) != 2 {
		t.Fatalf("RunCases = %v, %v; want two diagnostics", rep, err)
	}
	if list[0].Pos.String() != "cases.yaml:2:20" || !strings.Contains(list[0].Msg, `case "a": `) || !strings.Contains(list[1].Msg, `case "c": `) {
		t.Errorf("diagnostics %v", list)
	}
}
