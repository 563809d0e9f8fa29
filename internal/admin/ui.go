package admin

import (
	"context"
	"embed"
	"net/http"

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

// VerifyHandler serves GET /v1/verify: the result of checking every hash
// chain of the decision log, {"ok", "records", "writers", "breaks"}.
func VerifyHandler(s audit.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		v, err := audit.Verify(ctx, s)
		if err != nil {
			http.Error(w, "verify: "+err.Error(), http.StatusInternalServerError)
			return
		}
		WriteJSON(w, http.StatusOK, map[string]any{"ok": v.OK(), "records": v.Records, "writers": v.Writers, "breaks": v.Breaks})
	})
}
