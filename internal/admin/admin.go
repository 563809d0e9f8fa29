// Package admin is the server's admin HTTP surface: health, readiness, the
// served rule set, explanations, the decision log for auditors
// (GET /v1/decisions, /v1/stats, /v1/verify and the auditors' page, with the output
// encoders audit query shares), and the handlers other packages contribute
// (metrics).
package admin

import (
	"encoding/json"
	"net/http"

	"github.com/egress-authz/egress-authz/rules"
)

// Options says what the admin handler serves. Nil fields are left out.
type Options struct {
	// Rules reports the served rule set; /readyz is ready once it is set.
	Rules func() rules.Status
	// Extra handlers mounted by path pattern (e.g. "/metrics",
	// "GET /v1/decisions", "/ui/").
	Extra map[string]http.Handler
}

// Handler returns the admin HTTP handler.
func Handler(opts Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if opts.Rules == nil || opts.Rules().Version == "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("no rule set loaded\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if opts.Rules != nil {
		mux.HandleFunc("GET /v1/rules", func(w http.ResponseWriter, r *http.Request) {
			WriteJSON(w, http.StatusOK, opts.Rules())
		})
	}
	for pattern, h := range opts.Extra {
		mux.Handle(pattern, h)
	}
	return mux
}

// WriteJSON writes v as an indented JSON response.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
