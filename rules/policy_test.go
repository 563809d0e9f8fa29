package rules

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// policySet has one rule of each kind a policy judges differently.
const policySet = `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: complete
    description: Checkout charges at Stripe
    owner: team-payments
    ticket: SEC-1
    expires: 2026-06-01
    action: allow
    from: {namespaces: [payments]}
    to: {hosts: [api.stripe.com]}
  - id: suggested
    owner: TODO
    ticket: TODO
    action: allow
    from: {namespaces: [payments]}
    to: {hosts: [api.stripe.com]}
  - id: far-expiry
    owner: team-payments
    ticket: SEC-2
    expires: 2030-01-01
    action: allow
    from: {namespaces: [payments]}
    to: {hosts: [files.stripe.com]}
  - id: deny-without-expiry
    owner: compliance
    ticket: GDPR-1
    action: deny
    to: {hosts: [generativelanguage.googleapis.com]}
`

func TestPolicyCheck(t *testing.T) {
	set := parseYAML(t, policySet)
	cases := []struct {
		name     string
		policy   Policy
		errs     []string // "rule: fragment" of each error, in order
		warnings []string
	}{
		{"zero_policy_warns_of_placeholders", Policy{}, nil,
			[]string{"suggested: owner is the placeholder TODO", "suggested: ticket is the placeholder TODO"}},
		{"require_owner_and_ticket", Policy{Require: []Field{FieldOwner, FieldTicket}},
			[]string{"suggested: owner is the placeholder TODO, which the lint policy does not accept (--require)",
				"suggested: ticket is the placeholder TODO, which the lint policy does not accept (--require)"}, nil},
		{"expires_is_required_of_allow_rules_only", Policy{Require: []Field{FieldExpires}, RequireFrom: "policy.yaml:3:10"},
			[]string{"suggested: no expires, which the lint policy requires (policy.yaml:3:10)"},
			[]string{"suggested: owner is the placeholder", "suggested: ticket is the placeholder"}},
		{"description", Policy{Require: []Field{FieldDescription}},
			[]string{"suggested: no description", "far-expiry: no description", "deny-without-expiry: no description"},
			[]string{"suggested: owner is the placeholder", "suggested: ticket is the placeholder"}},
		{"max_expiry", Policy{MaxExpiry: 180 * 24 * time.Hour},
			[]string{"suggested: no expires, and the lint policy's maxExpiry (--max-expiry) is 180 days from today: an allow rule must expire by 2026-08-28",
				"far-expiry: expires on 2030-01-01, after 2026-08-28"},
			[]string{"suggested: owner is the placeholder", "suggested: ticket is the placeholder"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			errs, warnings := c.policy.Check(set, testNow)
			match := func(kind string, got []Diagnostic, want []string) {
				if len(got) != len(want) {
					t.Errorf("%d %s, want %d: %v", len(got), kind, len(want), got)
					return
				}
				for i, d := range got {
					id, frag, _ := strings.Cut(want[i], ": ")
					if !strings.HasPrefix(d.Msg, `rule "`+id+`": `) || !strings.Contains(d.Msg, frag) || d.Doc != "lint-policy" {
						t.Errorf("%s %d: %s (doc %q), want rule %s and %q", kind, i, d.Msg, d.Doc, id, frag)
					}
					if d.Pos.Line == 0 {
						t.Errorf("%s %d has no position: %v", kind, i, d)
					}
				}
			}
			match("errors", errs, c.errs)
			match("warnings", warnings, c.warnings)
		})
	}
}

func TestParseFields(t *testing.T) {
	f, err := ParseFields("owner, ticket,expires,owner")
	if err != nil || !slices.Equal(f, []Field{FieldOwner, FieldTicket, FieldExpires}) {
		t.Errorf("ParseFields = %v, %v", f, err)
	}
	if _, err := ParseFields("owner,team"); err == nil || !strings.Contains(err.Error(), `"team" is not a field a policy can require (owner, ticket, expires, description)`) {
		t.Errorf("an unknown field: %v", err)
	}
}

func TestParsePolicy(t *testing.T) {
	good := "apiVersion: egress-authz/v1\nkind: LintPolicy\nrequire: [owner, ticket, expires]\nmaxExpiry: 180d\nwarnExpiry: 30d\n"
	p, err := ParsePolicy(Source{Name: "policy.yaml", Data: []byte(good)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Require, []Field{FieldOwner, FieldTicket, FieldExpires}) || p.MaxExpiry != 180*24*time.Hour ||
		p.WarnExpiry != 30*24*time.Hour || p.RequireFrom != "policy.yaml:3:10" || p.MaxExpiryFrom != "policy.yaml:4:12" {
		t.Errorf("policy %+v", p)
	}
	for _, tc := range []struct {
		name, src string
		want      []string // each error, file:line:col: message
	}{
		{"unknown_key", "apiVersion: egress-authz/v1\nkind: LintPolicy\nrequires: [owner]\n",
			[]string{`policy.yaml:3:1: lint policy: unknown key "requires" (known: apiVersion, kind, require, maxExpiry, warnExpiry)`}},
		{"unknown_field", "apiVersion: egress-authz/v1\nkind: LintPolicy\nrequire: [owner, team]\n",
			[]string{`policy.yaml:3:18: require: "team" is not a field a policy can require (owner, ticket, expires, description)`}},
		{"bad_duration", "apiVersion: egress-authz/v1\nkind: LintPolicy\nmaxExpiry: half a year\n",
			[]string{`policy.yaml:3:12: maxExpiry must be a duration like 180d or 72h`}},
		{"wrong_kind_quotes_nothing", "apiVersion: egress-authz/v1\nkind: RuleSet\nsecret: sk_live_123\n",
			[]string{`policy.yaml:2:7: kind must be "LintPolicy"`, `policy.yaml:3:1: lint policy: unknown key (known: apiVersion, kind, require, maxExpiry, warnExpiry)`}},
		{"missing_kind", "apiVersion: egress-authz/v1\nrequire: [owner]\n",
			[]string{`policy.yaml:1:1: missing kind (want "LintPolicy")`}},
		{"empty", "", []string{"policy.yaml:1:1: empty lint policy file: expected apiVersion, kind and require or maxExpiry"}},
		{"two_documents", good + "---\n" + good, []string{"policy.yaml:6:1: a lint policy file holds one document"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePolicy(Source{Name: "policy.yaml", Data: []byte(tc.src)})
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("err = %v, want an ErrorList", err)
			}
			var got []string
			for _, d := range list {
				got = append(got, d.Error())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("errors\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestReaderReadFile: a file beside the rules is read within the same
// bounds as a rule file.
func TestReaderReadFile(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "policy.yaml", "kind: LintPolicy\n")
	src, err := Reader{}.ReadFile(context.Background(), path)
	if err != nil || src.Name != path || string(src.Data) != "kind: LintPolicy\n" {
		t.Errorf("ReadFile = %+v, %v", src, err)
	}
	if _, err := (Reader{MaxFileSize: 4}).ReadFile(context.Background(), path); err == nil || !strings.Contains(err.Error(), "larger than 4 bytes") {
		t.Errorf("over MaxFileSize: %v", err)
	}
	if _, err := (Reader{}).ReadFile(context.Background(), dir); err == nil || !strings.Contains(err.Error(), "is a directory, not a regular file") {
		t.Errorf("a directory: %v", err)
	}
	if _, err := (Reader{}).ReadFile(context.Background(), filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("a missing file: no error")
	}
}
