package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/rules"
)

const explainRules = `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: payments-stripe-charges
    action: allow
    from: {principals: ["spiffe://cluster.local/ns/payments/sa/checkout"]}
    to: {hosts: [api.stripe.com], ports: [443], methods: [GET, POST], paths: [/v1/charges, "/v1/charges/*"]}
  - id: notify-sendgrid
    action: allow
    from: {namespaces: [notify]}
    to: {hosts: [api.sendgrid.com], ports: [443]}
`

func TestExplainHandler(t *testing.T) {
	set, err := rules.Parse(rules.Source{Name: "rules.yaml", Data: []byte(explainRules)})
	if err != nil {
		t.Fatal(err)
	}
	tab, err := rules.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	live := rules.NewLive(tab, rules.LiveOptions{})
	now := func() time.Time { return time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC) }
	srv := httptest.NewServer(Handler(Options{Extra: map[string]http.Handler{"GET /v1/explain": ExplainHandler(live.Table, now)}}))
	defer srv.Close()

	type answer struct {
		Decision, Reason, Rule, Ruleset string
		Request                         struct {
			Host, Path     string
			Port           int
			TLSPassthrough bool `json:"tls_passthrough"`
		}
		Rules []struct {
			ID      string
			Matched bool
			Misses  []rules.Miss
		}
	}
	get := func(q url.Values) (int, answer, string) {
		resp, err := http.Get(srv.URL + "/v1/explain?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a answer
		var b strings.Builder
		dec := json.NewDecoder(resp.Body)
		if resp.StatusCode == http.StatusOK {
			if err := dec.Decode(&a); err != nil {
				t.Fatal(err)
			}
		} else {
			buf := make([]byte, 512)
			n, _ := resp.Body.Read(buf)
			b.Write(buf[:n])
		}
		return resp.StatusCode, a, b.String()
	}

	code, a, _ := get(url.Values{"principal": {"spiffe://cluster.local/ns/payments/sa/checkout"}, "method": {"DELETE"},
		"url": {"https://API.stripe.com/v1/./charges?x=1"}})
	if code != http.StatusOK || a.Decision != "deny" || a.Reason != "no-matching-rule" || a.Ruleset != tab.Version() {
		t.Fatalf("%d %+v", code, a)
	}
	if a.Request.Host != "api.stripe.com" || a.Request.Path != "/v1/charges" || a.Request.Port != 443 {
		t.Errorf("request %+v: want the normalized values", a.Request)
	}
	if len(a.Rules) != 2 || a.Rules[0].ID != "payments-stripe-charges" || len(a.Rules[0].Misses) != 1 || a.Rules[0].Misses[0].Field != "methods" {
		t.Errorf("rules %+v", a.Rules)
	}

	code, a, _ = get(url.Values{"principal": {"spiffe://cluster.local/ns/notify/sa/mailer"}, "sni": {"api.sendgrid.com"}})
	if code != http.StatusOK || a.Decision != "allow" || a.Rule != "notify-sendgrid" || !a.Request.TLSPassthrough {
		t.Errorf("sni: %d %+v", code, a)
	}
	code, a, _ = get(url.Values{"principal": {"spiffe://cluster.local/ns/notify/sa/mailer"}, "sni": {"api.sendgrid.com"}, "port": {"8443"}})
	if code != http.StatusOK || a.Decision != "deny" || a.Request.Port != 8443 {
		t.Errorf("sni port 8443: %d %+v", code, a)
	}

	for _, q := range []url.Values{
		{},
		{"url": {"https://a.example/"}, "sni": {"a.example"}},
		{"url": {"a.example/no-scheme"}},
		{"url": {"https://a.example/"}, "method": {"GET /"}},
		{"sni": {"a.example"}, "method": {"GET"}},
		{"sni": {"a.example"}, "port": {"99999"}},
	} {
		if code, _, body := get(q); code != http.StatusBadRequest || body == "" {
			t.Errorf("%v: %d %q, want 400 with a reason", q, code, body)
		}
	}

	// A host or path longer than the explain bound is refused, with the
	// limit in the answer, also when every rule is asked for.
	long := strings.Repeat("a", rules.MaxExplainField+1)
	for _, q := range []url.Values{
		{"principal": {"spiffe://cluster.local/ns/payments/sa/checkout"}, "url": {"https://api.stripe.com/" + long}},
		{"principal": {"spiffe://cluster.local/ns/payments/sa/checkout"}, "url": {"https://api.stripe.com/" + long}, "all": {"true"}},
		{"principal": {"spiffe://cluster.local/ns/notify/sa/mailer"}, "sni": {long + ".example"}},
	} {
		if code, _, body := get(q); code != http.StatusBadRequest || !strings.Contains(body, "at most 8192 bytes") {
			t.Errorf("a %d-byte value: %d %q, want 400 naming the limit", len(long), code, body)
		}
	}
}
