package admin

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// memStore answers queries from records in memory with Filter.Match, in
// the stores' order; the stores' own tests hold them to the same meaning.
type memStore struct{ recs []audit.Record }

func (m *memStore) Query(_ context.Context, f audit.Filter, fn func(*audit.Record) error) (string, error) {
	recs := slices.Clone(m.recs)
	slices.SortFunc(recs, func(a, b audit.Record) int { return cmp.Compare(b.Seq, a.Seq) })
	n := 0
	for i := range recs {
		if !f.Match(&recs[i]) {
			continue
		}
		if f.Limit > 0 && n == f.Limit {
			return audit.PositionOf(&recs[i-1]).Cursor(), nil
		}
		if err := fn(&recs[i]); err != nil {
			return "", err
		}
		n++
	}
	return "", nil
}
func (m *memStore) Chains(context.Context, func(*audit.Record) error) error { return nil }
func (m *memStore) Close() error                                            { return nil }

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// forty returns 40 records of writer w a minute apart from t0+1m, each
// changed by tweak: every 5th denied (no rule), every 7th else a dry-run
// outcome, every 3rd to storage.googleapis.com:8443 (the rest to
// api.stripe.com:443, rule stripe).
func forty(tweak func(i int, r *audit.Record)) []audit.Record {
	var recs []audit.Record
	for i := 1; i <= 40; i++ {
		r := audit.Record{Time: t0.Add(time.Duration(i) * time.Minute), RequestID: fmt.Sprintf("req-%d", i),
			Principal: "spiffe://cluster.local/ns/payments/sa/checkout", Namespace: "payments", Host: "api.stripe.com",
			Port: 443, Method: "POST", Path: "/v1/charges", Decision: audit.Allow, Enforced: true, Rule: "stripe",
			Reason: "allowed-by-rule", Writer: "w", Seq: uint64(i)}
		switch {
		case i%5 == 0:
			r.Decision, r.Reason, r.Rule = audit.Deny, "no-matching-rule", ""
		case i%7 == 0:
			r.Enforced, r.Reason = false, "dry-run"
		}
		if i%3 == 0 {
			r.Host, r.Port, r.Method = "storage.googleapis.com", 8443, "GET"
		}
		tweak(i, &r)
		recs = append(recs, r)
	}
	return recs
}

func decisionsServer(t *testing.T) (*httptest.Server, []audit.Record) {
	recs := forty(func(i int, r *audit.Record) {
		if i%4 == 0 {
			r.Cluster = "eu-west"
		}
		if i%6 == 0 {
			r.Processor = "stripe"
		}
	})
	srv := httptest.NewServer(DecisionsHandler(&memStore{recs: recs}, func() time.Time { return t0.Add(24 * time.Hour) }))
	t.Cleanup(srv.Close)
	return srv, recs
}

func getDecisions(t *testing.T, srv *httptest.Server, query string) (int, []audit.Record, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + "/v1/decisions?" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, string(body)
	}
	var page struct {
		Records []struct {
			RequestID string `json:"request_id"`
		} `json:"records"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatalf("%s: %v\n%s", query, err, body)
	}
	var out []audit.Record
	for _, r := range page.Records {
		out = append(out, audit.Record{RequestID: r.RequestID})
	}
	return resp.StatusCode, out, string(body)
}

// TestDecisionsFilters: every filter of /v1/decisions selects what it
// says, hosts as the rules write them.
func TestDecisionsFilters(t *testing.T) {
	srv, recs := decisionsServer(t)
	yes := true
	for _, tc := range []struct {
		query string
		want  func(*audit.Record) bool
	}{
		{"request_id=req-7", func(r *audit.Record) bool { return r.RequestID == "req-7" }},
		{"reason=dry-run", func(r *audit.Record) bool { return r.Reason == "dry-run" }},
		{"reason=no-matching-rule", func(r *audit.Record) bool { return r.Reason == "no-matching-rule" }},
		{"method=GET", func(r *audit.Record) bool { return r.Method == "GET" }},
		{"port=8443", func(r *audit.Record) bool { return r.Port == 8443 }},
		{"enforced=false", func(r *audit.Record) bool { return !r.Enforced }},
		{"enforced=true", func(r *audit.Record) bool { return r.Enforced == yes }},
		{"cluster=eu-west", func(r *audit.Record) bool { return r.Cluster == "eu-west" }},
		{"processor=stripe", func(r *audit.Record) bool { return r.Processor == "stripe" }},
		{"host=API.STRIPE.COM", func(r *audit.Record) bool { return r.Host == "api.stripe.com" }},
		{"host=api.stripe.com:443", func(r *audit.Record) bool { return r.Host == "api.stripe.com" && r.Port == 443 }},
		{"host=%2A.googleapis.com", func(r *audit.Record) bool { return strings.HasSuffix(r.Host, ".googleapis.com") }},
		{"host=*.googleapis.com&decision=deny", func(r *audit.Record) bool {
			return strings.HasSuffix(r.Host, ".googleapis.com") && r.Decision == audit.Deny
		}},
	} {
		code, got, body := getDecisions(t, srv, tc.query)
		if code != http.StatusOK {
			t.Errorf("%s: %d %s", tc.query, code, body)
			continue
		}
		var want []string
		for i := len(recs) - 1; i >= 0; i-- {
			if tc.want(&recs[i]) {
				want = append(want, recs[i].RequestID)
			}
		}
		var ids []string
		for _, r := range got {
			ids = append(ids, r.RequestID)
		}
		if len(want) == 0 || len(want) == len(recs) || !slices.Equal(ids, want) {
			t.Errorf("%s: got %v, want %v (a subset of the %d records)", tc.query, ids, want, len(recs))
		}
	}
}

// TestDecisionsRefusesWhatItCannotFilterOn: a parameter that is not a
// filter, one given twice, a malformed pair, a value that does not parse
// and a time outside what a record can hold are each a 400 saying so;
// unknown and repeated ones list the known filters. None answers the whole
// log as if it were filtered.
func TestDecisionsRefusesWhatItCannotFilterOn(t *testing.T) {
	srv, _ := decisionsServer(t)
	for _, tc := range []struct{ query, says string }{
		{"requestid=req-7", "requestid: unknown filter (known: since, until, request_id"},
		{"reason=dry-run&reason=denied-by-rule", "reason: given 2 times"},
		{"principal=%zz", "malformed"},
		{"principal=a%", "malformed"},
		{"decision=allow;", "malformed"},
		{"limit=abc%", "malformed"},
		{"limit=abc", "limit"},
		{"decision=permit", "want allow or deny"},
		{"reason=nope", "no reason a decision has"},
		{"port=0", "port"},
		{"enforced=maybe", "want true or false"},
		{"host=a*.stripe.com", "*.example.com"},
		{"since=2262-04-12T00:00:00Z", "outside the times"},
		{"until=1600-01-01", "outside the times"},
		{"since=yesterday", "since"},
		{"cursor=Zm9v", "cursor"},
	} {
		code, _, body := getDecisions(t, srv, tc.query)
		if code != http.StatusBadRequest || !strings.Contains(body, tc.says) {
			t.Errorf("%s: %d %q, want 400 saying %q", tc.query, code, body, tc.says)
		}
	}
}

// TestNDJSONHoldsOnlyRecords: every line of an NDJSON page is a record;
// the next page's cursor is the X-Next-Cursor trailer.
func TestNDJSONHoldsOnlyRecords(t *testing.T) {
	srv, _ := decisionsServer(t)
	resp, err := http.Get(srv.URL + "/v1/decisions?format=ndjson&limit=5")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want 5 records:\n%s", len(lines), body)
	}
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec["request_id"] == nil || rec["next_cursor"] != nil {
			t.Errorf("line %q is not a record", l)
		}
	}
	if resp.Trailer.Get("X-Next-Cursor") == "" {
		t.Errorf("no X-Next-Cursor trailer")
	}
}
