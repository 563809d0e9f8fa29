package main

// Tests of rules diff, run in-process on the example rules and (see
// TestComplianceDecisionLog) a real decision log.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/compliance"
)

// newRules writes the example rules with the changes a pull request might
// make: DELETE for checkout, a new rule for refunds, the fraud-vendor trial
// enforced, SendGrid narrowed to POST (which drops TLS passthrough), and
// the Google wildcard narrowed to one host.
func newRules(t *testing.T, dir string) string {
	data, err := os.ReadFile(exampleRules)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, r := range [][2]string{
		{"methods: [GET, POST]", "methods: [GET, POST, DELETE]"},
		{"    mode: dry-run\n", ""},
		{"      hosts: [api.sendgrid.com]\n", "      hosts: [api.sendgrid.com]\n      methods: [POST]\n"},
		{`hosts: ["*.googleapis.com"]`, "hosts: [storage.googleapis.com]"},
	} {
		if !strings.Contains(s, r[0]) {
			t.Fatalf("example rules lack %q", r[0])
		}
		s = strings.Replace(s, r[0], r[1], 1)
	}
	s += `
  - id: payments-stripe-refunds
    description: The refunds service refunds charges
    owner: team-payments
    ticket: SEC-1400
    action: allow
    from:
      principals: ["spiffe://cluster.local/ns/payments/sa/refunds"]
    to:
      hosts: [api.stripe.com]
      methods: [POST]
      paths: [/v1/refunds]
`
	p := filepath.Join(dir, "new.yaml")
	writeTestFile(t, p, s)
	return p
}

func testDiffReplay(t *testing.T, log *decisionLog) {
	newPath := newRules(t, t.TempDir())
	out, errs, code := runCompliance(t, "rules", "diff", exampleRules, newPath, "--against", log.dsn, "--since", "7d", "--format", "json")
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	var got struct {
		Rules struct {
			Added, Removed, Changed []struct {
				ID      string
				Changes []string
			}
			Unchanged int
		}
		Access struct{ Gained, Lost []compliance.Access }
		Replay struct {
			Records, Skipped, Unchanged int
			ChangedCount                int `json:"changed_count"`
			RuleChangedCount            int `json:"rule_changed_count"`
			Changed                     []compliance.Group
			RuleChanged                 []compliance.Group `json:"rule_changed"`
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(got.Rules.Added) != 1 || got.Rules.Added[0].ID != "payments-stripe-refunds" || len(got.Rules.Changed) != 4 ||
		len(got.Rules.Removed) != 0 || got.Rules.Unchanged != 2 {
		t.Errorf("rules: %+v", got.Rules)
	}
	if len(got.Access.Gained) != 5 || len(got.Access.Lost) != 2 {
		t.Errorf("access gained %d, lost %d, want 5 and 2", len(got.Access.Gained), len(got.Access.Lost))
	}

	r := got.Replay
	if r.Records != log.counts["week"] || r.Skipped != 0 {
		t.Errorf("replayed %d records (%d skipped), want the week's %d", r.Records, r.Skipped, log.counts["week"])
	}
	type group struct {
		principal, request, was, now string
		count                        int
	}
	want := []group{ // most requests first, then by caller
		{mailerSA, "TLS api.sendgrid.com:443", "allow by notify-sendgrid", "deny (no-matching-rule)", 300},
		{checkoutSA, "POST api.fraudscore.example:443/v2/score", "deny (no-matching-rule)", "allow by payments-fraud-vendor-trial", 300},
		{refundsSA, "POST api.stripe.com:443/v1/refunds", "deny (no-matching-rule)", "allow by payments-stripe-refunds", 150},
		{checkoutSA, "DELETE api.stripe.com:443/v1/charges/*", "deny (no-matching-rule)", "allow by payments-stripe-charges", 120},
	}
	var gotGroups []group
	for _, g := range r.Changed {
		req := fmt.Sprintf("%s %s:%d%s", g.Method, g.Host, g.Port, g.Path)
		if g.TLS {
			req = fmt.Sprintf("TLS %s:%d", g.Host, g.Port)
		}
		gotGroups = append(gotGroups, group{g.Principal, req, g.Was.String(), g.Now.String(), g.Count})
		if g.Cause != compliance.CauseChange {
			t.Errorf("group %s %s: cause %s, want %s", g.Principal, req, g.Cause, compliance.CauseChange)
		}
	}
	if fmt.Sprint(gotGroups) != fmt.Sprint(want) {
		t.Errorf("changed groups:\n got %v\nwant %v", gotGroups, want)
	}
	if r.ChangedCount != 870 || r.RuleChangedCount != 0 || len(r.RuleChanged) != 0 || r.Unchanged != r.Records-870 {
		t.Errorf("changed %d, rule changed %d, unchanged %d of %d", r.ChangedCount, r.RuleChangedCount, r.Unchanged, r.Records)
	}

	out, _, code = runCompliance(t, "rules", "diff", exampleRules, newPath, "--against", log.dsn)
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, out)
	}
	for _, want := range []string{
		"Rules, " + exampleRules + " -> " + newPath + ": 1 added, 0 removed, 4 changed, 2 unchanged\n",
		"  ~ changed  notify-sendgrid  (" + newPath + ":" + positionOf(t, newPath, "id: notify-sendgrid") + ")\n             methods: any -> POST\n",
		"  + " + refundsSA + " -> api.stripe.com POST /v1/refunds  (allow rule payments-stripe-refunds)\n",
		"  - " + mailerSA + " -> api.sendgrid.com (any method and path, and TLS passthrough)  (allow rule notify-sendgrid removed or narrowed)\n",
		fmt.Sprintf("Real traffic: %d recorded decisions in %s", log.counts["week"], log.dsn),
		"  870 would now be decided differently: 300 allowed would be denied, 570 denied would be allowed\n",
		"    300×  " + mailerSA + "      api.sendgrid.com:443 (TLS passthrough)    was allow by notify-sendgrid, now deny (no-matching-rule)\n",
		"    120×  " + checkoutSA + "  DELETE api.stripe.com:443/v1/charges/*    was deny (no-matching-rule), now allow by payments-stripe-charges\n",
		fmt.Sprintf("  %d unchanged\n", log.counts["week"]-870),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q\n%s", want, out)
		}
	}

	// The JSON has every key CI reads, and no other; an --until window
	// gives the replay its until.
	out, _, code = runCompliance(t, "rules", "diff", exampleRules, newPath, "--against", log.dsn, "--since", "7d",
		"--until", log.now.Add(time.Hour).Format(time.RFC3339), "--format", "json")
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, out)
	}
	var typed diffOutput
	checkJSON(t, out, &typed, map[string]string{
		"":       "access new old replay rules trust_domains",
		"access": "gained lost",
		// Between them, gained and lost show every key of an access.
		"access.gained[]":      "principal namespace host port method path rule via",
		"access.lost[]":        "principal namespace service_account host port rule via",
		"new":                  "path rules ruleset",
		"old":                  "path rules ruleset",
		"rules":                "added changed removed unchanged",
		"rules.added[]":        "id pos does",
		"rules.changed[]":      "id pos does changes",
		"trust_domains":        "added removed",
		"replay":               "against changed changed_count records rule_changed rule_changed_count since skipped unchanged until",
		"replay.changed[]":     "principal host port tls_passthrough method path example_path was now cause count first last",
		"replay.changed[].was": "decision rule reason",
		"replay.changed[].now": "decision rule reason",
	})
	if typed.Replay == nil || typed.Replay.Records != log.counts["week"] || typed.Replay.Until.IsZero() || typed.Old.Path != exampleRules {
		t.Errorf("diff JSON %+v", typed)
	}

	// A 30-day window takes in the records of ten days ago too.
	out, _, _ = runCompliance(t, "rules", "diff", exampleRules, newPath, "--against", log.dsn, "--since", "30d", "--format", "json")
	var all struct {
		Replay struct {
			Records      int
			ChangedCount int `json:"changed_count"`
		}
	}
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		t.Fatal(err)
	}
	if all.Replay.Records != log.counts["week"]+log.counts["old"] || all.Replay.ChangedCount != 870+log.counts["old"] {
		t.Errorf("30 days: %+v", all.Replay)
	}
}

func TestComplianceDiffWithoutChanges(t *testing.T) {
	out, _, code := runCompliance(t, "rules", "diff", exampleRules, exampleRules)
	if code != exitOK || !strings.Contains(out, "0 added, 0 removed, 0 changed, 6 unchanged") ||
		!strings.Contains(out, "Access gained (0):\n  (none)\n") || !strings.Contains(out, "Access lost (0):\n  (none)\n") {
		t.Errorf("exit %d\n%s", code, out)
	}
	missing := filepath.Join(t.TempDir(), "nope.db")
	_, errs, code := runCompliance(t, "rules", "diff", exampleRules, exampleRules, "--against", "sqlite:"+missing)
	if code != exitFail || !strings.Contains(errs, "nope.db") {
		t.Errorf("missing log: exit %d, %s", code, errs)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("diff --against created a decision log")
	}
}

// positionOf is where text first starts in the file at path, as LINE:COL.
func positionOf(t *testing.T, path, text string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for n, line := range strings.Split(string(data), "\n") {
		if i := strings.Index(line, text); i >= 0 {
			return fmt.Sprintf("%d:%d", n+1, i+1)
		}
	}
	t.Fatalf("%s lacks %q", path, text)
	return ""
}
