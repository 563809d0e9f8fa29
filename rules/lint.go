package rules

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Lint returns warnings about a valid rule set: things that are allowed
// but probably not what the author meant. now and expiryWindow decide
// which rules count as expiring soon.
func Lint(set *Set, now time.Time, expiryWindow time.Duration) []Diagnostic {
	var out []Diagnostic
	warn := func(r *Rule, format string, args ...any) {
		out = append(out, Diagnostic{Pos: r.Pos, Msg: "rule " + quoteShort(r.ID) + ": " + fmt.Sprintf(format, args...)})
	}
	for _, r := range set.Rules {
		if !r.Expires.IsZero() {
			day := r.Expires.Format(time.DateOnly)
			switch {
			case !now.Before(r.Expires):
				warn(r, "expired on %s and no longer matches; remove it", day)
			case r.Expires.Sub(now) <= expiryWindow:
				warn(r, "expires on %s (in %s); renew it or plan its removal", day, humanDays(r.Expires.Sub(now)))
			}
		}
		for _, p := range r.Principals {
			td, err := ParsePrincipalTrustDomain(p)
			inSet := func(trusted string) bool { return globMatch(td, trusted) } // td may hold a '*'
			if err == nil && !slices.ContainsFunc(set.TrustDomains, inSet) {
				warn(r, "principal %s is outside trustDomains %v, so it never matches", quoteShort(p), set.TrustDomains)
			}
		}
		if r.Action == Allow && r.Mode == Enforce {
			// A rule without from is also what a file caught half-written
			// looks like (the from lines not there yet): say plainly what
			// it lets in.
			anyHost := len(r.Hosts) == 0 || slices.Contains(r.Hosts, "*")
			anyone := len(r.Principals) == 0 && len(r.Namespaces) == 0 && len(r.ServiceAccounts) == 0
			tds := strings.Join(set.TrustDomains, ", ")
			switch {
			case anyHost && anyone:
				warn(r, "has no from and allows any host: it lets every workload in the trust domains (%s) reach every host; overly broad", tds)
			case anyHost:
				warn(r, "allows any host: overly broad; list the hosts this workload needs")
			case anyone:
				warn(r, "has no from: it matches every workload in the trust domains (%s); overly broad, name principals, namespaces or service accounts", tds)
			}
		}
		if r.Action == Deny && r.Mode == Enforce && r.HTTPOnly() {
			warn(r, "names methods or paths, so it never matches TLS-passthrough (SNI-only) connections: an allow rule for the same hosts without methods/paths still lets those through")
		}
	}
	return out
}

// ParsePrincipalTrustDomain returns the trust domain of a principal pattern.
func ParsePrincipalTrustDomain(p string) (string, error) {
	rest, ok := strings.CutPrefix(p, "spiffe://")
	if !ok {
		return "", fmt.Errorf("%s is not a SPIFFE ID", quoteShort(p))
	}
	td, _, _ := strings.Cut(rest, "/")
	return td, nil
}

func humanDays(d time.Duration) string {
	days := int(d.Hours() / 24)
	switch days {
	case 0:
		return "less than a day"
	case 1:
		return "1 day"
	}
	return fmt.Sprintf("%d days", days)
}
