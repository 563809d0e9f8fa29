package rules

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func parseCases(t *testing.T, src string) []Case {
	t.Helper()
	cases, err := ParseCases(Source{Name: "cases.yaml", Data: []byte(src)})
	if err != nil {
		t.Fatalf("ParseCases: %v\n--- source ---\n%s", err, src)
	}
	return cases
}

func TestParseCases(t *testing.T) {
	cases := parseCases(t, `cases:
  - name: checkout charges Stripe
    principal: spiffe://cluster.local/ns/payments/sa/checkout
    method: POST
    url: https://api.stripe.com/v1/charges
    expect: allow
    rule: payments-stripe-charges
  - name: sendgrid over TLS
    principal: spiffe://cluster.local/ns/notify/sa/mailer
    sni: api.sendgrid.com
    expect: deny
    rule: ""
    reason: no-matching-rule
    at: 2027-07-01
`)
	if len(cases) != 2 {
		t.Fatalf("%d cases, want 2", len(cases))
	}
	c := cases[0]
	if c.Name != "checkout charges Stripe" || c.Method != "POST" || c.URL != "https://api.stripe.com/v1/charges" ||
		c.Expect != Allow || !c.HasRule || c.Rule != "payments-stripe-charges" || c.Reason != "" || !c.At.IsZero() {
		t.Errorf("case 1: %+v", c)
	}
	if c.Pos.String() != "cases.yaml:2:5" || c.URLPos.String() != "cases.yaml:5:10" {
		t.Errorf("case 1 at %s, url at %s", c.Pos, c.URLPos)
	}
	c = cases[1]
	if c.SNI != "api.sendgrid.com" || c.Port != 443 || c.Expect != Deny || !c.HasRule || c.Rule != "" ||
		c.Reason != ReasonNoMatchingRule || !c.At.Equal(time.Date(2027, 7, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("case 2: %+v", c)
	}
}

func TestParseCasesErrors(t *testing.T) {
	const ok = "    principal: spiffe://cluster.local/ns/a/sa/b\n    url: https://x.example/\n    expect: allow\n"
	for _, tc := range []struct {
		name, src, want string
	}{
		{"empty_file", "", "cases.yaml:1:1: empty case file"},
		{"not_a_mapping", "- a\n", "cases.yaml:1:1: case file must be a mapping, got a list"},
		{"unknown_top_level_key", "tests: []\n", `cases.yaml:1:1: case file: unknown key (known: cases)`},
		{"unknown_key_beside_cases", "cases: []\ntests: []\n", `cases.yaml:2:1: case file: unknown key "tests" (known: cases)`},
		{"cases_not_a_list", "cases: {}\n", "cases.yaml:1:8: cases must be a list, got a mapping"},
		{"unknown_case_key", "cases:\n  - name: a\n" + ok + "    colour: red\n", `cases.yaml:6:5: case: unknown key "colour"`},
		{"no_name", "cases:\n  - expect: allow\n    url: https://x.example/\n", "cases.yaml:2:5: case has no name"},
		{"no_url_or_sni", "cases:\n  - name: a\n    expect: allow\n", `cases.yaml:2:5: case "a" has neither url nor sni`},
		{"url_and_sni", "cases:\n  - name: a\n" + ok + "    sni: x.example\n", `cases.yaml:6:10: case "a" has both url and sni`},
		{"method_with_sni", "cases:\n  - name: a\n    sni: x.example\n    method: GET\n    expect: deny\n", `cases.yaml:4:13: case "a": a TLS-passthrough (sni) request has no method`},
		{"port_with_url", "cases:\n  - name: a\n" + ok + "    port: 443\n", `cases.yaml:6:11: case "a": port is for sni`},
		{"bad_expect", "cases:\n  - name: a\n    url: https://x.example/\n    expect: allowed\n", `cases.yaml:4:13: expect must be allow or deny, got "allowed"`},
		{"no_expect", "cases:\n  - name: a\n    url: https://x.example/\n", `cases.yaml:2:5: case "a" has no expect`},
		{"unknown_reason", "cases:\n  - name: a\n" + ok + "    reason: nope\n", `cases.yaml:6:13: reason "nope" is not a reason`},
		{"allow_with_deny_reason", "cases:\n  - name: a\n" + ok + "    reason: no-matching-rule\n", `expects allow with reason no-matching-rule`},
		{"allow_without_rule", "cases:\n  - name: a\n" + ok + "    rule: \"\"\n", `expects allow with rule ""`},
		{"bad_rule_id", "cases:\n  - name: a\n" + ok + "    rule: Stripe Rule\n", `cases.yaml:6:11: rule "Stripe Rule" is not a rule id`},
		{"bad_method", "cases:\n  - name: a\n" + ok + "    method: \"GET /\"\n", `cases.yaml:6:13: method "GET /" is not an HTTP method`},
		{"bad_port", "cases:\n  - name: a\n    sni: x.example\n    port: 70000\n    expect: deny\n", `cases.yaml:4:11: port "70000" is not a port number`},
		{"bad_at", "cases:\n  - name: a\n" + ok + "    at: tomorrow\n", `cases.yaml:6:9: at: "tomorrow": want a day`},
		{"duplicate_name", "cases:\n  - name: a\n" + ok + "  - name: a\n" + ok, `cases.yaml:6:5: case name "a" already used at cases.yaml:2:5`},
		{"list_value", "cases:\n  - name: [a]\n" + ok, `cases.yaml:2:11: name must be a single value, got a list`},
		{"yaml_syntax", "cases:\n  - name: a\n    url: \"https://x\n  - b\n", "cases.yaml:3:1: invalid YAML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCases(Source{Name: "cases.yaml", Data: []byte(tc.src)})
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error %v (%T), want an ErrorList", err, err)
			}
			if !strings.Contains(list.Error(), tc.want) {
				t.Errorf("errors:\n%s\nwant one containing %q", list, tc.want)
			}
		})
	}
}

// FuzzParseCases checks that no case file, however broken, makes
// ParseCases panic, and that every error it reports names a place.
func FuzzParseCases(f *testing.F) {
	f.Add("cases:\n  - name: a\n    principal: spiffe://cluster.local/ns/a/sa/b\n    url: https://x.example/\n    expect: allow\n    rule: r\n")
	f.Add("cases:\n  - {name: a, sni: x.example, port: 443, expect: deny, rule: \"\", reason: no-matching-rule, at: 2027-01-01}\n")
	f.Add("cases: [{name: a}, {name: a}, 1, [x], ~]\n---\ncases: {}\n")
	f.Add("cases:\n  - &a {name: a, expect: allow}\n  - *a\n")
	f.Fuzz(func(t *testing.T, src string) {
		cases, err := ParseCases(Source{Name: "cases.yaml", Data: []byte(src)})
		if err == nil {
			for _, c := range cases {
				if c.Name == "" || (c.URL == "") == (c.SNI == "") || (c.Expect != Allow && c.Expect != Deny) {
					t.Fatalf("accepted an incomplete case %+v", c)
				}
			}
			return
		}
		var list ErrorList
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("error %v (%T), want a non-empty ErrorList", err, err)
		}
		for _, d := range list {
			if d.Pos.File != "cases.yaml" || d.Pos.Line < 1 {
				t.Fatalf("diagnostic without a place: %v", d)
			}
		}
	})
}
