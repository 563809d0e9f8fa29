package admin

import (
	"net/http"
	"strconv"
	"time"

	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/rules"
)

// NearMisses is how many rules that did not match an explanation shows,
// nearest first, unless every rule is asked for.
const NearMisses = 5

// ExplainHandler serves GET /v1/explain: how the rule table that table
// returns (the live one) decides one request, and why each rule near it
// did or did not match. Query parameters: principal, method (default GET)
// and url, or sni and port (default 443) for a TLS-passthrough connection;
// all=true lists every rule instead of the matching ones and the nearest
// misses. The answer is the JSON of "rules explain --format json"; a
// principal, host, method or path longer than rules.MaxExplainField is a
// 400 saying so.
//
// The request is built as the check command builds it (internal/checkreq),
// so it is decided exactly as the real request would be; nothing is
// recorded in the decision log.
func ExplainHandler(table func() *rules.Table, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var req rules.Request
		switch url, sni := q.Get("url"), q.Get("sni"); {
		case url != "" && sni == "":
			var err error
			req, err = checkreq.HTTP{Principal: q.Get("principal"), Method: q.Get("method"), URL: url}.Request()
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		case sni != "" && url == "":
			if q.Get("method") != "" {
				http.Error(w, "method: a TLS-passthrough (sni) connection has no method", http.StatusBadRequest)
				return
			}
			port := uint64(443)
			if p := q.Get("port"); p != "" {
				var err error
				if port, err = strconv.ParseUint(p, 10, 16); err != nil || port == 0 {
					http.Error(w, "port "+strconv.Quote(p)+": want a port number (1-65535)", http.StatusBadRequest)
					return
				}
			}
			req = checkreq.SNIRequest(q.Get("principal"), sni, uint32(port))
		default:
			http.Error(w, "want url=URL (with principal and method) or sni=HOST (with principal and port)", http.StatusBadRequest)
			return
		}
		near := NearMisses
		if all, _ := strconv.ParseBool(q.Get("all")); all {
			near = -1
		}
		e, err := table().Explain(req, now(), near)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		WriteJSON(w, http.StatusOK, e)
	})
}
