package main

// The GDPR register from real traffic: a server with a retailer's
// processors decides requests of several workloads, a rule is edited and
// reloaded between two batches, and report processing, /v1/rulesets and
// rules explain --version show each decision with the rules as they were.

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"

	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/internal/compliance"
)

const (
	orderMailSA = "spiffe://cluster.local/ns/orders/sa/mailer"
	backendSA   = "spiffe://cluster.local/ns/orders/sa/backend"
	webSA       = "spiffe://cluster.local/ns/web/sa/frontend"
	crmSA       = "spiffe://cluster.local/ns/sales/sa/crm-sync"
)

func TestReportProcessing(t *testing.T) {
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules")
	if err := os.Mkdir(rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	orig := map[string]string{}
	for _, name := range []string{"processors.yaml", "rules.yaml"} {
		data, err := os.ReadFile(filepath.Join("testdata", "gdpr", "rules", name))
		if err != nil {
			t.Fatal(err)
		}
		orig[name] = string(data)
		writeFile(t, filepath.Join(rulesDir, name), string(data))
	}
	srv := startServer(t, dir, "--rules", rulesDir)
	client := authv3.NewAuthorizationClient(authztest.Dial(t, srv.grpcAddr))
	send := func(principal, method, url string, n int, allow bool) {
		t.Helper()
		for range n {
			resp, err := client.Check(context.Background(), httpCR(t, principal, method, url))
			if err != nil {
				t.Fatalf("Check %s %s from %s: %v", method, url, principal, err)
			}
			if got := codes.Code(resp.GetStatus().GetCode()) == codes.OK; got != allow {
				t.Fatalf("Check %s %s from %s: allowed %v, want %v", method, url, principal, got, allow)
			}
		}
	}
	version := func() string {
		_, body := httpGet(t, "http://"+srv.adminAddr+"/v1/rules", nil)
		var st struct{ Version string }
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatalf("/v1/rules: %v\n%s", err, body)
		}
		return st.Version
	}
	v1 := version()
	send(checkoutSA, "POST", "https://api.stripe.com/v1/charges", 3, true)
	send(orderMailSA, "POST", "https://api.mailer.example/v3/send", 2, true)
	send(backendSA, "POST", "https://api.stripe.com/v1/charges", 1, false) // no rule: denied, a processor's host
	send(webSA, "GET", "https://collect.analytics.example/collect", 4, true)
	send(webSA, "GET", "https://inventory.retail.example/stock", 1, true) // internal: no processor needed
	send(crmSA, "PUT", "https://api.customercloud.example/contacts/1", 2, true)

	// The payments team narrows checkout-stripe's purpose; the server
	// reloads it on SIGHUP.
	edited := strings.Replace(orig["rules.yaml"], "purposes: [essential.service.payment_processing]", "purposes: [essential.fraud_detection]", 1)
	if edited == orig["rules.yaml"] {
		t.Fatal("the edit changed nothing")
	}
	writeFile(t, filepath.Join(rulesDir, "rules.yaml"), edited)
	srv.signal(syscall.SIGHUP)
	var v2 string
	eventually(t, 10*time.Second, 50*time.Millisecond, "the edited rule set served", func() (bool, string) {
		v2 = version()
		return v2 != v1, v2
	})
	send(checkoutSA, "POST", "https://api.stripe.com/v1/charges", 2, true)

	t.Run("rulesets_endpoint", func(t *testing.T) {
		resp, body := httpGet(t, "http://"+srv.adminAddr+"/v1/rulesets/"+v1, nil)
		var rs struct {
			Version string
			Files   []struct{ Name, Content string }
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &rs) != nil {
			t.Fatalf("/v1/rulesets/%s: %d %s", v1, resp.StatusCode, body)
		}
		got := map[string]string{}
		for _, f := range rs.Files {
			got[f.Name] = f.Content
		}
		if rs.Version != v1 || got["rules.yaml"] != orig["rules.yaml"] || got["processors.yaml"] != orig["processors.yaml"] {
			t.Errorf("/v1/rulesets/%s: version %s, files %v; want the files as they were", v1, rs.Version, slices.Collect(maps.Keys(got)))
		}
		for path, want := range map[string]int{
			"/v1/rulesets/0123456789abcdef":    http.StatusNotFound,
			"/v1/rulesets/latest":              http.StatusBadRequest,
			"/v1/rulesets/" + v2 + "?format=x": http.StatusBadRequest,
			"/v1/rulesets/" + v2:               http.StatusOK,
		} {
			if resp, body := httpGet(t, "http://"+srv.adminAddr+path, nil); resp.StatusCode != want {
				t.Errorf("GET %s: %d, want %d\n%s", path, resp.StatusCode, want, body)
			}
		}
	})
	t.Run("an_edited_archive_copy_is_refused", func(t *testing.T) {
		// The server's own copy edited on disk: never served as the rule
		// set that decided.
		path := filepath.Join(dir, "data", "rulesets", v1+".json")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		edited := strings.Replace(string(data), "checkout-stripe", "checkout-stripe-x", 1)
		if edited == string(data) {
			t.Fatal("nothing to edit")
		}
		writeFile(t, path, edited)
		defer writeFile(t, path, string(data))
		resp, body := httpGet(t, "http://"+srv.adminAddr+"/v1/rulesets/"+v1, nil)
		if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, "altered") || strings.Contains(body, "checkout-stripe-x") {
			t.Errorf("/v1/rulesets/%s after its copy was edited: %d %s; want a 500 saying it was altered, without the edit", v1, resp.StatusCode, body)
		}
	})
	t.Run("processing_endpoint", func(t *testing.T) {
		resp, body := httpGet(t, "http://"+srv.adminAddr+"/v1/processing?since=1h", nil)
		var rep compliance.ProcessingReport
		if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &rep) != nil {
			t.Fatalf("/v1/processing: %d %s", resp.StatusCode, body)
		}
		counts := map[string]int{}
		for _, p := range rep.Processors {
			counts[p.ID] = p.Requests
		}
		if rep.Decisions != 15 || counts["stripe"] != 6 || counts["mailer"] != 2 || len(rep.Findings) != 3 {
			t.Errorf("/v1/processing: %d decisions, requests %v, %d findings; want 15, stripe 6 and mailer 2, 3", rep.Decisions, counts, len(rep.Findings))
		}
		for _, q := range []string{"?sinse=1h", "?since=1h&since=2h", "?since=yesterday"} {
			if resp, body := httpGet(t, "http://"+srv.adminAddr+"/v1/processing"+q, nil); resp.StatusCode != http.StatusBadRequest {
				t.Errorf("/v1/processing%s: %d, want 400\n%s", q, resp.StatusCode, body)
			}
		}
	})
	if code, _ := srv.terminate(20 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	dsn := srv.auditDSN()

	t.Run("json", func(t *testing.T) {
		r := runCLI(t, dir, "report", "processing", "--audit", dsn, "--since", "1h", "--format", "json")
		if r.code != 0 {
			t.Fatalf("report processing: %s", r)
		}
		var rep compliance.ProcessingReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("report processing --format json: %v\n%s", err, r.stdout)
		}
		if rep.Decisions != 15 || !slices.Equal(rep.RuleSets, []string{v1, v2}) {
			t.Errorf("%d decisions by %v; want 15 by [%s %s]", rep.Decisions, rep.RuleSets, v1, v2)
		}
		byID := map[string]compliance.ProcessorReport{}
		for _, p := range rep.Processors {
			byID[p.ID] = p
		}
		type wl struct{ requests, denied int }
		for id, want := range map[string]struct {
			requests, denied  int
			country, transfer string
			workloads         map[string]wl
		}{
			"stripe": {6, 1, "IE", "none-needed", map[string]wl{checkoutSA: {5, 0}, backendSA: {1, 1}}},
			"mailer": {2, 0, "US", "dpf", map[string]wl{orderMailSA: {2, 0}}},
			"crm":    {2, 0, "US", "none-needed", map[string]wl{crmSA: {2, 0}}},
			"sms":    {0, 0, "GB", "adequacy", map[string]wl{}},
		} {
			p, ok := byID[id]
			if !ok {
				t.Errorf("no processor %s in the report", id)
				continue
			}
			if p.Requests != want.requests || p.Denied != want.denied || p.Country != want.country || p.Transfer != want.transfer {
				t.Errorf("processor %s: %d requests, %d denied, %s, %s; want %d, %d, %s, %s", id, p.Requests, p.Denied, p.Country, p.Transfer,
					want.requests, want.denied, want.country, want.transfer)
			}
			got := map[string]wl{}
			for _, w := range p.Workloads {
				got[w.Principal] = wl{w.Requests, w.Denied}
				if w.FirstSeen.IsZero() || w.LastSeen.Before(w.FirstSeen) {
					t.Errorf("processor %s, workload %s: first seen %s, last seen %s", id, w.Principal, w.FirstSeen, w.LastSeen)
				}
			}
			if len(got) != len(want.workloads) {
				t.Errorf("processor %s: workloads %v, want %v", id, got, want.workloads)
			}
			for k, v := range want.workloads {
				if got[k] != v {
					t.Errorf("processor %s, workload %s: %+v, want %+v", id, k, got[k], v)
				}
			}
		}
		// The edited rule: one entry per version, each with its purposes.
		var uses []string
		for _, u := range byID["stripe"].Rules {
			uses = append(uses, u.ID+"@"+u.RuleSet+":"+strings.Join(u.Purposes, ",")+":"+strconv.Itoa(u.Requests))
		}
		want := []string{"checkout-stripe@" + v1 + ":essential.service.payment_processing:3", "checkout-stripe@" + v2 + ":essential.fraud_detection:2"}
		if !slices.Equal(uses, want) {
			t.Errorf("stripe's rules: %v, want %v", uses, want)
		}
		var findings []string
		for _, f := range rep.Findings {
			findings = append(findings, f.Kind+":"+f.Processor+f.Rule+":"+f.Host+":"+strconv.Itoa(f.Requests))
		}
		got := strings.Join(findings, "\n")
		for _, w := range []string{"transfer-without-safeguard:crm::2", "unregistered-recipient:web-analytics:collect.analytics.example:4", "unused-processor:sms::0"} {
			if !strings.Contains(got, w) {
				t.Errorf("findings:\n%s\nwant %s", got, w)
			}
		}
		if len(findings) != 3 {
			t.Errorf("findings:\n%s\nwant exactly 3 (no unarchived version, no expired rule)", got)
		}
	})

	t.Run("formats", func(t *testing.T) {
		for format, want := range map[string][]string{
			"md":   {"| stripe | Stripe Payments Europe, Ltd. | processor | IE |", "**unused-processor**", checkoutSA},
			"html": {"<td>Stripe Payments Europe, Ltd.</td>", `<span class="kind">transfer-without-safeguard</span>`},
			"csv":  {"stripe,\"Stripe Payments Europe, Ltd.\",processor,IE,none-needed,DPA-2024-017", checkoutSA + ",payments,5,0,"},
		} {
			r := runCLI(t, dir, "report", "processing", "--audit", dsn, "--since", "1h", "--format", format)
			for _, w := range want {
				if r.code != 0 || !strings.Contains(r.stdout, w) {
					t.Errorf("report processing --format %s: want %q in\n%s", format, w, r)
				}
			}
		}
		r := runCLI(t, dir, "report", "processing", "--audit", dsn, "--since", "1h", "--format", "fides")
		var m compliance.FidesManifest
		if err := yaml.Unmarshal([]byte(r.stdout), &m); err != nil || r.code != 0 {
			t.Fatalf("report processing --format fides: %v\n%s", err, r)
		}
		systems := map[string]compliance.FidesSystem{}
		for _, s := range m.System {
			systems[s.FidesKey] = s
		}
		checkout, stripe := systems["workload.payments.checkout"], systems["stripe"]
		if len(checkout.Egress) != 1 || checkout.Egress[0].FidesKey != "stripe" || len(stripe.Ingress) != 1 || stripe.Ingress[0].FidesKey != "workload.payments.checkout" {
			t.Errorf("fides: checkout's egress %+v, stripe's ingress %+v; want the flow checkout -> stripe", checkout.Egress, stripe.Ingress)
		}
		if _, ok := systems["sms"]; ok {
			t.Error("fides: sms, which received nothing, is a system")
		}
		if m := systems["mailer"]; !m.DoesInternationalTransfers || len(m.LegalBasisForTransfers) != 1 {
			t.Errorf("fides: mailer (US, dpf) %+v, want an international transfer with its basis", m)
		}
	})

	t.Run("query_with_the_rule_as_decided", func(t *testing.T) {
		r := runCLI(t, dir, "audit", "query", "--audit", dsn, "--since", "1h", "--rule", "checkout-stripe", "--format", "ndjson", "--with-rule")
		if r.code != 0 {
			t.Fatalf("audit query --with-rule: %s", r)
		}
		purposes := map[string]int{}
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			var rec struct {
				RuleSet string `json:"ruleset"`
				Rule    struct {
					Archived  bool
					ID        string
					Processor string
					Purposes  []string
				} `json:"rule_as_decided"`
			}
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("audit query --with-rule: %v\n%s", err, line)
			}
			if !rec.Rule.Archived || rec.Rule.ID != "checkout-stripe" || rec.Rule.Processor != "stripe" {
				t.Errorf("a record's rule as decided: %+v", rec.Rule)
			}
			purposes[rec.RuleSet+":"+strings.Join(rec.Rule.Purposes, ",")]++
		}
		want := map[string]int{v1 + ":essential.service.payment_processing": 3, v2 + ":essential.fraud_detection": 2}
		if !maps.Equal(purposes, want) {
			t.Errorf("records by version and purposes as decided: %v, want %v", purposes, want)
		}
		if r := runCLI(t, dir, "audit", "query", "--audit", dsn, "--with-rule"); r.code != 2 {
			t.Errorf("--with-rule without --format ndjson: exit %d, want 2\n%s", r.code, r)
		}
	})
	t.Run("explain_an_old_version", func(t *testing.T) {
		for v, want := range map[string]string{v1: "essential.service.payment_processing", v2: "essential.fraud_detection"} {
			r := runCLI(t, dir, "rules", "explain", "--version", v, "--audit", dsn, "--principal", checkoutSA, "-X", "POST",
				"https://api.stripe.com/v1/charges", "--format", "json")
			var e struct {
				Decision string
				Rule     string
				RuleSet  string
				Rules    []struct {
					ID       string
					Role     string
					Purposes []string
				}
			}
			if err := json.Unmarshal([]byte(r.stdout), &e); err != nil || r.code != 0 {
				t.Fatalf("rules explain --version %s: %v\n%s", v, err, r)
			}
			if e.Decision != "allow" || e.RuleSet != v || e.Rule != "checkout-stripe" || len(e.Rules) == 0 ||
				e.Rules[0].Role != "decides" || !slices.Equal(e.Rules[0].Purposes, []string{want}) {
				t.Errorf("rules explain --version %s: %+v; want allowed by checkout-stripe with purposes [%s]", v, e, want)
			}
		}
		r := runCLI(t, dir, "rules", "explain", "--version", "0123456789abcdef", "--audit", dsn, "--principal", checkoutSA, "https://api.stripe.com/")
		if r.code != 1 || !strings.Contains(r.stderr, "not archived") {
			t.Errorf("rules explain of a version not kept: want exit 1 saying so\n%s", r)
		}
	})
}
