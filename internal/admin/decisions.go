package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/when"
	"github.com/egress-authz/egress-authz/rules"
)

// MaxLimit is the most records one query may ask for.
const MaxLimit = 1_000_000

// Param is a filter of the decision log, as GET /v1/decisions, GET
// /v1/stats and audit query (as --NAME) take it.
type Param struct {
	Name string
	Help string // for audit query's flags; the back-quoted word names the value
	set  func(f *audit.Filter, v string, now time.Time) error
}

// FilterParams are every filter, in the order help lists them.
var FilterParams = []Param{
	{"since", "records from this `TIME` on: a duration back from now (15m, 24h, 7d), a day or RFC 3339", func(f *audit.Filter, v string, now time.Time) (err error) {
		f.Since, err = when.ParseSince(v, now)
		return err
	}},
	{"until", "records before this `TIME` (same forms)", func(f *audit.Filter, v string, now time.Time) (err error) {
		f.Until, err = when.ParseSince(v, now)
		return err
	}},
	{"request_id", "only the decision of this request `ID`", func(f *audit.Filter, v string, _ time.Time) error { f.RequestID = v; return nil }},
	{"cluster", "only decisions of this `CLUSTER` (serve --cluster)", func(f *audit.Filter, v string, _ time.Time) error { f.Cluster = v; return nil }},
	{"principal", "only this caller `SPIFFE_ID`", func(f *audit.Filter, v string, _ time.Time) error { f.Principal = v; return nil }},
	{"namespace", "only callers in this `NAMESPACE`", func(f *audit.Filter, v string, _ time.Time) error { f.Namespace = v; return nil }},
	{"host", "only this destination `HOST`, in any case, *.domain for the names below domain, :PORT for a port", func(f *audit.Filter, v string, _ time.Time) (err error) {
		f.Host, err = audit.ParseHostPattern(v)
		return err
	}},
	{"port", "only this destination `PORT`", func(f *audit.Filter, v string, _ time.Time) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: want a port number from 1 to 65535", v)
		}
		f.Port = n
		return nil
	}},
	{"method", "only this HTTP `METHOD`", func(f *audit.Filter, v string, _ time.Time) error { f.Method = v; return nil }},
	{"decision", "only `allow` or deny", func(f *audit.Filter, v string, _ time.Time) error {
		if v != audit.Allow && v != audit.Deny {
			return fmt.Errorf("%q: want allow or deny", v)
		}
		f.Decision = v
		return nil
	}},
	{"reason", "only this `REASON` (no-matching-rule, denied-by-rule, dry-run, ...)", func(f *audit.Filter, v string, _ time.Time) error {
		if !slices.Contains(rules.Reasons(), rules.Reason(v)) && v != "dry-run" {
			return fmt.Errorf("%q is no reason a decision has (want one of %s, or dry-run)", v, reasonWords())
		}
		f.Reason = v
		return nil
	}},
	{"rule", "only decisions by this rule `ID`", func(f *audit.Filter, v string, _ time.Time) error { f.Rule = v; return nil }},
	{"processor", "only decisions by rules of this GDPR `PROCESSOR` (as the register names it)", func(f *audit.Filter, v string, _ time.Time) error { f.Processor = v; return nil }},
	{"enforced", "only enforced decisions (`true`) or only dry-run outcomes (false)", func(f *audit.Filter, v string, _ time.Time) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q: want true or false", v)
		}
		f.Enforced = &b
		return nil
	}},
	{"dry_run", "only dry-run outcomes (`true`; the same as enforced=false)", func(f *audit.Filter, v string, _ time.Time) (err error) {
		if f.DryRun, err = strconv.ParseBool(v); err != nil {
			return fmt.Errorf("%q: want true or false", v)
		}
		return nil
	}},
	{"limit", "at most `N` records (0: all)", func(f *audit.Filter, v string, _ time.Time) (err error) {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 0 || f.Limit > MaxLimit {
			return fmt.Errorf("%q: want a number from 0 (no limit) to %d", v, MaxLimit)
		}
		return nil
	}},
	{"cursor", "continue after a previous page (`C` as printed)", func(f *audit.Filter, v string, _ time.Time) error {
		if _, err := audit.ParseCursor(v); err != nil {
			return err
		}
		f.Cursor = v
		return nil
	}},
}

func reasonWords() string {
	var out []string
	for _, r := range rules.Reasons() {
		out = append(out, string(r))
	}
	return strings.Join(out, ", ")
}

// ParamError is a query parameter that cannot be a filter: an unknown
// one, one given twice, or a value that does not parse. Its message lists
// the parameters known, so that a typo is never a silently unfiltered
// answer.
type ParamError struct {
	Name string
	Err  error
}

func (e *ParamError) Error() string { return e.Name + ": " + e.Err.Error() }

// knownParams lists the filter names, and extra ones (format).
func knownParams(extra []string) string {
	var names []string
	for _, p := range FilterParams {
		names = append(names, p.Name)
	}
	return strings.Join(append(names, extra...), ", ")
}

// ParseFilter reads a Filter from query parameters: every key must be a
// filter (or one of extra, which the caller reads), given once. An error
// is a *ParamError.
func ParseFilter(vals url.Values, now time.Time, extra ...string) (audit.Filter, error) {
	var f audit.Filter
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if len(vals[k]) > 1 {
			return f, &ParamError{k, fmt.Errorf("given %d times; give each filter once (known: %s)", len(vals[k]), knownParams(extra))}
		}
		if slices.Contains(extra, k) {
			continue
		}
		i := slices.IndexFunc(FilterParams, func(p Param) bool { return p.Name == k })
		if i < 0 {
			return f, &ParamError{k, fmt.Errorf("unknown filter (known: %s)", knownParams(extra))}
		}
		if err := FilterParams[i].set(&f, vals[k][0], now); err != nil {
			return f, &ParamError{k, err}
		}
	}
	return f, nil
}

// parseQuery reads a request's query string strictly: a malformed pair
// (a bad escape, a ';') is an error, where url.Query would drop it, and
// with it a filter.
func parseQuery(r *http.Request, now time.Time, extra ...string) (audit.Filter, url.Values, error) {
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return audit.Filter{}, nil, &ParamError{"query", fmt.Errorf("malformed: %v", err)}
	}
	f, err := ParseFilter(vals, now, extra...)
	return f, vals, err
}

// DecisionsHandler serves GET /v1/decisions from s: the FilterParams as
// query parameters (an unknown or repeated one is a 400 naming the known
// ones), JSON by default, NDJSON for Accept: application/x-ndjson, CSV for
// text/csv (or format=json|ndjson|csv). Records are streamed as they are
// read; the next page's cursor is the X-Next-Cursor trailer (and
// next_cursor in JSON), never a line of the body. limit defaults to 1,000
// for JSON.
//
// A reader that stops reading is cut off: each write of the response may
// block for ChunkTimeout at most. The store is read a page of PageRecords
// at a time, each page in a read of its own that ends before the page is
// written, so that a slow reader holds no read transaction open (nor a
// connection the verifier and the other pages need). At most MaxExports
// responses of more than a page are written at once; another is a 503
// with Retry-After.
func DecisionsHandler(s audit.Store, now func() time.Time) http.Handler {
	exports := make(chan struct{}, MaxExports)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, q, err := parseQuery(r, now(), "format")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		format := q.Get("format")
		if format == "" {
			accept := r.Header.Get("Accept")
			switch {
			case strings.Contains(accept, "application/x-ndjson"):
				format = "ndjson"
			case strings.Contains(accept, "text/csv"):
				format = "csv"
			default:
				format = "json"
			}
		}
		ctype := map[string]string{"json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}[format]
		if ctype == "" {
			http.Error(w, "format: want json, ndjson or csv", http.StatusBadRequest)
			return
		}
		if f.Limit == 0 && format == "json" && q.Get("limit") == "" {
			f.Limit = 1000
		}
		if f.Limit == 0 || f.Limit > PageRecords {
			select {
			case exports <- struct{}{}:
				defer func() { <-exports }()
			default:
				w.Header().Set("Retry-After", "5")
				http.Error(w, fmt.Sprintf("%d exports are under way; retry later, or ask for a page (limit up to %d)", MaxExports, PageRecords), http.StatusServiceUnavailable)
				return
			}
		}
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Trailer", "X-Next-Cursor")
		enc, _ := NewEncoder(format, &deadlineWriter{w: w, rc: http.NewResponseController(w)})
		next, err := queryPaged(r.Context(), s, f, enc.Encode)
		if err != nil {
			if errors.Is(err, r.Context().Err()) {
				return
			}
			// Headers may be out already; say so in the body as well.
			http.Error(w, "query: "+err.Error(), http.StatusInternalServerError)
			return
		}
		_ = enc.Close(next)
		w.Header().Set("X-Next-Cursor", next) // a trailer: the body is streamed
	})
}

// The bounds of a response, for a reader that stops reading (see
// DecisionsHandler). Variables, so that a test can make them small.
var (
	ChunkTimeout = 30 * time.Second
	PageRecords  = 5000
	MaxExports   = 4
)

// deadlineWriter gives each write of a response ChunkTimeout to complete.
type deadlineWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if err := d.rc.SetWriteDeadline(time.Now().Add(ChunkTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return 0, err
	}
	return d.w.Write(p)
}

// queryPaged is s.Query(f) read a page at a time, each page read whole
// before fn sees its records.
func queryPaged(ctx context.Context, s audit.Store, f audit.Filter, fn func(*audit.Record) error) (string, error) {
	want := f.Limit // 0: all
	page := make([]audit.Record, 0, min(PageRecords, max(want, 1)))
	for {
		g := f
		g.Limit = PageRecords
		if want > 0 {
			g.Limit = min(PageRecords, want)
		}
		page = page[:0]
		next, err := s.Query(ctx, g, func(r *audit.Record) error {
			page = append(page, *r)
			return nil
		})
		if err != nil {
			return "", err
		}
		for i := range page {
			if err := fn(&page[i]); err != nil {
				return "", err
			}
		}
		if want > 0 {
			if want -= len(page); want <= 0 {
				return next, nil
			}
		}
		if next == "" {
			return "", nil
		}
		f.Cursor = next
	}
}
