package rules

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Explanation says, in plain words, how a Table decides a Request: the
// decision, and for the rules that matched and those that nearly did
// whether each matched and, if not, which of its fields the request failed
// and with which value.
//
// Its JSON form is what "rules explain --format json" and the admin
// endpoint GET /v1/explain print.
type Explanation struct {
	Request  Request
	Decision Decision
	// Summary is one sentence on the decision.
	Summary string
	// Rules holds, in rule-set order, every rule that matched and the
	// nearest of those that did not (every rule when Explain was asked for
	// all); empty when the request was denied before any rule was looked
	// at (no identity, an untrusted trust domain, an unsafe path...).
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
	Field string `json:"field"` // the rule's key: hosts, ports, methods, paths, principals, namespaces, serviceAccounts, expires, tls
	// Value is the request's value ("" when it has none), shortened to
	// MaxMissValue bytes and an ellipsis when longer: the explanation's
	// Request holds it whole, once.
	Value string   `json:"value"`
	Want  []string `json:"want,omitempty"`
	Why   string   `json:"why"` // the same in plain words
}

// MaxExplainField is the most bytes Explain takes in each of a request's
// principal, host, method and path. Explain is for people asking about
// one request, and real ones are far shorter; the bound keeps an
// explanation of every rule (which repeats the request's values in each
// miss) a few megabytes even against a large rule set, where an unbounded
// path once cost gigabytes.
const MaxExplainField = 8 << 10

// MaxMissValue is the most bytes of a request's value a Miss repeats (see
// Miss.Value).
const MaxMissValue = 256

// Explain decides req as Decide does and explains the decision rule by
// rule: every rule that matched, and of the others the near nearest (fewest
// failed fields, then those whose host matched, then in rule-set order;
// every rule when near < 0). It is much slower than Decide and allocates:
// it is for people, not for the request path.
//
// Rules are ranked by counting their failed fields, which allocates
// nothing; the words are written only for the rules kept, so that the cost
// of an explanation is that of what it shows. A request whose principal,
// host, method or path is longer than MaxExplainField bytes is refused
// with an error saying so.
func (t *Table) Explain(req Request, now time.Time, near int) (Explanation, error) {
	for _, f := range []struct{ name, value string }{
		{"principal", req.Principal}, {"host", req.Host}, {"method", req.Method}, {"path", req.Path},
	} {
		if len(f.value) > MaxExplainField {
			return Explanation{}, fmt.Errorf("explain: the %s is %d bytes long; explain takes at most %d bytes (%d KiB) of it",
				f.name, len(f.value), MaxExplainField, MaxExplainField>>10)
		}
	}
	d := t.Decide(req, now)
	e := Explanation{Request: req, Decision: d, Summary: summary(&d)}
	switch d.Reason {
	case ReasonAllowed, ReasonDeniedByRule, ReasonNoMatchingRule:
	default:
		return e, nil // decided before any rule was looked at
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
	// keep marks the rules explained: the matching ones, and the nearest
	// misses once ranked.
	keep := make([]bool, len(t.rules))
	type missed struct {
		i    int32
		rank int32 // failed fields, doubled, plus one when the host failed
	}
	var misses []missed
	for i := range t.rules {
		n, _ := t.rules[i].check(&req, &d, u, hostOK[i], false)
		if n == 0 {
			keep[i] = true
			continue
		}
		rank := 2 * int32(n)
		if !hostOK[i] {
			rank++
		}
		misses = append(misses, missed{int32(i), rank})
	}
	if near >= 0 && len(misses) > near {
		slices.SortStableFunc(misses, func(a, b missed) int { return cmp.Compare(a.rank, b.rank) })
		misses = misses[:near]
	}
	for _, m := range misses {
		keep[m.i] = true
	}

	for i := range t.rules {
		if !keep[i] {
			continue
		}
		c := &t.rules[i]
		rc := RuleCheck{Rule: c.rule}
		_, rc.Misses = c.check(&req, &d, u, hostOK[i], true)
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
		e.Rules = append(e.Rules, rc)
	}
	return e, nil
}

// check walks the fields of the rule that the request fails, in the order
// Decide checks them, using the checks mismatch uses; hostOK says whether
// the host index offered the rule for the request's host. It returns how
// many fields failed and, when build is set, each as a Miss. Without build
// it allocates nothing: Explain ranks every rule with it, and builds the
// words only for the rules it keeps, so the ranking and the words cannot
// disagree.
func (c *compiled) check(req *Request, d *Decision, now int64, hostOK, build bool) (int, []Miss) {
	n := 0
	var out []Miss
	r := c.rule
	if !hostOK {
		n++
		if build {
			verb := "is not"
			if slices.ContainsFunc(r.Hosts, func(h string) bool { return strings.Contains(h, "*") }) {
				verb = "does not match"
			}
			host := shorten(d.Host)
			out = append(out, Miss{Field: "hosts", Value: host, Want: r.Hosts,
				Why: fmt.Sprintf("host %s %s %s", host, verb, orList(r.Hosts))})
		}
	}
	if !c.liveAt(now) {
		n++
		if build {
			out = append(out, Miss{Field: "expires", Value: time.Unix(now, 0).UTC().Format(time.DateOnly),
				Want: []string{r.Expires.Format(time.DateOnly)},
				Why:  fmt.Sprintf("the rule expired on %s", r.Expires.Format(time.DateOnly))})
		}
	}
	tlsOK := c.tlsOK(req)
	if !tlsOK {
		// Methods and paths are not looked at: the connection has none.
		n++
		if build {
			out = append(out, Miss{Field: "tls", Value: "TLS passthrough",
				Why: "a TLS-passthrough connection has no method or path, and the rule names methods or paths"})
		}
	}
	if !c.portOK(d.Port) {
		n++
		if build {
			want := make([]string, len(r.Ports))
			for i, p := range r.Ports {
				want[i] = strconv.Itoa(p)
			}
			out = append(out, Miss{Field: "ports", Value: strconv.Itoa(d.Port), Want: want,
				Why: fmt.Sprintf("port %d is not %s", d.Port, orList(want))})
		}
	}
	if tlsOK && !c.methodOK(req.Method) {
		n++
		if build {
			method := shorten(req.Method)
			out = append(out, Miss{Field: "methods", Value: method, Want: r.Methods,
				Why: fmt.Sprintf("method %s is not %s", method, orList(r.Methods))})
		}
	}
	if !c.namespaceOK(d.Identity.Namespace) {
		n++
		if build {
			ns := shorten(d.Identity.Namespace)
			m := Miss{Field: "namespaces", Value: ns, Want: r.Namespaces}
			if ns == "" {
				m.Why = fmt.Sprintf("the caller has no namespace (its SPIFFE ID is not /ns/NS/sa/SA), and the rule wants %s", orList(r.Namespaces))
			} else {
				m.Why = fmt.Sprintf("namespace %s is not %s", ns, orList(r.Namespaces))
			}
			out = append(out, m)
		}
	}
	if !c.accountOK(d.Identity.ServiceAccount) {
		n++
		if build {
			sa := shorten(d.Identity.ServiceAccount)
			m := Miss{Field: "serviceAccounts", Value: sa, Want: r.ServiceAccounts}
			if sa == "" {
				m.Why = fmt.Sprintf("the caller has no service account (its SPIFFE ID is not /ns/NS/sa/SA), and the rule wants %s", orList(r.ServiceAccounts))
			} else {
				m.Why = fmt.Sprintf("service account %s is not %s", sa, orList(r.ServiceAccounts))
			}
			out = append(out, m)
		}
	}
	if !c.principalOK(req.Principal) {
		n++
		if build {
			p := shorten(req.Principal)
			out = append(out, Miss{Field: "principals", Value: p, Want: r.Principals,
				Why: fmt.Sprintf("principal %s matches none of %s", p, strings.Join(r.Principals, ", "))})
		}
	}
	if tlsOK && !c.pathOK(d.Path) {
		n++
		if build {
			path := shorten(d.Path)
			out = append(out, Miss{Field: "paths", Value: path, Want: r.Paths,
				Why: fmt.Sprintf("path %s matches none of %s", path, strings.Join(r.Paths, ", "))})
		}
	}
	return n, out
}

// shorten returns s, or its first MaxMissValue bytes (cut at a character
// boundary) and an ellipsis when it is longer.
func shorten(s string) string {
	if len(s) <= MaxMissValue {
		return s
	}
	cut := MaxMissValue
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// NearMisses returns the rules of the explanation that did not match,
// nearest first: fewest failed fields, then those whose host matched, then
// in rule-set order. At most n are returned (all when n < 0).
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
		// The rule's metadata as this rule set writes it (an archived
		// version's, with rules explain --version).
		Owner          string    `json:"owner,omitempty"`
		Ticket         string    `json:"ticket,omitempty"`
		Expires        time.Time `json:"expires,omitzero"`
		Processor      string    `json:"processor,omitempty"`
		Purposes       []string  `json:"purposes,omitempty"`
		DataCategories []string  `json:"data_categories,omitempty"`
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
			Mode: rc.Rule.Mode, Matched: rc.Matched, Role: rc.Role, Misses: rc.Misses,
			Owner: rc.Rule.Owner, Ticket: rc.Rule.Ticket, Expires: rc.Rule.Expires,
			Processor: rc.Rule.Processor, Purposes: rc.Rule.Purposes, DataCategories: rc.Rule.DataCategories})
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
