package main

// What the tests of the rules commands (casetest_test.go, explain_test.go,
// diff_test.go, suggest_test.go) share: running a command in-process
// through run(), a real SQLite decision log written by the real Check
// path, and the check of a JSON output against its contract.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/sqlstore"
	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/rules"
)

const (
	exampleRules = "../../deploy/examples/rules.yaml"
	exampleCases = "../../deploy/examples/rules_test_cases.yaml"
	// complianceAt pins the decision time of these tests: the example
	// rules have an expiry date, and a test must not start failing on it.
	complianceAt = "2026-12-01T00:00:00Z"
)

// runCompliance runs the command line args in-process.
func runCompliance(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

// traffic is one kind of request in the generated decision log: how many,
// and how to build the n-th.
type traffic struct {
	count int
	build func(n int) *authv3.CheckRequest
}

const (
	checkoutSA = "spiffe://cluster.local/ns/payments/sa/checkout"
	refundsSA  = "spiffe://cluster.local/ns/payments/sa/refunds"
	disputesSA = "spiffe://cluster.local/ns/payments/sa/disputes"
	indexerSA  = "spiffe://cluster.local/ns/search/sa/indexer"
	mailerSA   = "spiffe://cluster.local/ns/notify/sa/mailer"
)

func httpCR(t *testing.T, principal, method, url string) *authv3.CheckRequest {
	cr, err := checkreq.HTTP{Principal: principal, Method: method, URL: url}.Build()
	if err != nil {
		t.Fatal(err)
	}
	return cr
}

// decisionLog is a real SQLite decision log of a week of traffic through
// the example rules: every request went through authz's Check, the
// hash-chaining writer and its write-ahead log, as in production.
type decisionLog struct {
	dsn    string
	now    time.Time // the end of the recorded week
	counts map[string]int
}

// TestComplianceDecisionLog writes one decision log of a week of real
// traffic and runs rules diff --against and rules suggest on it.
func TestComplianceDecisionLog(t *testing.T) {
	log, err := writeDecisionLog(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Run("diff_replays_the_week", func(t *testing.T) { testDiffReplay(t, log) })
	t.Run("suggest_allows_the_week", func(t *testing.T) { testSuggest(t, log) })
}

func writeDecisionLog(t *testing.T, dir string) (*decisionLog, error) {
	ctx := context.Background()
	set, err := rules.Load(exampleRules)
	if err != nil {
		return nil, err
	}
	table, err := rules.Compile(set)
	if err != nil {
		return nil, err
	}
	end := time.Now().UTC().Truncate(time.Second)
	var mu sync.Mutex
	clock := end.Add(-10 * 24 * time.Hour)
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return clock
	}
	db := filepath.Join(dir, "decisions.db")
	sink, err := sqlstore.OpenSQLite(ctx, db)
	if err != nil {
		return nil, err
	}
	w, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "wal")}, sink)
	if err != nil {
		sink.Close()
		return nil, err
	}
	live := rules.NewLive(table, rules.LiveOptions{CacheSize: 1000, Now: now})
	srv := authz.NewServer(live, authz.Options{Recorder: w, Now: now})

	id := func(n int) string { return fmt.Sprintf("%024x", n*7919) }
	week := []traffic{
		{800, func(n int) *authv3.CheckRequest {
			return httpCR(t, checkoutSA, "POST", "https://api.stripe.com/v1/charges")
		}},
		{400, func(n int) *authv3.CheckRequest {
			return httpCR(t, checkoutSA, "GET", "https://api.stripe.com/v1/charges/ch_3Mm"+id(n)+"?expand[]=customer")
		}},
		{120, func(n int) *authv3.CheckRequest { // denied: DELETE is not listed
			return httpCR(t, checkoutSA, "DELETE", "https://api.stripe.com/v1/charges/ch_9Zz"+id(n))
		}},
		{200, func(n int) *authv3.CheckRequest {
			return httpCR(t, disputesSA, "POST", "https://files.stripe.com/v1/files")
		}},
		{150, func(n int) *authv3.CheckRequest { // denied: no rule for refunds
			return httpCR(t, refundsSA, "POST", "https://api.stripe.com/v1/refunds")
		}},
		{300, func(n int) *authv3.CheckRequest { // denied, with a dry-run allow beside it
			return httpCR(t, checkoutSA, "POST", "https://api.fraudscore.example/v2/score")
		}},
		{400, func(n int) *authv3.CheckRequest {
			return httpCR(t, indexerSA, "GET", fmt.Sprintf("https://storage.googleapis.com/storage/v1/b/crawl/o/%d", n))
		}},
		{60, func(n int) *authv3.CheckRequest { // denied by the deny rule
			return httpCR(t, indexerSA, "POST", "https://generativelanguage.googleapis.com/v1/models/gemini-pro:generateContent")
		}},
		{300, func(n int) *authv3.CheckRequest { return checkreq.SNI(mailerSA, "api.sendgrid.com", 443) }},
		{200, func(n int) *authv3.CheckRequest {
			return httpCR(t, mailerSA, "POST", "https://api.sendgrid.com/v3/mail/send")
		}},
		{20, func(n int) *authv3.CheckRequest { // unsafe path
			return httpCR(t, checkoutSA, "GET", "https://api.stripe.com/v1/charges%2F..%2Fbalance")
		}},
		{50, func(n int) *authv3.CheckRequest { // untrusted trust domain
			return httpCR(t, "spiffe://partner.example/ns/payments/sa/checkout", "POST", "https://api.stripe.com/v1/charges")
		}},
	}
	// Ten days ago, outside a 7-day window: must not be replayed.
	old := traffic{100, func(n int) *authv3.CheckRequest {
		return httpCR(t, refundsSA, "POST", "https://api.stripe.com/v1/refunds")
	}}
	check := func(cr *authv3.CheckRequest) error {
		_, err := srv.Check(ctx, cr)
		return err
	}
	for n := range old.count {
		if err := check(old.build(n)); err != nil {
			return nil, err
		}
	}
	// Interleave the week's traffic over the last six days.
	total := 0
	for _, tr := range week {
		total += tr.count
	}
	mu.Lock()
	clock = end.Add(-6 * 24 * time.Hour)
	mu.Unlock()
	step := 6 * 24 * time.Hour / time.Duration(total)
	sent := make([]int, len(week))
	for i := 0; i < total; i++ {
		k := i % len(week)
		for sent[k] == week[k].count {
			k = (k + 1) % len(week)
		}
		if err := check(week[k].build(sent[k])); err != nil {
			return nil, err
		}
		sent[k]++
		mu.Lock()
		clock = clock.Add(step)
		mu.Unlock()
	}
	closeCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := w.Close(closeCtx); err != nil {
		return nil, err
	}
	return &decisionLog{dsn: "sqlite:" + db, now: end, counts: map[string]int{"week": total, "old": old.count}}, nil
}

func writeTestFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkJSON checks a JSON output against its contract, the names CI
// scripts and the README rely on. It decodes out into v, refusing any key
// v's type does not have, and checks that the objects of the document
// have exactly the keys want gives for them: every key is there, and no
// other. A want path is "" for the top level, "results[]" for the objects
// of the array results (their keys are the union over the elements), and
// "results[].got" for an object in those; paths not in want are not
// looked at.
func checkJSON(t *testing.T, out string, v any, want map[string]string) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode into %T: %v\n%s", v, err, out)
	}
	var doc any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]bool{}
	jsonKeys(doc, "", got)
	for path, keys := range want {
		wantKeys := strings.Fields(keys)
		var gotKeys []string
		for k := range got[path] {
			gotKeys = append(gotKeys, k)
		}
		slices.Sort(wantKeys)
		slices.Sort(gotKeys)
		if !slices.Equal(gotKeys, wantKeys) {
			t.Errorf("keys of %q:\n got %v\nwant %v", path, gotKeys, wantKeys)
		}
	}
}

// jsonKeys adds the keys of every object in v to into, by path.
func jsonKeys(v any, path string, into map[string]map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		if into[path] == nil {
			into[path] = map[string]bool{}
		}
		for k, e := range v {
			into[path][k] = true
			p := k
			if path != "" {
				p = path + "." + k
			}
			jsonKeys(e, p, into)
		}
	case []any:
		for _, e := range v {
			jsonKeys(e, path+"[]", into)
		}
	}
}
