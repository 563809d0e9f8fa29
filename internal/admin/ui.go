package admin

import (
	"context"
	"embed"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/egress-authz/egress-authz/internal/audit"
)

//go:embed ui/index.html
var uiFiles embed.FS

// UIHandler serves the auditors' page at /ui/: a static page that queries
// /v1/decisions and /v1/verify from the browser. The page holds no data,
// so it may be served without the admin token; its requests carry the
// token the auditor types in.
func UIHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ui/" {
			http.NotFound(w, r)
			return
		}
		b, _ := uiFiles.ReadFile("ui/index.html")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(b)
	})
}

// VerifyReport is a Verification as GET /v1/verify and audit verify
// --format json print it.
type VerifyReport struct {
	OK      bool              `json:"ok"`
	Records int               `json:"records"`
	Writers map[string]uint64 `json:"writers"` // writer -> last sequence number
	Breaks  []audit.Break     `json:"breaks"`  // the first break of each broken chain
}

// NewVerifyReport returns the report of v.
func NewVerifyReport(v *audit.Verification) VerifyReport {
	return VerifyReport{OK: v.OK(), Records: v.Records, Writers: v.Writers, Breaks: v.Breaks}
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
	last *VerifyReport
	at   time.Time
}

func (v *verifier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v.mu.Lock()
	last := v.last
	if last != nil && v.now().Sub(v.at) >= VerifyReuse {
		last = nil
	}
	v.mu.Unlock()
	if last != nil {
		WriteJSON(w, http.StatusOK, last)
		return
	}
	ctx := context.WithoutCancel(r.Context())
	ch := v.runs.DoChan("verify", func() (any, error) {
		var heads map[string]uint64
		if v.heads != nil {
			heads = v.heads() // before the scan: heads only grow
		}
		ver, err := audit.Verify(ctx, v.store)
		if err != nil {
			return nil, err
		}
		ver.CheckHeads(heads)
		rep := NewVerifyReport(ver)
		v.mu.Lock()
		v.last, v.at = &rep, v.now()
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
