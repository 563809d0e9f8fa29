package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/sqlstore"
	"github.com/egress-authz/egress-authz/internal/compliance"
	"github.com/egress-authz/egress-authz/rules"
)

// processingRules is a register of two processors: Stripe in Ireland, and
// a mailer in the United States whose transfer names no safeguard.
const processingRules = `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
processors:
  - {id: stripe, legalName: Stripe Payments Europe, role: processor, country: IE, transfer: none-needed, dpa: DPA-1,
     purposes: [essential.service.payment_processing], dataCategories: [user.financial], dataSubjects: [customer]}
  - {id: mailer, legalName: Mailer Inc., role: processor, country: US, transfer: none-needed, dpa: DPA-2,
     purposes: [essential.service.notifications.email], dataCategories: [user.contact.email], dataSubjects: [customer]}
rules:
  - {id: stripe-charges, action: allow, processor: stripe, from: {namespaces: [payments]}, to: {hosts: [api.stripe.com]}}
  - {id: mail, action: allow, processor: mailer, from: {namespaces: [notify]}, to: {hosts: [api.mailer.example]}}
  - {id: github-read, action: allow, from: {namespaces: [ci]}, to: {hosts: [api.github.com]}}
`

// processingServer serves the console and GET /v1/processing over a
// SQLite log: checkout sends 3 charges to Stripe, billing is denied once
// there, the mailer sends 2, and ci reaches GitHub (no processor) once.
func processingServer(t *testing.T) string {
	t.Helper()
	set, err := rules.Parse(rules.Source{Name: "rules.yaml", Data: []byte(processingRules)})
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "decisions.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.PutRuleSet(context.Background(), compliance.ArchiveOf(set)); err != nil {
		t.Fatal(err)
	}
	type call struct{ ns, sa, host, decision, rule, processor string }
	calls := []call{
		{"payments", "checkout", "api.stripe.com", audit.Allow, "stripe-charges", "stripe"},
		{"payments", "checkout", "api.stripe.com", audit.Allow, "stripe-charges", "stripe"},
		{"payments", "checkout", "api.stripe.com", audit.Allow, "stripe-charges", "stripe"},
		{"billing", "billing", "api.stripe.com", audit.Deny, "", ""},
		{"notify", "mailer", "api.mailer.example", audit.Allow, "mail", "mailer"},
		{"notify", "mailer", "api.mailer.example", audit.Allow, "mail", "mailer"},
		{"ci", "runner", "api.github.com", audit.Allow, "github-read", ""},
	}
	var recs []audit.Record
	prev := ""
	start := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	for i, c := range calls {
		r := audit.Record{Time: start.Add(time.Duration(i) * time.Minute), RequestID: fmt.Sprintf("req-%d", i),
			Principal: "spiffe://cluster.local/ns/" + c.ns + "/sa/" + c.sa, TrustDomain: "cluster.local", Namespace: c.ns, ServiceAccount: c.sa,
			Host: c.host, Port: 443, Method: "POST", Path: "/", Decision: c.decision, Enforced: true, Rule: c.rule, Processor: c.processor,
			Reason: "allowed-by-rule", RuleSet: set.Version, Writer: "w-0", Seq: uint64(i + 1), PrevHash: prev}
		if c.decision == audit.Deny {
			r.Reason = "no-matching-rule"
		}
		r.Hash = audit.ComputeHash(&r)
		prev = r.Hash
		recs = append(recs, r)
	}
	if err := st.Write(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	ruleSet := func() (string, []string) { return set.Version, []string{"stripe-charges", "mail", "github-read"} }
	h := Handler(Options{
		Rules: func() rules.Status { return rules.Status{Version: set.Version, Rules: 3} },
		Extra: map[string]http.Handler{
			"GET /v1/decisions":          DecisionsHandler(st, time.Now),
			"GET /v1/stats":              StatsHandler(st, ruleSet, time.Now),
			"GET /v1/verify":             VerifyHandler(st, nil, time.Now),
			"GET /v1/processing":         ProcessingHandler(st, func() *rules.Set { return set }, st, time.Now),
			"GET /v1/rulesets/{version}": RuleSetHandler(st),
			"GET /ui/":                   UIHandler(),
		},
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestProcessingHandler(t *testing.T) {
	base := processingServer(t)
	resp, err := http.Get(base + "/v1/processing?since=3h")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep compliance.ProcessingReport
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/v1/processing: %d, %v", resp.StatusCode, err)
	}
	var got []string
	for _, p := range rep.Processors {
		got = append(got, fmt.Sprintf("%s:%d/%d", p.ID, p.Requests, p.Denied))
	}
	for _, f := range rep.Findings {
		got = append(got, f.Kind)
	}
	if want := "mailer:2/0 stripe:4/1 transfer-without-safeguard unregistered-recipient"; strings.Join(got, " ") != want {
		t.Errorf("/v1/processing: %s, want %s", strings.Join(got, " "), want)
	}
	for _, q := range []string{"?since=3h&foo=1", "?since=tomorrow", "?until=2000-01-01"} {
		resp, err := http.Get(base + "/v1/processing" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("/v1/processing%s: %d, want 400", q, resp.StatusCode)
		}
	}
}

// TestConsoleProcessors: the Processors view lists the register with its
// traffic and findings, opens a processor's workloads and rules, and a
// workload opens the Decisions view filtered on it; an error clears it.
func TestConsoleProcessors(t *testing.T) {
	base := processingServer(t)
	ctx := browser(t)
	ready := func(state string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](`(() => { const s = document.querySelector("#processing-status"); return s && s.dataset.state === "`+state+`"; })()`,
			chromedp.WithPollingTimeout(20*time.Second))
	}
	do(t, ctx, chromedp.Navigate(base+"/ui/?view=processors&since=3h"), ready("ready"))
	rows := get(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#processors > tbody > tr[data-id]")].map(tr =>
		[0, 7, 8].map(i => tr.children[i].textContent).join(" "))`))
	if strings.Join(rows, ", ") != "mailer 2 0, stripe 4 1" {
		t.Errorf("processors: %q, want mailer 2 0, stripe 4 1", rows)
	}
	kinds := get(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#findings .finding")].map(li => li.dataset.kind)`))
	if strings.Join(kinds, " ") != "transfer-without-safeguard unregistered-recipient" {
		t.Errorf("findings: %v", kinds)
	}
	do(t, ctx, chromedp.Click(chromedp.CSS(`#processors tr[data-id=stripe] td`)))
	workloads := get(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#processors tr[data-id=stripe] + tr.processor-detail:not([hidden]) table.workloads tbody tr")].map(tr => tr.children[0].textContent + " " + tr.children[2].textContent + "/" + tr.children[3].textContent)`))
	if strings.Join(workloads, ", ") != "spiffe://cluster.local/ns/payments/sa/checkout 3/0, spiffe://cluster.local/ns/billing/sa/billing 1/1" {
		t.Errorf("stripe's workloads: %q", workloads)
	}
	// The rule set as it was, through the page's API call (a token
	// would go with it), in a dialog.
	do(t, ctx, chromedp.Click(chromedp.CSS(`#processors tr[data-id=stripe] + tr.processor-detail table.rules a.ruleset`)),
		chromedp.Poll[chromedp.Void](`(() => { const d = document.querySelector("#ruleset-dialog"); return d && d.open && d.querySelector("pre"); })()`,
			chromedp.WithPollingTimeout(10*time.Second)))
	if files := get(t, ctx, chromedp.Evaluate[string](`document.querySelector("#ruleset-dialog pre").textContent`)); files != processingRules {
		t.Errorf("the rule-set dialog shows %q, want the archived file", files)
	}
	do(t, ctx, chromedp.Click(chromedp.CSS(`#ruleset-dialog .close`)))
	screenshot(t, ctx, "processors.png")
	do(t, ctx, chromedp.Click(chromedp.CSS(`#processors tr[data-id=stripe] + tr.processor-detail table.workloads a.filter`)), loaded("ready"))
	url, hosts := get(t, ctx, chromedp.Location()), get(t, ctx, column(5))
	if !strings.Contains(url, "principal=spiffe") || strings.Contains(url, "view=") || len(hosts) != 3 {
		t.Errorf("a workload's link: %s with %d rows, want the Decisions view of its 3 records", url, len(hosts))
	}
	do(t, ctx, chromedp.Navigate(base+"/ui/?view=processors&since=yesterday"), ready("error"))
	if n := get(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#processors tr").length`)); n != 0 {
		t.Errorf("%d processor rows after an error, want none", n)
	}
}
