package rules

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoadSpecExample(t *testing.T) {
	const file = "testdata/spec-example.yaml"
	set, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	want := &Rule{
		ID:              "payments-stripe-charges",
		Description:     "Checkout creates charges at Stripe",
		Owner:           "team-payments",
		Ticket:          "SEC-1234",
		Expires:         time.Date(2027, 6, 30, 0, 0, 0, 0, time.UTC),
		Mode:            Enforce,
		Action:          Allow,
		Principals:      []string{checkout},
		Namespaces:      []string{"payments"},
		ServiceAccounts: []string{"checkout"},
		Hosts:           []string{"api.stripe.com", "*.stripe.com"},
		Ports:           []int{443},
		Methods:         []string{"POST"},
		Paths:           []string{"/v1/charges", "/v1/customers/*", "/v1/files/**"},
		Pos:             Pos{File: file, Line: 6, Col: 5},
	}
	if len(set.Rules) != 1 {
		t.Fatalf("got %d rules, want 1", len(set.Rules))
	}
	if got := set.Rules[0]; !reflect.DeepEqual(got, want) {
		t.Errorf("rule =\n  %+v\nwant\n  %+v", *got, *want)
	}
	if !slices.Equal(set.TrustDomains, []string{"cluster.local"}) {
		t.Errorf("TrustDomains = %q", set.TrustDomains)
	}
	if !slices.Equal(set.Files, []string{file}) {
		t.Errorf("Files = %q", set.Files)
	}
	if len(set.Version) != 16 {
		t.Errorf("Version = %q, want 16 hex digits", set.Version)
	}
	if !set.Rules[0].HTTPOnly() {
		t.Errorf("HTTPOnly() = false for a rule with methods and paths")
	}

	// The example does what its comments say.
	tab, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		req   Request
		now   time.Time
		allow bool
	}{
		{httpReq(checkout, "POST", "api.stripe.com", "/v1/charges"), testNow, true},
		{httpReq(checkout, "POST", "files.stripe.com", "/v1/files/f_1/contents"), testNow, true},
		{httpReq(checkout, "POST", "api.stripe.com", "/v1/customers/cus_1"), testNow, true},
		{httpReq(checkout, "GET", "api.stripe.com", "/v1/charges"), testNow, false},
		{httpReq(refunds, "POST", "api.stripe.com", "/v1/charges"), testNow, false},
		{httpReq(checkout, "POST", "api.stripe.com:8443", "/v1/charges"), testNow, false},
		{httpReq(checkout, "POST", "api.stripe.com", "/v1/charges"), time.Date(2027, 6, 30, 0, 0, 0, 0, time.UTC), false},
		{sniReq(checkout, "api.stripe.com"), testNow, false},
	} {
		if d := tab.Decide(tc.req, tc.now); d.Allow != tc.allow {
			t.Errorf("Decide(%+v, %v).Allow = %v (%s), want %v", tc.req, tc.now, d.Allow, d.Reason, tc.allow)
		}
	}
}

func TestParseDefaultsAndOptionalFields(t *testing.T) {
	set := parseYAML(t, header+"  - id: minimal\n    action: deny\n")
	r := set.Rules[0]
	if r.Mode != Enforce {
		t.Errorf("Mode = %q, want enforce by default", r.Mode)
	}
	if !r.Expires.IsZero() {
		t.Errorf("Expires = %v, want zero (never)", r.Expires)
	}
	if r.Action != Deny || r.HTTPOnly() {
		t.Errorf("Action = %q, HTTPOnly = %v", r.Action, r.HTTPOnly())
	}
	if r.Principals != nil || r.Hosts != nil || r.Ports != nil {
		t.Errorf("absent fields are not nil: %+v", r)
	}
}

func TestLoadRealisticFile(t *testing.T) {
	set, err := Load("testdata/payments.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range set.Rules {
		ids = append(ids, r.ID)
	}
	if want := []string{"payments-stripe-api", "payments-no-stripe-account-changes", "payments-adyen-trial"}; !slices.Equal(ids, want) {
		t.Errorf("ids = %q, want %q", ids, want)
	}
	if want := []string{"cluster.local", "prod.example.com"}; !slices.Equal(set.TrustDomains, want) {
		t.Errorf("TrustDomains = %q, want %q", set.TrustDomains, want)
	}
	if r := set.Rules[2]; r.Mode != DryRun || r.Pos.Line != 29 || r.Pos.Col != 5 {
		t.Errorf("third rule: mode %q at %s", r.Mode, r.Pos)
	}
	tab, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	d := tab.Decide(httpReq(checkout, "POST", "api.stripe.com", "/v1/accounts/acct_1"), testNow)
	if d.Reason != ReasonDeniedByRule || ruleID(d) != "payments-no-stripe-account-changes" {
		t.Errorf("account change: %s %q", d.Reason, ruleID(d))
	}
	d = tab.Decide(httpReq(refunds, "POST", "checkout-test.adyen.com", "/v71/payments/p_1/captures"), testNow)
	if d.Allow || len(d.DryRun) != 1 || !d.DryRun[0].Allow {
		t.Errorf("adyen trial: allow %v, dry-run %+v", d.Allow, d.DryRun)
	}
}

func TestParseEmptyRuleListIsValid(t *testing.T) {
	set := parseYAML(t, "apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules: []\n")
	if len(set.Rules) != 0 {
		t.Fatalf("got %d rules", len(set.Rules))
	}
	tab, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	d := tab.Decide(httpReq(checkout, "GET", "example.com", "/"), testNow)
	if d.Allow || d.Reason != ReasonNoMatchingRule || d.Rule != nil {
		t.Errorf("empty rule set: allow %v, reason %q, rule %q", d.Allow, d.Reason, ruleID(d))
	}
}

func TestParseDocumentsInOneFileAreMerged(t *testing.T) {
	src := header + "  - {id: a, action: allow}\n---\n" +
		"apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [other.example]\nrules:\n  - {id: b, action: deny}\n"
	set := parseYAML(t, src)
	if len(set.Rules) != 2 || set.Rules[1].ID != "b" || set.Rules[1].Pos.Line != 11 {
		t.Errorf("rules = %+v", set.Rules)
	}
	if !slices.Equal(set.TrustDomains, []string{"cluster.local", "other.example"}) {
		t.Errorf("TrustDomains = %q", set.TrustDomains)
	}
}

// TestParseErrors checks the exact text of every error: file:line:col:
// message, with the line and column of the offending YAML node.
func TestParseErrors(t *testing.T) {
	const (
		api  = "apiVersion: egress-authz/v1\n"
		kind = "kind: RuleSet\n"
		td   = "trustDomains: [cluster.local]\n"
	)
	// rule starts a rule set whose rules list begins on line 5.
	rule := func(lines ...string) string {
		return header + strings.Join(lines, "\n") + "\n"
	}
	for _, tc := range []struct {
		name string
		src  string
		want []string // each error; an entry ending in "..." is a prefix
	}{
		{
			name: "wrong_api_version",
			src:  "apiVersion: egress-authz/v2\n" + kind + td + "rules: []\n",
			want: []string{`rules.yaml:1:13: apiVersion must be "egress-authz/v1"`},
		},
		{
			name: "wrong_kind",
			src:  api + "kind: Rules\n" + td + "rules: []\n",
			want: []string{`rules.yaml:2:7: kind must be "RuleSet"`},
		},
		{
			name: "api_version_not_a_value",
			src:  "apiVersion: [egress-authz/v1]\n" + kind + td + "rules: []\n",
			want: []string{`rules.yaml:1:13: apiVersion must be a single value, got a list`},
		},
		{
			name: "missing_api_version_and_kind",
			src:  td + "rules: []\n",
			want: []string{
				`rules.yaml:1:1: missing apiVersion (want "egress-authz/v1")`,
				`rules.yaml:1:1: missing kind (want "RuleSet")`,
			},
		},
		{
			name: "document_without_rules",
			src:  api + kind + td,
			want: []string{`rules.yaml:1:1: missing rules (write "rules: []" to deny everything)`},
		},
		{
			name: "empty_file",
			src:  "",
			want: []string{`rules.yaml:1:1: empty rule file: expected apiVersion, kind and rules`},
		},
		{
			name: "file_with_only_comments",
			src:  "# nothing here yet\n\n",
			want: []string{`rules.yaml:1:1: empty rule file: expected apiVersion, kind and rules`},
		},
		{
			name: "null_document",
			src:  "null\n",
			want: []string{`rules.yaml:1:1: empty document: expected apiVersion, kind and rules`},
		},
		{
			name: "empty_second_document",
			src:  api + kind + td + "rules: []\n---\n",
			want: []string{`rules.yaml:6:1: empty document: expected apiVersion, kind and rules`},
		},
		{
			name: "document_is_a_list",
			src:  "- id: a\n",
			want: []string{`rules.yaml:1:1: rule set must be a mapping, got a list`},
		},
		{
			name: "unknown_top_level_key",
			src:  api + kind + td + "rulez: []\n",
			want: []string{
				`rules.yaml:4:1: rule set: unknown key "rulez" (known: apiVersion, kind, trustDomains, internalDomains, processors, rules)`,
				`rules.yaml:1:1: missing rules (write "rules: []" to deny everything)`,
			},
		},
		{
			name: "repeated_top_level_key",
			src:  api + kind + "kind: RuleSet\n" + td + "rules: []\n",
			want: []string{`rules.yaml:3:1: rule set: key "kind" repeated`},
		},
		{
			name: "invalid_trust_domain",
			src:  api + kind + `trustDomains: [cluster.local, "spiffe://x", Cluster.Local]` + "\nrules: []\n",
			want: []string{
				`rules.yaml:3:31: trustDomains: "spiffe://x" is not a SPIFFE trust domain name`,
				`rules.yaml:3:45: trustDomains: "Cluster.Local" is not a SPIFFE trust domain name`,
			},
		},
		{
			name: "rules_not_a_list",
			src:  api + kind + td + "rules: {}\n",
			want: []string{`rules.yaml:4:8: rules must be a list, got a mapping`},
		},
		{
			name: "rule_not_a_mapping",
			src:  rule("  - payments"),
			want: []string{`rules.yaml:5:5: rule must be a mapping, got "payments"`},
		},
		{
			name: "unknown_rule_key",
			src:  rule("  - id: a", "    action: allow", "    hots: [a.example]"),
			want: []string{`rules.yaml:7:5: rule: unknown key "hots" (known: id, description, owner, ticket, expires, mode, action, processor, purposes, dataCategories, from, to)`},
		},
		{
			name: "unknown_from_key",
			src:  rule("  - id: a", "    action: allow", "    from: {principal: [x]}"),
			want: []string{`rules.yaml:7:12: from: unknown key "principal" (known: principals, namespaces, serviceAccounts)`},
		},
		{
			name: "unknown_to_key",
			src:  rule("  - id: a", "    action: allow", "    to:", "      host: [a.example]"),
			want: []string{`rules.yaml:8:7: to: unknown key "host" (known: hosts, ports, methods, paths)`},
		},
		{
			name: "repeated_rule_key",
			src:  rule("  - id: a", "    action: allow", "    action: deny"),
			want: []string{`rules.yaml:7:5: rule: key "action" repeated`},
		},
		{
			name: "duplicate_id",
			src:  rule("  - id: a", "    action: allow", "  - id: b", "    action: allow", "  - id: a", "    action: deny"),
			want: []string{`rules.yaml:9:9: id "a" already used at rules.yaml:5:5`},
		},
		{
			name: "missing_id",
			src:  rule("  - action: allow"),
			want: []string{`rules.yaml:5:5: rule has no id`},
		},
		{
			name: "empty_id",
			src:  rule(`  - id: ""`, "    action: allow"),
			want: []string{`rules.yaml:5:9: id "": use only lower-case letters, digits and '-'`},
		},
		{
			name: "id_with_upper_case_and_underscore",
			src:  rule("  - id: Payments_Stripe", "    action: allow"),
			want: []string{`rules.yaml:5:9: id "Payments_Stripe": use only lower-case letters, digits and '-'`},
		},
		{
			name: "id_not_a_value",
			src:  rule("  - id: [a]", "    action: allow"),
			want: []string{`rules.yaml:5:9: id must be a single value, got a list`},
		},
		{
			name: "missing_action",
			src:  rule("  - id: a"),
			want: []string{`rules.yaml:5:5: rule "a" has no action (allow or deny)`},
		},
		{
			name: "unknown_action",
			src:  rule("  - id: a", "    action: permit"),
			want: []string{`rules.yaml:6:13: action must be allow or deny, got "permit"`},
		},
		{
			name: "unknown_mode",
			src:  rule("  - id: a", "    action: allow", "    mode: audit"),
			want: []string{`rules.yaml:7:11: mode must be enforce or dry-run, got "audit"`},
		},
		{
			name: "description_without_value",
			src:  rule("  - id: a", "    action: allow", "    description: [a, b]"),
			want: []string{`rules.yaml:7:18: description must be a single value, got a list`},
		},
		{
			name: "expires_bad_month",
			src:  rule("  - id: a", "    action: allow", "    expires: 2027-13-01"),
			want: []string{`rules.yaml:7:14: expires must be a date YYYY-MM-DD, got "2027-13-01"`},
		},
		{
			name: "expires_bad_day",
			src:  rule("  - id: a", "    action: allow", "    expires: 2027-02-30"),
			want: []string{`rules.yaml:7:14: expires must be a date YYYY-MM-DD, got "2027-02-30"`},
		},
		{
			name: "expires_other_format",
			src:  rule("  - id: a", "    action: allow", "    expires: 30.06.2027"),
			want: []string{`rules.yaml:7:14: expires must be a date YYYY-MM-DD, got "30.06.2027"`},
		},
		{
			name: "expires_with_time",
			src:  rule("  - id: a", "    action: allow", "    expires: 2027-06-30T12:00:00Z"),
			want: []string{`rules.yaml:7:14: expires must be a date YYYY-MM-DD, got "2027-06-30T12:00:00Z"`},
		},
		{
			name: "lower_case_method",
			src:  rule("  - id: a", "    action: allow", "    to: {methods: [get]}"),
			want: []string{`rules.yaml:7:20: methods: "get": methods are case-sensitive and written in upper case (GET)`},
		},
		{
			name: "mixed_case_method",
			src:  rule("  - id: a", "    action: allow", "    to: {methods: [POST, Put]}"),
			want: []string{`rules.yaml:7:26: methods: "Put": methods are case-sensitive and written in upper case (PUT)`},
		},
		{
			name: "method_not_a_token",
			src:  rule("  - id: a", "    action: allow", `    to: {methods: ["GET /"]}`),
			want: []string{`rules.yaml:7:20: methods: "GET /" is not an HTTP method`},
		},
		{
			name: "path_with_dot_dot",
			src:  rule("  - id: a", "    action: allow", "    to: {paths: [/v1/../charges]}"),
			want: []string{`rules.yaml:7:18: paths: "/v1/../charges" is not a normalized path (requests are matched after normalization, so it could never match; write "/charges")`},
		},
		{
			name: "path_with_double_slash",
			src:  rule("  - id: a", "    action: allow", "    to: {paths: [/v1//charges]}"),
			want: []string{`rules.yaml:7:18: paths: "/v1//charges" is not a normalized path (requests are matched after normalization, so it could never match; write "/v1/charges")`},
		},
		{
			name: "path_with_unreserved_escape",
			src:  rule("  - id: a", "    action: allow", "    to: {paths: [/v1/ch%61rges]}"),
			want: []string{`rules.yaml:7:18: paths: "/v1/ch%61rges" is not a normalized path (requests are matched after normalization, so it could never match; write "/v1/charges")`},
		},
		{
			name: "path_with_lower_case_escape",
			src:  rule("  - id: a", "    action: allow", "    to: {paths: [/v1/a%3ab]}"),
			want: []string{`rules.yaml:7:18: paths: "/v1/a%3ab" is not a normalized path (requests are matched after normalization, so it could never match; write "/v1/a%3Ab")`},
		},
		{
			name: "path_that_is_unsafe",
			src:  rule("  - id: a", "    action: allow", "    to: {paths: [/v1/a%2Fb]}"),
			want: []string{`rules.yaml:7:18: paths: "/v1/a%2Fb" is not a safe path (requests with such a path are denied as unsafe-path, so it could never match)`},
		},
		{
			name: "path_not_starting_with_slash",
			src:  rule("  - id: a", "    action: allow", "    to: {paths: [v1/charges]}"),
			want: []string{`rules.yaml:7:18: paths: "v1/charges" must start with /`},
		},
		{
			name: "path_with_query",
			src:  rule("  - id: a", "    action: allow", `    to: {paths: ["/v1/charges?x=1"]}`),
			want: []string{`rules.yaml:7:18: paths: "/v1/charges?x=1": the query and fragment are never matched; leave them out`},
		},
		{
			name: "double_star_in_the_middle",
			src:  rule("  - id: a", "    action: allow", `    to: {paths: ["/v1/**/x"]}`),
			want: []string{`rules.yaml:7:18: paths: "/v1/**/x": ** is allowed only as a trailing /**`},
		},
		{
			name: "double_star_inside_last_segment",
			src:  rule("  - id: a", "    action: allow", `    to: {paths: ["/v1/files**"]}`),
			want: []string{`rules.yaml:7:18: paths: "/v1/files**": ** is allowed only as a trailing /**`},
		},
		{
			name: "two_trailing_double_stars",
			src:  rule("  - id: a", "    action: allow", `    to: {paths: ["/v1/**/**"]}`),
			want: []string{`rules.yaml:7:18: paths: "/v1/**/**": ** is allowed only as a trailing /**`},
		},
		{
			name: "non_normalized_path_with_stars",
			src:  rule("  - id: a", "    action: allow", `    to: {paths: ["/v1//*/x", "/v1/*/./**"]}`),
			want: []string{
				`rules.yaml:7:18: paths: "/v1//*/x" is not a normalized path (requests are matched after normalization, so it could never match; write "/v1/*/x")`,
				`rules.yaml:7:30: paths: "/v1/*/./**" is not a normalized path (requests are matched after normalization, so it could never match; write "/v1/*/**")`,
			},
		},
		{
			// "/v1//**" would match only "/v1/": no normalized path is below it.
			name: "double_slash_before_double_star",
			src:  rule("  - id: a", "    action: allow", `    to: {paths: ["/v1//**", "//**"]}`),
			want: []string{
				`rules.yaml:7:18: paths: "/v1//**" is not a normalized path (requests are matched after normalization, so it could never match; write "/v1/**")`,
				`rules.yaml:7:29: paths: "//**" is not a normalized path (requests are matched after normalization, so it could never match; write "/**")`,
			},
		},
		{
			name: "host_with_port",
			src:  rule("  - id: a", "    action: allow", `    to: {hosts: ["api.stripe.com:443"]}`),
			want: []string{`rules.yaml:7:18: hosts: "api.stripe.com:443": write ports under to.ports, not in the host`},
		},
		{
			name: "host_with_inner_star",
			src:  rule("  - id: a", "    action: allow", `    to: {hosts: ["api*.stripe.com", "*stripe.com", "*.*.stripe.com"]}`),
			want: []string{
				`rules.yaml:7:18: hosts: "api*.stripe.com" is not a host name (use *.example.com for sub-domains, * for any host)`,
				`rules.yaml:7:37: hosts: "*stripe.com" is not a host name (use *.example.com for sub-domains, * for any host)`,
				`rules.yaml:7:52: hosts: "*.*.stripe.com" is not a host name pattern`,
			},
		},
		{
			name: "host_with_empty_label",
			src:  rule("  - id: a", "    action: allow", `    to: {hosts: [api..stripe.com]}`),
			want: []string{`rules.yaml:7:18: hosts: "api..stripe.com" is not a host name (use *.example.com for sub-domains, * for any host)`},
		},
		{
			name: "ports_out_of_range_or_not_numbers",
			src:  rule("  - id: a", "    action: allow", "    to: {ports: [0, 65536, https]}"),
			want: []string{
				`rules.yaml:7:18: ports: "0" is not a port number (1-65535)`,
				`rules.yaml:7:21: ports: "65536" is not a port number (1-65535)`,
				`rules.yaml:7:28: ports: "https" is not a port number (1-65535)`,
			},
		},
		{
			name: "empty_list",
			src:  rule("  - id: a", "    action: allow", "    to: {hosts: []}"),
			want: []string{`rules.yaml:7:17: hosts is an empty list, which would match nothing; leave the key out to match anything`},
		},
		{
			name: "list_field_given_a_value",
			src:  rule("  - id: a", "    action: allow", "    to: {hosts: api.stripe.com}"),
			want: []string{`rules.yaml:7:17: hosts must be a list, got "api.stripe.com"`},
		},
		{
			name: "principal_not_a_spiffe_id",
			src:  rule("  - id: a", "    action: allow", "    from: {principals: [checkout]}"),
			want: []string{`rules.yaml:7:25: principals: "checkout" is not a SPIFFE ID (spiffe://TRUST-DOMAIN/PATH, '*' for one path segment or part of one): ...`},
		},
		{
			name: "principal_with_empty_segment",
			src:  rule("  - id: a", "    action: allow", `    from: {principals: ["spiffe://cluster.local/ns//sa/x"]}`),
			want: []string{`rules.yaml:7:25: principals: "spiffe://cluster.local/ns//sa/x" is not a SPIFFE ID ...`},
		},
		{
			name: "namespace_with_slash",
			src:  rule("  - id: a", "    action: allow", `    from: {namespaces: ["a/b"], serviceAccounts: ["*"]}`),
			want: []string{
				`rules.yaml:7:25: namespaces: "a/b" is not a namespace or service account name`,
				`rules.yaml:7:51: serviceAccounts: "*" is not a namespace or service account name`,
			},
		},
		{
			name: "from_not_a_mapping",
			src:  rule("  - id: a", "    action: allow", "    from: [payments]"),
			want: []string{`rules.yaml:7:11: from must be a mapping, got a list`},
		},
		{
			name: "every_error_is_reported_in_file_order",
			src: rule(
				"  - id: a",
				"    action: allow",
				"    to: {methods: [get]}",
				"  - id: b",
				"    action: maybe",
				"  - id: a",
				"    action: deny",
			),
			want: []string{
				`rules.yaml:7:20: methods: "get": methods are case-sensitive and written in upper case (GET)`,
				`rules.yaml:9:13: action must be allow or deny, got "maybe"`,
				`rules.yaml:10:9: id "a" already used at rules.yaml:5:5`,
			},
		},
		{
			name: "invalid_yaml_tab_indentation",
			src:  rule("\t- id: a"),
			want: []string{`rules.yaml:5:1: invalid YAML: a tab in indentation (YAML indents with spaces only)`},
		},
		{
			name: "invalid_yaml_unclosed_flow_sequence",
			src:  api + kind + td + "rules: [\n",
			// The node content was expected on line 5 (the end of input);
			// the library says 4 because its parser lines are 0-based.
			want: []string{`rules.yaml:5:1: invalid YAML: did not find expected node content`},
		},
		{
			name: "invalid_yaml_mapping_in_value",
			src:  api + kind + td + "rules: a: b\n",
			// The YAML library reports lines of syntax errors but no columns.
			want: []string{`rules.yaml:4:1: invalid YAML: mapping values are not allowed in this context`},
		},
		{
			name: "invalid_yaml_unknown_alias",
			src:  rule("  - id: a", "    action: *act"),
			// The YAML library gives no position for this error (the alias
			// is at 6:13); only the file is asserted.
			want: []string{`rules.yaml:...`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list := parseErrors(t, Source{Name: "rules.yaml", Data: []byte(tc.src)})
			got := strings.Split(list.Error(), "\n")
			ok := len(got) == len(tc.want)
			for i := 0; ok && i < len(got); i++ {
				if prefix, cut := strings.CutSuffix(tc.want[i], "..."); cut {
					ok = strings.HasPrefix(got[i], prefix)
				} else {
					ok = got[i] == tc.want[i]
				}
			}
			if !ok {
				t.Errorf("errors:\n  %s\nwant:\n  %s\n--- source ---\n%s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "), tc.src)
			}
			for i, d := range list {
				if d.Error() != got[i] {
					t.Errorf("Diagnostic %d Error() = %q, ErrorList line %q", i, d.Error(), got[i])
				}
				if d.Pos.File != "rules.yaml" || d.Pos.Line < 1 || d.Pos.Col < 1 {
					t.Errorf("Diagnostic %d Pos = %+v", i, d.Pos)
				}
			}
		})
	}
}

func TestParseErrorsAcrossFiles(t *testing.T) {
	a := Source{Name: "dir/a.yaml", Data: []byte(header + "  - id: shared\n    action: allow\n")}
	b := Source{Name: "dir/b.yaml", Data: []byte(header + "  - id: other\n    action: allow\n  - id: shared\n    action: deny\n")}
	list := parseErrors(t, a, b)
	want := `dir/b.yaml:7:9: id "shared" already used at dir/a.yaml:5:5`
	if list.Error() != want {
		t.Errorf("errors = %q, want %q", list.Error(), want)
	}

	bad := Source{Name: "dir/c.yaml", Data: []byte("kind: RuleSet\n")}
	list = parseErrors(t, a, bad)
	for _, d := range list {
		if d.Pos.File != "dir/c.yaml" {
			t.Errorf("error in the wrong file: %v", d)
		}
	}
}

func TestParseNoSources(t *testing.T) {
	if _, err := Parse(); err == nil {
		t.Fatal("Parse() with no files succeeded")
	}
}

func TestParseVersion(t *testing.T) {
	src := header + "  - {id: a, action: allow, to: {hosts: [a.example]}}\n"
	parse := func(srcs ...Source) string {
		t.Helper()
		set, err := Parse(srcs...)
		if err != nil {
			t.Fatal(err)
		}
		return set.Version
	}
	v := parse(Source{Name: "rules.yaml", Data: []byte(src)})
	if len(v) != 16 || strings.Trim(v, "0123456789abcdef") != "" {
		t.Fatalf("Version = %q, want 16 lower-case hex digits", v)
	}
	for _, tc := range []struct {
		name string
		srcs []Source
		same bool
	}{
		{"same_content_same_version", []Source{{"rules.yaml", []byte(src)}}, true},
		{"same_file_in_another_directory_same_version", []Source{{"/etc/egress/rules.yaml", []byte(src)}}, true},
		{"different_rule_different_version", []Source{{"rules.yaml", []byte(strings.Replace(src, "a.example", "b.example", 1))}}, false},
		{"comment_added_different_version", []Source{{"rules.yaml", []byte(src + "# reviewed\n")}}, false},
		{"renamed_file_different_version", []Source{{"other.yaml", []byte(src)}}, false},
		{"extra_file_different_version", []Source{{"rules.yaml", []byte(src)}, {"z.yaml", []byte(header + "  - {id: z, action: deny}\n")}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parse(tc.srcs...); (got == v) != tc.same {
				t.Errorf("Version = %q, first version %q, want same = %v", got, v, tc.same)
			}
		})
	}
}

func TestLoadDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", "apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules:\n  - {id: a, action: allow}\n")
	writeFile(t, dir, "b.yml", "apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [prod.example, cluster.local]\nrules:\n  - {id: b, action: deny}\n")
	// Not rule files: each would fail to parse, or would duplicate an id.
	writeFile(t, dir, "notes.txt", "not: [yaml")
	writeFile(t, dir, "README.md", "# rules\n")
	writeFile(t, dir, "a.yaml.bak", header+"  - {id: a, action: allow}\n")
	writeFile(t, dir, ".hidden.yaml", "broken: [")
	writeFile(t, dir, "sub.yaml/c.yaml", header+"  - {id: c, action: allow}\n")
	writeFile(t, dir, "nested/d.yaml", header+"  - {id: d, action: allow}\n")
	// Kubernetes ConfigMap layout: the real files live in a timestamped
	// directory, ..data points at it, and the visible names are symlinks.
	writeFile(t, dir, "..2026_03_01_12_00_00.123/c.yaml", "apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [mesh.example]\nrules:\n  - {id: c, action: allow}\n")
	if err := os.Symlink("..2026_03_01_12_00_00.123", filepath.Join(dir, "..data")); err != nil {
		t.Skipf("symlinks not supported: %v", err)
	}
	if err := os.Symlink(filepath.Join("..data", "c.yaml"), filepath.Join(dir, "c.yaml")); err != nil {
		t.Fatal(err)
	}

	set, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range set.Rules {
		ids = append(ids, r.ID)
	}
	if want := []string{"a", "b", "c"}; !slices.Equal(ids, want) {
		t.Errorf("rule ids = %q, want %q", ids, want)
	}
	wantFiles := []string{filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yml"), filepath.Join(dir, "c.yaml")}
	if !slices.Equal(set.Files, wantFiles) {
		t.Errorf("Files = %q, want %q", set.Files, wantFiles)
	}
	if want := []string{"cluster.local", "mesh.example", "prod.example"}; !slices.Equal(set.TrustDomains, want) {
		t.Errorf("TrustDomains = %q, want the union %q", set.TrustDomains, want)
	}
	if r := set.Rules[1]; r.Pos.File != filepath.Join(dir, "b.yml") || r.Pos.Line != 5 {
		t.Errorf("rule b at %s", r.Pos)
	}

	// The trust domains of every file apply to every rule.
	tab, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	if d := tab.Decide(httpReq("spiffe://mesh.example/ns/x/sa/y", "GET", "example.com", "/"), testNow); d.Reason != ReasonDeniedByRule {
		t.Errorf("identity from the third file's trust domain: %s", d.Reason)
	}

	// Same files in another directory: same version.
	other := t.TempDir()
	for _, f := range set.Files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, other, filepath.Base(f), string(data))
	}
	set2, err := Load(other)
	if err != nil {
		t.Fatal(err)
	}
	if set2.Version != set.Version {
		t.Errorf("same files in another directory: version %q, want %q", set2.Version, set.Version)
	}
}

func TestLoadDirectoryErrors(t *testing.T) {
	t.Run("duplicate_id_across_files", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, dir, "a.yaml", header+"  - {id: shared, action: allow}\n")
		b := writeFile(t, dir, "b.yaml", header+"  - id: shared\n    action: deny\n")
		_, err := Load(dir)
		var list ErrorList
		if !errors.As(err, &list) {
			t.Fatalf("Load = %v, want an ErrorList", err)
		}
		want := fmt.Sprintf(`%s:5:9: id "shared" already used at %s:5:5`, b, filepath.Join(dir, "a.yaml"))
		if err.Error() != want {
			t.Errorf("error = %q, want %q", err, want)
		}
	})
	t.Run("errors_in_two_files", func(t *testing.T) {
		dir := t.TempDir()
		a := writeFile(t, dir, "a.yaml", header+"  - {id: a, action: allow, to: {methods: [get]}}\n")
		b := writeFile(t, dir, "b.yml", "apiVersion: egress-authz/v1\nkind: Rules\ntrustDomains: [cluster.local]\nrules: []\n")
		_, err := Load(dir)
		want := a + `:5:43: methods: "get": methods are case-sensitive and written in upper case (GET)` + "\n" +
			b + `:2:7: kind must be "RuleSet"`
		if err == nil || err.Error() != want {
			t.Errorf("error = %v, want\n%s", err, want)
		}
	})
	t.Run("directory_without_rule_files", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, dir, "notes.txt", "x")
		writeFile(t, dir, ".rules.yaml", header+"  - {id: a, action: allow}\n")
		if _, err := Load(dir); err == nil {
			t.Fatal("Load of a directory without rule files succeeded")
		}
	})
	t.Run("missing_path", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Load = %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("single_file_by_path", func(t *testing.T) {
		p := writeFile(t, t.TempDir(), "rules.yaml", header+"  - {id: a, action: allow}\n")
		set, err := Load(p)
		if err != nil || len(set.Rules) != 1 || set.Rules[0].Pos.File != p {
			t.Fatalf("Load = %+v, %v", set, err)
		}
	})
	t.Run("symlinked_file", func(t *testing.T) {
		dir := t.TempDir()
		target := writeFile(t, dir, "real/rules.yaml", header+"  - {id: a, action: allow}\n")
		link := filepath.Join(dir, "link.yaml")
		if err := os.Symlink(target, link); err != nil {
			t.Skipf("symlinks not supported: %v", err)
		}
		set, err := Load(link)
		if err != nil || len(set.Rules) != 1 {
			t.Fatalf("Load = %+v, %v", set, err)
		}
	})
}

// FuzzParseRules feeds arbitrary bytes to Parse: it must never panic, its
// errors must name file:line:col, and a set it accepts must compile and
// decide without panicking.
func FuzzParseRules(f *testing.F) {
	for _, p := range []string{"testdata/spec-example.yaml", "testdata/payments.yaml"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"",
		"---\n",
		"null\n",
		header,
		header + "  []\n",
		"apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules: []\n",
		header + "  - {id: a, action: allow}\n",
		header + "  - {id: a, action: deny, mode: dry-run, expires: 2026-03-02}\n",
		header + `  - {id: a, action: allow, from: {principals: ["spiffe://cluster.local/ns/*/sa/*"], namespaces: [a], serviceAccounts: [b]}, to: {hosts: ["*.example.com", "*", "[::1]"], ports: [443], methods: [GET], paths: ["/a/*/b/**"]}}` + "\n",
		header + "  - id: a\n    action: allow\n  - id: a\n    action: allow\n",
		header + "  - &r {id: a, action: allow}\n  - *r\n",
		header + "\t- id: a\n",
		"apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules: [\n",
		"a: b: c\n",
		"{{{{{{{{{{[[[[[[[[",
	} {
		f.Add([]byte(s))
	}
	reqs := []Request{
		httpReq(checkout, "GET", "api.example.com", "/a/b/../c?x"),
		httpReq(checkout, "POST", "[::1]:443", "/"),
		httpReq("spiffe://cluster.local/ns/a/sa/b", "GET", "example.com", "/a/x/b/c"),
		sniReq(crawler, "x.example.com"),
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := Parse(Source{Name: "fuzz.yaml", Data: data})
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %T %q is not a non-empty ErrorList", err, err)
			}
			for _, d := range list {
				if d.Pos.File != "fuzz.yaml" || d.Pos.Line < 1 || d.Pos.Col < 1 {
					t.Fatalf("diagnostic without file:line:col: %+v", d)
				}
				if prefix := fmt.Sprintf("fuzz.yaml:%d:%d: ", d.Pos.Line, d.Pos.Col); !strings.HasPrefix(d.Error(), prefix) || d.Msg == "" {
					t.Fatalf("diagnostic %q does not start with %q and a message", d.Error(), prefix)
				}
			}
			return
		}
		ids := map[string]bool{}
		for _, r := range set.Rules {
			if !ruleIDPattern.MatchString(r.ID) || ids[r.ID] {
				t.Fatalf("accepted an empty, invalid or duplicate id %q", r.ID)
			}
			ids[r.ID] = true
			if r.Action != Allow && r.Action != Deny || r.Mode != Enforce && r.Mode != DryRun {
				t.Fatalf("accepted rule %q with action %q, mode %q", r.ID, r.Action, r.Mode)
			}
		}
		if len(set.TrustDomains) == 0 {
			t.Fatalf("accepted a rule set without trust domains")
		}
		tab, err := Compile(set)
		if err != nil {
			t.Fatalf("Parse accepted what Compile rejects: %v", err)
		}
		for _, req := range reqs {
			d := tab.Decide(req, testNow)
			if d.Allow != (d.Reason == ReasonAllowed) {
				t.Fatalf("Decide(%+v): allow %v with reason %q", req, d.Allow, d.Reason)
			}
			if d.Rule != nil && !slices.Contains(set.Rules, d.Rule) {
				t.Fatalf("Decide(%+v) names a rule not in the set", req)
			}
			if d.Version != set.Version {
				t.Fatalf("Decision.Version %q, set version %q", d.Version, set.Version)
			}
		}
		tab.NextExpiry(testNow)
	})
}

func TestLoadDirectoryWithBrokenSymlinkFails(t *testing.T) {
	dir := t.TempDir()
	good := "apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules: []\n"
	if err := os.WriteFile(filepath.Join(dir, "a.yaml"), []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "missing.yaml"), filepath.Join(dir, "denies.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "denies.yaml") {
		t.Fatalf("a dangling rule file must fail the load (its deny rules would vanish), got %v", err)
	}
}
