package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/internal/admin"
	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/checkreq"
)

// TestAdminHTTP checks the admin listener of a running server: health,
// readiness, the served rules, metrics, and the decision log as JSON pages
// and as CSV.
func TestAdminHTTP(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir, "--rules", examplesPath(t), "--cluster", "eu-west-1")
	base := "http://" + srv.adminAddr

	for _, path := range []string{"/healthz", "/readyz"} {
		if resp, body := httpGet(t, base+path, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s, want 200\n%s", path, resp.Status, body)
		}
	}
	if st := getRulesStatus(t, srv); st.Version == "" || st.Rules != 6 || st.LastError != "" {
		t.Errorf("GET /v1/rules: %+v; want the example set's version and 6 rules", st)
	}

	// Three decisions, oldest first: allow, deny, allow.
	client := authv3.NewAuthorizationClient(authztest.Dial(t, srv.grpcAddr))
	sent := []struct{ id, principal, method, url, decision string }{
		{"admin-1", checkoutID, "POST", "https://api.stripe.com/v1/charges", "allow"},
		{"admin-2", checkoutID, "DELETE", "https://api.stripe.com/v1/charges", "deny"},
		{"admin-3", indexerID, "GET", "https://storage.googleapis.com/b/o", "allow"},
	}
	for _, s := range sent {
		req, err := checkreq.HTTP{Principal: s.principal, Method: s.method, URL: s.url, RequestID: s.id}.Build()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := client.Check(ctx, req)
		cancel()
		if err != nil {
			t.Fatalf("Check %s: %v", s.id, err)
		}
		if got := authztest.Metadata(resp)["decision"]; got != s.decision {
			t.Fatalf("Check %s: %s, want %s", s.id, got, s.decision)
		}
	}
	eventually(t, 10*time.Second, 20*time.Millisecond, "GET /v1/decisions lists the three decisions", func() (bool, string) {
		_, body := httpGet(t, base+"/v1/decisions?since=5m", nil)
		return decodePage(t, "/v1/decisions", body).Count == len(sent), body
	})

	t.Run("json_pages", func(t *testing.T) {
		resp, body := httpGet(t, base+"/v1/decisions?limit=2", nil)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("GET /v1/decisions?limit=2: %s %s\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
		}
		page := decodePage(t, "page 1", body)
		if got := requestIDs(page); got != "admin-3 admin-2" {
			t.Errorf("page 1 holds %q, want the two newest, newest first: admin-3 admin-2", got)
		}
		if page.NextCursor == "" {
			t.Fatalf("page 1 has no next_cursor, but one record is left\n%s", body)
		}
		_, body = httpGet(t, base+"/v1/decisions?limit=2&cursor="+url.QueryEscape(page.NextCursor), nil)
		page = decodePage(t, "page 2", body)
		if got := requestIDs(page); got != "admin-1" || page.NextCursor != "" {
			t.Errorf("page 2 holds %q with next_cursor %q, want admin-1 and no cursor", got, page.NextCursor)
		}
		if r := page.Records; len(r) == 1 && (r[0].Rule != "payments-stripe-charges" || r[0].Decision != "allow" || !r[0].Enforced) {
			t.Errorf("admin-1 recorded as %+v", r[0])
		}
	})

	t.Run("invalid_cursor_is_a_bad_request", func(t *testing.T) {
		for _, c := range []string{"not-a-cursor!", "Zm9v"} { // not base64; base64 of "foo"
			if resp, body := httpGet(t, base+"/v1/decisions?cursor="+url.QueryEscape(c), nil); resp.StatusCode != http.StatusBadRequest {
				t.Errorf("GET /v1/decisions?cursor=%s: %s, want 400\n%s", c, resp.Status, body)
			}
		}
	})

	t.Run("cli_csv_prints_the_cursor_on_stderr", func(t *testing.T) {
		query := func(args ...string) (string, string) {
			r := runCLI(t, dir, append([]string{"audit", "query", "--audit", srv.auditDSN(), "--format", "csv", "--limit", "2"}, args...)...)
			if r.code != exitOK {
				t.Fatalf("audit query: %s", r)
			}
			return r.stdout, r.stderr
		}
		out, errOut := query()
		cursor, ok := strings.CutPrefix(strings.TrimSpace(errOut), "more: --cursor ")
		if !ok || cursor == "" || strings.Contains(out, cursor) {
			t.Fatalf("page 1: stderr %q, want \"more: --cursor C\" (and C not in the CSV)", errOut)
		}
		out, errOut = query("--cursor", cursor)
		if rows, err := csv.NewReader(strings.NewReader(out)).ReadAll(); err != nil || len(rows) != 2 || errOut != "" {
			t.Errorf("page 2: %d rows (%v), stderr %q; want a header and one record, and no cursor", len(rows), err, errOut)
		}
	})

	t.Run("cli_every_format_prints_the_cursor_on_stderr_only", func(t *testing.T) {
		for _, format := range []string{"table", "json", "ndjson"} {
			r := runCLI(t, dir, "audit", "query", "--audit", srv.auditDSN(), "--format", format, "--limit", "2")
			cursor, ok := strings.CutPrefix(strings.TrimSpace(r.stderr), "more: --cursor ")
			if r.code != exitOK || !ok || cursor == "" {
				t.Errorf("%s: want the cursor on stderr\n%s", format, r)
				continue
			}
			if format != "json" && strings.Contains(r.stdout, cursor) {
				t.Errorf("%s: the cursor is on stdout too\n%s", format, r)
			}
		}
	})

	t.Run("cluster_in_every_record", func(t *testing.T) {
		r := runCLI(t, dir, "audit", "query", "--audit", srv.auditDSN(), "--format", "ndjson", "--cluster", "eu-west-1")
		if r.code != exitOK || strings.Count(r.stdout, `"cluster":"eu-west-1"`) != 3 {
			t.Errorf("--cluster eu-west-1: want the 3 records, each with its cluster\n%s", r)
		}
		r = runCLI(t, dir, "audit", "query", "--audit", srv.auditDSN(), "--format", "ndjson", "--cluster", "us-east-1")
		if r.code != exitOK || strings.TrimSpace(r.stdout) != "" {
			t.Errorf("--cluster us-east-1: want no record\n%s", r)
		}
	})

	t.Run("cli_new_filters", func(t *testing.T) {
		r := runCLI(t, dir, "audit", "query", "--audit", srv.auditDSN(), "--format", "ndjson", "--reason", "no-matching-rule", "--host", "*.STRIPE.com:443")
		if r.code != exitOK || !strings.Contains(r.stdout, "admin-2") || strings.Contains(r.stdout, "admin-1") {
			t.Errorf("--reason no-matching-rule --host *.STRIPE.com:443: want admin-2 only\n%s", r)
		}
		r = runCLI(t, dir, "audit", "query", "--audit", srv.auditDSN(), "--reason", "nope")
		if r.code != exitUsage || !strings.Contains(r.stderr, "--reason") {
			t.Errorf("--reason nope: want exit 2 naming the flag\n%s", r)
		}
	})

	t.Run("filter_by_decision", func(t *testing.T) {
		_, body := httpGet(t, base+"/v1/decisions?decision=deny", nil)
		if got := requestIDs(decodePage(t, "deny", body)); got != "admin-2" {
			t.Errorf("decision=deny gives %q, want admin-2", got)
		}
	})

	t.Run("csv", func(t *testing.T) {
		resp, body := httpGet(t, base+"/v1/decisions", map[string]string{"Accept": "text/csv"})
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") {
			t.Fatalf("GET /v1/decisions (Accept: text/csv): %s %s\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
		}
		rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
		if err != nil {
			t.Fatalf("not CSV: %v\n%s", err, body)
		}
		if len(rows) != 1+len(sent) {
			t.Fatalf("%d rows, want a header and %d records\n%s", len(rows), len(sent), body)
		}
		col := map[string]int{}
		for i, name := range rows[0] {
			col[name] = i
		}
		for _, name := range []string{"time", "request_id", "principal", "host", "decision", "rule", "reason", "seq", "hash"} {
			if _, ok := col[name]; !ok {
				t.Errorf("header row %v lacks %q", rows[0], name)
			}
		}
		if t.Failed() {
			return
		}
		var ids []string
		for _, row := range rows[1:] {
			ids = append(ids, row[col["request_id"]]+"="+row[col["decision"]])
		}
		if got := strings.Join(ids, " "); got != "admin-3=allow admin-2=deny admin-1=allow" {
			t.Errorf("CSV records %q, want admin-3=allow admin-2=deny admin-1=allow", got)
		}
	})

	t.Run("verify", func(t *testing.T) {
		resp, body := httpGet(t, base+"/v1/verify", nil)
		var v struct {
			OK      bool              `json:"ok"`
			Records int               `json:"records"`
			Writers map[string]uint64 `json:"writers"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &v) != nil || !v.OK || v.Records != len(sent) || len(v.Writers) != 1 {
			t.Errorf("GET /v1/verify: %s %+v; want ok with %d records in one chain\n%s", resp.Status, v, len(sent), body)
		}
	})

	t.Run("stats", func(t *testing.T) {
		resp, body := httpGet(t, base+"/v1/stats?since=5m", nil)
		var st admin.Stats
		if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil {
			t.Fatalf("GET /v1/stats: %s\n%s", resp.Status, body)
		}
		if st.Counts != (admin.Counts{Total: 3, Allow: 2, Deny: 1}) || st.RuleSet != getRulesStatus(t, srv).Version || len(st.Unused)+len(st.Rules) != 6 {
			t.Errorf("GET /v1/stats: %+v, rule set %q, %d rules used and %d unused; want the three decisions and the 6 rules of the served set", st.Counts, st.RuleSet, len(st.Rules), len(st.Unused))
		}
		if resp, body := httpGet(t, base+"/v1/stats?cursor=x", nil); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET /v1/stats?cursor=x: %s %s, want 400", resp.Status, body)
		}
	})

	t.Run("ui", func(t *testing.T) {
		resp, body := httpGet(t, base+"/ui/", nil)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
			!strings.Contains(body, `src="views/decisions.js"`) {
			t.Errorf("GET /ui/: %s %s; want the auditors' console\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
		}
		_, js := httpGet(t, base+"/ui/views/decisions.js", nil)
		for _, api := range []string{`"/v1/stats"`, `"/v1/decisions"`, `"/v1/verify"`} {
			if !strings.Contains(js, api) {
				t.Errorf("the console's decisions view does not query %s", api)
			}
		}
		if resp, _ := httpGet(t, base+"/ui/other", nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET /ui/other: %s, want 404", resp.Status)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		resp, body := httpGet(t, base+"/metrics", nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "egress_authz_decisions_total") {
			t.Errorf("GET /metrics: %s; want 200 with egress_authz_decisions_total\n%.2000s", resp.Status, body)
		}
	})
}

func requestIDs(p queryPage) string {
	var ids []string
	for _, r := range p.Records {
		ids = append(ids, r.RequestID)
	}
	return strings.Join(ids, " ")
}

// The admin queries read the decision log through a store of their own,
// so that a long export or verify cannot take the connections the sink
// writes through. Closing the writer (and with it the sink) leaves the
// query store open.
func TestAdminQueriesHaveTheirOwnStore(t *testing.T) {
	s, err := newServer(inprocConfig(t), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s.grpcLn.Close()
	s.adminLn.Close()
	defer s.close(context.Background())
	if s.store == nil {
		t.Fatal("no query store for an SQLite decision log")
	}
	if err := s.auditWriter.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.Query(context.Background(), audit.Filter{Limit: 1}, func(*audit.Record) error { return nil }); err != nil {
		t.Errorf("query after the sink closed: %v; want the query store to be a separate connection pool", err)
	}
}
