package admin

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/compliance"
)

// RuleSetHandler serves GET /v1/rulesets/{version}: a rule-set version
// from the archive, its files as they were when it decided, as JSON
// ({"version", "files": [{"name", "content"}]}). A version not kept is a
// 404; one not written as versions are, or any query parameter, a 400; a
// copy whose files do not hash to its version (edited) a 500, never the
// edited files.
func RuleSetHandler(a audit.RuleSetArchive) http.Handler {
	get := func(ctx context.Context, v string) (audit.RuleSet, error) {
		rs, _, err := compliance.VerifiedRuleSet(ctx, a, v)
		return rs, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := r.PathValue("version")
		if len(r.URL.Query()) > 0 {
			http.Error(w, "/v1/rulesets/{version} takes no query parameters", http.StatusBadRequest)
			return
		}
		if !audit.ValidVersion(v) {
			http.Error(w, "version "+strconv.Quote(v)+": a rule-set version is 16 hex digits, as /v1/rules and the decision records show it", http.StatusBadRequest)
			return
		}
		rs, err := get(r.Context(), v)
		if errors.Is(err, audit.ErrRuleSetNotFound) {
			http.Error(w, "rule set "+v+" is not in the archive", http.StatusNotFound)
			return
		}
		if errors.Is(err, compliance.ErrRuleSetAltered) {
			http.Error(w, "rule set "+v+" was altered where it is kept: "+err.Error(), http.StatusInternalServerError)
			return
		}
		if err != nil {
			http.Error(w, "rule set "+v+": "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		WriteJSON(w, http.StatusOK, rs)
	})
}
