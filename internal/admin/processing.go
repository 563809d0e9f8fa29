package admin

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/compliance"
	"github.com/egress-authz/egress-authz/internal/when"
	"github.com/egress-authz/egress-authz/rules"
)

// ProcessingHandler serves GET /v1/processing?since=90d&until=T: the
// processor register as observed (compliance.Processing, as report
// processing --format json prints it), with the rule set served now as
// the register and the archive for the versions that decided. The /ui/
// processors view reads it.
func ProcessingHandler(s audit.Store, current func() *rules.Set, archive audit.RuleSetArchive, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		for k, v := range q {
			if k != "since" && k != "until" {
				http.Error(w, k+": unknown parameter (known: since, until)", http.StatusBadRequest)
				return
			}
			if len(v) != 1 {
				http.Error(w, k+": given more than once (known: since, until)", http.StatusBadRequest)
				return
			}
		}
		t := now().UTC()
		opts := compliance.ProcessingOptions{Until: t, Current: current()}
		var err error
		since := q.Get("since")
		if since == "" {
			since = "90d"
		}
		if opts.Since, err = when.ParseSince(since, t); err != nil {
			http.Error(w, "since: "+err.Error(), http.StatusBadRequest)
			return
		}
		if u := q.Get("until"); u != "" {
			if opts.Until, err = when.ParseSince(u, t); err != nil {
				http.Error(w, "until: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		if !opts.Since.Before(opts.Until) {
			http.Error(w, "since must be before until", http.StatusBadRequest)
			return
		}
		if archive != nil {
			opts.RuleSet = func(ctx context.Context, v string) (*rules.Set, error) {
				return compliance.ArchivedSet(ctx, archive, v)
			}
		}
		rep, err := compliance.Processing(r.Context(), s, opts)
		if err != nil {
			status := http.StatusServiceUnavailable
			if errors.Is(err, context.Canceled) {
				status = http.StatusRequestTimeout
			}
			http.Error(w, "processing report: "+err.Error(), status)
			return
		}
		WriteJSON(w, http.StatusOK, rep)
	})
}
