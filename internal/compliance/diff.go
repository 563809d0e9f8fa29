package compliance

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/rules"
)

// SetDiff is what changes from one rule set to another, rule by rule and
// in access: who may reach what.
type SetDiff struct {
	Added     []*rules.Rule // in the new set's order
	Removed   []*rules.Rule // in the old set's order
	Changed   []RuleChange
	Unchanged int

	TrustDomainsAdded, TrustDomainsRemoved []string

	// Gained is access the new set gives that the old one did not: granted
	// by a new or changed allow rule, or no longer blocked by a deny rule
	// that was removed or narrowed. Lost is the reverse.
	Gained, Lost []Access
}

// Empty reports whether the two sets have the same rules and trust domains.
func (d *SetDiff) Empty() bool {
	return len(d.Added)+len(d.Removed)+len(d.Changed)+len(d.TrustDomainsAdded)+len(d.TrustDomainsRemoved) == 0
}

// RuleChange is a rule whose id is in both sets but whose content differs.
type RuleChange struct {
	Old, New *rules.Rule
	// Changes says what changed, one field a line, in words:
	// "methods: added DELETE; removed PUT", "mode: dry-run -> enforce".
	Changes []string
}

// Access is one piece of access a rule set gives or takes: a caller, a
// host, and optionally a port, a method and a path pattern. Empty fields
// mean any.
type Access struct {
	Principal      string `json:"principal,omitempty"` // a principal pattern
	Namespace      string `json:"namespace,omitempty"`
	ServiceAccount string `json:"service_account,omitempty"`
	Host           string `json:"host"` // a host pattern; "*" any host
	Port           int    `json:"port,omitempty"`
	Method         string `json:"method,omitempty"`
	Path           string `json:"path,omitempty"` // a path pattern
	// Rule is the rule that gives (or took) it; Action says how: an allow
	// rule that grants it, or a deny rule that blocks it.
	Rule   string       `json:"rule"`
	Action rules.Action `json:"via"`
}

// Who says in words who the access is for.
func (a *Access) Who() string {
	var parts []string
	if a.Principal != "" {
		parts = append(parts, a.Principal)
	}
	if a.Namespace != "" {
		parts = append(parts, "namespace "+a.Namespace)
	}
	if a.ServiceAccount != "" {
		parts = append(parts, "service account "+a.ServiceAccount)
	}
	if len(parts) == 0 {
		return "any workload"
	}
	return strings.Join(parts, ", ")
}

// What says in words what the access reaches: host, port, method and path.
func (a *Access) What() string {
	var b strings.Builder
	if a.Host == "*" {
		b.WriteString("any host")
	} else {
		b.WriteString(a.Host)
	}
	if a.Port != 0 {
		b.WriteString(":" + strconv.Itoa(a.Port))
	}
	switch {
	case a.Method == "" && a.Path == "":
		b.WriteString(" (any method and path, and TLS passthrough)")
	case a.Path == "":
		b.WriteString(" " + a.Method + " any path")
	case a.Method == "":
		b.WriteString(" any method " + a.Path)
	default:
		b.WriteString(" " + a.Method + " " + a.Path)
	}
	return b.String()
}

// Diff compares two rule sets. Rules are paired by id. Access is judged at
// now: dry-run rules and rules expired by then give no access.
//
// The access comparison works on the patterns the rules are written with,
// not on the requests they match: a piece of access counts as kept when the
// other set has one that covers it pattern by pattern (a "*.stripe.com"
// host covers "api.stripe.com", a "/v1/**" path covers "/v1/charges", a
// namespace covers the principals in it). It does not work out how deny and
// allow rules overlap; "rules diff --against" replays real traffic for that.
func Diff(old, new *rules.Set, now time.Time) *SetDiff {
	d := &SetDiff{}
	oldByID := map[string]*rules.Rule{}
	for _, r := range old.Rules {
		oldByID[r.ID] = r
	}
	newByID := map[string]*rules.Rule{}
	for _, r := range new.Rules {
		newByID[r.ID] = r
		o, ok := oldByID[r.ID]
		switch {
		case !ok:
			d.Added = append(d.Added, r)
		default:
			if ch := ruleChanges(o, r); len(ch) > 0 {
				d.Changed = append(d.Changed, RuleChange{Old: o, New: r, Changes: ch})
			} else {
				d.Unchanged++
			}
		}
	}
	for _, r := range old.Rules {
		if _, ok := newByID[r.ID]; !ok {
			d.Removed = append(d.Removed, r)
		}
	}
	for _, td := range new.TrustDomains {
		if !slices.Contains(old.TrustDomains, td) {
			d.TrustDomainsAdded = append(d.TrustDomainsAdded, td)
		}
	}
	for _, td := range old.TrustDomains {
		if !slices.Contains(new.TrustDomains, td) {
			d.TrustDomainsRemoved = append(d.TrustDomainsRemoved, td)
		}
	}

	// An allow of NEW that OLD does not cover is gained access, a deny is
	// lost access; the other way round, an allow of OLD that NEW does not
	// cover is lost and a deny gained.
	uncovered(new, now, oldByID, accessIndex(old, now), &d.Gained, &d.Lost)
	uncovered(old, now, newByID, accessIndex(new, now), &d.Lost, &d.Gained)
	return d
}

// ruleChanges lists the differences between two versions of a rule.
func ruleChanges(o, n *rules.Rule) []string {
	var out []string
	scalar := func(name, a, b string) {
		if a != b {
			out = append(out, fmt.Sprintf("%s: %s -> %s", name, orNone(a), orNone(b)))
		}
	}
	scalar("description", o.Description, n.Description)
	scalar("owner", o.Owner, n.Owner)
	scalar("ticket", o.Ticket, n.Ticket)
	if !o.Expires.Equal(n.Expires) {
		out = append(out, fmt.Sprintf("expires: %s -> %s", expiresWord(o.Expires), expiresWord(n.Expires)))
	}
	if o.Mode != n.Mode {
		what := "now only recorded, no longer enforced"
		if n.Mode == rules.Enforce {
			what = "now enforced"
		}
		out = append(out, fmt.Sprintf("mode: %s -> %s (%s)", o.Mode, n.Mode, what))
	}
	if o.Action != n.Action {
		out = append(out, fmt.Sprintf("action: %s -> %s", o.Action, n.Action))
	}
	list := func(name string, a, b []string) {
		if slices.Equal(a, b) {
			return
		}
		switch {
		case len(a) == 0:
			out = append(out, fmt.Sprintf("%s: any -> %s", name, strings.Join(b, ", ")))
			return
		case len(b) == 0:
			out = append(out, fmt.Sprintf("%s: %s -> any", name, strings.Join(a, ", ")))
			return
		}
		var added, removed []string
		for _, s := range b {
			if !slices.Contains(a, s) {
				added = append(added, s)
			}
		}
		for _, s := range a {
			if !slices.Contains(b, s) {
				removed = append(removed, s)
			}
		}
		var parts []string
		if len(added) > 0 {
			parts = append(parts, "added "+strings.Join(added, ", "))
		}
		if len(removed) > 0 {
			parts = append(parts, "removed "+strings.Join(removed, ", "))
		}
		if len(parts) == 0 {
			parts = append(parts, "reordered")
		}
		out = append(out, name+": "+strings.Join(parts, "; "))
	}
	list("principals", o.Principals, n.Principals)
	list("namespaces", o.Namespaces, n.Namespaces)
	list("serviceAccounts", o.ServiceAccounts, n.ServiceAccounts)
	list("hosts", o.Hosts, n.Hosts)
	list("ports", intStrings(o.Ports), intStrings(n.Ports))
	list("methods", o.Methods, n.Methods)
	list("paths", o.Paths, n.Paths)
	return out
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func expiresWord(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Format(time.DateOnly)
}

func intStrings(ns []int) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = strconv.Itoa(n)
	}
	return out
}

// ruleAccess is the access a rule gives (allow) or blocks (deny) at now:
// every combination of its patterns. Dry-run and expired rules give none,
// nor do principals outside the set's trust domains.
func ruleAccess(r *rules.Rule, set *rules.Set, now time.Time) []Access {
	if r.Mode != rules.Enforce || (!r.Expires.IsZero() && !now.Before(r.Expires)) {
		return nil
	}
	orAny := func(s []string) []string {
		if len(s) == 0 {
			return []string{""}
		}
		return s
	}
	var principals []string
	for _, p := range r.Principals {
		if td, err := rules.ParsePrincipalTrustDomain(p); err == nil && slices.Contains(set.TrustDomains, td) {
			principals = append(principals, p)
		}
	}
	if len(r.Principals) > 0 && len(principals) == 0 {
		return nil // no principal of the rule can ever match
	}
	hosts := r.Hosts
	if len(hosts) == 0 {
		hosts = []string{"*"}
	}
	ports := r.Ports
	if len(ports) == 0 {
		ports = []int{0}
	}
	var out []Access
	for _, p := range orAny(principals) {
		for _, ns := range orAny(r.Namespaces) {
			for _, sa := range orAny(r.ServiceAccounts) {
				for _, h := range hosts {
					for _, port := range ports {
						for _, m := range orAny(r.Methods) {
							for _, path := range orAny(r.Paths) {
								out = append(out, Access{Principal: p, Namespace: ns, ServiceAccount: sa,
									Host: canonicalHost(h), Port: port, Method: m, Path: path, Rule: r.ID, Action: r.Action})
							}
						}
					}
				}
			}
		}
	}
	return out
}

// canonicalHost writes a host pattern the way it is matched: lower case,
// no trailing dot.
func canonicalHost(h string) string {
	if h == "*" {
		return h
	}
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		if n, _, ok := rules.ParseAuthority(rest, false); ok {
			return "*." + n
		}
		return h
	}
	if n, _, ok := rules.ParseAuthority(h, false); ok {
		return n
	}
	return h
}

// uncovered appends the access of set's changed rules that the other set
// (its rules by id, its access index) does not cover: allows to allows,
// denies to denies.
// Only changed rules can change access: a rule the same in both sets gives
// the same access on both sides.
func uncovered(set *rules.Set, now time.Time, otherByID map[string]*rules.Rule, other accessSets, allows, denies *[]Access) {
	for _, r := range set.Rules {
		if o, ok := otherByID[r.ID]; ok && len(ruleChanges(o, r)) == 0 {
			continue
		}
		for _, a := range ruleAccess(r, set, now) {
			idx, to := other.allows, allows
			if a.Action == rules.Deny {
				idx, to = other.denies, denies
			}
			if !idx.covers(&a) {
				*to = append(*to, a)
			}
		}
	}
}

// accessList is a set's access of one kind, indexed by host pattern.
type accessList map[string][]Access

type accessSets struct{ allows, denies accessList }

func accessIndex(set *rules.Set, now time.Time) accessSets {
	idx := accessSets{allows: accessList{}, denies: accessList{}}
	for _, r := range set.Rules {
		for _, a := range ruleAccess(r, set, now) {
			l := idx.allows
			if a.Action == rules.Deny {
				l = idx.denies
			}
			l[a.Host] = append(l[a.Host], a)
		}
	}
	return idx
}

// covers reports whether some access of l covers a: it reaches at least
// what a reaches, for at least the callers a is for.
func (l accessList) covers(a *Access) bool {
	try := func(host string) bool {
		for i := range l[host] {
			if accessCovers(&l[host][i], a) {
				return true
			}
		}
		return false
	}
	if try(a.Host) || try("*") {
		return true
	}
	// A "*.parent" pattern covers a host, or a narrower pattern, below it.
	h := strings.TrimPrefix(a.Host, "*")
	for i := 1; i < len(h); i++ {
		if h[i] == '.' && try("*"+h[i:]) {
			return true
		}
	}
	return false
}

// accessCovers reports whether c covers a, the hosts being known to.
// It errs on the side of "no": a covered access reported as changed is
// noise, a changed one reported as covered would hide a change.
func accessCovers(c, a *Access) bool {
	if c.Port != 0 && c.Port != a.Port {
		return false
	}
	if c.Method != "" && c.Method != a.Method {
		return false
	}
	if c.Path != "" && (a.Path == "" || !rules.PathCovers(c.Path, a.Path)) {
		return false
	}
	return whoCovers(c, a)
}

func whoCovers(c, a *Access) bool {
	// The identity fields a's caller is known to have.
	ns, sa := a.Namespace, a.ServiceAccount
	if a.Principal != "" && !strings.Contains(a.Principal, "*") {
		if id, ok := rules.ParseIdentity(a.Principal); ok {
			if ns == "" {
				ns = id.Namespace
			}
			if sa == "" {
				sa = id.ServiceAccount
			}
		}
	}
	if c.Principal != "" {
		if a.Principal == "" || !rules.GlobCovers(c.Principal, a.Principal) {
			return false
		}
	}
	if c.Namespace != "" && c.Namespace != ns {
		return false
	}
	if c.ServiceAccount != "" && c.ServiceAccount != sa {
		return false
	}
	return true
}

// Describe says in plain words what a rule does: "allows
// spiffe://.../checkout to reach api.stripe.com, port 443, POST".
func Describe(r *rules.Rule) string {
	var b strings.Builder
	switch {
	case r.Mode == rules.DryRun:
		b.WriteString("(dry-run, recorded only) would " + string(r.Action) + " ")
	case r.Action == rules.Deny:
		b.WriteString("denies ")
	default:
		b.WriteString("allows ")
	}
	var who string
	switch {
	case len(r.Principals) > 0 && len(r.ServiceAccounts) > 0:
		who = orList(r.Principals) + " (service account " + orList(r.ServiceAccounts) + ")"
	case len(r.Principals) > 0:
		who = orList(r.Principals)
	case len(r.ServiceAccounts) > 0:
		who = "service account " + orList(r.ServiceAccounts)
	case len(r.Namespaces) > 0:
		who = "any workload"
	default:
		who = "any workload in the trust domains"
	}
	if len(r.Namespaces) > 0 {
		who += " in namespace " + orList(r.Namespaces)
	}
	b.WriteString(who)
	if r.Action == rules.Deny {
		b.WriteString(" from reaching ")
	} else {
		b.WriteString(" to reach ")
	}
	if len(r.Hosts) == 0 {
		b.WriteString("any host")
	} else {
		b.WriteString(orList(r.Hosts))
	}
	if len(r.Ports) > 0 {
		b.WriteString(", port " + orList(intStrings(r.Ports)))
	}
	if len(r.Methods) > 0 {
		b.WriteString(", " + orList(r.Methods))
	}
	if len(r.Paths) > 0 {
		b.WriteString(", path " + orList(r.Paths))
	}
	if !r.Expires.IsZero() {
		b.WriteString(", until " + r.Expires.Format(time.DateOnly))
	}
	return b.String()
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
