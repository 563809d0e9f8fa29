package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/rules"
)

// chainStore is a decision log of one intact record whose Chains calls
// are counted and wait for release.
type chainStore struct {
	calls   atomic.Int32
	release chan struct{}
}

func (s *chainStore) Query(context.Context, audit.Filter, func(*audit.Record) error) (string, error) {
	return "", nil
}

func (s *chainStore) Chains(ctx context.Context, fn func(*audit.Record) error) error {
	s.calls.Add(1)
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	r := audit.Record{Writer: "w1", Seq: 1, Decision: audit.Allow, Time: time.Unix(0, 0).UTC()}
	r.Hash = audit.ComputeHash(&r)
	return fn(&r)
}

func (s *chainStore) Close() error { return nil }

func TestVerifyHandlerSharesOneRun(t *testing.T) {
	st := &chainStore{release: make(chan struct{})}
	var mu sync.Mutex
	clock := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	srv := httptest.NewServer(VerifyHandler(st, nil, now))
	defer srv.Close()
	get := func() VerifyReport {
		t.Helper()
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Error(err)
			return VerifyReport{}
		}
		defer resp.Body.Close()
		var rep VerifyReport
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&rep) != nil {
			t.Errorf("GET /v1/verify: %s", resp.Status)
		}
		return rep
	}

	// Concurrent requests wait for one run.
	const n = 8
	var wg sync.WaitGroup
	reps := make([]VerifyReport, n)
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); reps[i] = get() }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for st.calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the other requests join the run
	close(st.release)
	wg.Wait()
	if got := st.calls.Load(); got != 1 {
		t.Errorf("%d concurrent requests ran %d verifications, want 1", n, got)
	}
	for i, rep := range reps {
		if !rep.OK || rep.Records != 1 || rep.Writers["w1"] != 1 {
			t.Errorf("request %d: %+v, want an intact chain of one record", i, rep)
		}
	}

	// The result answers for a few seconds, then a request runs again.
	advance(VerifyReuse - time.Second)
	get()
	if got := st.calls.Load(); got != 1 {
		t.Errorf("%d verifications for a request %s after the last one, want the result reused", got, VerifyReuse-time.Second)
	}
	advance(time.Second)
	get()
	if got := st.calls.Load(); got != 2 {
		t.Errorf("%d verifications for a request %s after the last one, want a new run", got, VerifyReuse)
	}
}

// TestUIServesItsFiles: the console's files are served from /ui/ with a
// policy that runs scripts from /ui/ only, and its CSV export stays
// bounded.
func TestUIServesItsFiles(t *testing.T) {
	srv := httptest.NewServer(UIHandler())
	defer srv.Close()
	for path, ctype := range map[string]string{
		"/ui/": "text/html", "/ui/app.js": "text/javascript", "/ui/views/decisions.js": "text/javascript", "/ui/style.css": "text/css",
		"/ui/vendor/uplot/uPlot.iife.min.js": "text/javascript", "/ui/vendor/uplot/LICENSE": "",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) || len(body) == 0 {
			t.Errorf("GET %s: %s %s, %d bytes", path, resp.Status, resp.Header.Get("Content-Type"), len(body))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
		if path == "/ui/views/decisions.js" && (!strings.Contains(string(body), `p.set("limit", "100000")`) || strings.Contains(string(body), `p.delete("limit")`)) {
			t.Error("the CSV export is not bounded")
		}
	}
	for _, path := range []string{"/ui/nope.js", "/ui/views/", "/other"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", path, resp.Status)
		}
	}
}

// TestUIKnowsEveryReason: the page's reason menu lists every reason a
// decision has, and no other, so that a new reason cannot go unsearchable.
func TestUIKnowsEveryReason(t *testing.T) {
	js, err := uiFiles.ReadFile("ui/views/decisions.js")
	if err != nil {
		t.Fatal(err)
	}
	line := string(js)[strings.Index(string(js), `["reason", "reason", [`):]
	line = line[:strings.Index(line, "]]")]
	want := []string{`""`, `"dry-run"`}
	for _, r := range rules.Reasons() {
		want = append(want, strconv.Quote(string(r)))
	}
	got := regexp.MustCompile(`"[a-z-]*"`).FindAllString(line[strings.Index(line, "[\""+"\""):], -1)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("the page's reasons %v, want %v (rules.Reasons and dry-run)", got, want)
	}
}

// GET /v1/verify and audit verify --format json print the same report.
func TestVerifyReportJSON(t *testing.T) {
	v := &audit.Verification{Records: 3, Writers: map[string]uint64{"w1": 3},
		Breaks: []audit.Break{{Kind: audit.BreakEdited, Writer: "w1", Seq: 2, RequestID: "r2", Time: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC),
			Problem: "edited: its content does not match its hash"}}}
	v.OpenEnd("w1", 3)
	b, err := json.Marshal(NewVerifyReport(v, audit.VerifyOptions{Since: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}))
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"ok":false,"records":3,"writers":{"w1":3},"count":1,"breaks":[{"kind":"edited","writer":"w1","seq":2,"request_id":"r2","time":"2026-12-01T10:00:00Z","problem":"edited: its content does not match its hash"}],"unchecked":["the end of writer w1's chain (record 3): no later record links to it, so deleted newest records would not show; give its write-ahead log (--data-dir), or ask its running server (GET /v1/verify)"],"since":"2026-12-01T00:00:00Z"}`
	if string(b) != want {
		t.Errorf("report %s\nwant   %s", b, want)
	}
}

// TestVerifyHandlerTakesOnlySinceAndUntil: /v1/verify reports on a time
// range; any other parameter, or a time it cannot read, is a 400.
func TestVerifyHandlerTakesOnlySinceAndUntil(t *testing.T) {
	now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	srv := httptest.NewServer(VerifyHandler(&memStore{}, nil, func() time.Time { return now }))
	defer srv.Close()
	for query, want := range map[string]int{
		"":                           http.StatusOK,
		"since=7d&until=2026-12-03":  http.StatusOK,
		"since=yesterday":            http.StatusBadRequest,
		"host=api.stripe.com":        http.StatusBadRequest,
		"since=7d&since=1d":          http.StatusBadRequest,
		"until=2262-04-12T00:00:00Z": http.StatusBadRequest,
		"since=%zz":                  http.StatusBadRequest,
	} {
		resp, err := http.Get(srv.URL + "/v1/verify?" + query)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("/v1/verify?%s: %d %s, want %d", query, resp.StatusCode, body, want)
		}
		if want == http.StatusOK && !strings.Contains(string(body), `"count": 0`) {
			t.Errorf("/v1/verify?%s: %s", query, body)
		}
	}
}
