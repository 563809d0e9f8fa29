package compliance

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// accessLines renders access as "who -> what (via rule)" lines, sorted.
func accessLines(l []Access) []string {
	var out []string
	for _, a := range l {
		out = append(out, fmt.Sprintf("%s -> %s (%s %s)", a.Who(), a.What(), a.Action, a.Rule))
	}
	slices.Sort(out)
	return out
}

func TestDiff(t *testing.T) {
	old := parseYAML(t, explainRules)
	for _, tc := range []struct {
		name       string
		edit       func(string) string
		added      []string
		removed    []string
		changed    map[string][]string
		gained     []string
		lost       []string
		tdsAdded   []string
		tdsRemoved []string
	}{
		{
			name: "identical_sets",
			edit: func(s string) string { return s },
		},
		{
			name: "method_added_gains_one_access_per_path",
			edit: func(s string) string {
				return strings.Replace(s, "methods: [GET, POST]", "methods: [GET, POST, DELETE]", 1)
			},
			changed: map[string][]string{"payments-stripe-charges": {"methods: added DELETE"}},
			gained: []string{
				checkout + " -> api.stripe.com:443 DELETE /v1/charges (allow payments-stripe-charges)",
				checkout + " -> api.stripe.com:443 DELETE /v1/charges/* (allow payments-stripe-charges)",
				checkout + " -> api.stripe.com:443 DELETE /v1/customers/** (allow payments-stripe-charges)",
			},
		},
		{
			name: "host_broadened_to_a_wildcard_loses_nothing",
			edit: func(s string) string {
				return strings.Replace(s, "hosts: [files.stripe.com]", `hosts: ["*.stripe.com"]`, 1)
			},
			changed: map[string][]string{"payments-stripe-files": {"hosts: added *.stripe.com; removed files.stripe.com"}},
			gained:  []string{"namespace payments -> *.stripe.com POST /v1/files/** (allow payments-stripe-files)"},
		},
		{
			name: "wildcard_narrowed_to_names_loses_the_wildcard",
			edit: func(s string) string {
				return strings.Replace(s, `hosts: ["*.googleapis.com"]`, "hosts: [storage.googleapis.com]", 1)
			},
			changed: map[string][]string{"search-google-apis": {"hosts: added storage.googleapis.com; removed *.googleapis.com"}},
			lost:    []string{"namespace search, service account indexer -> *.googleapis.com:443 (any method and path, and TLS passthrough) (allow search-google-apis)"},
		},
		{
			name: "principal_widened_to_its_namespace",
			edit: func(s string) string {
				return strings.Replace(s, `from: {principals: ["spiffe://cluster.local/ns/notify/sa/mailer"]}`, "from: {namespaces: [notify]}", 1)
			},
			changed: map[string][]string{"notify-sendgrid": {"principals: spiffe://cluster.local/ns/notify/sa/mailer -> any", "namespaces: any -> notify"}},
			gained:  []string{"namespace notify -> api.sendgrid.com:443 (any method and path, and TLS passthrough) (allow notify-sendgrid)"},
		},
		{
			name:    "dry_run_flipped_to_enforce_gains_access",
			edit:    func(s string) string { return strings.Replace(s, "    mode: dry-run\n", "", 1) },
			changed: map[string][]string{"payments-fraud-vendor-trial": {"mode: dry-run -> enforce (now enforced)"}},
			gained:  []string{"namespace payments -> api.fraudscore.example POST /v2/score (allow payments-fraud-vendor-trial)"},
		},
		{
			name: "deny_rule_removed",
			edit: func(s string) string {
				return strings.Replace(s, "  - id: deny-generative-language\n    action: deny\n    to: {hosts: [generativelanguage.googleapis.com]}\n", "", 1)
			},
			removed: []string{"deny-generative-language"},
			gained:  []string{"any workload -> generativelanguage.googleapis.com (any method and path, and TLS passthrough) (deny deny-generative-language)"},
		},
		{
			name: "rule_added_and_rule_removed",
			edit: func(s string) string {
				s = strings.Replace(s, "  - id: notify-sendgrid\n", "  - id: notify-sendgrid-v3\n", 1)
				return s + "  - {id: payments-refunds, action: allow, from: {principals: [\"" + refunds + "\"]}, to: {hosts: [api.stripe.com], methods: [POST], paths: [/v1/refunds]}}\n"
			},
			added:   []string{"notify-sendgrid-v3", "payments-refunds"},
			removed: []string{"notify-sendgrid"},
			gained:  []string{refunds + " -> api.stripe.com POST /v1/refunds (allow payments-refunds)"},
		},
		{
			name:    "expiry_moved_into_the_past_loses_the_access",
			edit:    func(s string) string { return strings.Replace(s, "expires: 2027-06-30", "expires: 2026-01-01", 1) },
			changed: map[string][]string{"payments-stripe-charges": {"expires: 2027-06-30 -> 2026-01-01"}},
			lost: []string{
				checkout + " -> api.stripe.com:443 GET /v1/charges (allow payments-stripe-charges)",
				checkout + " -> api.stripe.com:443 GET /v1/charges/* (allow payments-stripe-charges)",
				checkout + " -> api.stripe.com:443 GET /v1/customers/** (allow payments-stripe-charges)",
				checkout + " -> api.stripe.com:443 POST /v1/charges (allow payments-stripe-charges)",
				checkout + " -> api.stripe.com:443 POST /v1/charges/* (allow payments-stripe-charges)",
				checkout + " -> api.stripe.com:443 POST /v1/customers/** (allow payments-stripe-charges)",
			},
		},
		{
			name: "paths_merged_into_a_subtree_lose_nothing",
			edit: func(s string) string {
				return strings.Replace(s, `paths: [/v1/charges, "/v1/charges/*", "/v1/customers/**"]`, `paths: ["/v1/**"]`, 1)
			},
			changed: map[string][]string{"payments-stripe-charges": {"paths: added /v1/**; removed /v1/charges, /v1/charges/*, /v1/customers/**"}},
			gained: []string{
				checkout + " -> api.stripe.com:443 GET /v1/** (allow payments-stripe-charges)",
				checkout + " -> api.stripe.com:443 POST /v1/** (allow payments-stripe-charges)",
			},
		},
		{
			name: "description_only",
			edit: func(s string) string {
				return strings.Replace(s, "  - id: notify-sendgrid\n", "  - id: notify-sendgrid\n    description: Mailer\n    owner: team-notify\n", 1)
			},
			changed: map[string][]string{"notify-sendgrid": {"description: (none) -> Mailer", "owner: (none) -> team-notify"}},
		},
		{
			name: "trust_domain_added",
			edit: func(s string) string {
				return strings.Replace(s, "trustDomains: [cluster.local]", "trustDomains: [cluster.local, partner.example]", 1)
			},
			tdsAdded: []string{"partner.example"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nw := parseYAML(t, tc.edit(explainRules))
			d := Diff(old, nw, testNow)
			var added, removed []string
			for _, r := range d.Added {
				added = append(added, r.ID)
			}
			for _, r := range d.Removed {
				removed = append(removed, r.ID)
			}
			changed := map[string][]string{}
			for _, c := range d.Changed {
				changed[c.New.ID] = c.Changes
			}
			if !slices.Equal(added, tc.added) || !slices.Equal(removed, tc.removed) {
				t.Errorf("added %v removed %v, want %v %v", added, removed, tc.added, tc.removed)
			}
			if fmt.Sprint(changed) != fmt.Sprint(orEmptyChanges(tc.changed)) {
				t.Errorf("changed %q\nwant    %q", changed, tc.changed)
			}
			if got := len(old.Rules) - len(d.Removed) - len(d.Changed); got != d.Unchanged {
				t.Errorf("unchanged %d, want %d", d.Unchanged, got)
			}
			if got := accessLines(d.Gained); !slices.Equal(got, tc.gained) {
				t.Errorf("gained:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.gained, "\n  "))
			}
			if got := accessLines(d.Lost); !slices.Equal(got, tc.lost) {
				t.Errorf("lost:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.lost, "\n  "))
			}
			if !slices.Equal(d.TrustDomainsAdded, tc.tdsAdded) || !slices.Equal(d.TrustDomainsRemoved, tc.tdsRemoved) {
				t.Errorf("trust domains +%v -%v", d.TrustDomainsAdded, d.TrustDomainsRemoved)
			}
			if d.Empty() != (tc.name == "identical_sets") {
				t.Errorf("Empty() = %v", d.Empty())
			}
		})
	}
}

func orEmptyChanges(m map[string][]string) map[string][]string {
	if m == nil {
		return map[string][]string{}
	}
	return m
}

func TestDiffIsSymmetric(t *testing.T) {
	old := parseYAML(t, explainRules)
	nw := parseYAML(t, strings.Replace(explainRules, "methods: [GET, POST]", "methods: [GET]", 1))
	fwd, back := Diff(old, nw, testNow), Diff(nw, old, testNow)
	if !slices.Equal(accessLines(fwd.Lost), accessLines(back.Gained)) || !slices.Equal(accessLines(fwd.Gained), accessLines(back.Lost)) {
		t.Errorf("forward lost %v gained %v; backward gained %v lost %v", fwd.Lost, fwd.Gained, back.Gained, back.Lost)
	}
	if len(fwd.Lost) != 3 {
		t.Errorf("dropping POST from 3 paths loses %d pieces of access, want 3", len(fwd.Lost))
	}
}

func TestDescribe(t *testing.T) {
	set := parseYAML(t, explainRules)
	want := map[string]string{
		"payments-stripe-charges":     "allows " + checkout + " to reach api.stripe.com, port 443, GET or POST, path /v1/charges, /v1/charges/* or /v1/customers/**, until 2027-06-30",
		"search-google-apis":          "allows service account indexer in namespace search to reach *.googleapis.com, port 443",
		"deny-generative-language":    "denies any workload in the trust domains from reaching generativelanguage.googleapis.com",
		"payments-fraud-vendor-trial": "(dry-run, recorded only) would allow any workload in namespace payments to reach api.fraudscore.example, POST, path /v2/score",
	}
	for _, r := range set.Rules {
		if w, ok := want[r.ID]; ok && Describe(r) != w {
			t.Errorf("%s:\n got %s\nwant %s", r.ID, Describe(r), w)
		}
	}
}
