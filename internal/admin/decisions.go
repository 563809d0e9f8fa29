package admin

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/when"
)

// MaxLimit is the most records one query may ask for.
const MaxLimit = 1_000_000

// FilterFromQuery reads a Filter from URL query parameters, as
// /v1/decisions and audit query share them.
func FilterFromQuery(get func(string) string, now time.Time) (audit.Filter, error) {
	var f audit.Filter
	var err error
	if f.Since, err = when.ParseSince(get("since"), now); err != nil {
		return f, fmt.Errorf("since: %w", err)
	}
	if f.Until, err = when.ParseSince(get("until"), now); err != nil {
		return f, fmt.Errorf("until: %w", err)
	}
	f.Principal, f.Namespace, f.Host, f.Rule = get("principal"), get("namespace"), get("host"), get("rule")
	f.Decision = get("decision")
	if f.Decision != "" && f.Decision != audit.Allow && f.Decision != audit.Deny {
		return f, fmt.Errorf("decision %q: want allow or deny", f.Decision)
	}
	if v := get("dry_run"); v != "" {
		if f.DryRun, err = strconv.ParseBool(v); err != nil {
			return f, fmt.Errorf("dry_run %q: want true or false", v)
		}
	}
	if v := get("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 0 || f.Limit > MaxLimit {
			return f, fmt.Errorf("limit %q: want a number from 0 (no limit) to %d", v, MaxLimit)
		}
	}
	f.Cursor = get("cursor")
	return f, nil
}

// DecisionsHandler serves GET /v1/decisions from s: the Filter's fields as query
// parameters (since, until, principal, namespace, host, decision, rule,
// dry_run, limit, cursor), JSON by default, NDJSON for Accept:
// application/x-ndjson, CSV for text/csv (or format=json|ndjson|csv).
// Records are streamed as they are read. limit defaults to 1,000 for JSON.
func DecisionsHandler(s audit.Store, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f, err := FilterFromQuery(q.Get, now())
		if err == nil && f.Cursor != "" {
			_, err = audit.ParseCursor(f.Cursor)
		}
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
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Trailer", "X-Next-Cursor")
		enc, _ := NewEncoder(format, w)
		next, err := s.Query(r.Context(), f, enc.Encode)
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
