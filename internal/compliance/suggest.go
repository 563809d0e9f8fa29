package compliance

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/rules"
)

// SuggestOptions tunes Suggest. The zero value proposes nothing that was
// not observed.
type SuggestOptions struct {
	// Widen lets a proposal allow more than was observed, for a person who
	// would rather review a short list than an exact one: an identifier-like
	// path segment seen only once becomes "*" too, Subdomains or more names
	// under one parent domain become "*.parent", and a rule with more than
	// MaxPaths path patterns has those sharing leading segments merged into
	// "prefix/**". Methods stay per path pattern, and the requests Suggest
	// leaves out stay out, either way.
	Widen bool
	// Subdomains is, with Widen, how many different names under one parent
	// domain a caller must have reached before they are written as
	// "*.parent". Default 3; negative: never.
	Subdomains int
	// MaxPaths is, with Widen, how many path patterns a rule may list before
	// those sharing leading segments are merged into "prefix/**". Default 10.
	MaxPaths int
}

// Exclusion is why Suggest left out a request that a rule could allow:
// covering it would take a rule that allows more than was observed.
type Exclusion string

// The exclusions of a Suggestion.
const (
	// ExcludedMethod: the method is not an upper-case token ("post"). A
	// methods list cannot name it (lint wants upper case), so only a rule
	// without methods, allowing every method, could allow it.
	ExcludedMethod Exclusion = "method-not-upper-case"
	// ExcludedDotSegments: the request's path reached the path rules match
	// through dot-segments ("/3.0/lists/../../admin" is "/admin"). The
	// caller did not ask for that path in plain words, and a proposal must
	// not learn it. The decision log records normalized paths, so this is
	// seen only in requests that still carry their raw path.
	ExcludedDotSegments Exclusion = "dot-segments"
	// ExcludedAsterisk: the path holds a '*', which a path pattern reads as
	// a wildcard: a rule naming the path would allow others.
	ExcludedAsterisk Exclusion = "asterisk-in-path"
)

// Exclusions returns every Exclusion, in the order outputs list them.
func Exclusions() []Exclusion {
	return []Exclusion{ExcludedMethod, ExcludedDotSegments, ExcludedAsterisk}
}

// Describe says in words what requests the exclusion left out.
func (e Exclusion) Describe() string {
	switch e {
	case ExcludedMethod:
		return "a method that is not an upper-case token, which only a rule allowing every method could allow"
	case ExcludedDotSegments:
		return "a path written with dot-segments (/a/../b), which the caller did not ask for in plain words"
	case ExcludedAsterisk:
		return "a '*' in the path, which a path pattern would read as a wildcard"
	}
	return string(e)
}

// Placeholder is the owner and ticket of a suggested rule: lint warns of
// it (see rules.Placeholder), so a proposal merged unread fails
// "rules lint --strict", and a policy requiring the fields counts it as
// missing.
const Placeholder = rules.Placeholder

// Suggestion is an allow-list proposed from observed requests, for a person
// to review.
type Suggestion struct {
	// Set holds the proposed rules and the trust domains of the callers
	// (not Files or Version: it was never read from a file).
	Set *rules.Set
	// Requests is, for each rule of Set, how many requests it was made from.
	Requests []int
	// Used is how many requests the rules were made from. Skipped counts
	// the requests no rule can allow, by the reason; LeftOut those a rule
	// could allow only by allowing more than was observed, by why.
	Used    int
	Skipped map[rules.Reason]int
	LeftOut map[Exclusion]int
}

// judge says what Suggest makes of one request: the reason no rule can
// allow it, or why a proposal leaves it out, or neither (p is then the
// request as rules see it).
func judge(req rules.Request) (p rules.Prepared, reason rules.Reason, ex Exclusion) {
	// What Decide would deny before looking at a rule, no rule can allow.
	// Trust domains are not judged: the proposal trusts its callers'
	// (Requests leaves out those a rule set did not trust).
	if p, reason = rules.Prepare(req, nil); reason != "" {
		return p, reason, ""
	}
	switch {
	case req.SNI:
	case rules.CheckMethod(req.Method) != nil:
		ex = ExcludedMethod
	case rules.ResolvesDotSegments(req.Path):
		ex = ExcludedDotSegments
	case strings.IndexByte(p.Path, '*') >= 0:
		ex = ExcludedAsterisk
	}
	return p, "", ex
}

// Suggest proposes an allow-list that allows the requests of reqs and, as
// far as rules can say it, nothing else:
//   - a rule names one caller's SPIFFE ID (callers with exactly the same
//     access share a rule), one host, the port seen, and methods per path
//     pattern: a method seen on one path is never allowed on another;
//   - a path segment becomes "*" only where observations of the same
//     caller, host, port and method differ at it and every value seen
//     there looks like an identifier (a number, a UUID, a hex or
//     random-looking token, a prefixed id like ch_1AbC); versions and
//     dates (v1, 3.0, 2024-06-01) stay literal, and a segment seen with
//     one value stays that value;
//   - a caller and host seen over TLS passthrough get a rule without
//     methods and paths, the only kind such connections can match (it
//     covers that caller's HTTP requests to the host and port too).
//
// With opts.Widen it merges more (see SuggestOptions).
//
// Requests that no rule can allow (no or invalid identity, invalid host,
// unsafe path) are counted in Skipped; those only a wider rule could allow
// (see Exclusion) in LeftOut.
func Suggest(reqs []rules.Request, opts SuggestOptions) *Suggestion {
	if opts.Subdomains == 0 {
		opts.Subdomains = 3
	}
	if opts.MaxPaths <= 0 {
		opts.MaxPaths = 10
	}
	s := &Suggestion{Set: &rules.Set{}, Skipped: map[rules.Reason]int{}, LeftOut: map[Exclusion]int{}}
	type observed struct {
		principal, host string
		port            int
		sni             bool
		method, path    string
	}
	var kept []observed
	hostsOf := map[string]map[string]bool{} // principal -> hosts
	tds := map[string]bool{}
	for _, req := range reqs {
		p, reason, ex := judge(req)
		switch {
		case reason != "":
			s.Skipped[reason]++
			continue
		case ex != "":
			s.LeftOut[ex]++
			continue
		}
		s.Used++
		tds[p.Identity.TrustDomain] = true
		if hostsOf[req.Principal] == nil {
			hostsOf[req.Principal] = map[string]bool{}
		}
		hostsOf[req.Principal][p.Host] = true
		// Port 0 (unknown) is kept: it means "any port".
		o := observed{principal: req.Principal, host: p.Host, port: p.Port, sni: req.SNI}
		if !req.SNI {
			o.method, o.path = req.Method, p.Path
		}
		kept = append(kept, o)
	}

	// Each caller's hosts, one group a rule: every name alone, or with
	// Widen, names under one parent together.
	subdomains := -1
	if opts.Widen {
		subdomains = opts.Subdomains
	}
	groupOf := map[[2]string]string{} // principal, host -> group key
	groups := map[string][]string{}   // group key -> host patterns
	var groupOrder []string
	for _, principal := range sortedKeys(hostsOf) {
		for _, g := range groupHosts(sortedKeys(hostsOf[principal]), subdomains) {
			key := principal + " " + strings.Join(g.patterns, ",")
			for _, h := range g.names {
				groupOf[[2]string{principal, h}] = key
			}
			groups[key] = g.patterns
			groupOrder = append(groupOrder, key)
		}
	}

	// The observations of a caller, host group and port, and over TLS
	// passthrough or by method.
	type bucketKey struct {
		group string
		port  int
	}
	type bucket struct {
		principal string
		sni       int                    // TLS-passthrough requests
		methods   map[string]*pathMerger // HTTP requests by method
	}
	buckets := map[bucketKey]*bucket{}
	for _, o := range kept {
		k := bucketKey{groupOf[[2]string{o.principal, o.host}], o.port}
		b := buckets[k]
		if b == nil {
			b = &bucket{principal: o.principal, methods: map[string]*pathMerger{}}
			buckets[k] = b
		}
		if o.sni {
			b.sni++
			continue
		}
		m := b.methods[o.method]
		if m == nil {
			m = &pathMerger{widen: opts.Widen}
			b.methods[o.method] = m
		}
		m.add(o.path)
	}

	type draft struct {
		principals []string
		hosts      []string
		ports      []int // nil: any port
		methods    []string
		paths      []string
		sni        bool
		n          int
	}
	var drafts []*draft
	for _, group := range groupOrder {
		var ports []int
		for k := range buckets {
			if k.group == group {
				ports = append(ports, k.port)
			}
		}
		slices.Sort(ports)
		for _, port := range ports {
			b := buckets[bucketKey{group, port}]
			var portList []int
			if port != 0 {
				portList = []int{port}
			}
			mk := func() *draft {
				return &draft{principals: []string{b.principal}, hosts: groups[group], ports: portList}
			}
			if b.sni > 0 {
				// No methods or paths: it covers the HTTP requests too.
				d := mk()
				d.sni, d.n = true, b.sni
				for _, m := range b.methods {
					d.n += m.n
				}
				drafts = append(drafts, d)
				continue
			}
			// Path patterns by method, then methods by path pattern: one
			// rule for each set of methods that share their paths.
			methodsOf := map[string][]string{}
			count := map[string]int{}
			for _, method := range sortedKeys(b.methods) {
				m := b.methods[method]
				pats, n := m.patterns()
				if opts.Widen {
					pats, n = collapseCounted(pats, n, opts.MaxPaths)
				}
				for i, p := range pats {
					methodsOf[p] = append(methodsOf[p], method)
					count[p] += n[i]
				}
			}
			bySet := map[string]*draft{}
			var setOrder []string
			for _, p := range sortedKeys(methodsOf) {
				key := strings.Join(methodsOf[p], " ")
				d := bySet[key]
				if d == nil {
					d = mk()
					d.methods = methodsOf[p]
					bySet[key] = d
					setOrder = append(setOrder, key)
				}
				d.paths = append(d.paths, p)
				d.n += count[p]
			}
			slices.Sort(setOrder)
			for _, key := range setOrder {
				drafts = append(drafts, bySet[key])
			}
		}
	}

	// Exactly the same access on several ports, then for several callers:
	// one rule. Either merge names the product of what was seen, nothing
	// more.
	merge := func(ds []*draft, key func(*draft) string, join func(into, d *draft)) []*draft {
		byKey := map[string]*draft{}
		var out []*draft
		for _, d := range ds {
			k := key(d)
			if m, ok := byKey[k]; ok {
				join(m, d)
				m.n += d.n
				continue
			}
			byKey[k] = d
			out = append(out, d)
		}
		return out
	}
	drafts = merge(drafts, func(d *draft) string {
		return fmt.Sprint(d.principals, d.hosts, d.methods, d.paths, d.sni, d.ports == nil)
	}, func(into, d *draft) {
		if into.ports != nil {
			into.ports = append(into.ports, d.ports...)
		}
	})
	drafts = merge(drafts, func(d *draft) string {
		return fmt.Sprint(d.hosts, d.ports, d.methods, d.paths, d.sni)
	}, func(into, d *draft) { into.principals = append(into.principals, d.principals...) })

	ids := map[string]bool{}
	for _, d := range drafts {
		r := &rules.Rule{Action: rules.Allow, Mode: rules.Enforce, Owner: Placeholder, Ticket: Placeholder,
			Principals: d.principals, Hosts: d.hosts, Ports: d.ports, Methods: d.methods, Paths: d.paths}
		suffix := "tls"
		if !d.sni {
			suffix = strings.ToLower(strings.Join(d.methods, "-"))
		}
		r.ID = uniqueID(ids, ruleSlug(d.principals, d.hosts)+"-"+suffix)
		what := "requests"
		if d.n == 1 {
			what = "request"
		}
		r.Description = fmt.Sprintf("Suggested from %d recorded %s; review before merging", d.n, what)
		if d.sni {
			r.Description += " (TLS passthrough seen: no methods or paths, which such connections cannot match)"
		}
		s.Set.Rules = append(s.Set.Rules, r)
		s.Requests = append(s.Requests, d.n)
	}
	s.Set.TrustDomains = sortedKeys(tds)
	return s
}

// pathMerger merges the normalized paths observed for one caller, host,
// port and method into path patterns. Paths with the same skeleton (the
// same segments, identifier-like ones aside) share a pattern; an
// identifier position of a skeleton becomes "*" once two different values
// were seen there, or at once with widen. It keeps one entry per
// skeleton, however many identifiers pass, so that replaying a week of
// traffic stays small.
type pathMerger struct {
	widen bool
	byKey map[string]*skeleton
	n     int // paths added
}

// skeleton is the paths of a pathMerger that share a pattern.
type skeleton struct {
	segs   []string // the first path's segments
	varied []bool   // an identifier position where two values were seen
	n      int      // paths added
}

// add records one normalized path and returns its skeleton.
func (m *pathMerger) add(path string) *skeleton {
	m.n++
	segs := strings.Split(path, "/")
	key := make([]string, len(segs))
	for i, seg := range segs {
		if idLike(seg) {
			key[i] = "\x00" // never in a normalized path
		} else {
			key[i] = seg
		}
	}
	k := strings.Join(key, "/")
	if m.byKey == nil {
		m.byKey = map[string]*skeleton{}
	}
	sk := m.byKey[k]
	if sk == nil {
		sk = &skeleton{segs: segs, varied: make([]bool, len(segs))}
		if m.widen {
			for i, seg := range segs {
				sk.varied[i] = idLike(seg)
			}
		}
		m.byKey[k] = sk
	}
	sk.n++
	for i, seg := range segs {
		if seg != sk.segs[i] {
			sk.varied[i] = true // only identifier positions differ
		}
	}
	return sk
}

// pattern is the path pattern of the skeleton's paths.
func (sk *skeleton) pattern() string {
	out := slices.Clone(sk.segs)
	for i, v := range sk.varied {
		if v {
			out[i] = "*"
		}
	}
	return strings.Join(out, "/")
}

// patterns returns the merger's path patterns, sorted, with how many paths
// each was made from, without those another pattern of the list covers
// (their paths counted with it): "/v1/charges/*" covers a
// "/v1/charges/search" seen beside two charge ids.
func (m *pathMerger) patterns() ([]string, []int) {
	count := map[string]int{}
	for _, sk := range m.byKey {
		count[sk.pattern()] += sk.n
	}
	all := sortedKeys(count)
	var pats []string
	for _, p := range all {
		if coveredBy(all, p) == "" {
			pats = append(pats, p)
		}
	}
	ns := make([]int, len(pats))
	for _, p := range all {
		for i, q := range pats {
			if q == p || rules.PathCovers(q, p) {
				ns[i] += count[p]
				break
			}
		}
	}
	return pats, ns
}

// coveredBy returns a pattern of all other than p that matches every path p
// matches, or "".
func coveredBy(all []string, p string) string {
	for _, q := range all {
		if q != p && strings.Contains(q, "*") && rules.PathCovers(q, p) {
			return q
		}
	}
	return ""
}

// collapseCounted is collapsePaths keeping the counts of pats: each
// resulting pattern counts the paths of those it covers.
func collapseCounted(pats []string, ns []int, limit int) ([]string, []int) {
	out := collapsePaths(pats, limit)
	if len(out) == len(pats) {
		return pats, ns
	}
	counts := make([]int, len(out))
	for i, p := range pats {
		for j, q := range out {
			if q == p || rules.PathCovers(q, p) {
				counts[j] += ns[i]
				break
			}
		}
	}
	return out, counts
}

func sortedKeys[K interface{ ~string | ~int }, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

var (
	uuidRE     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	hexRE      = regexp.MustCompile(`^[0-9a-fA-F]{8,}$`)
	prefixedRE = regexp.MustCompile(`^[a-z]{1,8}_[A-Za-z0-9]{3,}$`)
	tokenRE    = regexp.MustCompile(`^[A-Za-z0-9_]{8,}$`)
	// Versions and dates name an API, not a thing in it: v1, v1beta1, 3.0,
	// 1.5.0, 2024-06-01, 2024-06, 20240601.
	versionRE = regexp.MustCompile(`^(?:[vV]\d+(?:[._]\d+)*(?:(?:alpha|beta|rc)\d*)?|\d+(?:\.\d+)+)$`)
	dateRE    = regexp.MustCompile(`^(?:\d{4}-\d{2}(?:-\d{2})?|(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]))$`)
)

// idLike reports whether a path segment looks like an identifier rather
// than a name an API author chose: a number, a UUID, a hex token of 8 or
// more characters with a digit (abc123def4), a prefixed id (ch_1AbC,
// cus_NffrFeUfNV2Hib), or a random-looking token of 8 or more letters and
// digits. Versions and dates are not identifiers.
func idLike(s string) bool {
	digits, lower, upper := 0, 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case '0' <= c && c <= '9':
			digits++
		case 'a' <= c && c <= 'z':
			lower++
		case 'A' <= c && c <= 'Z':
			upper++
		}
	}
	switch {
	case digits == 0, versionRE.MatchString(s), dateRE.MatchString(s):
		return false
	case digits == len(s), uuidRE.MatchString(s), hexRE.MatchString(s), prefixedRE.MatchString(s):
		return true
	}
	// Random-looking tokens: long, with digits among mixed-case letters
	// (k8s9x2m4p7q1z3, dQw4w9WgXcQ1), but not words joined by dashes
	// (oauth2-token-exchange) or run together with one digit
	// (oauth2callback).
	if !tokenRE.MatchString(s) {
		return false
	}
	return digits >= 2 || lower > 0 && upper > 0
}

// collapsePaths merges path patterns sharing leading segments into
// "prefix/**", deepest prefixes first, until at most limit remain (or only
// one-segment prefixes are left), then drops patterns another one covers.
func collapsePaths(paths []string, limit int) []string {
	depthOf := func(p string) int { return strings.Count(strings.TrimSuffix(p, "/**"), "/") }
	maxDepth := 0
	for _, p := range paths {
		maxDepth = max(maxDepth, depthOf(p))
	}
	for depth := maxDepth - 1; len(paths) > limit && depth >= 1; depth-- {
		groups := map[string][]string{}
		var prefixes []string
		for _, p := range paths {
			segs := strings.Split(strings.TrimSuffix(p, "/**")[1:], "/")
			if len(segs) < depth {
				continue
			}
			prefix := "/" + strings.Join(segs[:depth], "/")
			if strings.HasSuffix(prefix, "/") {
				continue // an empty segment: "prefix//**" is no pattern
			}
			if groups[prefix] == nil {
				prefixes = append(prefixes, prefix)
			}
			groups[prefix] = append(groups[prefix], p)
		}
		var out []string
		done := map[string]bool{}
		for _, prefix := range prefixes {
			if len(groups[prefix]) < 2 {
				continue
			}
			out = append(out, prefix+"/**")
			for _, p := range groups[prefix] {
				done[p] = true
			}
		}
		for _, p := range paths {
			if !done[p] {
				out = append(out, p)
			}
		}
		slices.Sort(out)
		paths = slices.Compact(out)
	}
	var out []string
	for i, p := range paths {
		covered := false
		for j, q := range paths {
			if i != j && strings.HasSuffix(q, "/**") && rules.PathCovers(q, p) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	return out
}

// hostGroup is hosts that one rule lists: the names seen, and the patterns
// written for them.
type hostGroup struct {
	names    []string
	patterns []string
}

// groupHosts groups host names (sorted) under "*.parent" patterns where at
// least n names share a parent, the most specific parent first; every
// other name is a group of its own.
func groupHosts(names []string, n int) []hostGroup {
	if n < 0 {
		n = len(names) + 1
	}
	under := map[string][]string{} // parent -> names strictly below it
	for _, h := range names {
		if strings.HasPrefix(h, "[") || isIPv4(h) {
			continue
		}
		for i := 0; i < len(h); i++ {
			if h[i] == '.' && wildcardParent(h[i+1:]) {
				under[h[i+1:]] = append(under[h[i+1:]], h)
			}
		}
	}
	parents := sortedKeys(under)
	// Most specific (most labels) first, then by name.
	sort.SliceStable(parents, func(i, j int) bool {
		return strings.Count(parents[i], ".") > strings.Count(parents[j], ".")
	})
	taken := map[string]bool{}
	var groups []hostGroup
	for _, parent := range parents {
		var free []string
		for _, h := range under[parent] {
			if !taken[h] {
				free = append(free, h)
			}
		}
		if len(free) < n {
			continue
		}
		g := hostGroup{names: free, patterns: []string{"*." + parent}}
		for _, h := range free {
			taken[h] = true
		}
		if slices.Contains(names, parent) && !taken[parent] {
			// "*.parent" does not match parent itself.
			taken[parent] = true
			g.names = append(g.names, parent)
			g.patterns = []string{parent, "*." + parent}
		}
		groups = append(groups, g)
	}
	for _, h := range names {
		if !taken[h] {
			groups = append(groups, hostGroup{names: []string{h}, patterns: []string{h}})
		}
	}
	base := func(g hostGroup) string { return strings.TrimPrefix(g.patterns[len(g.patterns)-1], "*.") }
	sort.SliceStable(groups, func(i, j int) bool { return base(groups[i]) < base(groups[j]) })
	return groups
}

// wildcardParent reports whether "*.parent" is a sensible pattern: the
// parent is a registrable domain or below one, not "com" or "co.uk".
func wildcardParent(parent string) bool {
	labels := strings.Split(parent, ".")
	switch {
	case len(labels) < 2:
		return false
	case len(labels) == 2 && len(labels[1]) == 2 && len(labels[0]) <= 3:
		return false // co.uk, com.au, gv.at: a public suffix, most likely
	}
	return true
}

func isIPv4(h string) bool {
	for i := 0; i < len(h); i++ {
		if c := h[i]; c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

var slugRE = regexp.MustCompile(`[^a-z0-9]+`)

func ruleSlug(principals, hosts []string) string {
	who := "workloads"
	if len(principals) == 1 {
		if id, ok := rules.ParseIdentity(principals[0]); ok && id.Namespace != "" {
			who = id.Namespace + "-" + id.ServiceAccount
		} else if i := strings.LastIndexByte(principals[0], '/'); i >= 0 {
			who = principals[0][i+1:]
		}
	} else {
		// Several callers: their namespace, when they share one.
		ns := ""
		for i, p := range principals {
			id, _ := rules.ParseIdentity(p)
			if i > 0 && id.Namespace != ns {
				ns = ""
				break
			}
			ns = id.Namespace
		}
		if ns != "" {
			who = ns
		}
	}
	host := hosts[len(hosts)-1]
	host = strings.TrimPrefix(host, "*.")
	slug := strings.Trim(slugRE.ReplaceAllString(strings.ToLower(who+"-"+host), "-"), "-")
	if len(slug) > 60 {
		slug = strings.TrimRight(slug[:60], "-")
	}
	if slug == "" {
		slug = "suggested"
	}
	return slug
}

func uniqueID(ids map[string]bool, id string) string {
	out := id
	for i := 2; ids[out]; i++ {
		out = id + "-" + strconv.Itoa(i)
	}
	ids[out] = true
	return out
}

// DeniedError is a request that a proposed allow-list denies although a
// rule could allow it.
type DeniedError struct {
	Request rules.Request
	Reason  rules.Reason // the proposal's reason for denying it
}

func (e *DeniedError) Error() string {
	r := &e.Request
	return fmt.Sprintf("it denies %s %s%s from %s (%s)", r.Method, r.Host, r.Path, r.Principal, e.Reason)
}

// CheckSuggestion checks a proposal as it will be printed: that yaml (what
// Marshal wrote of a Suggestion made from reqs) parses and compiles, and
// that, decided at now, it allows every request of reqs that Suggest did
// not skip or leave out. It returns the parse or compile error, or a *DeniedError for the
// first request the proposal denies.
func CheckSuggestion(yaml []byte, reqs []rules.Request, now time.Time) error {
	set, err := rules.Parse(rules.Source{Name: "suggestion.yaml", Data: yaml})
	if err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	t, err := rules.Compile(set)
	if err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	for _, req := range reqs {
		if _, reason, ex := judge(req); reason != "" || ex != "" {
			continue // Suggest skipped it, or left it out
		}
		if d := t.Decide(req, now); !d.Allow {
			return &DeniedError{Request: req, Reason: d.Reason}
		}
	}
	return nil
}
