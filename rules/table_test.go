package rules

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// decideCase is one request decided against a small rule set.
type decideCase struct {
	name   string
	rules  []string // entries of the rules list, see compileRules
	req    Request
	now    time.Time // zero: testNow
	allow  bool
	reason Reason
	rule   string // id of the deciding rule, "" for none
}

func runDecideCases(t *testing.T, cases []decideCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tab := compileRules(t, tc.rules...)
			now := tc.now
			if now.IsZero() {
				now = testNow
			}
			d := tab.Decide(tc.req, now)
			if d.Allow != tc.allow || d.Reason != tc.reason || ruleID(d) != tc.rule {
				t.Errorf("Decide(%+v) = allow %v, reason %q, rule %q; want allow %v, reason %q, rule %q",
					tc.req, d.Allow, d.Reason, ruleID(d), tc.allow, tc.reason, tc.rule)
			}
			if d.Allow && d.Reason != ReasonAllowed {
				t.Errorf("allowed with reason %q, want %q", d.Reason, ReasonAllowed)
			}
			if !d.Allow && d.Reason != ReasonDeniedByRule && d.Rule != nil {
				t.Errorf("denied with reason %q but Rule = %q, want nil", d.Reason, d.Rule.ID)
			}
		})
	}
}

// The rule of the SPEC's example, used by many cases.
const stripeCharges = `- {id: stripe, action: allow, from: {principals: ["` + checkout + `"]}, to: {hosts: [api.stripe.com], methods: [POST], paths: [/v1/charges]}}`

func TestDecideCombination(t *testing.T) {
	runDecideCases(t, []decideCase{
		{
			name:  "all_fields_of_a_rule_match",
			rules: []string{stripeCharges},
			req:   httpReq(checkout, "POST", "api.stripe.com", "/v1/charges"),
			allow: true, reason: ReasonAllowed, rule: "stripe",
		},
		{
			name:   "rule_fields_are_and_principal_differs",
			rules:  []string{stripeCharges},
			req:    httpReq(refunds, "POST", "api.stripe.com", "/v1/charges"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "rule_fields_are_and_host_differs",
			rules:  []string{stripeCharges},
			req:    httpReq(checkout, "POST", "files.stripe.com", "/v1/charges"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "rule_fields_are_and_method_differs",
			rules:  []string{stripeCharges},
			req:    httpReq(checkout, "GET", "api.stripe.com", "/v1/charges"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "rule_fields_are_and_path_differs",
			rules:  []string{stripeCharges},
			req:    httpReq(checkout, "POST", "api.stripe.com", "/v1/refunds"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "rule_fields_are_and_port_differs",
			rules:  []string{`- {id: r, action: allow, to: {hosts: [api.stripe.com], ports: [443]}}`},
			req:    httpReq(checkout, "GET", "api.stripe.com:8443", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "rule_fields_are_and_namespace_differs",
			rules:  []string{`- {id: r, action: allow, from: {namespaces: [payments], serviceAccounts: [crawler]}}`},
			req:    httpReq(crawler, "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:  "list_entries_are_or_first_host",
			rules: []string{`- {id: r, action: allow, to: {hosts: [a.example.com, b.example.com]}}`},
			req:   httpReq(checkout, "GET", "a.example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "list_entries_are_or_second_host",
			rules: []string{`- {id: r, action: allow, to: {hosts: [a.example.com, b.example.com]}}`},
			req:   httpReq(checkout, "GET", "b.example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "list_entries_are_or_second_principal",
			rules: []string{`- {id: r, action: allow, from: {principals: ["` + checkout + `", "` + refunds + `"]}}`},
			req:   httpReq(refunds, "GET", "example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "list_entries_are_or_second_method",
			rules: []string{`- {id: r, action: allow, to: {methods: [GET, POST]}}`},
			req:   httpReq(refunds, "POST", "example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "list_entries_are_or_second_path",
			rules: []string{`- {id: r, action: allow, to: {paths: [/a, "/b/*"]}}`},
			req:   httpReq(refunds, "POST", "example.com", "/b/c"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "list_entries_are_or_second_port",
			rules: []string{`- {id: r, action: allow, to: {ports: [80, 8443]}}`},
			req:   httpReq(refunds, "POST", "example.com:8443", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "list_entries_are_or_second_namespace",
			rules: []string{`- {id: r, action: allow, from: {namespaces: [search, payments]}}`},
			req:   httpReq(checkout, "GET", "example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "absent_fields_match_anything",
			rules: []string{`- {id: r, action: allow, to: {hosts: [api.stripe.com]}}`},
			req:   Request{Principal: crawler, Host: "api.stripe.com:1234", Method: "PATCH", Path: "/any/thing?x=1"},
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "rule_without_from_and_to_matches_everything",
			rules: []string{`- {id: r, action: allow}`},
			req:   httpReq(crawler, "DELETE", "anything.example", "/x"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "empty_from_and_to_match_everything",
			rules: []string{`- {id: r, action: allow, from: {}, to: {}}`},
			req:   httpReq(crawler, "DELETE", "anything.example", "/x"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "rule_without_from_and_to_matches_tls_passthrough",
			rules: []string{`- {id: r, action: allow}`},
			req:   sniReq(crawler, "anything.example"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
	})
}

func TestDecidePrincipals(t *testing.T) {
	only := func(p string) []string {
		return []string{`- {id: r, action: allow, from: {principals: ["` + p + `"]}}`}
	}
	runDecideCases(t, []decideCase{
		{
			name:  "exact_principal_matches",
			rules: only(checkout),
			req:   httpReq(checkout, "GET", "example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:   "exact_principal_does_not_match_longer_path",
			rules:  only(checkout),
			req:    httpReq(checkout+"/x", "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "exact_principal_does_not_match_prefix",
			rules:  only(checkout),
			req:    httpReq("spiffe://cluster.local/ns/payments/sa/check", "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "exact_principal_is_case_sensitive_in_path",
			rules:  only(checkout),
			req:    httpReq("spiffe://cluster.local/ns/payments/sa/Checkout", "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:  "star_matches_a_whole_segment",
			rules: only("spiffe://cluster.local/ns/payments/sa/*"),
			req:   httpReq(refunds, "GET", "example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "star_matches_a_middle_segment",
			rules: only("spiffe://cluster.local/ns/*/sa/checkout"),
			req:   httpReq("spiffe://cluster.local/ns/shop/sa/checkout", "GET", "example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "star_matches_part_of_a_segment",
			rules: only("spiffe://cluster.local/ns/payments/sa/check*"),
			req:   httpReq(checkout, "GET", "example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "star_matches_part_of_a_segment_in_the_middle",
			rules: only("spiffe://cluster.local/ns/payments/sa/ch*ut"),
			req:   httpReq(checkout, "GET", "example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:   "star_needs_at_least_one_character",
			rules:  only("spiffe://cluster.local/ns/payments/sa/checkout*"),
			req:    httpReq(checkout, "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "star_does_not_cross_slash",
			rules:  only("spiffe://cluster.local/ns/*"),
			req:    httpReq(checkout, "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "star_does_not_match_deeper_path",
			rules:  only("spiffe://cluster.local/ns/payments/sa/*"),
			req:    httpReq(checkout+"/extra", "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:  "star_in_trust_domain_matches_a_trusted_domain",
			rules: only("spiffe://*/ns/payments/sa/checkout"),
			req:   httpReq(checkout, "GET", "example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
	})
}

func TestDecideTrustDomain(t *testing.T) {
	const evil = "spiffe://evil.example/ns/payments/sa/checkout"
	runDecideCases(t, []decideCase{
		{
			name:   "identity_outside_trust_domains_is_denied_even_when_a_pattern_matches",
			rules:  []string{`- {id: r, action: allow, from: {principals: ["spiffe://*/ns/payments/sa/checkout"]}}`},
			req:    httpReq(evil, "GET", "example.com", "/"),
			reason: ReasonUntrustedDomain,
		},
		{
			name:   "identity_outside_trust_domains_is_denied_by_a_rule_without_from",
			rules:  []string{`- {id: r, action: allow}`},
			req:    httpReq(evil, "GET", "example.com", "/"),
			reason: ReasonUntrustedDomain,
		},
		{
			name:   "identity_outside_trust_domains_is_denied_by_a_namespace_rule",
			rules:  []string{`- {id: r, action: allow, from: {namespaces: [payments]}}`},
			req:    httpReq(evil, "GET", "example.com", "/"),
			reason: ReasonUntrustedDomain,
		},
		{
			name:   "sub_domain_of_a_trust_domain_is_untrusted",
			rules:  []string{`- {id: r, action: allow}`},
			req:    httpReq("spiffe://a.cluster.local/ns/payments/sa/checkout", "GET", "example.com", "/"),
			reason: ReasonUntrustedDomain,
		},
		{
			name:  "identity_without_path_in_trust_domain_is_trusted",
			rules: []string{`- {id: r, action: allow}`},
			req:   httpReq("spiffe://cluster.local", "GET", "example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
	})
}

func TestDecideNamespacesAndServiceAccounts(t *testing.T) {
	ns := []string{`- {id: r, action: allow, from: {namespaces: [payments]}}`}
	sa := []string{`- {id: r, action: allow, from: {serviceAccounts: [checkout]}}`}
	both := []string{`- {id: r, action: allow, from: {namespaces: [payments], serviceAccounts: [checkout]}}`}
	runDecideCases(t, []decideCase{
		{
			name:  "namespace_from_istio_path",
			rules: ns,
			req:   httpReq(checkout, "GET", "example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:   "namespace_differs",
			rules:  ns,
			req:    httpReq(crawler, "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:  "service_account_from_istio_path",
			rules: sa,
			req:   httpReq("spiffe://cluster.local/ns/shop/sa/checkout", "GET", "example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "namespace_and_service_account_both_match",
			rules: both,
			req:   httpReq(checkout, "GET", "example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:   "namespace_matches_but_service_account_differs",
			rules:  both,
			req:    httpReq(refunds, "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "namespace_is_not_taken_from_a_longer_path",
			rules:  ns,
			req:    httpReq(checkout+"/extra", "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "service_account_is_not_taken_from_a_longer_path",
			rules:  sa,
			req:    httpReq(checkout+"/extra", "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "namespace_is_not_taken_from_a_path_without_sa",
			rules:  ns,
			req:    httpReq("spiffe://cluster.local/ns/payments", "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "namespace_is_not_taken_from_a_path_with_another_keyword",
			rules:  ns,
			req:    httpReq("spiffe://cluster.local/ns/payments/serviceaccount/checkout", "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "namespace_is_not_taken_from_a_path_with_a_prefix",
			rules:  ns,
			req:    httpReq("spiffe://cluster.local/team/ns/payments/sa/checkout", "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "namespace_is_not_taken_from_a_non_istio_path",
			rules:  ns,
			req:    httpReq("spiffe://cluster.local/payments", "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "service_account_rule_does_not_match_identity_without_path",
			rules:  sa,
			req:    httpReq("spiffe://cluster.local", "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
	})
}

func TestDecideHosts(t *testing.T) {
	exact := []string{`- {id: r, action: allow, to: {hosts: [api.stripe.com]}}`}
	wild := []string{`- {id: r, action: allow, to: {hosts: ["*.stripe.com"]}}`}
	runDecideCases(t, []decideCase{
		{
			name:  "exact_host_matches",
			rules: exact,
			req:   httpReq(checkout, "GET", "api.stripe.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "host_is_case_insensitive_in_request",
			rules: exact,
			req:   httpReq(checkout, "GET", "API.Stripe.COM", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "host_is_case_insensitive_in_rule",
			rules: []string{`- {id: r, action: allow, to: {hosts: [API.STRIPE.Com]}}`},
			req:   httpReq(checkout, "GET", "api.stripe.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "trailing_dot_in_request_is_ignored",
			rules: exact,
			req:   httpReq(checkout, "GET", "api.stripe.com.", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "trailing_dot_in_rule_is_ignored",
			rules: []string{`- {id: r, action: allow, to: {hosts: [api.stripe.com.]}}`},
			req:   httpReq(checkout, "GET", "api.stripe.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "trailing_dot_with_port_is_ignored",
			rules: exact,
			req:   httpReq(checkout, "GET", "api.stripe.com.:443", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "port_is_stripped_from_host",
			rules: exact,
			req:   httpReq(checkout, "GET", "api.stripe.com:8443", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:   "exact_host_does_not_match_sub_domain",
			rules:  exact,
			req:    httpReq(checkout, "GET", "x.api.stripe.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "exact_host_does_not_match_other_host_with_same_suffix",
			rules:  exact,
			req:    httpReq(checkout, "GET", "evilapi.stripe.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:  "wildcard_host_matches_sub_domain",
			rules: wild,
			req:   httpReq(checkout, "GET", "api.stripe.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "wildcard_host_matches_deeper_sub_domain",
			rules: wild,
			req:   httpReq(checkout, "GET", "a.b.c.stripe.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "wildcard_host_matches_case_insensitively",
			rules: []string{`- {id: r, action: allow, to: {hosts: ["*.Stripe.COM"]}}`},
			req:   httpReq(checkout, "GET", "API.STRIPE.com.", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:   "wildcard_host_does_not_match_apex",
			rules:  wild,
			req:    httpReq(checkout, "GET", "stripe.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "wildcard_host_does_not_match_apex_with_trailing_dot",
			rules:  wild,
			req:    httpReq(checkout, "GET", "stripe.com.", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "wildcard_host_does_not_match_name_merely_ending_in_suffix",
			rules:  wild,
			req:    httpReq(checkout, "GET", "notstripe.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "wildcard_host_does_not_match_suffix_in_the_middle",
			rules:  wild,
			req:    httpReq(checkout, "GET", "api.stripe.com.evil.example", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:  "bare_star_matches_every_host",
			rules: []string{`- {id: r, action: allow, to: {hosts: ["*"]}}`},
			req:   httpReq(checkout, "GET", "anything.example:9999", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "bare_star_matches_a_single_label_host",
			rules: []string{`- {id: r, action: allow, to: {hosts: ["*"]}}`},
			req:   httpReq(checkout, "GET", "localhost", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "exact_and_wildcard_in_one_rule",
			rules: []string{`- {id: r, action: allow, to: {hosts: [stripe.com, "*.stripe.com"]}}`},
			req:   httpReq(checkout, "GET", "stripe.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "underscore_in_host_is_valid",
			rules: []string{`- {id: r, action: allow, to: {hosts: [tenant_1.example.com]}}`},
			req:   httpReq(checkout, "GET", "TENANT_1.example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "ipv4_literal_host",
			rules: []string{`- {id: r, action: allow, to: {hosts: [93.184.216.34], ports: [8443]}}`},
			req:   httpReq(checkout, "GET", "93.184.216.34:8443", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "ipv6_literal_host_with_port",
			rules: []string{`- {id: r, action: allow, to: {hosts: ["[2001:db8::1]"], ports: [8443]}}`},
			req:   httpReq(checkout, "GET", "[2001:db8::1]:8443", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "ipv6_literal_host_without_port_uses_request_port",
			rules: []string{`- {id: r, action: allow, to: {hosts: ["[2001:db8::1]"], ports: [443]}}`},
			req:   httpReq(checkout, "GET", "[2001:db8::1]", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "ipv6_literal_host_is_compared_in_canonical_form",
			rules: []string{`- {id: r, action: allow, to: {hosts: ["[2001:DB8:0:0::1]"]}}`},
			req:   httpReq(checkout, "GET", "[2001:0db8::0001]:443", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:   "ipv6_literal_host_differs",
			rules:  []string{`- {id: r, action: allow, to: {hosts: ["[2001:db8::1]"]}}`},
			req:    httpReq(checkout, "GET", "[2001:db8::2]", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "ipv6_literal_host_without_brackets_is_invalid",
			rules:  []string{`- {id: r, action: allow}`},
			req:    httpReq(checkout, "GET", "2001:db8::1", "/"),
			reason: ReasonInvalidHost,
		},
		{
			name:   "ipv6_literal_host_with_zone_is_invalid",
			rules:  []string{`- {id: r, action: allow}`},
			req:    httpReq(checkout, "GET", "[fe80::1%25eth0]", "/"),
			reason: ReasonInvalidHost,
		},
		{
			name:   "ipv6_literal_host_unclosed_is_invalid",
			rules:  []string{`- {id: r, action: allow}`},
			req:    httpReq(checkout, "GET", "[2001:db8::1", "/"),
			reason: ReasonInvalidHost,
		},
	})
}

func TestDecidePorts(t *testing.T) {
	p443 := []string{`- {id: r, action: allow, to: {hosts: [api.stripe.com], ports: [443]}}`}
	runDecideCases(t, []decideCase{
		{
			name:  "port_from_authority",
			rules: []string{`- {id: r, action: allow, to: {ports: [8443]}}`},
			req:   Request{Principal: checkout, Host: "api.stripe.com:8443", Method: "GET", Path: "/"},
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "port_from_request_when_authority_has_none",
			rules: p443,
			req:   Request{Principal: checkout, Host: "api.stripe.com", Port: 443, Method: "GET", Path: "/"},
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:   "authority_port_wins_over_request_port",
			rules:  p443,
			req:    Request{Principal: checkout, Host: "api.stripe.com:8443", Port: 443, Method: "GET", Path: "/"},
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "unknown_port_does_not_match_port_rule",
			rules:  p443,
			req:    Request{Principal: checkout, Host: "api.stripe.com", Method: "GET", Path: "/"},
			reason: ReasonNoMatchingRule,
		},
		{
			name:  "unknown_port_matches_rule_without_ports",
			rules: []string{`- {id: r, action: allow, to: {hosts: [api.stripe.com]}}`},
			req:   Request{Principal: checkout, Host: "api.stripe.com", Method: "GET", Path: "/"},
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "sni_port_from_request",
			rules: p443,
			req:   sniReq(checkout, "api.stripe.com"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
	})
}

func TestDecideMethods(t *testing.T) {
	post := []string{`- {id: r, action: allow, to: {methods: [POST]}}`}
	runDecideCases(t, []decideCase{
		{
			name:  "method_matches_exactly",
			rules: post,
			req:   httpReq(checkout, "POST", "example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:   "method_is_case_sensitive",
			rules:  post,
			req:    httpReq(checkout, "post", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "method_is_not_a_prefix_match",
			rules:  post,
			req:    httpReq(checkout, "POSTX", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "other_method_does_not_match",
			rules:  post,
			req:    httpReq(checkout, "GET", "example.com", "/"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:  "extension_method_matches",
			rules: []string{`- {id: r, action: allow, to: {methods: [PROPFIND]}}`},
			req:   httpReq(checkout, "PROPFIND", "example.com", "/"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
	})
}

func TestDecidePaths(t *testing.T) {
	paths := func(p ...string) []string {
		s := `- {id: r, action: allow, to: {paths: [`
		for i, x := range p {
			if i > 0 {
				s += ", "
			}
			s += `"` + x + `"`
		}
		return []string{s + `]}}`}
	}
	type pc struct {
		name    string
		pattern string
		path    string
		match   bool
	}
	var cases []decideCase
	for _, c := range []pc{
		{"literal_path_matches", "/v1/charges", "/v1/charges", true},
		{"literal_path_is_case_sensitive", "/v1/charges", "/V1/charges", false},
		{"literal_path_is_not_a_prefix", "/v1/charges", "/v1/charges/ch_1", false},
		{"trailing_slash_is_significant_in_request", "/v1/charges", "/v1/charges/", false},
		{"trailing_slash_is_significant_in_pattern", "/v1/charges/", "/v1/charges", false},
		{"trailing_slash_pattern_matches", "/v1/charges/", "/v1/charges/", true},
		{"root_pattern_matches_root", "/", "/", true},
		{"root_pattern_does_not_match_other_path", "/", "/x", false},
		{"star_matches_a_segment", "/v1/customers/*", "/v1/customers/cus_123", true},
		{"star_needs_one_character", "/v1/customers/*", "/v1/customers/", false},
		{"star_does_not_match_missing_segment", "/v1/customers/*", "/v1/customers", false},
		{"star_does_not_cross_slash", "/v1/customers/*", "/v1/customers/cus_1/sources", false},
		{"star_in_the_middle", "/v1/*/refunds", "/v1/ch_1/refunds", true},
		{"star_in_the_middle_needs_a_segment", "/v1/*/refunds", "/v1/refunds", false},
		{"star_inside_a_segment", "/v1/files/*.pdf", "/v1/files/report.pdf", true},
		{"star_inside_a_segment_needs_one_character", "/v1/files/*.pdf", "/v1/files/.pdf", false},
		{"star_inside_a_segment_other_suffix", "/v1/files/*.pdf", "/v1/files/report.pdfx", false},
		{"two_stars_in_a_segment", "/v1/*-*", "/v1/a-b", true},
		{"two_stars_need_a_character_each", "/v1/*-*", "/v1/a-", false},
		{"star_pattern_does_not_match_trailing_slash", "/v1/customers/*", "/v1/customers/cus_1/", false},
		{"subtree_matches_itself", "/v1/files/**", "/v1/files", true},
		{"subtree_matches_itself_with_slash", "/v1/files/**", "/v1/files/", true},
		{"subtree_matches_child", "/v1/files/**", "/v1/files/a", true},
		{"subtree_matches_descendant", "/v1/files/**", "/v1/files/a/b", true},
		{"subtree_does_not_match_sibling_with_same_prefix", "/v1/files/**", "/v1/filesystem", false},
		{"subtree_does_not_match_parent", "/v1/files/**", "/v1", false},
		{"subtree_does_not_match_other_tree", "/v1/files/**", "/v2/files/a", false},
		{"subtree_with_star", "/v1/*/files/**", "/v1/acct_1/files/a/b", true},
		{"subtree_with_star_needs_the_segment", "/v1/*/files/**", "/v1/files/a", false},
		{"root_subtree_matches_everything", "/**", "/any/path/at/all", true},
		{"root_subtree_matches_root", "/**", "/", true},
		{"query_is_removed", "/v1/charges", "/v1/charges?amount=100&currency=eur", true},
		{"fragment_is_removed", "/v1/charges", "/v1/charges#top", true},
		{"query_with_slashes_is_removed", "/v1/charges", "/v1/charges?next=/admin/../x", true},
		{"unreserved_escape_is_decoded", "/v1/charges", "/v1/ch%61rges", true},
		{"unreserved_escape_is_decoded_upper_case_hex", "/v1/charges", "/v1/%63%68%61%72%67%65%73", true},
		{"escaped_tilde_is_decoded", "/~user", "/%7Euser", true},
		{"encoded_dot_dot_is_resolved", "/v1/charges", "/v1/x/%2E%2E/charges", true},
		{"encoded_dot_dot_lower_case_is_resolved", "/v1/charges", "/v1/x/%2e%2e/charges", true},
		{"encoded_dot_dot_cannot_escape_a_denied_prefix", "/admin/**", "/public/%2e%2e/admin/users", true},
		{"mixed_encoded_dot_dot_is_resolved", "/v1/charges", "/v1/x/.%2E/charges", true},
		{"encoded_dot_is_resolved", "/v1/charges", "/v1/%2E/charges", true},
		{"other_escape_is_upper_cased", "/v1/a%3Ab", "/v1/a%3ab", true},
		{"other_escape_stays_encoded", "/v1/a%3Ab", "/v1/a:b", false},
		{"escaped_space_stays_encoded", "/v1/a%20b", "/v1/a%20b", true},
		{"non_ascii_escape_is_upper_cased", "/caf%C3%A9", "/caf%c3%a9", true},
		{"dot_segment_is_resolved", "/v1/charges", "/v1/./charges", true},
		{"dot_dot_segment_is_resolved", "/v1/charges", "/v1/refunds/../charges", true},
		{"dot_dot_never_goes_above_root", "/v1/charges", "/../../v1/charges", true},
		{"encoded_dot_dot_never_goes_above_root", "/v1/charges", "/%2E%2E/%2e%2e/v1/charges", true},
		{"trailing_dot_dot_leaves_a_slash", "/v1/", "/v1/charges/..", true},
		{"trailing_dot_dot_does_not_match_without_slash", "/v1", "/v1/charges/..", false},
		{"double_slashes_are_merged", "/v1/charges", "//v1///charges", true},
		{"double_slash_then_dot_dot", "/v1/", "/v1//..", true},
		{"path_like_segment_names_are_not_dots", "/v1/.well-known/x", "/v1/.well-known/x", true},
		{"three_dots_are_a_name", "/v1/.../x", "/v1/.../x", true},
	} {
		want := decideCase{name: c.name, rules: paths(c.pattern), req: httpReq(checkout, "GET", "example.com", c.path), reason: ReasonNoMatchingRule}
		if c.match {
			want.allow, want.reason, want.rule = true, ReasonAllowed, "r"
		}
		cases = append(cases, want)
	}
	runDecideCases(t, cases)
}

func TestDecideUnsafePath(t *testing.T) {
	all := []string{`- {id: r, action: allow}`}
	for _, tc := range []struct{ name, path string }{
		{"encoded_slash", "/v1/a%2Fb"},
		{"encoded_slash_lower_case", "/v1/a%2fb"},
		{"encoded_backslash", "/v1/a%5Cb"},
		{"encoded_backslash_lower_case", "/v1/a%5cb"},
		{"raw_backslash", `/v1/a\b`},
		{"raw_backslash_dot_dot", `/v1/..\admin`},
		{"invalid_escape_non_hex", "/v1/%G1"},
		{"invalid_escape_second_digit", "/v1/%1G"},
		{"trailing_percent", "/v1/charges%"},
		{"truncated_escape", "/v1/charges%4"},
		{"truncated_escape_before_query", "/v1/charges%4?x=1"},
		{"encoded_nul", "/v1/%00"},
		{"encoded_control_1f", "/v1/%1F"},
		{"encoded_control_lower_case", "/v1/%0a"},
		{"encoded_del", "/v1/%7F"},
		{"raw_nul", "/v1/\x00"},
		{"raw_newline", "/v1/a\nb"},
		{"raw_tab", "/v1/a\tb"},
		{"raw_del", "/v1/a\x7fb"},
		{"relative_path", "v1/charges"},
		{"empty_path", ""},
		{"only_a_query", "?x=1"},
		{"asterisk_form", "*"},
		{"absolute_form", "https://api.stripe.com/v1/charges"},
	} {
		runDecideCases(t, []decideCase{{
			name:   tc.name + "_is_unsafe",
			rules:  all,
			req:    httpReq(checkout, "GET", "example.com", tc.path),
			reason: ReasonUnsafePath,
		}})
	}
	// A query is cut before anything else, so what it holds is never unsafe.
	runDecideCases(t, []decideCase{
		{
			name:  "escapes_in_query_are_ignored",
			rules: all,
			req:   httpReq(checkout, "GET", "example.com", "/v1/charges?next=%2F%5C%G1%00"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "escapes_in_fragment_are_ignored",
			rules: all,
			req:   httpReq(checkout, "GET", "example.com", "/v1/charges#%2F"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
	})
}

func TestDecideTLSPassthrough(t *testing.T) {
	runDecideCases(t, []decideCase{
		{
			name:  "sni_matches_host_rule",
			rules: []string{`- {id: r, action: allow, to: {hosts: [api.stripe.com]}}`},
			req:   sniReq(checkout, "api.stripe.com"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:  "sni_is_case_insensitive_and_ignores_trailing_dot",
			rules: []string{`- {id: r, action: allow, to: {hosts: ["*.stripe.com"]}}`},
			req:   sniReq(checkout, "API.Stripe.com."),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:   "allow_rule_with_methods_never_matches_sni",
			rules:  []string{`- {id: r, action: allow, to: {hosts: [api.stripe.com], methods: [GET]}}`},
			req:    sniReq(checkout, "api.stripe.com"),
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "allow_rule_with_paths_never_matches_sni",
			rules:  []string{`- {id: r, action: allow, to: {hosts: [api.stripe.com], paths: ["/**"]}}`},
			req:    sniReq(checkout, "api.stripe.com"),
			reason: ReasonNoMatchingRule,
		},
		{
			name: "deny_rule_with_methods_never_matches_sni",
			rules: []string{
				`- {id: deny-delete, action: deny, to: {methods: [DELETE]}}`,
				`- {id: r, action: allow, to: {hosts: [api.stripe.com]}}`,
			},
			req:   sniReq(checkout, "api.stripe.com"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name: "deny_rule_with_paths_never_matches_sni",
			rules: []string{
				`- {id: r, action: allow, to: {hosts: [api.stripe.com]}}`,
				`- {id: deny-admin, action: deny, to: {hosts: [api.stripe.com], paths: ["/admin/**"]}}`,
			},
			req:   sniReq(checkout, "api.stripe.com"),
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name: "deny_rule_without_methods_or_paths_matches_sni",
			rules: []string{
				`- {id: r, action: allow, to: {hosts: [api.stripe.com]}}`,
				`- {id: deny-all, action: deny, to: {hosts: ["*.stripe.com"]}}`,
			},
			req:    sniReq(checkout, "api.stripe.com"),
			reason: ReasonDeniedByRule, rule: "deny-all",
		},
		{
			name:  "sni_ignores_path_field",
			rules: []string{`- {id: r, action: allow}`},
			req:   Request{Principal: checkout, Host: "api.stripe.com", SNI: true, Path: `\unsafe%2F`},
			allow: true, reason: ReasonAllowed, rule: "r",
		},
		{
			name:   "sni_with_port_is_invalid_host",
			rules:  []string{`- {id: r, action: allow}`},
			req:    sniReq(checkout, "api.stripe.com:443"),
			reason: ReasonInvalidHost,
		},
		{
			name:   "ipv6_sni_with_port_is_invalid_host",
			rules:  []string{`- {id: r, action: allow}`},
			req:    sniReq(checkout, "[2001:db8::1]:443"),
			reason: ReasonInvalidHost,
		},
		{
			name:   "empty_sni_is_no_host",
			rules:  []string{`- {id: r, action: allow}`},
			req:    sniReq(checkout, ""),
			reason: ReasonNoHost,
		},
	})
}

func TestDecideOrder(t *testing.T) {
	allow := `- {id: allow-stripe, action: allow, to: {hosts: [api.stripe.com]}}`
	deny := `- {id: deny-stripe, action: deny, to: {hosts: [api.stripe.com]}}`
	req := httpReq(checkout, "POST", "api.stripe.com", "/v1/charges")
	runDecideCases(t, []decideCase{
		{
			name:   "deny_after_allow_wins",
			rules:  []string{allow, deny},
			req:    req,
			reason: ReasonDeniedByRule, rule: "deny-stripe",
		},
		{
			name:   "deny_before_allow_wins",
			rules:  []string{deny, allow},
			req:    req,
			reason: ReasonDeniedByRule, rule: "deny-stripe",
		},
		{
			name: "wildcard_deny_wins_over_exact_allow",
			rules: []string{
				allow,
				`- {id: deny-wild, action: deny, to: {hosts: ["*.stripe.com"]}}`,
			},
			req:    req,
			reason: ReasonDeniedByRule, rule: "deny-wild",
		},
		{
			name: "any_host_deny_wins_over_exact_allow",
			rules: []string{
				allow,
				`- {id: deny-ns, action: deny, from: {namespaces: [payments]}}`,
			},
			req:    req,
			reason: ReasonDeniedByRule, rule: "deny-ns",
		},
		{
			name: "specific_deny_wins_over_broad_allow",
			rules: []string{
				`- {id: allow-all, action: allow}`,
				`- {id: deny-delete, action: deny, to: {methods: [DELETE]}}`,
			},
			req:    httpReq(checkout, "DELETE", "api.stripe.com", "/v1/charges/ch_1"),
			reason: ReasonDeniedByRule, rule: "deny-delete",
		},
		{
			name: "deny_that_does_not_match_does_not_deny",
			rules: []string{
				`- {id: allow-all, action: allow}`,
				`- {id: deny-delete, action: deny, to: {methods: [DELETE]}}`,
			},
			req:   req,
			allow: true, reason: ReasonAllowed, rule: "allow-all",
		},
		{
			name: "first_matching_deny_in_rule_order_is_reported",
			rules: []string{
				`- {id: deny-any-host, action: deny, to: {methods: [POST]}}`,
				`- {id: deny-wild, action: deny, to: {hosts: ["*.stripe.com"]}}`,
				deny,
			},
			req:    req,
			reason: ReasonDeniedByRule, rule: "deny-any-host",
		},
		{
			name: "first_matching_allow_in_rule_order_is_reported",
			rules: []string{
				`- {id: allow-any-host, action: allow, to: {methods: [POST]}}`,
				`- {id: allow-wild, action: allow, to: {hosts: ["*.stripe.com"]}}`,
				allow,
			},
			req:   req,
			allow: true, reason: ReasonAllowed, rule: "allow-any-host",
		},
		{
			name:   "no_rules_deny_everything",
			rules:  nil,
			req:    req,
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "nothing_matching_is_no_matching_rule",
			rules:  []string{`- {id: other, action: allow, to: {hosts: [example.com]}}`},
			req:    req,
			reason: ReasonNoMatchingRule,
		},
		{
			name:   "only_deny_rules_and_none_matches_is_no_matching_rule",
			rules:  []string{`- {id: deny-other, action: deny, to: {hosts: [example.com]}}`},
			req:    req,
			reason: ReasonNoMatchingRule,
		},
	})
}

func TestDecideReasonOrder(t *testing.T) {
	// Every rule set here would allow or deny the request by rule; the
	// earlier reasons must win over the rules and over later reasons.
	rules := []string{
		`- {id: deny-admin, action: deny, to: {paths: ["/admin/**"]}}`,
		`- {id: allow-all, action: allow}`,
	}
	runDecideCases(t, []decideCase{
		{"no_identity_first", rules, Request{Host: "", Path: `\`}, time.Time{}, false, ReasonNoIdentity, ""},
		{"no_identity_with_valid_request", rules, httpReq("", "GET", "example.com", "/"), time.Time{}, false, ReasonNoIdentity, ""},
		{"invalid_identity_before_no_host", rules, Request{Principal: "checkout", Path: `\`}, time.Time{}, false, ReasonInvalidIdentity, ""},
		{"invalid_identity_not_spiffe_scheme", rules, httpReq("https://cluster.local/ns/a/sa/b", "GET", "example.com", "/"), time.Time{}, false, ReasonInvalidIdentity, ""},
		{"invalid_identity_upper_case_trust_domain", rules, httpReq("spiffe://Cluster.Local/ns/a/sa/b", "GET", "example.com", "/"), time.Time{}, false, ReasonInvalidIdentity, ""},
		{"invalid_identity_empty_segment", rules, httpReq("spiffe://cluster.local/ns//sa/b", "GET", "example.com", "/"), time.Time{}, false, ReasonInvalidIdentity, ""},
		{"invalid_identity_trailing_slash", rules, httpReq("spiffe://cluster.local/ns/a/sa/b/", "GET", "example.com", "/"), time.Time{}, false, ReasonInvalidIdentity, ""},
		{"invalid_identity_query", rules, httpReq("spiffe://cluster.local/ns/a/sa/b?x", "GET", "example.com", "/"), time.Time{}, false, ReasonInvalidIdentity, ""},
		{"untrusted_trust_domain_before_no_host", rules, Request{Principal: "spiffe://other.example/ns/a/sa/b", Path: `\`}, time.Time{}, false, ReasonUntrustedDomain, ""},
		{"no_host_before_unsafe_path", rules, Request{Principal: checkout, Path: `\`}, time.Time{}, false, ReasonNoHost, ""},
		{"invalid_host_userinfo", rules, httpReq(checkout, "GET", "user@example.com", `\`), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_userinfo_with_password", rules, httpReq(checkout, "GET", "user:pw@example.com", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_userinfo_with_port", rules, httpReq(checkout, "GET", "user@example.com:443", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_empty_port", rules, httpReq(checkout, "GET", "example.com:", `\`), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_non_numeric_port", rules, httpReq(checkout, "GET", "example.com:https", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_signed_port", rules, httpReq(checkout, "GET", "example.com:+443", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_port_zero", rules, httpReq(checkout, "GET", "example.com:0", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_port_too_large", rules, httpReq(checkout, "GET", "example.com:65536", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_two_ports", rules, httpReq(checkout, "GET", "example.com:443:443", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_space", rules, httpReq(checkout, "GET", "exa mple.com", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_star", rules, httpReq(checkout, "GET", "*.example.com", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_slash", rules, httpReq(checkout, "GET", "example.com/x", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_percent", rules, httpReq(checkout, "GET", "ex%61mple.com", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_non_ascii", rules, httpReq(checkout, "GET", "exämple.com", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_empty_label", rules, httpReq(checkout, "GET", "example..com", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_leading_dot", rules, httpReq(checkout, "GET", ".example.com", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_two_trailing_dots", rules, httpReq(checkout, "GET", "example.com..", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_only_a_dot", rules, httpReq(checkout, "GET", ".", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"invalid_host_only_a_port", rules, httpReq(checkout, "GET", ":443", "/"), time.Time{}, false, ReasonInvalidHost, ""},
		{"unsafe_path_before_denied_by_rule", rules, httpReq(checkout, "GET", "example.com", "/admin/%2F"), time.Time{}, false, ReasonUnsafePath, ""},
		{"unsafe_path_before_allowed", rules, httpReq(checkout, "GET", "example.com", "/public/%2F"), time.Time{}, false, ReasonUnsafePath, ""},
		{"denied_by_rule_before_allowed", rules, httpReq(checkout, "GET", "example.com", "/admin/users"), time.Time{}, false, ReasonDeniedByRule, "deny-admin"},
		{"allowed_when_nothing_earlier_applies", rules, httpReq(checkout, "GET", "example.com", "/public"), time.Time{}, true, ReasonAllowed, "allow-all"},
		{"no_matching_rule_last", rules[:1], httpReq(checkout, "GET", "example.com", "/public"), time.Time{}, false, ReasonNoMatchingRule, ""},
	})
}

func TestDecideDryRun(t *testing.T) {
	req := httpReq(checkout, "POST", "api.stripe.com", "/v1/charges")
	type outcome struct {
		id    string
		allow bool
	}
	for _, tc := range []struct {
		name   string
		rules  []string
		req    Request
		now    time.Time
		allow  bool
		reason Reason
		rule   string
		dryRun []outcome
	}{
		{
			name: "dry_run_deny_does_not_deny",
			rules: []string{
				`- {id: allow-stripe, action: allow, to: {hosts: [api.stripe.com]}}`,
				`- {id: dry-deny, mode: dry-run, action: deny, to: {hosts: [api.stripe.com]}}`,
			},
			req:   req,
			allow: true, reason: ReasonAllowed, rule: "allow-stripe",
			dryRun: []outcome{{"dry-deny", false}},
		},
		{
			name: "dry_run_allow_does_not_allow",
			rules: []string{
				`- {id: dry-allow, mode: dry-run, action: allow, to: {hosts: [api.stripe.com]}}`,
			},
			req:    req,
			reason: ReasonNoMatchingRule,
			dryRun: []outcome{{"dry-allow", true}},
		},
		{
			name: "dry_run_allow_does_not_override_enforced_deny",
			rules: []string{
				`- {id: dry-allow, mode: dry-run, action: allow, to: {hosts: [api.stripe.com]}}`,
				`- {id: deny-stripe, action: deny, to: {hosts: [api.stripe.com]}}`,
			},
			req:    req,
			reason: ReasonDeniedByRule, rule: "deny-stripe",
			dryRun: []outcome{{"dry-allow", true}},
		},
		{
			name: "explicit_enforce_mode_decides",
			rules: []string{
				`- {id: allow-stripe, mode: enforce, action: allow, to: {hosts: [api.stripe.com]}}`,
			},
			req:   req,
			allow: true, reason: ReasonAllowed, rule: "allow-stripe",
		},
		{
			name: "dry_run_outcomes_are_in_rule_order",
			rules: []string{
				`- {id: dry-any, mode: dry-run, action: deny, to: {methods: [POST]}}`,
				`- {id: dry-wild, mode: dry-run, action: allow, to: {hosts: ["*.stripe.com"]}}`,
				`- {id: allow-stripe, action: allow, to: {hosts: [api.stripe.com]}}`,
				`- {id: dry-exact, mode: dry-run, action: deny, to: {hosts: [api.stripe.com]}}`,
				`- {id: dry-any-2, mode: dry-run, action: allow}`,
			},
			req:   req,
			allow: true, reason: ReasonAllowed, rule: "allow-stripe",
			dryRun: []outcome{{"dry-any", false}, {"dry-wild", true}, {"dry-exact", false}, {"dry-any-2", true}},
		},
		{
			name: "dry_run_rule_matching_through_two_hosts_is_recorded_once",
			rules: []string{
				`- {id: dry, mode: dry-run, action: deny, to: {hosts: [api.stripe.com, "*.stripe.com", "*"]}}`,
			},
			req:    req,
			reason: ReasonNoMatchingRule,
			dryRun: []outcome{{"dry", false}},
		},
		{
			name: "dry_run_rule_that_does_not_match_is_not_recorded",
			rules: []string{
				`- {id: dry, mode: dry-run, action: deny, to: {hosts: [api.stripe.com], methods: [GET]}}`,
			},
			req:    req,
			reason: ReasonNoMatchingRule,
		},
		{
			name: "dry_run_rule_with_paths_is_not_recorded_for_sni",
			rules: []string{
				`- {id: dry, mode: dry-run, action: deny, to: {hosts: [api.stripe.com], paths: ["/**"]}}`,
				`- {id: allow-stripe, action: allow, to: {hosts: [api.stripe.com]}}`,
			},
			req:   sniReq(checkout, "api.stripe.com"),
			allow: true, reason: ReasonAllowed, rule: "allow-stripe",
		},
		{
			name: "expired_dry_run_rule_is_not_recorded",
			rules: []string{
				`- {id: dry, mode: dry-run, action: deny, expires: 2026-01-01}`,
			},
			req:    req,
			reason: ReasonNoMatchingRule,
		},
		{
			name: "dry_run_is_not_evaluated_for_early_denies",
			rules: []string{
				`- {id: dry, mode: dry-run, action: allow}`,
			},
			req:    httpReq(checkout, "GET", "api.stripe.com", "/%2F"),
			reason: ReasonUnsafePath,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := compileRules(t, tc.rules...)
			now := tc.now
			if now.IsZero() {
				now = testNow
			}
			d := tab.Decide(tc.req, now)
			if d.Allow != tc.allow || d.Reason != tc.reason || ruleID(d) != tc.rule {
				t.Errorf("Decide = allow %v, reason %q, rule %q; want allow %v, reason %q, rule %q",
					d.Allow, d.Reason, ruleID(d), tc.allow, tc.reason, tc.rule)
			}
			var got []outcome
			for _, o := range d.DryRun {
				if o.Rule == nil {
					t.Fatalf("dry-run outcome without rule: %+v", o)
				}
				if o.Rule.Mode != DryRun {
					t.Errorf("dry-run outcome for rule %q of mode %q", o.Rule.ID, o.Rule.Mode)
				}
				got = append(got, outcome{o.Rule.ID, o.Allow})
			}
			if !slices.Equal(got, tc.dryRun) {
				t.Errorf("DryRun = %v, want %v", got, tc.dryRun)
			}
		})
	}
}

func TestDecideExpiry(t *testing.T) {
	// expires: 2027-06-30 means the rule matches until 2027-06-29
	// 23:59:59.999999999 UTC and never from 2027-06-30 00:00 UTC on.
	allow := []string{`- {id: r, action: allow, expires: 2027-06-30, to: {hosts: [api.stripe.com]}}`}
	denyThenAllow := []string{
		`- {id: deny-stripe, action: deny, expires: 2027-06-30, to: {hosts: [api.stripe.com]}}`,
		`- {id: allow-stripe, action: allow, to: {hosts: [api.stripe.com]}}`,
	}
	req := httpReq(checkout, "GET", "api.stripe.com", "/")
	east := time.FixedZone("UTC+2", 2*3600)
	west := time.FixedZone("UTC-5", -5*3600)
	runDecideCases(t, []decideCase{
		{"matches_long_before_expiry", allow, req, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), true, ReasonAllowed, "r"},
		{"matches_the_day_before", allow, req, time.Date(2027, 6, 29, 12, 0, 0, 0, time.UTC), true, ReasonAllowed, "r"},
		{"matches_until_the_last_nanosecond", allow, req, time.Date(2027, 6, 29, 23, 59, 59, 999999999, time.UTC), true, ReasonAllowed, "r"},
		{"never_matches_from_midnight_utc", allow, req, time.Date(2027, 6, 30, 0, 0, 0, 0, time.UTC), false, ReasonNoMatchingRule, ""},
		{"never_matches_during_the_day", allow, req, time.Date(2027, 6, 30, 12, 0, 0, 0, time.UTC), false, ReasonNoMatchingRule, ""},
		{"never_matches_after_the_day", allow, req, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), false, ReasonNoMatchingRule, ""},
		{"day_is_utc_not_local_east", allow, req, time.Date(2027, 6, 30, 1, 0, 0, 0, east), true, ReasonAllowed, "r"},
		{"day_is_utc_not_local_west", allow, req, time.Date(2027, 6, 29, 20, 0, 0, 0, west), false, ReasonNoMatchingRule, ""},
		{"deny_rule_denies_before_expiry", denyThenAllow, req, time.Date(2027, 6, 29, 23, 59, 59, 0, time.UTC), false, ReasonDeniedByRule, "deny-stripe"},
		{"expired_deny_rule_no_longer_denies", denyThenAllow, req, time.Date(2027, 6, 30, 0, 0, 0, 0, time.UTC), true, ReasonAllowed, "allow-stripe"},
	})
}

func TestTableNextExpiry(t *testing.T) {
	tab := compileRules(t,
		`- {id: a, action: allow, expires: 2027-06-30}`,
		`- {id: b, action: deny, expires: 2027-01-01, to: {hosts: [a.example]}}`,
		`- {id: c, action: allow, expires: 2027-06-30, mode: dry-run}`,
		`- {id: d, action: allow}`,
	)
	jan := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	jun := time.Date(2027, 6, 30, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		now  time.Time
		want time.Time
	}{
		{"long_before_all_expiries", time.Date(2020, 5, 5, 5, 5, 5, 0, time.UTC), jan},
		{"just_before_first_expiry", jan.Add(-time.Nanosecond), jan},
		{"half_a_second_before_first_expiry", jan.Add(-500 * time.Millisecond), jan},
		{"at_first_expiry_gives_the_next", jan, jun},
		{"just_after_first_expiry", jan.Add(time.Nanosecond), jun},
		{"half_a_second_after_first_expiry", jan.Add(500 * time.Millisecond), jun},
		{"just_before_last_expiry", jun.Add(-time.Nanosecond), jun},
		{"at_last_expiry_gives_zero", jun, time.Time{}},
		{"after_last_expiry_gives_zero", jun.AddDate(1, 0, 0), time.Time{}},
		{"in_another_zone", time.Date(2027, 1, 1, 1, 0, 0, 0, time.FixedZone("UTC+2", 7200)), jan},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tab.NextExpiry(tc.now)
			if !got.Equal(tc.want) {
				t.Errorf("NextExpiry(%v) = %v, want %v", tc.now, got, tc.want)
			}
		})
	}
	t.Run("table_without_expiries_gives_zero", func(t *testing.T) {
		tab := compileRules(t, `- {id: a, action: allow}`)
		if got := tab.NextExpiry(testNow); !got.IsZero() {
			t.Errorf("NextExpiry = %v, want zero", got)
		}
	})
	t.Run("decision_holds_until_next_expiry", func(t *testing.T) {
		// Whatever the table decides at now, it decides the same at any
		// instant before NextExpiry(now): that is what lets a cache keep it.
		reqs := []Request{
			httpReq(checkout, "GET", "a.example", "/"),
			httpReq(checkout, "GET", "b.example", "/"),
		}
		for _, now := range []time.Time{jan.Add(-time.Hour), jan, jan.Add(time.Hour), jun.Add(-time.Second)} {
			next := tab.NextExpiry(now)
			for _, req := range reqs {
				want := tab.Decide(req, now)
				at := next.Add(-time.Nanosecond)
				got := tab.Decide(req, at)
				if got.Allow != want.Allow || got.Reason != want.Reason || ruleID(got) != ruleID(want) || len(got.DryRun) != len(want.DryRun) {
					t.Errorf("%v: Decide(%s) at %v = %v %q, at %v = %v %q", now, req.Host, now, want.Allow, ruleID(want), at, got.Allow, ruleID(got))
				}
			}
		}
	})
}

func TestDecideFields(t *testing.T) {
	src := header + `  - {id: allow-stripe, owner: team-payments, ticket: SEC-1, action: allow, to: {hosts: ["*.stripe.com"]}}` + "\n"
	set := parseYAML(t, src)
	tab, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	if tab.Version() != set.Version || tab.Version() == "" {
		t.Fatalf("Table.Version() = %q, Set.Version = %q", tab.Version(), set.Version)
	}
	if tab.Set() != set {
		t.Errorf("Table.Set() is not the compiled set")
	}
	payments := Identity{TrustDomain: "cluster.local", Namespace: "payments", ServiceAccount: "checkout"}
	for _, tc := range []struct {
		name string
		req  Request
		want Decision // Rule is compared by id, DryRun not at all
	}{
		{
			name: "allowed_decision_has_every_field",
			req:  Request{Principal: checkout, Host: "API.Stripe.com.:8443", Port: 443, Method: "POST", Path: "/v1/./ch%61rges?x=1"},
			want: Decision{Allow: true, Reason: ReasonAllowed, Rule: set.Rules[0], Identity: payments, Host: "api.stripe.com", Port: 8443, Path: "/v1/charges"},
		},
		{
			name: "clean_path_loses_only_the_query",
			req:  Request{Principal: checkout, Host: "api.stripe.com", Port: 443, Method: "GET", Path: "/v1/charges?x=1#f"},
			want: Decision{Allow: true, Reason: ReasonAllowed, Rule: set.Rules[0], Identity: payments, Host: "api.stripe.com", Port: 443, Path: "/v1/charges"},
		},
		{
			name: "denied_decision_has_identity_host_and_path",
			req:  Request{Principal: "spiffe://cluster.local/workload/x", Host: "example.com", Port: 80, Method: "GET", Path: "//a"},
			want: Decision{Reason: ReasonNoMatchingRule, Identity: Identity{TrustDomain: "cluster.local"}, Host: "example.com", Port: 80, Path: "/a"},
		},
		{
			name: "sni_decision_has_no_path",
			req:  Request{Principal: checkout, Host: "files.stripe.com", SNI: true, Port: 443},
			want: Decision{Allow: true, Reason: ReasonAllowed, Rule: set.Rules[0], Identity: payments, Host: "files.stripe.com", Port: 443},
		},
		{
			name: "ipv6_host_is_bracketed_and_canonical",
			req:  Request{Principal: checkout, Host: "[2001:DB8::0001]:8443", Method: "GET", Path: "/"},
			want: Decision{Reason: ReasonNoMatchingRule, Identity: payments, Host: "[2001:db8::1]", Port: 8443, Path: "/"},
		},
		{
			name: "no_identity_has_only_version",
			req:  Request{Host: "example.com", Path: "/"},
			want: Decision{Reason: ReasonNoIdentity},
		},
		{
			// Only the trust domain: a namespace claimed in an untrusted
			// domain means nothing and must not match namespace queries.
			name: "untrusted_has_trust_domain_only",
			req:  Request{Principal: "spiffe://other.example/ns/a/sa/b", Host: "example.com", Path: "/"},
			want: Decision{Reason: ReasonUntrustedDomain, Identity: Identity{TrustDomain: "other.example"}},
		},
		{
			name: "unsafe_path_has_host_and_port",
			req:  Request{Principal: checkout, Host: "example.com:8080", Path: "/%2F"},
			want: Decision{Reason: ReasonUnsafePath, Identity: payments, Host: "example.com", Port: 8080},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tab.Decide(tc.req, testNow)
			tc.want.Version = set.Version
			if d.Allow != tc.want.Allow || d.Reason != tc.want.Reason || d.Rule != tc.want.Rule ||
				d.Identity != tc.want.Identity || d.Host != tc.want.Host || d.Port != tc.want.Port ||
				d.Path != tc.want.Path || d.Version != tc.want.Version {
				t.Errorf("Decide(%+v) =\n  %s\nwant\n  %s", tc.req, fmtDecision(d), fmtDecision(tc.want))
			}
		})
	}
}

func fmtDecision(d Decision) string {
	return fmt.Sprintf("allow=%v reason=%q rule=%q identity=%+v host=%q port=%d path=%q version=%q",
		d.Allow, d.Reason, ruleID(d), d.Identity, d.Host, d.Port, d.Path, d.Version)
}

func TestDecideDoesNotModifyTheTable(t *testing.T) {
	// A table is shared by every request: deciding must not leave traces
	// (dry-run outcomes of one request showing up in another's decision).
	tab := compileRules(t,
		`- {id: dry-a, mode: dry-run, action: deny, to: {hosts: [a.example]}}`,
		`- {id: dry-any, mode: dry-run, action: allow}`,
	)
	a := tab.Decide(httpReq(checkout, "GET", "a.example", "/"), testNow)
	b := tab.Decide(httpReq(checkout, "GET", "b.example", "/"), testNow)
	if len(a.DryRun) != 2 || len(b.DryRun) != 1 || b.DryRun[0].Rule.ID != "dry-any" {
		t.Errorf("a.DryRun = %d outcomes, b.DryRun = %+v", len(a.DryRun), b.DryRun)
	}
}

func TestDecideConcurrently(t *testing.T) {
	tab := compileRules(t,
		`- {id: deny-admin, action: deny, to: {paths: ["/admin/**"]}}`,
		`- {id: dry, mode: dry-run, action: deny, to: {hosts: ["*.stripe.com"]}}`,
		`- {id: allow-stripe, action: allow, from: {namespaces: [payments]}, to: {hosts: ["*.stripe.com"]}}`,
	)
	reqs := []struct {
		req   Request
		allow bool
	}{
		{httpReq(checkout, "GET", "api.stripe.com", "/v1/x/../charges"), true},
		{httpReq(checkout, "GET", "api.stripe.com", "/admin/x"), false},
		{httpReq(crawler, "GET", "api.stripe.com", "/"), false},
		{sniReq(refunds, "files.stripe.com"), true},
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				r := reqs[(g+i)%len(reqs)]
				d := tab.Decide(r.req, testNow)
				if d.Allow != r.allow {
					t.Errorf("Decide(%+v).Allow = %v, want %v", r.req, d.Allow, r.allow)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestDecideMixedFromFields(t *testing.T) {
	// Rules that name namespaces are indexed like any other; make sure a
	// rule set mixing principals, namespaces and service accounts decides
	// each identity by the right field.
	tab := compileRules(t,
		`- {id: by-principal, action: allow, from: {principals: ["`+crawler+`"]}, to: {hosts: [a.example]}}`,
		`- {id: by-namespace, action: allow, from: {namespaces: [payments]}, to: {hosts: [a.example]}}`,
		`- {id: by-account, action: allow, from: {serviceAccounts: [robot]}, to: {hosts: [a.example]}}`,
	)
	for _, tc := range []struct{ principal, rule string }{
		{crawler, "by-principal"},
		{refunds, "by-namespace"},
		{"spiffe://cluster.local/ns/ops/sa/robot", "by-account"},
		{"spiffe://cluster.local/ns/ops/sa/human", ""},
	} {
		d := tab.Decide(httpReq(tc.principal, "GET", "a.example", "/"), testNow)
		if ruleID(d) != tc.rule {
			t.Errorf("%s: rule %q, want %q", tc.principal, ruleID(d), tc.rule)
		}
	}
}

// TestDecideMatchesReference compares Table.Decide, with its host index,
// with a plain reading of the SPEC that tries every rule in order, on a
// generated rule set and random requests: half of them made to fit a
// random rule (often a deny or dry-run one), half drawn from the
// generator's principals and hosts.
func TestDecideMatchesReference(t *testing.T) {
	g := generateRules(t, 3000, 7)
	set := parseYAML(t, string(g.YAML))
	tab, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	ref := newReference(set)
	var special []*Rule // deny and dry-run rules, rare in the set
	for _, r := range set.Rules {
		if r.Action == Deny || r.Mode == DryRun {
			special = append(special, r)
		}
	}
	rng := rand.New(rand.NewPCG(7, 7))
	pick := func(s ...string) string { return s[rng.IntN(len(s))] }
	reqs := []Request{g.Allowed, g.Denied, g.Normalize, g.SNI}
	for range 6000 {
		v, sub := rng.IntN(genVendors), rng.IntN(genSubdomains)
		req := Request{
			Principal: genPrincipal(rng.IntN(genNamespaces), rng.IntN(genAccounts+1)),
			Host: pick(genHost(v, sub), fmt.Sprintf("vendor-%03d.com", v), fmt.Sprintf("x.%s", genHost(v, sub)),
				strings.ToUpper(genHost(v, sub))+".", genHost(v, sub)+":8443"),
			Port:   []int{443, 443, 0, 80}[rng.IntN(4)],
			Method: pick("GET", "POST", "DELETE"),
			Path: pick("/", "/v1/items/it_1", "/v1/items/", "/api/v2", "/api/v2/x/y", "/api/v2x",
				"/v1/charges", "/v1/charges/ch_1?x=1", "/v1/files/f/content", "/oauth/token", "/admin/x"),
		}
		switch rng.IntN(10) {
		case 0, 1, 2, 3:
			fitRule(&req, set.Rules[rng.IntN(len(set.Rules))], rng)
		case 4:
			fitRule(&req, special[rng.IntN(len(special))], rng)
		}
		if rng.IntN(5) == 0 {
			req = Request{Principal: req.Principal, Host: strings.TrimSuffix(req.Host, ":8443"), SNI: true, Port: req.Port}
		}
		if rng.IntN(20) == 0 {
			req.Principal = fmt.Sprintf("spiffe://cluster.local/ns/team-%02d/sa/debug", rng.IntN(genNamespaces))
		}
		reqs = append(reqs, req)
	}
	nows := []time.Time{testNow, time.Date(2028, 6, 15, 0, 0, 0, 0, time.UTC)}
	allowed, denied, dry := 0, 0, 0
	for i, req := range reqs {
		now := nows[i%len(nows)]
		d := tab.Decide(req, now)
		allow, reason, rule, dryRun := ref.decide(t, req, now)
		var gotDry []string
		for _, o := range d.DryRun {
			gotDry = append(gotDry, fmt.Sprintf("%s:%v", o.Rule.ID, o.Allow))
		}
		if d.Allow != allow || d.Reason != reason || ruleID(d) != rule || !slices.Equal(gotDry, dryRun) {
			t.Fatalf("Decide(%+v, %v) = %v %q %q dry %q; reference %v %q %q dry %q",
				req, now, d.Allow, d.Reason, ruleID(d), gotDry, allow, reason, rule, dryRun)
		}
		switch {
		case allow:
			allowed++
		case reason == ReasonDeniedByRule:
			denied++
		}
		if len(dryRun) > 0 {
			dry++
		}
	}
	t.Logf("of %d requests %d allowed, %d denied by rule, %d with dry-run outcomes", len(reqs), allowed, denied, dry)
	// The comparison means little unless every outcome is common enough.
	if allowed < len(reqs)/10 || allowed > len(reqs)*9/10 || denied == 0 || dry < 10 {
		t.Errorf("of %d requests %d allowed, %d denied by rule, %d with dry-run outcomes: the generator no longer exercises Decide",
			len(reqs), allowed, denied, dry)
	}
}

// fitRule changes req so that it has what r asks for.
func fitRule(req *Request, r *Rule, rng *rand.Rand) {
	star := func(s string) string { return strings.ReplaceAll(s, "*", fmt.Sprintf("x%d", rng.IntN(3))) }
	if len(r.Principals) > 0 {
		req.Principal = star(r.Principals[rng.IntN(len(r.Principals))])
	}
	if len(r.Namespaces) > 0 {
		sa := fmt.Sprintf("svc-%d", rng.IntN(genAccounts))
		if len(r.ServiceAccounts) > 0 {
			sa = r.ServiceAccounts[0]
		}
		req.Principal = fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", r.Namespaces[0], sa)
	}
	if len(r.Hosts) > 0 {
		req.Host = star(r.Hosts[rng.IntN(len(r.Hosts))])
	}
	if len(r.Ports) > 0 {
		req.Port = r.Ports[0]
		req.Host, _, _ = strings.Cut(req.Host, ":")
	}
	if len(r.Methods) > 0 {
		req.Method = r.Methods[rng.IntN(len(r.Methods))]
	}
	if len(r.Paths) > 0 {
		p := r.Paths[rng.IntN(len(r.Paths))]
		req.Path = star(strings.Replace(p, "/**", "/"+star("*/*"), 1))
	}
}

// reference decides requests the slow, obvious way: every rule in order,
// every pattern a regular expression.
type reference struct {
	set   *Set
	rules []refRule
}

type refRule struct {
	principals, paths []*regexp.Regexp
	hosts             []string
}

func newReference(set *Set) *reference {
	ref := &reference{set: set}
	for _, r := range set.Rules {
		var rr refRule
		for _, p := range r.Principals {
			rr.principals = append(rr.principals, regexp.MustCompile(`^`+globRegexp(p)+`$`))
		}
		for _, p := range r.Paths {
			if glob, ok := strings.CutSuffix(p, "/**"); ok {
				rr.paths = append(rr.paths, regexp.MustCompile(`^`+globRegexp(glob)+`(/.*)?$`))
			} else {
				rr.paths = append(rr.paths, regexp.MustCompile(`^`+globRegexp(p)+`$`))
			}
		}
		for _, h := range r.Hosts {
			rr.hosts = append(rr.hosts, strings.ToLower(strings.TrimSuffix(h, ".")))
		}
		ref.rules = append(ref.rules, rr)
	}
	return ref
}

func (ref *reference) decide(t *testing.T, req Request, now time.Time) (allow bool, reason Reason, rule string, dryRun []string) {
	t.Helper()
	ident, ok := ParseIdentity(req.Principal)
	if !ok || !slices.Contains(ref.set.TrustDomains, ident.TrustDomain) {
		t.Fatalf("reference: request %+v has an unusable identity", req)
	}
	host, port, ok := ParseAuthority(req.Host, req.SNI)
	if !ok {
		t.Fatalf("reference: request %+v has an invalid host", req)
	}
	if port == 0 {
		port = req.Port
	}
	path := ""
	if !req.SNI {
		if path, ok = NormalizePath(req.Path); !ok {
			t.Fatalf("reference: request %+v has an unsafe path", req)
		}
	}
	anyRE := func(res []*regexp.Regexp, s string) bool {
		return len(res) == 0 || slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(s) })
	}
	anyOf := func(list []string, s string) bool { return len(list) == 0 || slices.Contains(list, s) }
	hostOK := func(hosts []string) bool {
		return len(hosts) == 0 || slices.ContainsFunc(hosts, func(h string) bool {
			if suffix, ok := strings.CutPrefix(h, "*"); ok {
				return suffix == "" || strings.HasSuffix(host, suffix)
			}
			return host == h
		})
	}
	var firstAllow, firstDeny string
	for i, r := range ref.set.Rules {
		rr := &ref.rules[i]
		if !r.Expires.IsZero() && !now.Before(r.Expires) ||
			req.SNI && (len(r.Methods) > 0 || len(r.Paths) > 0) ||
			!anyRE(rr.principals, req.Principal) ||
			len(r.Namespaces) > 0 && !anyOf(r.Namespaces, ident.Namespace) ||
			len(r.ServiceAccounts) > 0 && !anyOf(r.ServiceAccounts, ident.ServiceAccount) ||
			!hostOK(rr.hosts) ||
			len(r.Ports) > 0 && !slices.Contains(r.Ports, port) ||
			!anyOf(r.Methods, req.Method) ||
			!anyRE(rr.paths, path) {
			continue
		}
		switch {
		case r.Mode == DryRun:
			dryRun = append(dryRun, fmt.Sprintf("%s:%v", r.ID, r.Action == Allow))
		case r.Action == Deny && firstDeny == "":
			firstDeny = r.ID
		case r.Action == Allow && firstAllow == "":
			firstAllow = r.ID
		}
	}
	switch {
	case firstDeny != "":
		return false, ReasonDeniedByRule, firstDeny, dryRun
	case firstAllow != "":
		return true, ReasonAllowed, firstAllow, dryRun
	}
	return false, ReasonNoMatchingRule, "", dryRun
}

func TestDecideUntrustedDomainRecordsNoNamespace(t *testing.T) {
	set, err := Parse(Source{Name: "r.yaml", Data: []byte("apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules: []\n")})
	if err != nil {
		t.Fatal(err)
	}
	tab, _ := Compile(set)
	d := tab.Decide(Request{Principal: "spiffe://partner.example/ns/payments/sa/checkout", Host: "a.example", Port: 443, Method: "GET", Path: "/"}, time.Now())
	if d.Reason != ReasonUntrustedDomain || d.Identity != (Identity{TrustDomain: "partner.example"}) {
		t.Fatalf("decision %+v: want untrusted-trust-domain with the trust domain only", d)
	}
}

// TestTableCandidates: the host index offers for a host exactly the rules
// whose hosts match it, which Decide and Explain both rely on.
func TestTableCandidates(t *testing.T) {
	tab := compileRules(t,
		`- {id: exact, action: allow, to: {hosts: [api.stripe.com]}}`,
		`- {id: wildcard, action: allow, to: {hosts: ["*.stripe.com"]}}`,
		`- {id: deep-wildcard, action: allow, to: {hosts: ["*.b.stripe.com"]}}`,
		`- {id: star, action: allow, to: {hosts: ["*"]}}`,
		`- {id: no-hosts, action: allow, to: {ports: [443]}}`,
		`- {id: both, action: allow, to: {hosts: [api.stripe.com, "*.stripe.com", stripe.com]}}`,
		`- {id: other, action: allow, to: {hosts: [api.example.com]}}`,
	)
	for _, tc := range []struct {
		host string
		want []string
	}{
		{"api.stripe.com", []string{"exact", "wildcard", "star", "no-hosts", "both"}},
		{"stripe.com", []string{"star", "no-hosts", "both"}},
		{"a.b.stripe.com", []string{"wildcard", "deep-wildcard", "star", "no-hosts", "both"}},
		{"api.example.com", []string{"star", "no-hosts", "other"}},
		{"example.org", []string{"star", "no-hosts"}},
	} {
		t.Run(tc.host, func(t *testing.T) {
			offered := map[int32]bool{}
			tab.candidates(tc.host, func(idxs []int32) {
				for _, i := range idxs {
					offered[i] = true
				}
			})
			var got []string
			for i, c := range tab.rules {
				if offered[int32(i)] {
					got = append(got, c.rule.ID)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("rules offered for %s: %v, want %v", tc.host, got, tc.want)
			}
		})
	}
}

// TestCompileUsesTheParsedPatterns: the parser compiles every pattern to
// validate it, and Compile takes those instead of compiling them again;
// a rule built by hand, or a list changed after parsing, is compiled
// afresh, so that a stale pattern never decides.
func TestCompileUsesTheParsedPatterns(t *testing.T) {
	set := parseYAML(t, header+`  - {id: a, action: allow, from: {principals: ["spiffe://cluster.local/ns/payments/sa/*"]}, to: {hosts: ["*.stripe.com"], paths: ["/v1/**"]}}
`)
	tab, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	c := &tab.rules[0]
	if &c.paths[0] != &set.patterns[0].paths[0] || &c.principals[0] != &set.patterns[0].principals[0] {
		t.Error("Compile compiled the parsed patterns again")
	}
	if d := tab.Decide(httpReq(checkout, "GET", "api.stripe.com", "/v1/charges"), testNow); !d.Allow {
		t.Fatalf("the parsed patterns do not match: %s", d.Reason)
	}

	// A list changed in place after parsing is compiled again.
	set.Rules[0].Paths[0] = "/v2/**"
	set.Rules[0].Hosts[0] = "api.example.com"
	tab, err = Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	if d := tab.Decide(httpReq(checkout, "GET", "api.stripe.com", "/v1/charges"), testNow); d.Allow {
		t.Error("a stale host or path pattern still decides")
	}
	if d := tab.Decide(httpReq(checkout, "GET", "api.example.com", "/v2/x"), testNow); !d.Allow {
		t.Errorf("the changed patterns do not decide: %s", d.Reason)
	}

	// A set built by hand has no parsed patterns: they are compiled, and
	// an invalid one is an error.
	hand := &Set{TrustDomains: []string{"cluster.local"}, Rules: []*Rule{{ID: "h", Action: Allow, Mode: Enforce, Paths: []string{"v1"}}}}
	if _, err := Compile(hand); err == nil || !strings.Contains(err.Error(), `compile rule "h"`) {
		t.Errorf("Compile of an invalid hand-built rule: %v", err)
	}
	hand.Rules[0].Paths = []string{"/v1"}
	if tab, err := Compile(hand); err != nil || !tab.Decide(httpReq(checkout, "GET", "x.example", "/v1"), testNow).Allow {
		t.Errorf("Compile of a hand-built rule: %v", err)
	}
}
