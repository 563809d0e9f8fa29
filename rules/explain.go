package rules

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Explanation says, in plain words, how a Table decides a Request: the
// decision, and for every rule whether it matched and, if not, which of its
// fields the request failed and with which value.
//
// Its JSON form is what "rules explain --format json" and the admin
// endpoint GET /v1/explain print.
type Explanation struct {
	Request  Request
	Decision Decision
	// Summary is one sentence on the decision.
	Summary string
	// Rules holds every rule of the table in rule-set order; empty when the
	// request was denied before any rule was looked at (no identity, an
	// untrusted trust domain, an unsafe path...).
	Rules []RuleCheck
}

// RuleCheck is how one rule fared against a request.
type RuleCheck struct {
	Rule    *Rule
	Matched bool
	// Role says what a matching rule did: RoleDecides, RoleOutranked or
	// RoleDryRun. Empty when the rule did not match.
	Role string
	// Misses says why the rule did not match: one entry per field the
	// request failed, in the order Decide checks them, the host first.
	Misses []Miss
}

// Roles of a matching rule in a RuleCheck.
const (
	RoleDecides   = "decides"   // the deciding rule
	RoleOutranked = "outranked" // matched, but another enforce rule decided
	RoleDryRun    = "dry-run"   // a dry-run rule: its outcome is only recorded
)

// Miss is one field of a rule that a request did not match.
type Miss struct {
	Field string   `json:"field"` // the rule's key: hosts, ports, methods, paths, principals, namespaces, serviceAccounts, expires, tls
	Value string   `json:"value"` // the request's value ("" when it has none)
	Want  []string `json:"want,omitempty"`
	Why   string   `json:"why"` // the same in plain words
}

// Explain decides req as Decide does and explains the decision rule by rule.
// It is much slower than Decide and allocates: it is for people, not for
// the request path.
func (t *Table) Explain(req Request, now time.Time) Explanation {
	d := t.Decide(req, now)
	e := Explanation{Request: req, Decision: d, Summary: summary(&d)}
	switch d.Reason {
	case ReasonAllowed, ReasonDeniedByRule, ReasonNoMatchingRule:
	default:
		return e // decided before any rule was looked at
	}
	// The rules the host index offers for this host are exactly those
	// whose hosts match it, as in Decide.
	hostOK := make([]bool, len(t.rules))
	t.candidates(d.Host, func(idxs []int32) {
		for _, i := range idxs {
			hostOK[i] = true
		}
	})

	u := now.Unix()
	e.Rules = make([]RuleCheck, len(t.rules))
	for i := range t.rules {
		c := &t.rules[i]
		rc := RuleCheck{Rule: c.rule}
		if !hostOK[i] {
			verb := "is not"
			if slices.ContainsFunc(c.rule.Hosts, func(h string) bool { return strings.Contains(h, "*") }) {
				verb = "does not match"
			}
			rc.Misses = append(rc.Misses, Miss{Field: "hosts", Value: d.Host, Want: c.rule.Hosts,
				Why: fmt.Sprintf("host %s %s %s", d.Host, verb, orList(c.rule.Hosts))})
		}
		rc.Misses = append(rc.Misses, c.misses(&req, &d, u)...)
		rc.Matched = len(rc.Misses) == 0
		if rc.Matched {
			switch {
			case c.dryRun:
				rc.Role = RoleDryRun
			case d.Rule == c.rule:
				rc.Role = RoleDecides
			default:
				rc.Role = RoleOutranked
			}
		}
		e.Rules[i] = rc
	}
	return e
}

// misses returns every field of the rule, other than the host, that the
// request fails, using the checks mismatch uses.
func (c *compiled) misses(req *Request, d *Decision, now int64) []Miss {
	var out []Miss
	r := c.rule
	if !c.liveAt(now) {
		out = append(out, Miss{Field: "expires", Value: time.Unix(now, 0).UTC().Format(time.DateOnly),
			Want: []string{r.Expires.Format(time.DateOnly)},
			Why:  fmt.Sprintf("the rule expired on %s", r.Expires.Format(time.DateOnly))})
	}
	if !c.tlsOK(req) {
		// Methods and paths are not looked at: the connection has none.
		out = append(out, Miss{Field: "tls", Value: "TLS passthrough",
			Why: "a TLS-passthrough connection has no method or path, and the rule names methods or paths"})
	}
	if !c.portOK(d.Port) {
		want := make([]string, len(r.Ports))
		for i, p := range r.Ports {
			want[i] = strconv.Itoa(p)
		}
		out = append(out, Miss{Field: "ports", Value: strconv.Itoa(d.Port), Want: want,
			Why: fmt.Sprintf("port %d is not %s", d.Port, orList(want))})
	}
	if c.tlsOK(req) && !c.methodOK(req.Method) {
		out = append(out, Miss{Field: "methods", Value: req.Method, Want: r.Methods,
			Why: fmt.Sprintf("method %s is not %s", req.Method, orList(r.Methods))})
	}
	if !c.namespaceOK(d.Identity.Namespace) {
		m := Miss{Field: "namespaces", Value: d.Identity.Namespace, Want: r.Namespaces}
		if d.Identity.Namespace == "" {
			m.Why = fmt.Sprintf("the caller has no namespace (its SPIFFE ID is not /ns/NS/sa/SA), and the rule wants %s", orList(r.Namespaces))
		} else {
			m.Why = fmt.Sprintf("namespace %s is not %s", d.Identity.Namespace, orList(r.Namespaces))
		}
		out = append(out, m)
	}
	if !c.accountOK(d.Identity.ServiceAccount) {
		m := Miss{Field: "serviceAccounts", Value: d.Identity.ServiceAccount, Want: r.ServiceAccounts}
		if d.Identity.ServiceAccount == "" {
			m.Why = fmt.Sprintf("the caller has no service account (its SPIFFE ID is not /ns/NS/sa/SA), and the rule wants %s", orList(r.ServiceAccounts))
		} else {
			m.Why = fmt.Sprintf("service account %s is not %s", d.Identity.ServiceAccount, orList(r.ServiceAccounts))
		}
		out = append(out, m)
	}
	if !c.principalOK(req.Principal) {
		out = append(out, Miss{Field: "principals", Value: req.Principal, Want: r.Principals,
			Why: fmt.Sprintf("principal %s matches none of %s", req.Principal, strings.Join(r.Principals, ", "))})
	}
	if c.tlsOK(req) && !c.pathOK(d.Path) {
		out = append(out, Miss{Field: "paths", Value: d.Path, Want: r.Paths,
			Why: fmt.Sprintf("path %s matches none of %s", d.Path, strings.Join(r.Paths, ", "))})
	}
	return out
}

// NearMisses returns the rules that did not match, nearest first: fewest
// failed fields, then those whose host matched, then in rule-set order. At
// most n are returned (all when n < 0).
func (e *Explanation) NearMisses(n int) []RuleCheck {
	var out []RuleCheck
	for _, rc := range e.Rules {
		if !rc.Matched {
			out = append(out, rc)
		}
	}
	hostMiss := func(rc RuleCheck) int {
		if rc.Misses[0].Field == "hosts" {
			return 1
		}
		return 0
	}
	slices.SortStableFunc(out, func(a, b RuleCheck) int {
		if d := len(a.Misses) - len(b.Misses); d != 0 {
			return d
		}
		return hostMiss(a) - hostMiss(b)
	})
	if n >= 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

// Trim returns e with only the matching rules and the n nearest misses
// (see NearMisses), in rule-set order: what a person wants to read.
func (e Explanation) Trim(n int) Explanation {
	keep := map[*Rule]bool{}
	for _, rc := range e.NearMisses(n) {
		keep[rc.Rule] = true
	}
	var rules []RuleCheck
	for _, rc := range e.Rules {
		if rc.Matched || keep[rc.Rule] {
			rules = append(rules, rc)
		}
	}
	e.Rules = rules
	return e
}

// MarshalJSON writes the explanation as decision, reason, rule, summary,
// ruleset, request (the values rules were matched against), dry_run and
// rules.
func (e Explanation) MarshalJSON() ([]byte, error) {
	type jsonRule struct {
		ID      string `json:"id"`
		Pos     string `json:"pos"`
		Action  Action `json:"action"`
		Mode    Mode   `json:"mode"`
		Matched bool   `json:"matched"`
		Role    string `json:"role,omitempty"`
		Misses  []Miss `json:"misses,omitempty"`
	}
	type jsonDryRun struct {
		Rule     string `json:"rule"`
		Decision string `json:"decision"`
	}
	d := &e.Decision
	v := struct {
		Decision string       `json:"decision"`
		Reason   Reason       `json:"reason"`
		Rule     string       `json:"rule"`
		Summary  string       `json:"summary"`
		RuleSet  string       `json:"ruleset"`
		Request  jsonRequest  `json:"request"`
		DryRun   []jsonDryRun `json:"dry_run"`
		Rules    []jsonRule   `json:"rules"`
	}{
		Decision: DecisionWord(d.Allow), Reason: d.Reason, Summary: e.Summary, RuleSet: d.Version,
		Request: requestJSON(&e.Request, d), DryRun: []jsonDryRun{}, Rules: []jsonRule{},
	}
	if d.Rule != nil {
		v.Rule = d.Rule.ID
	}
	for _, o := range d.DryRun {
		v.DryRun = append(v.DryRun, jsonDryRun{Rule: o.Rule.ID, Decision: DecisionWord(o.Allow)})
	}
	for _, rc := range e.Rules {
		v.Rules = append(v.Rules, jsonRule{ID: rc.Rule.ID, Pos: rc.Rule.Pos.String(), Action: rc.Rule.Action,
			Mode: rc.Rule.Mode, Matched: rc.Matched, Role: rc.Role, Misses: rc.Misses})
	}
	return json.Marshal(v)
}

// jsonRequest is a request as the JSON outputs show it: what the caller
// sent, and the normalized values rules are matched against.
type jsonRequest struct {
	Principal      string `json:"principal"`
	TrustDomain    string `json:"trust_domain,omitempty"`
	Namespace      string `json:"namespace,omitempty"`
	ServiceAccount string `json:"service_account,omitempty"`
	TLSPassthrough bool   `json:"tls_passthrough,omitempty"`
	Host           string `json:"host"`
	Port           int    `json:"port,omitempty"`
	Method         string `json:"method,omitempty"`
	Path           string `json:"path,omitempty"`
}

func requestJSON(req *Request, d *Decision) jsonRequest {
	j := jsonRequest{Principal: req.Principal, TrustDomain: d.Identity.TrustDomain, Namespace: d.Identity.Namespace,
		ServiceAccount: d.Identity.ServiceAccount, TLSPassthrough: req.SNI, Host: d.Host, Port: d.Port,
		Method: req.Method, Path: d.Path}
	if j.Host == "" {
		j.Host = req.Host
	}
	if j.Port == 0 {
		j.Port = req.Port
	}
	if j.Path == "" {
		j.Path = req.Path
	}
	return j
}

// Matching returns the rules that matched, in rule-set order.
func (e *Explanation) Matching() []RuleCheck {
	var out []RuleCheck
	for _, rc := range e.Rules {
		if rc.Matched {
			out = append(out, rc)
		}
	}
	return out
}

// summary is one sentence on a decision.
func summary(d *Decision) string {
	switch d.Reason {
	case ReasonAllowed:
		return fmt.Sprintf("allowed by rule %s", d.Rule.ID)
	case ReasonDeniedByRule:
		return fmt.Sprintf("denied by rule %s (a matching deny rule wins over any allow rule)", d.Rule.ID)
	}
	return "denied: " + d.Reason.Describe(d)
}

// orList writes a list as "a", "a or b", "a, b or c".
func orList(s []string) string {
	switch len(s) {
	case 0:
		return "(none)"
	case 1:
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}
