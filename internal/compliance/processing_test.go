package compliance

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/rules"
)

// processingV1 is a register whose rule to Stripe expires on 2026-03-01;
// processingV2 renews it and names a second processor, unused.
const processingV1 = header + `  - id: pay
    expires: 2026-03-01
    action: allow
    processor: stripe
    from: {namespaces: [payments]}
    to: {hosts: ["*.stripe.com"]}
processors:
  - {id: stripe, legalName: Stripe, role: processor, country: IE, transfer: none-needed, dpa: D-1,
     purposes: [essential.service.payment_processing], dataCategories: [user.financial], dataSubjects: [customer]}
`

var processingV2 = strings.Replace(processingV1, "2026-03-01", "2027-03-01", 1) + `  - {id: sms, legalName: Texts, role: processor, country: GB, transfer: adequacy, dpa: D-2,
     purposes: [essential.service.notifications.sms], dataCategories: [user.contact.phone_number], dataSubjects: [customer]}
`

func TestProcessingFindingsAcrossVersions(t *testing.T) {
	ctx := context.Background()
	v1 := rules.Source{Name: "rules.yaml", Data: []byte(processingV1)}
	v2 := rules.Source{Name: "rules.yaml", Data: []byte(processingV2)}
	archive := audit.DirArchive(t.TempDir())
	for _, src := range []rules.Source{v1, v2} {
		set, err := rules.Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := archive.PutRuleSet(ctx, ArchiveOf(set)); err != nil {
			t.Fatal(err)
		}
	}
	ver1, ver2 := rules.Version(v1), rules.Version(v2)
	day := func(d, h int) time.Time { return time.Date(2026, 2, d, h, 0, 0, 0, time.UTC) }
	rec := func(at time.Time, version, principal, host, decision, rule, processor string) audit.Record {
		return audit.Record{Time: at, RuleSet: version, Principal: principal, Namespace: strings.Split(principal, "/")[4], Host: host,
			Decision: decision, Enforced: true, Rule: rule, Processor: processor}
	}
	recs := []audit.Record{
		rec(day(27, 9), ver1, checkout, "api.stripe.com", audit.Allow, "pay", "stripe"),
		// Version 1 still served after its rule expired (a replica that
		// missed the renewal, with its clock right).
		rec(day(28, 23).Add(2*time.Hour), ver1, checkout, "api.stripe.com", audit.Allow, "pay", "stripe"),
		rec(day(28, 23).Add(3*time.Hour), ver1, refunds, "files.stripe.com", audit.Allow, "pay", "stripe"),
		// Denied to a processor's host: counted as the processor's.
		rec(day(28, 23).Add(4*time.Hour), ver2, indexer, "api.stripe.com", audit.Deny, "", ""),
		rec(day(28, 23).Add(5*time.Hour), ver2, checkout, "api.stripe.com", audit.Allow, "pay", "stripe"),
		// A version nobody archived.
		rec(day(28, 23).Add(6*time.Hour), "00000000000000ff", checkout, "api.stripe.com", audit.Allow, "pay", "stripe"),
		// A dry-run outcome is no transfer.
		{Time: day(28, 23).Add(7 * time.Hour), RuleSet: ver2, Principal: checkout, Host: "api.stripe.com", Decision: audit.Allow, Rule: "pay", Processor: "stripe"},
	}
	rep, err := Processing(ctx, &memStore{recs: recs}, ProcessingOptions{
		Since: day(1, 0), Until: day(28, 0).Add(72 * time.Hour),
		RuleSet: func(ctx context.Context, v string) (*rules.Set, error) { return ArchivedSet(ctx, archive, v) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Decisions != 6 || len(rep.RuleSets) != 3 || rep.RuleSets[0] != ver1 || rep.RuleSets[1] != ver2 {
		t.Errorf("%d decisions by %v; want 6 by [%s %s 00000000000000ff]", rep.Decisions, rep.RuleSets, ver1, ver2)
	}
	var got []string
	for _, f := range rep.Findings {
		got = append(got, f.Kind+" "+f.Processor+f.Rule+" "+f.RuleSet)
	}
	want := []string{
		"expired-rule-used pay " + ver1,
		"unarchived-ruleset  00000000000000ff",
		"unused-processor sms " + ver2,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, f := range rep.Findings {
		if f.Kind == FindingExpiredRuleUsed && (f.Requests != 2 || !strings.Contains(f.Detail, "expired 2026-03-01")) {
			t.Errorf("expired-rule-used: %+v; want 2 requests, naming the expiry", f)
		}
	}
	if len(rep.Processors) != 2 || rep.Processors[0].ID != "sms" || rep.Processors[1].ID != "stripe" {
		t.Fatalf("processors %+v", rep.Processors)
	}
	stripe := rep.Processors[1]
	if stripe.Requests != 6 || stripe.Denied != 1 || stripe.RuleSet != ver2 || len(stripe.Workloads) != 3 {
		t.Errorf("stripe: %d requests, %d denied, entry from %s, %d workloads; want 6, 1, %s, 3", stripe.Requests, stripe.Denied, stripe.RuleSet, len(stripe.Workloads), ver2)
	}

	// A copy edited in the archive is refused, not reported on.
	if err := archive.PutRuleSet(ctx, audit.RuleSet{Version: "0000000000000abc", Files: []audit.RuleSetFile{{Name: "rules.yaml", Content: processingV1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ArchivedSet(ctx, archive, "0000000000000abc"); err == nil || !strings.Contains(err.Error(), "altered") {
		t.Errorf("ArchivedSet of an altered copy: %v, want an error saying so", err)
	}
	if _, err := ArchivedSet(ctx, archive, "00000000000000ff"); !errors.Is(err, audit.ErrRuleSetNotFound) {
		t.Errorf("ArchivedSet of a version not kept: %v", err)
	}
}

// TestProcessingUnsafeTransferFixedLater: data sent to a US processor
// under a version without a safeguard is a finding, though a later
// version names one.
func TestProcessingUnsafeTransferFixedLater(t *testing.T) {
	ctx := context.Background()
	v1 := header + `  - {id: mail, action: allow, processor: mailer, from: {namespaces: [notify]}, to: {hosts: [api.mailer.example]}}
processors:
  - {id: mailer, legalName: Mailer Inc., role: processor, country: US, transfer: none-needed, dpa: D-9}
`
	v2 := strings.Replace(v1, "transfer: none-needed", "transfer: dpf", 1)
	archive := audit.DirArchive(t.TempDir())
	var versions []string
	for _, src := range []string{v1, v2} {
		set := parseYAML(t, src)
		if err := archive.PutRuleSet(ctx, ArchiveOf(set)); err != nil {
			t.Fatal(err)
		}
		versions = append(versions, set.Version)
	}
	var recs []audit.Record
	for i, v := range []string{versions[0], versions[0], versions[1]} {
		recs = append(recs, audit.Record{Time: testNow.Add(time.Duration(i) * time.Minute), RuleSet: v, Principal: "spiffe://cluster.local/ns/notify/sa/mailer",
			Namespace: "notify", Host: "api.mailer.example", Decision: audit.Allow, Enforced: true, Rule: "mail", Processor: "mailer"})
	}
	rep, err := Processing(ctx, &memStore{recs: recs}, ProcessingOptions{Since: testNow.Add(-time.Hour), Until: testNow.Add(time.Hour),
		RuleSet: func(ctx context.Context, v string) (*rules.Set, error) { return ArchivedSet(ctx, archive, v) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 1 || rep.Findings[0].Kind != FindingTransferWithoutSafeguard || rep.Findings[0].RuleSet != versions[0] || rep.Findings[0].Requests != 2 {
		t.Errorf("findings %+v; want one transfer-without-safeguard, version %s, 2 requests", rep.Findings, versions[0])
	}
	if p := rep.Processors[0]; p.Transfer != "dpf" || p.RuleSet != versions[1] {
		t.Errorf("the register's entry: %s from %s; want dpf, from the newest version %s", p.Transfer, p.RuleSet, versions[1])
	}
}
