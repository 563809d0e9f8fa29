package rules

// The vocabulary of a decision, written down once: what a decision is made
// from (Request), what it says (Decision, Reason), and the words decision
// records, responses, metrics and tools use for it. Every list of reasons
// in the tree is Reasons; every "allow"/"deny" is DecisionWord.

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Reason says why a decision was made. Deny reasons are checked in the
// order the SPEC lists them; the first that applies is given.
type Reason string

// The reasons a Decision carries. A new one must also go into reasons
// (TestReasonsListsEveryReason fails otherwise) and Describe.
const (
	ReasonAllowed          Reason = "allowed-by-rule"
	ReasonInvalidRequest   Reason = "invalid-request"
	ReasonNoIdentity       Reason = "no-identity"
	ReasonInvalidIdentity  Reason = "invalid-identity"
	ReasonUntrustedDomain  Reason = "untrusted-trust-domain"
	ReasonNoHost           Reason = "no-host"
	ReasonInvalidHost      Reason = "invalid-host"
	ReasonUnsafePath       Reason = "unsafe-path"
	ReasonDeniedByRule     Reason = "denied-by-rule"
	ReasonNoMatchingRule   Reason = "no-matching-rule"
	ReasonAuditUnavailable Reason = "audit-unavailable"
)

// reasons is every Reason: allowed-by-rule, then the deny reasons in the
// SPEC's order ("Deny reasons").
var reasons = [...]Reason{
	ReasonAllowed,
	ReasonInvalidRequest, ReasonNoIdentity, ReasonInvalidIdentity, ReasonUntrustedDomain,
	ReasonNoHost, ReasonInvalidHost, ReasonUnsafePath, ReasonDeniedByRule, ReasonNoMatchingRule,
	ReasonAuditUnavailable,
}

// Reasons returns every reason a decision can carry: allowed-by-rule,
// then the deny reasons in the order the SPEC checks them. The slice is
// the caller's own.
func Reasons() []Reason {
	out := make([]Reason, len(reasons))
	copy(out, reasons[:])
	return out
}

// Describe says in plain words why a request was denied with reason r; d,
// when not nil, supplies the request's identity for the words.
func (r Reason) Describe(d *Decision) string {
	switch r {
	case ReasonAllowed:
		return "an allow rule matched"
	case ReasonInvalidRequest:
		return "the request itself is unusable (no attributes, invalid UTF-8, or a method that is not an HTTP token)"
	case ReasonNoIdentity:
		return "the caller has no identity (no SPIFFE ID)"
	case ReasonInvalidIdentity:
		return "the caller's identity is not a valid SPIFFE ID"
	case ReasonUntrustedDomain:
		if d != nil && d.Identity.TrustDomain != "" {
			return fmt.Sprintf("the caller's trust domain %s is not in the rule set's trustDomains", d.Identity.TrustDomain)
		}
		return "the caller's trust domain is not in the rule set's trustDomains"
	case ReasonNoHost:
		return "the request names no host (neither an authority nor an SNI)"
	case ReasonInvalidHost:
		return "the host or port cannot be parsed (userinfo, a bad port, a port in an SNI, or characters a host name cannot have)"
	case ReasonUnsafePath:
		return "the path cannot be normalized safely (an encoded / or \\, a raw \\, an invalid escape, a control character, or no leading /)"
	case ReasonDeniedByRule:
		return "a deny rule matched"
	case ReasonNoMatchingRule:
		return "no rule allows this request"
	case ReasonAuditUnavailable:
		return "the decision could not be recorded in the decision log"
	}
	return string(r)
}

// Request is what a decision is made from, in the caller's raw form: Table
// validates and normalizes it. It is comparable, so it can key a cache.
type Request struct {
	Principal string // SPIFFE ID of the calling workload
	Host      string // HTTP authority (may carry a port), or the TLS SNI when SNI is set
	SNI       bool   // no HTTP attributes: a TLS-passthrough connection
	Port      int    // port to use when Host carries none (scheme default or socket port); 0 if unknown
	Method    string // empty for SNI requests
	Path      string // raw request target, query included; empty for SNI requests
}

// Identity is what a SPIFFE ID says about a workload.
type Identity struct {
	TrustDomain    string
	Namespace      string // from an Istio-style /ns/NS/sa/SA path, else empty
	ServiceAccount string
}

// ParseIdentity parses a SPIFFE ID and reads the namespace and service
// account from an Istio-style path of exactly /ns/NS/sa/SA.
func ParseIdentity(principal string) (Identity, bool) {
	id, err := spiffeid.FromString(principal)
	if err != nil {
		return Identity{}, false
	}
	ident := Identity{TrustDomain: id.TrustDomain().Name()}
	rest, ok := strings.CutPrefix(id.Path(), "/ns/")
	if !ok {
		return ident, true
	}
	ns, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return ident, true
	}
	sa, ok := strings.CutPrefix(rest, "sa/")
	if !ok || sa == "" || strings.IndexByte(sa, '/') >= 0 {
		return ident, true
	}
	ident.Namespace, ident.ServiceAccount = ns, sa
	return ident, true
}

// Prepared is a Request as rules see it: the caller's identity and the
// normalized host, port and path.
type Prepared struct {
	Identity Identity
	Host     string // lower case, no trailing dot
	Port     int    // from the host, else the Request's Port; 0 if unknown
	Path     string // normalized, query removed; empty for SNI requests
}

// Prepare validates and normalizes req the way Decide does before it
// looks at any rule, checking in the SPEC's order: no-identity,
// invalid-identity, untrusted-trust-domain (when trusted says no; a nil
// trusted trusts every trust domain), no-host, invalid-host, unsafe-path.
// It returns the first reason that applies, or "" when rules can decide
// the request.
//
// On failure p holds what was established before the failing step, as a
// decision shows it: the trust domain alone for an untrusted caller (a
// namespace claimed in a trust domain we do not trust means nothing, and
// recording it would put foreign callers in an auditor's per-namespace
// queries), the identity once it is trusted, the host and port once they
// parse.
func Prepare(req Request, trusted func(trustDomain string) bool) (p Prepared, reason Reason) {
	if req.Principal == "" {
		return p, ReasonNoIdentity
	}
	ident, ok := ParseIdentity(req.Principal)
	if !ok {
		return p, ReasonInvalidIdentity
	}
	if trusted != nil && !trusted(ident.TrustDomain) {
		p.Identity.TrustDomain = ident.TrustDomain
		return p, ReasonUntrustedDomain
	}
	p.Identity = ident
	if req.Host == "" {
		return p, ReasonNoHost
	}
	host, port, ok := ParseAuthority(req.Host, req.SNI)
	if !ok {
		return p, ReasonInvalidHost
	}
	if port == 0 {
		port = req.Port
	}
	p.Host, p.Port = host, port
	if !req.SNI {
		path, ok := NormalizePath(req.Path)
		if !ok {
			return p, ReasonUnsafePath
		}
		p.Path = path
	}
	return p, ""
}

// Outcome is the would-be result of a dry-run rule that matched.
type Outcome struct {
	Rule  *Rule
	Allow bool
	index int
}

// Decision is a Table's answer for one Request.
type Decision struct {
	Allow    bool
	Reason   Reason
	Rule     *Rule     // the deciding rule; nil when none decided
	DryRun   []Outcome // dry-run rules that matched, in rule order
	Identity Identity
	Host     string // normalized host
	Port     int
	Path     string // normalized path (query removed)
	Version  string // the rule set's version
	Cached   bool   // set by Live when the decision came from its cache
}

// DecisionWord is how decision records, responses and explanations write
// a decision or a dry-run outcome: "allow" or "deny".
func DecisionWord(allow bool) string {
	if allow {
		return string(Allow)
	}
	return string(Deny)
}

// IsToken reports whether s is a non-empty HTTP token (RFC 9110 section
// 5.6.2), the syntax of a method name.
func IsToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
