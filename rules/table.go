package rules

import (
	"fmt"
	"slices"
	"time"
)

type compiled struct {
	rule       *Rule
	index      int
	expires    int64 // unix seconds; 0 never
	principals []principalPattern
	namespaces []string
	accounts   []string
	ports      []int
	methods    []string
	paths      []pathPattern
	httpOnly   bool
	deny       bool
	dryRun     bool
}

// Table is a compiled, immutable rule set. It is safe for concurrent use.
type Table struct {
	version      string
	set          *Set
	trustDomains []string
	rules        []compiled
	// The host index: a request only evaluates the rules whose hosts could
	// match it, found by exact name, by each parent domain for "*.x"
	// patterns, and the rules that match any host.
	exact    map[string][]int32
	suffix   map[string][]int32
	anyHost  []int32
	expiries []int64 // sorted, unique
}

// Compile builds the Table for a validated Set.
func Compile(set *Set) (*Table, error) {
	t := &Table{
		version:      set.Version,
		set:          set,
		trustDomains: slices.Clone(set.TrustDomains),
		rules:        make([]compiled, len(set.Rules)),
		exact:        map[string][]int32{},
		suffix:       map[string][]int32{},
	}
	for i, r := range set.Rules {
		c := compiled{rule: r, index: i, httpOnly: r.HTTPOnly(), deny: r.Action == Deny, dryRun: r.Mode == DryRun,
			namespaces: r.Namespaces, accounts: r.ServiceAccounts, ports: r.Ports, methods: r.Methods}
		if !r.Expires.IsZero() {
			c.expires = r.Expires.Unix()
			t.expiries = append(t.expiries, c.expires)
		}
		pats, err := set.patternsOf(i)
		if err != nil {
			return nil, fmt.Errorf("compile rule %s: %w", quoteShort(r.ID), err)
		}
		c.principals, c.paths = pats.principals, pats.paths
		idx := int32(i)
		if len(r.Hosts) == 0 {
			t.anyHost = append(t.anyHost, idx)
		}
		for _, hp := range pats.hosts {
			switch {
			case hp.any:
				t.anyHost = appendOnce(t.anyHost, idx)
			case hp.suffix != "":
				t.suffix[hp.suffix] = appendOnce(t.suffix[hp.suffix], idx)
			default:
				t.exact[hp.exact] = appendOnce(t.exact[hp.exact], idx)
			}
		}
		t.rules[i] = c
	}
	slices.Sort(t.expiries)
	t.expiries = slices.Compact(t.expiries)
	return t, nil
}

func appendOnce(s []int32, v int32) []int32 {
	if len(s) > 0 && s[len(s)-1] == v {
		return s
	}
	return append(s, v)
}

// Version is the version of the rule set the table was compiled from.
func (t *Table) Version() string { return t.version }

// Set is the rule set the table was compiled from. It must not be modified.
func (t *Table) Set() *Set { return t.set }

// NextExpiry returns the first instant after now at which a rule of the
// table expires, or the zero time when none will. A decision made at now
// stays correct until then.
func (t *Table) NextExpiry(now time.Time) time.Time {
	u := now.Unix()
	i, found := slices.BinarySearch(t.expiries, u)
	if found {
		i++
	}
	if i >= len(t.expiries) {
		return time.Time{}
	}
	return time.Unix(t.expiries[i], 0).UTC()
}

// Decide decides req at time now (which only matters for rule expiry).
func (t *Table) Decide(req Request, now time.Time) Decision {
	p, reason := Prepare(req, func(td string) bool { return slices.Contains(t.trustDomains, td) })
	d := Decision{Version: t.version, Reason: reason, Identity: p.Identity, Host: p.Host, Port: p.Port, Path: p.Path}
	if reason != "" {
		return d
	}
	m := matcher{t: t, req: &req, d: &d, now: now.Unix(), deny: -1, allow: -1}
	t.candidates(p.Host, m.scan)
	switch {
	case m.deny >= 0:
		d.Reason, d.Rule = ReasonDeniedByRule, t.rules[m.deny].rule
	case m.allow >= 0:
		d.Allow, d.Reason, d.Rule = true, ReasonAllowed, t.rules[m.allow].rule
	default:
		d.Reason = ReasonNoMatchingRule
	}
	if len(d.DryRun) > 1 {
		slices.SortFunc(d.DryRun, func(a, b Outcome) int { return a.index - b.index })
	}
	return d
}

// candidates calls fn with each list of rules, by index, that the host
// index offers for host: those naming it exactly, those whose "*.x"
// patterns match it (one list per parent domain), and those that match any
// host. Together they are exactly the rules whose hosts match host, each
// offered at least once. Decide and Explain both take their rules from it.
func (t *Table) candidates(host string, fn func(idxs []int32)) {
	fn(t.exact[host])
	for i := 0; i < len(host); i++ {
		if host[i] == '.' {
			fn(t.suffix[host[i:]])
		}
	}
	fn(t.anyHost)
}

type matcher struct {
	t           *Table
	req         *Request
	d           *Decision
	now         int64
	deny, allow int // lowest matching enforce rule index, -1 if none
}

func (m *matcher) scan(idxs []int32) {
	for _, i := range idxs {
		c := &m.t.rules[i]
		if c.dryRun {
			if !c.matches(m.req, m.d, m.now) {
				continue
			}
			dup := false
			for _, o := range m.d.DryRun {
				if o.Rule == c.rule {
					dup = true
				}
			}
			if !dup {
				m.d.DryRun = append(m.d.DryRun, Outcome{Rule: c.rule, Allow: !c.deny, index: int(i)})
			}
			continue
		}
		if c.deny {
			if (m.deny < 0 || int(i) < m.deny) && c.matches(m.req, m.d, m.now) {
				m.deny = int(i)
			}
		} else if m.deny < 0 && (m.allow < 0 || int(i) < m.allow) && c.matches(m.req, m.d, m.now) {
			m.allow = int(i)
		}
	}
}

// field names a condition of a rule that a request may fail. The host is
// not one: the table's host index only offers a rule to requests whose host
// it matches.
type field uint8

// The fields in the order mismatch checks them: cheap checks first.
const (
	fieldNone field = iota // every field matches
	fieldExpires
	fieldTLS // a TLS-passthrough request and a rule naming methods or paths
	fieldPorts
	fieldMethods
	fieldNamespaces
	fieldServiceAccounts
	fieldPrincipals
	fieldPaths
)

// matches reports whether the rule matches, the host already being known to
// match through the index.
func (c *compiled) matches(req *Request, d *Decision, now int64) bool {
	return c.mismatch(req, d, now) == fieldNone
}

// mismatch returns the first field of the rule that req does not match, or
// fieldNone; Decide judges a rule with it. Explain lists every field a rule
// fails with misses, which calls the same per-field checks (liveAt, tlsOK,
// portOK...), and takes the rules whose host matches from candidates as
// Decide does, so an explanation cannot disagree with a decision on
// whether a rule matched.
func (c *compiled) mismatch(req *Request, d *Decision, now int64) field {
	switch {
	case !c.liveAt(now):
		return fieldExpires
	case !c.tlsOK(req):
		return fieldTLS
	case !c.portOK(d.Port):
		return fieldPorts
	case !c.methodOK(req.Method):
		return fieldMethods
	case !c.namespaceOK(d.Identity.Namespace):
		return fieldNamespaces
	case !c.accountOK(d.Identity.ServiceAccount):
		return fieldServiceAccounts
	case !c.principalOK(req.Principal):
		return fieldPrincipals
	case !c.pathOK(d.Path):
		return fieldPaths
	}
	return fieldNone
}

func (c *compiled) liveAt(now int64) bool { return c.expires == 0 || now < c.expires }

func (c *compiled) tlsOK(req *Request) bool { return !req.SNI || !c.httpOnly }

func (c *compiled) portOK(port int) bool {
	return len(c.ports) == 0 || slices.Contains(c.ports, port)
}

func (c *compiled) methodOK(method string) bool {
	return len(c.methods) == 0 || slices.Contains(c.methods, method)
}

func (c *compiled) namespaceOK(ns string) bool {
	return len(c.namespaces) == 0 || ns != "" && slices.Contains(c.namespaces, ns)
}

func (c *compiled) accountOK(sa string) bool {
	return len(c.accounts) == 0 || sa != "" && slices.Contains(c.accounts, sa)
}

func (c *compiled) principalOK(id string) bool {
	return len(c.principals) == 0 || c.anyPrincipal(id)
}

func (c *compiled) anyPrincipal(id string) bool {
	for i := range c.principals {
		if c.principals[i].match(id) {
			return true
		}
	}
	return false
}

func (c *compiled) pathOK(path string) bool {
	return len(c.paths) == 0 || c.anyPath(path)
}

func (c *compiled) anyPath(path string) bool {
	for i := range c.paths {
		if c.paths[i].match(path) {
			return true
		}
	}
	return false
}
