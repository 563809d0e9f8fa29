package istiopolicy

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/egress-authz/egress-authz/rules"
)

// Outcome says what became of a part of a policy.
type Outcome string

// The outcomes of a Finding.
const (
	// Mapped: the part is in the rule set, meaning what it meant.
	Mapped Outcome = "mapped"
	// Dropped: the part is not in the rule set. The finding says what
	// that changes: nothing (a workload selector), less access (an ALLOW
	// rule or entry left out), or a wider deny (a DENY condition left out).
	Dropped Outcome = "dropped"
	// Rejected: a whole document or policy is left out.
	Rejected Outcome = "rejected"
)

// Finding is one line of an import's report: where, what, and what
// became of it.
type Finding struct {
	Pos     rules.Pos `json:"pos"`
	Policy  string    `json:"policy,omitempty"` // namespace/name
	Field   string    `json:"field,omitempty"`  // spec.rules[0].from[0].source.notPrincipals
	Outcome Outcome   `json:"outcome"`
	Msg     string    `json:"message"`
}

func (f Finding) String() string {
	var b strings.Builder
	b.WriteString(f.Pos.String())
	b.WriteString(": ")
	if f.Policy != "" {
		b.WriteString(f.Policy + ": ")
	}
	if f.Field != "" {
		b.WriteString(f.Field + ": ")
	}
	b.WriteString(string(f.Outcome) + ": " + f.Msg)
	return b.String()
}

// ImportOptions tunes Import.
type ImportOptions struct {
	// TrustDomain is the trust domain of sources named by namespace or
	// service account alone, which Istio matches in any trust domain of
	// the mesh. Default cluster.local.
	TrustDomain string
}

// Import turns AuthorizationPolicies into one rule set, and reports on
// every part of every policy: mapped, dropped (and what that changes) or
// rejected. The set is valid (it passes rules.Parse) and never allows a
// request that the policies, as far as egress-authz can see a request,
// would deny:
//   - Each Istio rule becomes one rule per source and operation (its
//     from and to lists are ORed, and a rule here has one of each).
//   - An ALLOW rule keeps only what can be said exactly; an entry that
//     cannot be is dropped from its list (less access), and a condition
//     that cannot be (requestPrincipals, ipBlocks, headers, most not*
//     fields) drops the whole rule, since leaving out the condition
//     alone would allow more.
//   - A DENY rule keeps what can be said exactly; a condition that cannot
//     be is dropped, and a list with an entry that cannot be is dropped
//     whole: the deny then applies more widely, never less.
//   - CUSTOM and AUDIT policies decide nothing here and are rejected.
//
// Identities are compared as Istio issues them (TD/ns/NS/sa/SA), and an
// ALLOW rule that names hosts, methods or paths gets paths ["/**"] if it
// has none, because Istio never matches such a rule to TLS-passthrough
// connections.
func Import(docs []Document, opts ImportOptions) (*rules.Set, []Finding) {
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	im := &importer{opts: opts, set: &rules.Set{}, ids: map[string]bool{}, tds: map[string]bool{}}
	for i := range docs {
		im.policy(&docs[i])
	}
	if im.needDefaultTD || len(im.tds) == 0 {
		im.tds[opts.TrustDomain] = true
	}
	for td := range im.tds {
		im.set.TrustDomains = append(im.set.TrustDomains, td)
	}
	slices.Sort(im.set.TrustDomains)
	return im.set, im.findings
}

type importer struct {
	opts          ImportOptions
	set           *rules.Set
	findings      []Finding
	ids           map[string]bool
	tds           map[string]bool
	needDefaultTD bool

	// The policy and rule being read.
	doc    *Document
	deny   bool
	prefix []any // the YAML path of the rule being read
}

func (im *importer) report(outcome Outcome, path []any, format string, args ...any) {
	im.findings = append(im.findings, Finding{Pos: im.doc.at(path...), Policy: im.doc.Name(), Field: fieldPath(path),
		Outcome: outcome, Msg: fmt.Sprintf(format, args...)})
}

// fieldPath writes a YAML path the way kubectl explain does:
// spec.rules[0].from[1].source.principals.
func fieldPath(path []any) string {
	var b strings.Builder
	for _, s := range path {
		switch s := s.(type) {
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s)
		case int:
			fmt.Fprintf(&b, "[%d]", s)
		}
	}
	return b.String()
}

func join(path []any, more ...any) []any {
	return append(slices.Clip(path), more...)
}

func (im *importer) policy(d *Document) {
	im.doc = d
	spec := &d.Policy.Spec
	switch spec.Action {
	case "", "ALLOW":
		im.deny = false
	case "DENY":
		im.deny = true
	case "CUSTOM":
		name := ""
		if spec.Provider != nil {
			name = spec.Provider.Name
		}
		im.report(Rejected, []any{"spec", "action"}, "CUSTOM delegates the decision to the extension provider %q (egress-authz itself, perhaps): nothing to import", name)
		return
	case "AUDIT":
		im.report(Rejected, []any{"spec", "action"}, "AUDIT policies decide nothing: nothing to import")
		return
	default:
		im.report(Rejected, []any{"spec", "action"}, "unknown action %q: the policy is left out", spec.Action)
		return
	}
	scope := "every workload of the mesh"
	switch {
	case spec.Selector != nil:
		var labels []string
		for k, v := range spec.Selector.MatchLabels {
			labels = append(labels, k+"="+v)
		}
		slices.Sort(labels)
		scope = fmt.Sprintf("workloads labelled %s in namespace %s", strings.Join(labels, ","), d.Name()[:strings.IndexByte(d.Name(), '/')])
		im.report(Dropped, []any{"spec", "selector"}, "egress-authz decides for the egress gateway: its rules apply to every request it is asked about, not only to %s; import only policies that select the egress gateway", scope)
	case spec.TargetRef != nil || len(spec.TargetRefs) > 0:
		im.report(Dropped, []any{"spec", "targetRefs"}, "egress-authz decides for the egress gateway: its rules apply to every request it is asked about, not only to the resources the policy targets")
	}
	if len(spec.Rules) == 0 {
		what := "allows nothing (Istio denies what no ALLOW policy matches): no rule to import, and egress-authz denies by default"
		if im.deny {
			what = "denies nothing: no rule to import"
		}
		im.report(Mapped, []any{"spec"}, "no rules: the policy %s", what)
		return
	}
	for i := range spec.Rules {
		im.prefix = []any{"spec", "rules", i}
		im.rule(i, &spec.Rules[i])
	}
}

// list is a translated list field: the values of the rule field, or any
// (the field left out).
type list struct {
	any  bool
	vals []string
}

// httpFields are the operation fields Istio never matches to TCP.
func httpOnly(o *Operation) bool {
	return len(o.Hosts)+len(o.NotHosts)+len(o.Methods)+len(o.NotMethods)+len(o.Paths)+len(o.NotPaths) > 0
}

func (im *importer) rule(idx int, r *Rule) {
	froms := r.From
	if len(froms) == 0 {
		froms = []From{{}}
	}
	tos := r.To
	if len(tos) == 0 {
		tos = []To{{}}
	}
	// Conditions apply to every source and operation of the rule.
	cond, ok := im.conditions(r.When)
	if !ok {
		return
	}
	made := 0
	for fi := range froms {
		fromPath := join(im.prefix, "from", fi, "source")
		if len(r.From) == 0 {
			fromPath = nil
		}
		srcs, ok := im.source(&froms[fi].Source, fromPath)
		if !ok {
			continue
		}
		for ti := range tos {
			toPath := join(im.prefix, "to", ti, "operation")
			if len(r.To) == 0 {
				toPath = nil
			}
			to, ok := im.operation(&tos[ti].Operation, toPath, cond)
			if !ok {
				continue
			}
			for _, src := range srcs {
				im.emit(idx, src, to)
				made++
			}
		}
	}
	if made == 0 && !im.deny {
		im.report(Dropped, im.prefix, "no part of this rule could be imported exactly: the requests it allowed are denied")
	}
}

// from is a translated source: the from section of one rule.
type from struct {
	principals, namespaces, serviceAccounts []string
}

// target is a translated operation: the to section of one rule.
type target struct {
	hosts, methods, paths []string
	ports                 []int
	http                  bool // HTTP-only fields were named
}

// conds is what a rule's when conditions add to every part of it.
type conds struct {
	sni, ports list // connection.sni, destination.port
	set        bool // some condition was translated
	sniPath    []any
}

func (im *importer) conditions(when []Condition) (conds, bool) {
	var c conds
	c.sni.any, c.ports.any = true, true
	for i, w := range when {
		path := join(im.prefix, "when", i)
		if len(w.NotValues) > 0 {
			if !im.cannot(join(path, "notValues"), "%s notValues: a condition that a value is absent cannot be expressed", w.Key) {
				return c, false
			}
			continue
		}
		switch w.Key {
		case "connection.sni":
			l, ok := im.hosts(w.Values, join(path, "values"))
			if !ok {
				return c, false
			}
			c.sni, c.set, c.sniPath = l, true, path
			im.report(Mapped, path, "connection.sni %v: to.hosts %v (egress-authz matches the same hosts in the authority of HTTP requests)", w.Values, l.vals)
		case "destination.port":
			l, ok := im.ports(w.Values, join(path, "values"))
			if !ok {
				return c, false
			}
			c.ports, c.set = l, true
			im.report(Mapped, path, "destination.port %v: to.ports", w.Values)
		default:
			why := "egress-authz does not see it"
			switch {
			case strings.HasPrefix(w.Key, "request.headers"):
				why = "egress-authz decides on identity, host, port, method and path, not on headers"
			case strings.HasPrefix(w.Key, "request.auth"):
				why = "egress-authz does not see JWT claims"
			case strings.HasSuffix(w.Key, ".ip"):
				why = "egress-authz does not decide on IP addresses"
			case strings.HasPrefix(w.Key, "source."):
				why = "write it in from.source: a condition on the source cannot be combined with the rule's sources"
			}
			if !im.cannot(path, "condition %s: %s", w.Key, why) {
				return c, false
			}
		}
	}
	return c, true
}

// cannot reports a condition that cannot be expressed. In an ALLOW rule
// the rule is then left out (false): dropping the condition alone would
// allow more. In a DENY rule the condition is dropped (true): the deny
// applies more widely.
func (im *importer) cannot(path []any, format string, args ...any) bool {
	msg := fmt.Sprintf(format, args...)
	if im.deny {
		im.report(Dropped, path, "%s; the condition is left out, so this deny applies more widely than in Istio (review it)", msg)
		return true
	}
	im.report(Dropped, path, "%s; the whole rule is left out (without the condition it would allow more): the requests it allowed are denied", msg)
	return false
}

// entries handles a list of which some entries translated and some did
// not: in an ALLOW rule those are dropped (less access); in a DENY rule
// the whole list is (any value: a wider deny). ok is false when nothing
// is left to match.
func (im *importer) entries(path []any, what string, kept []string, bad []string, why []string) (list, bool) {
	if len(bad) == 0 {
		return list{vals: kept}, true
	}
	for i, b := range bad {
		if im.deny {
			im.report(Dropped, path, "%s %q cannot be expressed (%s); the deny applies to any %s, more widely than in Istio (review it)", what, b, why[i], what)
		} else {
			im.report(Dropped, path, "%s %q cannot be expressed (%s); it is left out of the list: the requests it alone allowed are denied", what, b, why[i])
		}
	}
	if im.deny {
		return list{any: true}, true
	}
	return list{vals: kept}, len(kept) > 0
}

// source translates one Istio source into from sections (several when
// service accounts of several namespaces are named); ok is false when it
// matches nothing that can be expressed.
func (im *importer) source(s *Source, path []any) ([]from, bool) {
	leftOut := false
	for _, f := range []struct {
		name string
		vals []string
		why  string
	}{
		{"requestPrincipals", s.RequestPrincipals, "JWT identities: egress-authz sees peer identities only"},
		{"notRequestPrincipals", s.NotRequestPrincipals, "JWT identities: egress-authz sees peer identities only"},
		{"ipBlocks", s.IPBlocks, "egress-authz does not decide on IP addresses"},
		{"notIpBlocks", s.NotIPBlocks, "egress-authz does not decide on IP addresses"},
		{"remoteIpBlocks", s.RemoteIPBlocks, "egress-authz does not decide on IP addresses"},
		{"notRemoteIpBlocks", s.NotRemoteIPBlocks, "egress-authz does not decide on IP addresses"},
		{"trustDomains", s.TrustDomains, "a rule's trust domain is that of its principals"},
		{"notTrustDomains", s.NotTrustDomains, "a rule's trust domain is that of its principals"},
	} {
		// Each is reported, even once the rule is known to be left out.
		if len(f.vals) > 0 && !im.cannot(join(path, f.name), "%s %v: %s", f.name, f.vals, f.why) {
			leftOut = true
		}
	}
	if leftOut {
		return nil, false
	}
	principals, nsList, saList := list{any: true}, list{any: true}, list{any: true}
	if len(s.Principals) > 0 {
		var kept, bad, why []string
		anyOne := false
		for _, p := range s.Principals {
			if p == "*" {
				anyOne = true
				continue
			}
			pats, err := principalPatterns(p)
			if err != nil {
				bad, why = append(bad, p), append(why, err.Error())
				continue
			}
			kept = append(kept, pats...)
		}
		if anyOne {
			im.report(Mapped, join(path, "principals"), "\"*\": any authenticated workload (every request egress-authz decides has an identity)")
		} else {
			var ok bool
			if principals, ok = im.entries(join(path, "principals"), "principal", kept, bad, why); !ok {
				return nil, false
			}
			if !principals.any {
				im.report(Mapped, join(path, "principals"), "from.principals %v", principals.vals)
				for _, p := range principals.vals {
					if td, err := rules.ParsePrincipalTrustDomain(p); err == nil && !strings.Contains(td, "*") {
						im.tds[td] = true
					} else {
						im.needDefaultTD = true
					}
				}
			}
		}
	}
	if len(s.Namespaces) > 0 {
		var kept, bad, why []string
		anyOne := false
		for _, n := range s.Namespaces {
			switch {
			case n == "*":
				anyOne = true
			case strings.Contains(n, "*"):
				bad, why = append(bad, n), append(why, "namespaces are matched exactly")
			case strings.Contains(n, "/"):
				bad, why = append(bad, n), append(why, "not a namespace name")
			default:
				kept = append(kept, n)
			}
		}
		if !anyOne {
			var ok bool
			if nsList, ok = im.entries(join(path, "namespaces"), "namespace", kept, bad, why); !ok {
				return nil, false
			}
			if !nsList.any {
				im.report(Mapped, join(path, "namespaces"), "from.namespaces %v", nsList.vals)
			}
		}
	}
	// serviceAccounts are "ns/sa" (or "sa", in the policy's namespace),
	// exact: one from section per namespace.
	byNS := map[string][]string{}
	var nsOrder []string
	if len(s.ServiceAccounts) > 0 {
		policyNS := im.doc.Name()[:strings.IndexByte(im.doc.Name(), '/')]
		for _, sa := range s.ServiceAccounts {
			ns, name, ok := strings.Cut(sa, "/")
			if !ok {
				ns, name = policyNS, sa
			}
			if byNS[ns] == nil {
				nsOrder = append(nsOrder, ns)
			}
			byNS[ns] = append(byNS[ns], name)
		}
		saList.any = false
		im.report(Mapped, join(path, "serviceAccounts"), "from.namespaces and from.serviceAccounts, one rule per namespace")
	}
	// not* of the source: exact values can be taken out of the positive
	// list; otherwise they are conditions that cannot be expressed.
	for _, f := range []struct {
		name  string
		vals  []string
		minus *list
		match func(pat, v string) bool
	}{
		{"notPrincipals", s.NotPrincipals, &principals, func(pat, v string) bool { return istioMatch(pat, strings.TrimPrefix(v, "spiffe://")) }},
		{"notNamespaces", s.NotNamespaces, &nsList, istioMatch},
	} {
		if len(f.vals) == 0 {
			continue
		}
		if !f.minus.any && !slices.ContainsFunc(f.minus.vals, func(v string) bool { return strings.Contains(v, "*") }) {
			before := len(f.minus.vals)
			f.minus.vals = slices.DeleteFunc(f.minus.vals, func(v string) bool {
				return slices.ContainsFunc(f.vals, func(pat string) bool { return f.match(pat, v) })
			})
			im.report(Mapped, join(path, f.name), "%v taken out of the list (%d left)", f.vals, len(f.minus.vals))
			if before > 0 && len(f.minus.vals) == 0 {
				return nil, false // nothing left to match
			}
			continue
		}
		if !im.cannot(join(path, f.name), "%s %v: a rule cannot exclude workloads from a wildcard or from everyone", f.name, f.vals) {
			return nil, false
		}
	}
	if len(s.NotServiceAccounts) > 0 && !im.cannot(join(path, "notServiceAccounts"), "notServiceAccounts %v: a rule cannot exclude workloads", s.NotServiceAccounts) {
		return nil, false
	}
	if principals.any && nsList.any && len(byNS) == 0 {
		im.needDefaultTD = true
	}
	base := from{}
	if !principals.any {
		base.principals = principals.vals
	}
	if !nsList.any {
		base.namespaces = nsList.vals
		im.needDefaultTD = im.needDefaultTD || principals.any
	}
	if len(byNS) == 0 {
		return []from{base}, true
	}
	var out []from
	for _, ns := range nsOrder {
		f := base
		if !nsList.any && !slices.Contains(nsList.vals, ns) {
			continue // namespaces and serviceAccounts are ANDed
		}
		f.namespaces, f.serviceAccounts = []string{ns}, byNS[ns]
		out = append(out, f)
		im.needDefaultTD = im.needDefaultTD || principals.any
	}
	return out, len(out) > 0
}

// istioMatch matches v with an Istio string pattern: exact, "prefix*",
// "*suffix", or "*" (any non-empty value).
func istioMatch(pat, v string) bool {
	switch {
	case pat == "*":
		return v != ""
	case strings.HasSuffix(pat, "*"):
		return strings.HasPrefix(v, pat[:len(pat)-1])
	case strings.HasPrefix(pat, "*"):
		return strings.HasSuffix(v, pat[1:])
	}
	return pat == v
}

// principalPatterns translates an Istio principal pattern (exact,
// "prefix*" or "*suffix", without spiffe://) into SPIFFE ID patterns
// that match the same identities of Istio's shape TD/ns/NS/sa/SA. A
// pattern ending or starting inside a segment needs two: Istio's "pay*"
// matches "pay" itself, and a rule's '*' takes at least one character.
func principalPatterns(p string) ([]string, error) {
	star := strings.Count(p, "*")
	switch {
	case star == 0:
		id := "spiffe://" + p
		if _, ok := rules.ParseIdentity(id); !ok {
			return nil, fmt.Errorf("not a SPIFFE ID")
		}
		return []string{id}, nil
	case star > 1 || !strings.HasPrefix(p, "*") && !strings.HasSuffix(p, "*"):
		return nil, fmt.Errorf("a pattern of Istio is a prefix or a suffix, never a '*' inside")
	}
	shape := []string{"", "ns", "", "sa", ""} // trust domain, ns, NS, sa, SA
	suffix := strings.HasPrefix(p, "*")
	segs := strings.Split(strings.Trim(p, "*"), "/")
	if len(segs) > len(shape) {
		return nil, fmt.Errorf("no identity of Istio's shape TD/ns/NS/sa/SA matches it")
	}
	out := make([]string, len(shape))
	for i := range out {
		out[i] = "*"
	}
	var partial int // the position of the segment the pattern only starts (or ends)
	for i, s := range segs {
		pos := i
		if suffix {
			pos = len(shape) - len(segs) + i
		}
		edge := !suffix && i == len(segs)-1 || suffix && i == 0
		fixed := shape[pos]
		switch {
		case edge && s == "":
			continue // "td/*" or "*/sa/x": the whole segment is open
		case edge && fixed != "":
			if !suffix && !strings.HasPrefix(fixed, s) || suffix && !strings.HasSuffix(fixed, s) {
				return nil, fmt.Errorf("no identity of Istio's shape TD/ns/NS/sa/SA matches it")
			}
			out[pos] = fixed
		case edge:
			partial = pos + 1 // 1-based, so that 0 means none
			if suffix {
				out[pos] = "*" + s
			} else {
				out[pos] = s + "*"
			}
		case fixed != "" && s != fixed:
			return nil, fmt.Errorf("no identity of Istio's shape TD/ns/NS/sa/SA matches it")
		default:
			out[pos] = s
		}
	}
	for i, s := range shape {
		if s != "" {
			out[i] = s
		}
	}
	pats := []string{"spiffe://" + strings.Join(out, "/")}
	if partial > 0 {
		exact := slices.Clone(out)
		exact[partial-1] = strings.Trim(exact[partial-1], "*")
		pats = append(pats, "spiffe://"+strings.Join(exact, "/"))
	}
	for _, pat := range pats {
		if _, ok := rules.ParseIdentity(strings.ReplaceAll(pat, "*", "x")); !ok {
			return nil, fmt.Errorf("not a SPIFFE ID pattern")
		}
	}
	return pats, nil
}

var hostRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$`)

// hosts translates Istio host patterns (hosts, connection.sni); ok is
// false when nothing is left to match.
func (im *importer) hosts(vals []string, path []any) (list, bool) {
	var kept, bad, why []string
	for _, h := range vals {
		switch {
		case h == "*":
			return list{any: true}, true
		case strings.HasPrefix(h, "*.") && hostRE.MatchString(h[2:]):
			kept = append(kept, strings.ToLower(h))
		case strings.HasSuffix(h, ":*") && hostRE.MatchString(h[:len(h)-2]):
			kept = append(kept, strings.ToLower(h[:len(h)-2])) // any port: egress-authz matches hosts without their port
		case hostRE.MatchString(h):
			kept = append(kept, strings.ToLower(h))
		case strings.HasPrefix(h, "*") && hostRE.MatchString(h[1:]) && !im.deny:
			// "*example.com" also matches "fooexample.com": keep the two
			// names it surely means.
			kept = append(kept, strings.ToLower(h[1:]), "*."+strings.ToLower(h[1:]))
			im.report(Dropped, path, "host %q: only %s and *.%s are kept (Istio also matches names like foo%s): the others are denied", h, h[1:], h[1:], h[1:])
		default:
			why = append(why, "egress-authz matches a host exactly, by \"*.\" suffix, or any host")
			bad = append(bad, h)
		}
	}
	slices.Sort(kept)
	return im.entries(path, "host", slices.Compact(kept), bad, why)
}

func (im *importer) ports(vals []string, path []any) (list, bool) {
	var kept, bad, why []string
	for _, p := range vals {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			bad, why = append(bad, p), append(why, "not a port number")
			continue
		}
		kept = append(kept, strconv.Itoa(n))
	}
	return im.entries(path, "port", kept, bad, why)
}

// standardMethods are the methods notMethods is taken from: an ALLOW rule
// "any method but DELETE" allows these but DELETE, and no method outside
// them (less access).
var standardMethods = []string{"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}

func (im *importer) operation(o *Operation, path []any, c conds) (target, bool) {
	t := target{http: httpOnly(o)}
	hosts := list{any: true}
	if len(o.Hosts) > 0 {
		var ok bool
		if hosts, ok = im.hosts(o.Hosts, join(path, "hosts")); !ok {
			return t, false
		}
		if !hosts.any {
			im.report(Mapped, join(path, "hosts"), "to.hosts %v", hosts.vals)
		}
	}
	if c.set && !c.sni.any {
		if !hosts.any {
			if !im.cannot(c.sniPath, "connection.sni and hosts together: Istio requires both the TLS server name and the HTTP authority, which a rule cannot say") {
				return t, false
			}
		} else {
			hosts = c.sni
		}
	}
	if len(o.NotHosts) > 0 {
		if hosts.any || slices.ContainsFunc(hosts.vals, func(h string) bool { return strings.Contains(h, "*") }) {
			if !im.cannot(join(path, "notHosts"), "notHosts %v: a rule cannot exclude hosts from a wildcard or from every host", o.NotHosts) {
				return t, false
			}
		} else {
			hosts.vals = slices.DeleteFunc(hosts.vals, func(h string) bool {
				return slices.ContainsFunc(o.NotHosts, func(pat string) bool { return istioMatch(strings.ToLower(pat), h) })
			})
			im.report(Mapped, join(path, "notHosts"), "%v taken out of to.hosts", o.NotHosts)
			if len(hosts.vals) == 0 {
				return t, false
			}
		}
	}
	if !hosts.any {
		t.hosts = hosts.vals
	}

	ports := c.ports
	if len(o.Ports) > 0 {
		l, ok := im.ports(o.Ports, join(path, "ports"))
		if !ok {
			return t, false
		}
		if !ports.any && !l.any {
			l.vals = slices.DeleteFunc(l.vals, func(p string) bool { return !slices.Contains(ports.vals, p) })
			if len(l.vals) == 0 {
				return t, false
			}
		}
		ports = l
		im.report(Mapped, join(path, "ports"), "to.ports %v (the port of the gateway's listener)", o.Ports)
	}
	if len(o.NotPorts) > 0 {
		if ports.any {
			if !im.cannot(join(path, "notPorts"), "notPorts %v: a rule cannot exclude ports from every port", o.NotPorts) {
				return t, false
			}
		} else {
			ports.vals = slices.DeleteFunc(ports.vals, func(p string) bool { return slices.Contains(o.NotPorts, p) })
			im.report(Mapped, join(path, "notPorts"), "%v taken out of to.ports", o.NotPorts)
			if len(ports.vals) == 0 {
				return t, false
			}
		}
	}
	if !ports.any {
		for _, p := range ports.vals {
			n, _ := strconv.Atoi(p)
			t.ports = append(t.ports, n)
		}
	}

	methods := list{any: true}
	if len(o.Methods) > 0 && !slices.Contains(o.Methods, "*") {
		var kept, bad, why []string
		for _, m := range o.Methods {
			if rules.CheckMethod(m) == nil {
				kept = append(kept, m)
			} else {
				bad, why = append(bad, m), append(why, "methods are exact and upper case")
			}
		}
		var ok bool
		if methods, ok = im.entries(join(path, "methods"), "method", kept, bad, why); !ok {
			return t, false
		}
		if !methods.any {
			im.report(Mapped, join(path, "methods"), "to.methods %v", methods.vals)
		}
	}
	if len(o.NotMethods) > 0 {
		switch {
		case !methods.any:
			methods.vals = slices.DeleteFunc(methods.vals, func(m string) bool { return slices.Contains(o.NotMethods, m) })
			im.report(Mapped, join(path, "notMethods"), "%v taken out of to.methods", o.NotMethods)
			if len(methods.vals) == 0 {
				return t, false
			}
		case !im.deny:
			methods.any = false
			methods.vals = slices.DeleteFunc(slices.Clone(standardMethods), func(m string) bool { return slices.Contains(o.NotMethods, m) })
			im.report(Dropped, join(path, "notMethods"), "%v: written as the standard methods other than these, %v; a non-standard method is denied", o.NotMethods, methods.vals)
		default:
			im.cannot(join(path, "notMethods"), "notMethods %v: a deny rule cannot exclude methods from every method", o.NotMethods)
		}
	}
	if !methods.any {
		t.methods = methods.vals
	}

	paths := list{any: true}
	if len(o.Paths) > 0 && !slices.Contains(o.Paths, "*") {
		var kept, bad, why []string
		for _, p := range o.Paths {
			pats, err := pathPatterns(p)
			if err != nil {
				bad, why = append(bad, p), append(why, err.Error())
				continue
			}
			kept = append(kept, pats...)
		}
		var ok bool
		if paths, ok = im.entries(join(path, "paths"), "path", kept, bad, why); !ok {
			return t, false
		}
		if !paths.any {
			im.report(Mapped, join(path, "paths"), "to.paths %v", paths.vals)
		}
	}
	if len(o.NotPaths) > 0 && !im.cannot(join(path, "notPaths"), "notPaths %v: a rule cannot exclude paths", o.NotPaths) {
		return t, false
	}
	if !paths.any {
		t.paths = paths.vals
	}
	return t, true
}

// pathPatterns translates an Istio path (exact, "prefix*", "*suffix",
// or a template with {*} and a final {**}) into path patterns matching
// the same normalized paths.
func pathPatterns(p string) ([]string, error) {
	check := func(pats ...string) ([]string, error) {
		for _, pat := range pats {
			if err := validPath(pat); err != nil {
				return nil, err
			}
		}
		return pats, nil
	}
	switch {
	case strings.Contains(p, "{"):
		segs := strings.Split(p, "/")
		for i, s := range segs {
			switch {
			case s == "{*}":
				segs[i] = "*"
			case s == "{**}" && i == len(segs)-1:
				// Zero or more segments below: as the prefix "base/".
				return check(strings.Join(segs[:i], "/")+"/", strings.Join(segs[:i], "/")+"/*/**")
			case strings.ContainsAny(s, "{}*"):
				return nil, fmt.Errorf("only {*} segments and a final {**} have an equivalent")
			}
		}
		return check(strings.Join(segs, "/"))
	case strings.HasPrefix(p, "*"):
		return nil, fmt.Errorf("a suffix at any depth has no equivalent")
	case strings.HasSuffix(p, "*") && strings.Count(p, "*") == 1:
		base := p[:len(p)-1]
		switch {
		case base == "/":
			return check("/**")
		case strings.HasSuffix(base, "/"):
			// "/v1/*": "/v1/" and anything below it.
			return check(base, base+"*/**")
		}
		// "/admin*": /admin and below it, and longer names in its
		// segment and below them ("/admin*/**" matches "/adminx" itself).
		return check(base+"/**", base+"*/**")
	case strings.Contains(p, "*"):
		return nil, fmt.Errorf("a path of Istio is exact, a prefix, a suffix or a template")
	}
	return check(p)
}

// validPath says why a path pattern would not parse in a rule file.
func validPath(pat string) error {
	src := fmt.Sprintf("apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules:\n  - {id: p, action: allow, to: {paths: [%s]}}\n", strconv.Quote(pat))
	if _, err := rules.Parse(rules.Source{Name: "path", Data: []byte(src)}); err != nil {
		return fmt.Errorf("%q is not a normalized path, which Istio would never match", pat)
	}
	return nil
}

var slugRE = regexp.MustCompile(`[^a-z0-9]+`)

// emit adds one rule for a source and an operation of Istio rule idx.
func (im *importer) emit(idx int, f from, t target) {
	action := rules.Allow
	if im.deny {
		action = rules.Deny
	}
	r := &rules.Rule{Action: action, Mode: rules.Enforce,
		Principals: f.principals, Namespaces: f.namespaces, ServiceAccounts: f.serviceAccounts,
		Hosts: t.hosts, Ports: t.ports, Methods: t.methods, Paths: t.paths}
	if t.http && !im.deny && len(r.Paths) == 0 {
		// Istio never matches an ALLOW rule with HTTP fields to TCP.
		r.Paths = []string{"/**"}
	}
	base := strings.Trim(slugRE.ReplaceAllString(strings.ToLower(im.doc.Name()), "-"), "-")
	if len(base) > 50 {
		base = strings.TrimRight(base[:50], "-")
	}
	id := fmt.Sprintf("%s-r%d", base, idx+1)
	for n := 2; im.ids[id]; n++ {
		id = fmt.Sprintf("%s-r%d-%d", base, idx+1, n)
	}
	im.ids[id] = true
	r.ID = id
	r.Description = fmt.Sprintf("Imported from AuthorizationPolicy %s (%s), rule %d", im.doc.Name(), im.doc.at(im.prefix...), idx+1)
	im.set.Rules = append(im.set.Rules, r)
	if im.deny && t.http {
		how := "matches them by server name only"
		if r.HTTPOnly() {
			how = "names methods or paths, so it never matches them"
		}
		im.report(Mapped, im.prefix, "rule %s: Istio applies a DENY rule's other fields to TLS-passthrough connections as if its HTTP fields were not there; egress-authz's rule %s", id, how)
	}
}
