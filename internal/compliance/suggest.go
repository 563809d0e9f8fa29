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

// SuggestOptions tunes Suggest. The zero value means the defaults.
type SuggestOptions struct {
	// Subdomains is how many different names under one parent domain a
	// caller must have reached before they are written as "*.parent".
	// Default 3; negative: never.
	Subdomains int
	// MaxPaths is how many path patterns a rule may list before those
	// sharing leading segments are merged into "prefix/**". Default 10.
	MaxPaths int
}

// Suggestion is an allow-list proposed from observed requests, for a person
// to review.
type Suggestion struct {
	// Set holds the proposed rules and the trust domains of the callers
	// (not Files or Version: it was never read from a file).
	Set *rules.Set
	// Requests is, for each rule of Set, how many requests it was made from.
	Requests []int
	// Used is how many requests the rules were made from; Skipped counts
	// the others by the reason no rule could allow them.
	Used    int
	Skipped map[rules.Reason]int
}

// Suggest proposes a minimal allow-list that allows every request of reqs
// that a rule can allow: one rule per caller and host (or group of hosts),
// naming the caller's SPIFFE ID, the ports, the methods and the paths seen,
// with paths and hosts generalised:
//   - a path segment that looks like an identifier (a number, a UUID, a
//     long hex or random-looking token, a date) becomes "*";
//   - a rule with more than MaxPaths path patterns has those that share
//     leading segments merged into "prefix/**";
//   - Subdomains or more names under one parent domain become "*.parent"
//     (never directly under a top-level or public second-level domain such
//     as "com" or "co.uk");
//   - a caller and host seen over TLS passthrough get a rule without
//     methods and paths, which such connections cannot match;
//   - callers with exactly the same access share one rule.
//
// Requests that no rule can allow (no or invalid identity, invalid host,
// unsafe path) are counted in Skipped.
func Suggest(reqs []rules.Request, opts SuggestOptions) *Suggestion {
	if opts.Subdomains == 0 {
		opts.Subdomains = 3
	}
	if opts.MaxPaths <= 0 {
		opts.MaxPaths = 10
	}
	s := &Suggestion{Set: &rules.Set{}, Skipped: map[rules.Reason]int{}}
	type use struct {
		ports   map[int]bool
		methods map[string]bool
		paths   map[string]bool
		sni     bool
		n       int
	}
	byCaller := map[string]map[string]*use{} // principal -> host -> use
	tds := map[string]bool{}
	for _, req := range reqs {
		// What Decide would deny before looking at a rule, no rule can
		// allow. Trust domains are not judged: the proposal trusts its
		// callers' (Requests leaves out those a rule set did not trust).
		p, reason := rules.Prepare(req, nil)
		if reason != "" {
			s.Skipped[reason]++
			continue
		}
		s.Used++
		tds[p.Identity.TrustDomain] = true
		hosts := byCaller[req.Principal]
		if hosts == nil {
			hosts = map[string]*use{}
			byCaller[req.Principal] = hosts
		}
		u := hosts[p.Host]
		if u == nil {
			u = &use{ports: map[int]bool{}, methods: map[string]bool{}, paths: map[string]bool{}}
			hosts[p.Host] = u
		}
		u.n++
		u.ports[p.Port] = true // 0 (unknown) is kept: it means "any port"
		if req.SNI {
			u.sni = true
		} else {
			u.methods[req.Method] = true
			u.paths[GeneralizePath(p.Path)] = true
		}
	}

	// One draft rule per caller and host group.
	type draft struct {
		principals []string
		hosts      []string
		ports      []int
		methods    []string
		paths      []string
		n          int
		sni        bool
		unnamable  string // a method seen that a methods list cannot name
	}
	var drafts []*draft
	for _, principal := range sortedKeys(byCaller) {
		hosts := byCaller[principal]
		for _, group := range groupHosts(sortedKeys(hosts), opts.Subdomains) {
			d := &draft{principals: []string{principal}, hosts: group.patterns}
			ports, methods, paths := map[int]bool{}, map[string]bool{}, map[string]bool{}
			for _, h := range group.names {
				u := hosts[h]
				d.n += u.n
				d.sni = d.sni || u.sni
				for p := range u.ports {
					ports[p] = true
				}
				for m := range u.methods {
					methods[m] = true
				}
				for p := range u.paths {
					paths[p] = true
				}
			}
			if !ports[0] {
				d.ports = sortedKeys(ports)
			}
			if !d.sni {
				d.methods = sortedKeys(methods)
				d.paths = collapsePaths(sortedKeys(paths), opts.MaxPaths)
				// A method that is a token but not upper case ("post")
				// reaches the server; only a rule without methods can
				// allow it.
				for _, m := range d.methods {
					if rules.CheckMethod(m) != nil {
						d.methods, d.unnamable = nil, m
						break
					}
				}
			}
			drafts = append(drafts, d)
		}
	}

	// Callers with the same access share a rule.
	key := func(d *draft) string {
		return fmt.Sprint(d.hosts, d.ports, d.methods, d.paths, d.sni, d.unnamable)
	}
	merged := map[string]*draft{}
	var order []*draft
	for _, d := range drafts {
		if m, ok := merged[key(d)]; ok {
			m.principals = append(m.principals, d.principals...)
			m.n += d.n
			continue
		}
		merged[key(d)] = d
		order = append(order, d)
	}

	ids := map[string]bool{}
	for _, d := range order {
		r := &rules.Rule{Action: rules.Allow, Mode: rules.Enforce, Principals: d.principals, Hosts: d.hosts, Ports: d.ports,
			Methods: d.methods, Paths: d.paths}
		r.ID = uniqueID(ids, ruleSlug(d.principals, d.hosts))
		what := "requests"
		if d.n == 1 {
			what = "request"
		}
		r.Description = fmt.Sprintf("Suggested from %d recorded %s; review before merging", d.n, what)
		if d.sni {
			r.Description += " (TLS passthrough seen: no methods or paths, which such connections cannot match)"
		} else if d.unnamable != "" {
			r.Description += fmt.Sprintf(" (any method: the method %q was seen, and methods lists are upper case)", d.unnamable)
		}
		s.Set.Rules = append(s.Set.Rules, r)
		s.Requests = append(s.Requests, d.n)
	}
	s.Set.TrustDomains = sortedKeys(tds)
	return s
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
	uuidRE  = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	hexRE   = regexp.MustCompile(`^[0-9a-fA-F]{12,}$`)
	tokenRE = regexp.MustCompile(`^(?:[a-z]{1,6}_)?[A-Za-z0-9_-]{10,}$`)
)

// GeneralizePath replaces the segments of a normalized path that look like
// identifiers with "*": "/v1/charges/ch_3MmlLrLkdIwHu7ix0snN0B15" becomes
// "/v1/charges/*", "/users/1234/orders" becomes "/users/*/orders". The
// result is a path pattern that matches the path.
func GeneralizePath(path string) string {
	segs := strings.Split(path, "/")
	changed := false
	for i, s := range segs {
		switch {
		case s == "":
		case idLike(s):
			segs[i], changed = "*", true
		case strings.Contains(s, "**"):
			// "**" is only allowed as a trailing "/**"; one '*' matches
			// what two did.
			for strings.Contains(s, "**") {
				s = strings.ReplaceAll(s, "**", "*")
			}
			segs[i], changed = s, true
		}
	}
	if !changed {
		return path
	}
	return strings.Join(segs, "/")
}

// idLike reports whether a path segment looks like an identifier rather
// than a name an API author chose.
func idLike(s string) bool {
	digits, letters := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case '0' <= c && c <= '9':
			digits++
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
			letters++
		}
	}
	switch {
	case digits == 0:
		return false
	case letters == 0 && digits*2 >= len(s): // 42, 2026-11-22, 1.5.0
		return true
	case uuidRE.MatchString(s):
		return true
	case hexRE.MatchString(s) && letters > 0:
		return true
	}
	// Random-looking tokens: long, with digits among mixed-case letters
	// (ch_3MmlLrLkdIwHu7ix0snN0B15, cus_NffrFeUfNV2Hib) or with many
	// digits, but not words joined by dashes (oauth2-token-exchange) or
	// run together (oauth2callback).
	if len(s) < 12 || strings.Contains(s, "-") || !tokenRE.MatchString(s) {
		return false
	}
	return digits >= 3 || strings.ToLower(s) != s && strings.ToUpper(s) != s
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
// that, decided at now, it allows every request of reqs that a rule can
// allow. It returns the parse or compile error, or a *DeniedError for the
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
		if _, reason := rules.Prepare(req, nil); reason != "" {
			continue // denied before any rule is looked at: Suggest skipped it
		}
		if d := t.Decide(req, now); !d.Allow {
			return &DeniedError{Request: req, Reason: d.Reason}
		}
	}
	return nil
}
