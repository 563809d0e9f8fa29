package admin

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/sqlstore"
	"github.com/egress-authz/egress-authz/rules"
)

// The console's browser tests drive Debian's chromium (installed by
// scripts/ensure-chromium) against the admin handler over a real SQLite
// decision log.

const chromium = "/usr/bin/chromium"

// consoleRules are the served rules: the last two decide nothing.
var consoleRules = []string{"stripe-charges", "gcs-read", "bq-query", "github-read", "legacy-ftp", "sentry-old"}

// consoleRecords returns 60 chained records of one writer, two minutes
// apart and ending a minute before now: four workloads calling Stripe,
// Google APIs and GitHub, with denies and dry-run outcomes.
func consoleRecords(now time.Time, ruleSet string) []audit.Record {
	type tmpl struct {
		sa, ns, method, host, path, decision, rule, reason string
		enforced                                           bool
	}
	tmpls := []tmpl{
		{"checkout", "payments", "POST", "api.stripe.com", "/v1/charges", audit.Allow, "stripe-charges", "allowed-by-rule", true},
		{"indexer", "search", "GET", "storage.googleapis.com", "/storage/v1/b/search-index/o", audit.Allow, "gcs-read", "allowed-by-rule", true},
		{"indexer", "search", "POST", "bigquery.googleapis.com", "/bigquery/v2/projects/acme/queries", audit.Allow, "bq-query", "allowed-by-rule", true},
		{"billing", "payments", "POST", "api.stripe.com", "/v1/refunds", audit.Deny, "", "no-matching-rule", true},
		{"reports", "analytics", "GET", "api.github.com", "/repos/acme/reports/releases", audit.Allow, "github-read", "dry-run", false},
		{"checkout", "payments", "GET", "pastebin.com", "/raw/8f2kq1", audit.Deny, "", "no-matching-rule", true},
	}
	var recs []audit.Record
	prev := ""
	start := now.Add(-121 * time.Minute).Truncate(time.Millisecond)
	for i := range 60 {
		t := tmpls[i%len(tmpls)]
		if i%10 == 9 {
			t = tmpl{"reports", "analytics", "PUT", "uploads.evil.example.net", "/drop", audit.Deny, "", "no-matching-rule", true}
		}
		r := audit.Record{Time: start.Add(time.Duration(i)*2*time.Minute + time.Duration(i*137)*time.Millisecond),
			RequestID: fmt.Sprintf("%08x-4c1e-4a7b-9d2e-%012x", 0x5e0c0000+i, 0x1f00a000+i*7919),
			TraceID:   fmt.Sprintf("4bf92f3577b34da6a3ce929d0e0e%04x", i), Cluster: "eu-west-1",
			Principal: "spiffe://cluster.local/ns/" + t.ns + "/sa/" + t.sa, TrustDomain: "cluster.local", Namespace: t.ns, ServiceAccount: t.sa,
			Host: t.host, Port: 443, Method: t.method, Path: t.path, Decision: t.decision, Enforced: t.enforced, Rule: t.rule,
			Reason: t.reason, RuleSet: ruleSet, Latency: time.Duration(30+i%7*11) * time.Microsecond,
			Writer: "egress-authz-7d9f-0", Seq: uint64(i + 1), PrevHash: prev}
		if t.rule != "" {
			r.Owner, r.Ticket = "team-"+t.ns, fmt.Sprintf("SEC-%d", 1200+i%6)
		}
		r.Hash = audit.ComputeHash(&r)
		prev = r.Hash
		recs = append(recs, r)
	}
	return recs
}

// consoleServer serves the admin handler, with the decision log, the
// console and its API, over a SQLite log of consoleRecords. It returns
// the base URL and the log's path.
func consoleServer(t *testing.T) (string, string, []audit.Record) {
	base, path, recs, _ := consoleServerCounting(t)
	return base, path, recs
}

// consoleServerCounting is consoleServer, and counts the GET /v1/verify
// requests.
func consoleServerCounting(t *testing.T) (string, string, []audit.Record, *atomic.Int32) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "decisions.db")
	st, err := sqlstore.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// The rule set the records name, in an archive GET /v1/rulesets serves.
	src := rules.Source{Name: "rules.yaml", Data: []byte("apiVersion: egress-authz/v1\nrules: []\n")}
	version := rules.Version(src)
	archive := audit.DirArchive(filepath.Join(t.TempDir(), "rulesets"))
	if err := archive.PutRuleSet(context.Background(), audit.RuleSet{Version: version, Files: []audit.RuleSetFile{{Name: src.Name, Content: string(src.Data)}}}); err != nil {
		t.Fatal(err)
	}
	recs := consoleRecords(time.Now(), version)
	if err := st.Write(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	ruleSet := func() (string, []string) { return version, consoleRules }
	verify, verifies := VerifyHandler(st, nil, time.Now), &atomic.Int32{}
	h := Handler(Options{
		Rules: func() rules.Status { return rules.Status{Version: version, Rules: len(consoleRules)} },
		Extra: map[string]http.Handler{
			"GET /v1/decisions": DecisionsHandler(st, time.Now),
			"GET /v1/stats":     StatsHandler(st, ruleSet, time.Now),
			"GET /v1/verify": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				verifies.Add(1)
				verify.ServeHTTP(w, r)
			}),
			"GET /ui/":                   UIHandler(),
			"GET /v1/rulesets/{version}": RuleSetHandler(archive),
		},
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL, path, recs, verifies
}

// browser starts a headless chromium of its own (a temporary profile) and
// returns a context for chromedp.Run. Without chromium the test skips.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("no %s (scripts/ensure-chromium installs Debian's chromium): the console's browser tests need it", chromium)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 800),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)
	if err := chromedp.Do(bctx); err != nil {
		t.Skipf("chromium at %s does not start: %v", chromium, err)
	}
	return bctx
}

// loaded waits until the page has answered the query of its URL: state
// is ready or error.
func loaded(state string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](`(() => { const s = document.querySelector("#status"); return s && s.dataset.state === "`+state+`" && s.dataset.for === location.search; })()`, chromedp.WithPollingTimeout(20*time.Second))
}

// column is the title (the whole value) or text of column i of every row.
func column(i int) chromedp.Action[[]string] {
	return chromedp.Evaluate[[]string](fmt.Sprintf(`[...document.querySelectorAll("#rows tr")].map(tr => tr.children[%d].title || tr.children[%d].textContent)`, i, i))
}

func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

func get[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png := get(t, ctx, chromedp.FullScreenshot(100))
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

func want(recs []audit.Record, f func(*audit.Record) bool) []string {
	var out []string
	for i := len(recs) - 1; i >= 0; i-- {
		if f(&recs[i]) {
			out = append(out, fmt.Sprintf("%s:%d", recs[i].Host, recs[i].Port))
		}
	}
	return out
}

// TestConsoleFilters: the page lists the window's decisions; a host
// wildcard typed in the form and a deny reason clicked in its list filter
// them, each step a URL that back returns to.
func TestConsoleFilters(t *testing.T) {
	base, _, recs, verifies := consoleServerCounting(t)
	ctx := browser(t)
	do(t, ctx, chromedp.Navigate(base+"/ui/"), loaded("ready"))
	total, hosts := get(t, ctx, chromedp.Text(chromedp.ID("status"))), get(t, ctx, column(5))
	if len(hosts) != 60 || !strings.HasPrefix(total, "60 of 60 matching") {
		t.Fatalf("the page shows %d rows (%q), want all 60", len(hosts), total)
	}

	do(t, ctx, chromedp.SetValue(chromedp.CSS(`#filters input[name=host]`), "*.GoogleAPIs.com"),
		chromedp.Click(chromedp.CSS(`#filters button[type=submit]`)), loaded("ready"))
	hosts, url := get(t, ctx, column(5)), get(t, ctx, chromedp.Location())
	wantHosts := want(recs, func(r *audit.Record) bool { return strings.HasSuffix(r.Host, ".googleapis.com") })
	if strings.Join(hosts, " ") != strings.Join(wantHosts, " ") || !strings.Contains(url, "host=*.GoogleAPIs.com") && !strings.Contains(url, "host=%2A.GoogleAPIs.com") {
		t.Errorf("host *.GoogleAPIs.com: rows %v at %s, want %v", hosts, url, wantHosts)
	}

	// Clear the host, then click the deny reason no-matching-rule.
	do(t, ctx, chromedp.Click(chromedp.CSS(`#chips .chip[data-name=host]`)), loaded("ready"),
		chromedp.Click(chromedp.CSS(`#deny-reasons a.filter`)), loaded("ready"))
	reasons, hosts, url := get(t, ctx, column(2)), get(t, ctx, column(5)), get(t, ctx, chromedp.Location())
	wantDenied := want(recs, func(r *audit.Record) bool { return r.Reason == "no-matching-rule" })
	if strings.Join(hosts, " ") != strings.Join(wantDenied, " ") || !strings.Contains(url, "reason=no-matching-rule") || strings.Contains(url, "host=") {
		t.Errorf("reason no-matching-rule: rows %v at %s, want %v", hosts, url, wantDenied)
	}
	for _, r := range reasons {
		if r != "no-matching-rule" {
			t.Errorf("a row of reason %q under reason=no-matching-rule", r)
		}
	}

	// Back twice: the host filter again, its rows and its form.
	do(t, ctx, chromedp.NavigateBack(), loaded("ready"), chromedp.NavigateBack(), loaded("ready"))
	hosts, field := get(t, ctx, column(5)), get(t, ctx, chromedp.Value(chromedp.CSS(`#filters input[name=host]`)))
	if strings.Join(hosts, " ") != strings.Join(wantHosts, " ") || field != "*.GoogleAPIs.com" {
		t.Errorf("back: rows %v, host field %q; want the wildcard's rows and field", hosts, field)
	}
	// A click on the chart narrows the window to its bucket.
	do(t, ctx, chromedp.Navigate(base+"/ui/?since=3h"), loaded("ready"), chromedp.Click(chromedp.CSS(`#chart .u-over`)), loaded("ready"))
	url = get(t, ctx, chromedp.Location())
	times := get(t, ctx, column(0))
	q := url[strings.Index(url, "?")+1:]
	vals, _ := neturl.ParseQuery(q)
	since, err1 := time.Parse(time.RFC3339Nano, vals.Get("since"))
	until, err2 := time.Parse(time.RFC3339Nano, vals.Get("until"))
	if err1 != nil || err2 != nil || until.Sub(since) != 5*time.Minute || len(times) == 0 {
		t.Fatalf("after a click on the chart: %s with %d rows; want a 5 min bucket's window and its decisions", url, len(times))
	}
	for _, tm := range times {
		at, _ := time.Parse("2006-01-02 15:04:05.000", tm)
		if at.Before(since) || !at.Before(until) {
			t.Errorf("row at %s outside the clicked bucket %s to %s", tm, since, until)
		}
	}

	// Verifying reads the whole log: the page did it once, on load, not
	// on every search (the window never changed).
	if n := verifies.Load(); n != 3 {
		t.Errorf("%d GET /v1/verify for two loads, four searches in one window and one in another, want 3", n)
	}
	screenshot(t, ctx, "filters.png")
}

// TestConsoleFollowsURL: a link with filters (as pasted in a ticket)
// opens the page filtered, the form and the counts saying so; a filter
// the server refuses leaves no rows of an earlier answer.
func TestConsoleFollowsURL(t *testing.T) {
	base, _, recs := consoleServer(t)
	ctx := browser(t)
	do(t, ctx, chromedp.Navigate(base+"/ui/?host=API.STRIPE.COM:443&decision=deny"), loaded("ready"))
	hosts, times := get(t, ctx, column(5)), get(t, ctx, column(0))
	field := get(t, ctx, chromedp.Value(chromedp.CSS(`#filters input[name=host]`)))
	deny := get(t, ctx, chromedp.Text(chromedp.CSS(`#deny-reasons li`)))
	wantHosts := want(recs, func(r *audit.Record) bool { return r.Host == "api.stripe.com" && r.Decision == audit.Deny })
	if strings.Join(hosts, " ") != strings.Join(wantHosts, " ") || field != "API.STRIPE.COM:443" {
		t.Errorf("rows %v, host field %q; want %v and the URL's host", hosts, field, wantHosts)
	}
	if !strings.Contains(deny, "no-matching-rule") || !strings.Contains(deny, fmt.Sprint(len(wantHosts))) {
		t.Errorf("denies by reason: %q, want no-matching-rule %d", deny, len(wantHosts))
	}
	for _, tm := range times {
		if _, err := time.Parse("2006-01-02 15:04:05.000", tm); err != nil {
			t.Errorf("time %q is not shown to the millisecond", tm)
		}
	}

	// At 1024 px no host or principal wraps: every row is one line high.
	do(t, ctx, chromedp.EmulateViewport(1024, 768), chromedp.Navigate(base+"/ui/"), loaded("ready"))
	heights := get(t, ctx, chromedp.Evaluate[[]float64](`[...document.querySelectorAll("#rows tr")].map(tr => tr.getBoundingClientRect().height)`))
	line := get(t, ctx, chromedp.Evaluate[float64](`parseFloat(getComputedStyle(document.querySelector("#rows td.tok")).fontSize) * 3`))
	if len(heights) != 60 {
		t.Fatalf("%d rows at 1024 px, want 60", len(heights))
	}
	for i, h := range heights {
		if h > line {
			t.Errorf("row %d is %.0f px high at 1024 px: a cell wraps (a row of one line is under %.0f px)", i, h, line)
			break
		}
	}

	do(t, ctx, chromedp.SetValue(chromedp.CSS(`#filters input[name=since]`), "yesterday"),
		chromedp.Click(chromedp.CSS(`#filters button[type=submit]`)), loaded("error"))
	rows := get(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#rows tr").length`))
	status := get(t, ctx, chromedp.Text(chromedp.ID("status")))
	if rows != 0 || !strings.Contains(status, "400") || !strings.Contains(status, "since") {
		t.Errorf("since=yesterday: %d rows left, status %q; want none and the server's 400", rows, status)
	}
}

// TestConsoleShowsTamperedRecord: a record edited in the SQLite log is
// highlighted, the verify banner links to it, and the link opens its
// full record.
func TestConsoleShowsTamperedRecord(t *testing.T) {
	base, path, recs := consoleServer(t)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE decisions SET decision = 'deny' WHERE seq = 14`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	ctx := browser(t)
	do(t, ctx, chromedp.Navigate(base+"/ui/"), loaded("ready"), chromedp.WaitVisible(chromedp.CSS(`#verify.broken`)),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll("#rows tr.broken").length > 0`, chromedp.WithPollingTimeout(10*time.Second)))
	broken := get(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#rows tr.broken")].map(tr => tr.dataset.key)`))
	banner := get(t, ctx, chromedp.Text(chromedp.ID("verify")))
	key := recs[13].Writer + ":14"
	if strings.Join(broken, " ") != key || !strings.Contains(banner, "edited") || !strings.Contains(banner, "record 14") {
		t.Fatalf("highlighted rows %v, banner %q; want %s, edited", broken, banner, key)
	}
	screenshot(t, ctx, "tampered.png")
	do(t, ctx, chromedp.Click(chromedp.CSS(`#verify a.break`)), loaded("ready"), chromedp.WaitVisible(chromedp.ID("detail")))
	detail, url := get(t, ctx, chromedp.Text(chromedp.ID("detail"))), get(t, ctx, chromedp.Location())
	for _, w := range []string{recs[13].RequestID, recs[13].Hash, recs[13].PrevHash, "Chain break (edited)", "The rule set as it was"} {
		if !strings.Contains(detail, w) {
			t.Errorf("the record's panel lacks %q:\n%s", w, detail)
		}
	}
	if !strings.Contains(url, "request_id="+recs[13].RequestID) {
		t.Errorf("the break's link went to %s, want its request id", url)
	}
	// The rule set as it was: the link answers the archived version.
	got := get(t, ctx, chromedp.Evaluate[string](`fetch(document.querySelector("#detail a[href^='/v1/rulesets/']").href).then(r => r.json()).then(j => j.version)`, chromedp.EvalAwaitPromise))
	if got != recs[13].RuleSet {
		t.Errorf("the record's rule-set link answers version %q, want %s", got, recs[13].RuleSet)
	}

	// The README's picture: the last two hours at 1280 x 800.
	do(t, ctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate(base+"/ui/?since=2h"), loaded("ready"),
		chromedp.WaitVisible(chromedp.CSS(`#verify.broken`)))
	png := get(t, ctx, chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join(t.TempDir(), "console.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	// EGRESS_AUTHZ_CONSOLE_PNG=$PWD/docs/console.png renews the README's.
	if dst := os.Getenv("EGRESS_AUTHZ_CONSOLE_PNG"); dst != "" {
		if err := os.WriteFile(dst, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
