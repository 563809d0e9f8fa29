package admin

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/egress-authz/egress-authz/internal/audit"
)

//go:embed ui
var uiFiles embed.FS

// UplotVersion is the version of uPlot vendored in ui/vendor/uplot (from
// its npm package's dist/, with its licence).
const UplotVersion = "1.6.32"

// UIHandler serves the auditors' console at /ui/: static files (ui/, no
// build step) that query /v1/stats, /v1/decisions and /v1/verify from the
// browser. The page holds no data, so it may be served without the admin
// token; its requests carry the token the auditor types in. Scripts and
// styles come from /ui/ only.
func UIHandler() http.Handler {
	sub, _ := fs.Sub(uiFiles, "ui")
	files := http.StripPrefix("/ui/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/ui/") || strings.HasSuffix(r.URL.Path, "/") && r.URL.Path != "/ui/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// VerifyReport is a Verification as GET /v1/verify and audit verify
// --format json print it.
type VerifyReport struct {
	OK        bool              `json:"ok"`
	Records   int               `json:"records"`
	Writers   map[string]uint64 `json:"writers"` // writer -> last sequence number
	Count     int               `json:"count"`   // breaks
	Breaks    []audit.Break     `json:"breaks"`  // every break, by writer and sequence number
	Unchecked []string          `json:"unchecked"`
	Since     time.Time         `json:"since,omitzero"`
	Until     time.Time         `json:"until,omitzero"`
}

// NewVerifyReport returns the report of v, made with opts.
func NewVerifyReport(v *audit.Verification, opts audit.VerifyOptions) VerifyReport {
	rep := VerifyReport{OK: v.OK(), Records: v.Records, Writers: v.Writers, Count: len(v.Breaks), Breaks: v.Breaks,
		Unchecked: v.Unchecked, Since: opts.Since, Until: opts.Until}
	if rep.Breaks == nil {
		rep.Breaks = []audit.Break{}
	}
	if rep.Unchecked == nil {
		rep.Unchecked = []string{}
	}
	return rep
}

// onlyParams refuses every query parameter but names, listing them.
func onlyParams(vals url.Values, names ...string) error {
	for k := range vals {
		if !slices.Contains(names, k) {
			return &ParamError{k, fmt.Errorf("unknown parameter (known: %s)", strings.Join(names, ", "))}
		}
	}
	return nil
}

// VerifyReuse is how long a verification answers later GET /v1/verify
// requests.
const VerifyReuse = 5 * time.Second

// VerifyHandler serves GET /v1/verify: the result of checking every hash
// chain of the decision log, as a VerifyReport. Verifying reads the whole
// log, so concurrent requests share one run, and its result answers the
// requests of the next VerifyReuse too. A request that goes away does not
// stop a run others may be waiting for. now is the clock.
//
// heads, when not nil, says how far the running writer has stored each of
// its chains in s, so that a deleted tail is reported too (see
// audit.Verification.CheckHeads).
func VerifyHandler(s audit.Store, heads func() map[string]uint64, now func() time.Time) http.Handler {
	return &verifier{store: s, heads: heads, now: now}
}

type verifier struct {
	store audit.Store
	heads func() map[string]uint64
	now   func() time.Time
	runs  singleflight.Group

	mu   sync.Mutex
	last map[string]cachedReport // by the query it answers
}

type cachedReport struct {
	rep *VerifyReport
	at  time.Time
}

// ServeHTTP answers GET /v1/verify[?since=T&until=T]: the breaks of the
// records of that time (the whole chains are walked).
func (v *verifier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	vals, err := url.ParseQuery(r.URL.RawQuery)
	var opts audit.VerifyOptions
	if err == nil {
		err = onlyParams(vals, "since", "until")
	}
	if err == nil {
		var f audit.Filter
		f, err = ParseFilter(vals, v.now())
		opts.Since, opts.Until = f.Since, f.Until
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	key := opts.Since.String() + "|" + opts.Until.String()
	v.mu.Lock()
	c, ok := v.last[key]
	if ok && v.now().Sub(c.at) >= VerifyReuse {
		ok = false
	}
	v.mu.Unlock()
	if ok {
		WriteJSON(w, http.StatusOK, c.rep)
		return
	}
	ctx := context.WithoutCancel(r.Context())
	ch := v.runs.DoChan(key, func() (any, error) {
		var heads map[string]uint64
		if v.heads != nil {
			heads = v.heads() // before the scan: heads only grow
		}
		ver, err := audit.Verify(ctx, v.store, opts)
		if err != nil {
			return nil, err
		}
		ver.CheckHeads(heads)
		rep := NewVerifyReport(ver, opts)
		v.mu.Lock()
		if v.last == nil {
			v.last = map[string]cachedReport{}
		}
		maps.DeleteFunc(v.last, func(_ string, c cachedReport) bool { return v.now().Sub(c.at) >= VerifyReuse })
		v.last[key] = cachedReport{&rep, v.now()}
		v.mu.Unlock()
		return &rep, nil
	})
	select {
	case <-r.Context().Done():
	case res := <-ch:
		if res.Err != nil {
			http.Error(w, "verify: "+res.Err.Error(), http.StatusInternalServerError)
			return
		}
		WriteJSON(w, http.StatusOK, res.Val)
	}
}
