package rules

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// globMatch matches s against a pattern in which '*' stands for one or more
// characters other than '/'. Because '*' never crosses '/', the pattern and
// s must have the same number of segments, and each pair of segments is
// matched alone; inside a segment the classic single-backtrack algorithm is
// linear in practice and never exponential, whatever an attacker sends.
func globMatch(pattern, s string) bool {
	for {
		pi := strings.IndexByte(pattern, '/')
		si := strings.IndexByte(s, '/')
		if (pi < 0) != (si < 0) {
			return false
		}
		if pi < 0 {
			return matchSegment(pattern, s)
		}
		if !matchSegment(pattern[:pi], s[:si]) {
			return false
		}
		pattern, s = pattern[pi+1:], s[si+1:]
	}
}

// matchSegment matches one segment; '*' takes at least one character.
func matchSegment(p, s string) bool {
	px, sx := 0, 0
	starPx, starSx := -1, 0
	for sx < len(s) || px < len(p) {
		if px < len(p) {
			switch c := p[px]; {
			case c == '*':
				if sx < len(s) {
					starPx, starSx = px, sx+1
					px, sx = px+1, sx+1
					continue
				}
			case sx < len(s) && s[sx] == c:
				px, sx = px+1, sx+1
				continue
			}
		}
		// Mismatch: let the last star take one more character.
		if starPx >= 0 && starSx < len(s) {
			starSx++
			px, sx = starPx+1, starSx
			continue
		}
		return false
	}
	return true
}

// pathPattern is a compiled entry of to.paths.
type pathPattern struct {
	src     string // the pattern as written
	glob    string // the pattern without a trailing "/**"
	subtree bool   // the pattern ended in "/**"
	literal bool   // glob has no '*'
	segs    int    // number of '/' in glob
}

func compilePath(s string) (pathPattern, error) {
	if !strings.HasPrefix(s, "/") {
		return pathPattern{}, fmt.Errorf("%s must start with /", quoteShort(s))
	}
	if strings.ContainsAny(s, "?#") {
		return pathPattern{}, fmt.Errorf("%s: the query and fragment are never matched; leave them out", quoteShort(s))
	}
	pp := pathPattern{src: s, glob: s}
	if strings.HasSuffix(s, "/**") {
		pp.glob, pp.subtree = s[:len(s)-3], true
	}
	if strings.Contains(pp.glob, "**") {
		return pathPattern{}, fmt.Errorf("%s: ** is allowed only as a trailing /**", quoteShort(s))
	}
	// '*' is an ordinary character to NormalizePath, so the pattern is
	// normalized as written and the suggestion keeps its stars. A subtree
	// is checked with a segment below it, so that "/a//**", which only
	// "/a/" could match, is caught too.
	probe := pp.glob
	if pp.subtree {
		probe += "/x"
	}
	n, ok := NormalizePath(probe)
	if !ok {
		return pathPattern{}, fmt.Errorf("%s is not a safe path (requests with such a path are denied as unsafe-path, so it could never match)", quoteShort(s))
	}
	if n != probe {
		if pp.subtree {
			n = strings.TrimSuffix(n, "/x") + "/**"
		}
		return pathPattern{}, fmt.Errorf("%s is not a normalized path (requests are matched after normalization, so it could never match; write %s)", quoteShort(s), quoteShort(n))
	}
	pp.literal = !strings.Contains(pp.glob, "*")
	pp.segs = strings.Count(pp.glob, "/")
	return pp, nil
}

func (pp *pathPattern) match(path string) bool {
	if !pp.subtree {
		if pp.literal {
			return path == pp.glob
		}
		return globMatch(pp.glob, path)
	}
	// "/a/**" matches "/a" and anything below "/a/": compare the head of
	// path that has as many segments as the pattern, then require the
	// rest to be empty or to start a new segment.
	cut := len(path)
	n := 0
	for i := 0; i < len(path); i++ {
		if path[i] == '/' {
			if n == pp.segs {
				cut = i
				break
			}
			n++
		}
	}
	head := path[:cut]
	if pp.literal {
		return head == pp.glob
	}
	return globMatch(pp.glob, head)
}

// hostPattern is a compiled entry of to.hosts.
type hostPattern struct {
	src    string // the pattern as written
	exact  string // "api.stripe.com"
	suffix string // ".stripe.com" for "*.stripe.com"
	any    bool   // "*"
}

func compileHost(s string) (hostPattern, error) {
	if s == "*" {
		return hostPattern{src: s, any: true}, nil
	}
	if hint := hostHint(s); hint != "" {
		return hostPattern{}, errors.New(hint)
	}
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		h, port, ok := ParseAuthority(rest, false)
		if !ok || port != 0 || strings.HasPrefix(h, "[") {
			return hostPattern{}, fmt.Errorf("%s is not a host name pattern", quoteShort(s))
		}
		return hostPattern{src: s, suffix: "." + h}, nil
	}
	h, port, ok := ParseAuthority(s, false)
	if !ok {
		return hostPattern{}, fmt.Errorf("%s is not a host name (use *.example.com for sub-domains, * for any host)", quoteShort(s))
	}
	if port != 0 {
		return hostPattern{}, fmt.Errorf("%s: write ports under to.ports, not in the host", quoteShort(s))
	}
	return hostPattern{src: s, exact: h}, nil
}

// hostHint explains a host entry written as a URL or part of one, the
// most common mistake in to.hosts: a scheme ("https://api.example.com"), a
// path ("api.example.com/v1") or a trailing "/". It returns "" for an
// entry with none of them.
func hostHint(s string) string {
	rest := s
	var fixes []string
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
		fixes = append(fixes, "drop the scheme: hosts are names only")
	}
	host, path, hasPath := strings.Cut(rest, "/")
	switch {
	case !hasPath:
	case path == "":
		fixes = append(fixes, "drop the trailing /")
	default:
		fixes = append(fixes, "paths go under to.paths, not in the host")
	}
	if len(fixes) == 0 {
		return ""
	}
	msg := quoteShort(s) + ": " + strings.Join(fixes, "; ")
	name, port, ok := ParseAuthority(strings.TrimPrefix(host, "*."), false)
	if !ok || host == "" {
		return msg
	}
	if strings.HasPrefix(host, "*.") {
		name = "*." + name
	}
	write := "write hosts: [" + quoteShort(name) + "]"
	if port != 0 {
		write += fmt.Sprintf(", ports: [%d]", port)
	}
	if path != "" {
		write += ", paths: [" + quoteShort("/"+strings.TrimSuffix(path, "/")+"/**") + "] for everything below /" + strings.TrimSuffix(path, "/")
	}
	return msg + " (" + write + ")"
}

// principalPattern is a compiled entry of from.principals.
type principalPattern struct {
	s       string // the pattern as written
	literal bool
}

func compilePrincipal(s string) (principalPattern, error) {
	probe := strings.ReplaceAll(s, "*", "x")
	if _, err := spiffeid.FromString(probe); err != nil {
		return principalPattern{}, fmt.Errorf("%s is not a SPIFFE ID (spiffe://TRUST-DOMAIN/PATH, '*' for one path segment or part of one): %v", quoteShort(s), err)
	}
	return principalPattern{s: s, literal: !strings.Contains(s, "*")}, nil
}

func (pp *principalPattern) match(id string) bool {
	if pp.literal {
		return pp.s == id
	}
	return globMatch(pp.s, id)
}

// rulePatterns are the compiled principal, host and path patterns of one
// rule. The parser compiles each pattern to validate it and keeps the
// result in its Set, so that Compile does not compile it again.
type rulePatterns struct {
	rule       *Rule
	principals []principalPattern
	hosts      []hostPattern
	paths      []pathPattern
}

// patternsOf returns the compiled patterns of set.Rules[i]: those the
// parser made, for each list the rule still holds as parsed. A rule built
// by hand, or a list changed since parsing (a Set must not be, but a stale
// pattern would decide wrongly), is compiled now. Comparing the sources
// is cheap: an unchanged string is the parser's own, and equal strings
// with equal pointers compare without reading their bytes.
func (s *Set) patternsOf(i int) (rulePatterns, error) {
	r := s.Rules[i]
	var cached rulePatterns
	if i < len(s.patterns) && s.patterns[i].rule == r {
		cached = s.patterns[i]
	}
	out := rulePatterns{rule: r}
	var err error
	if out.principals, err = reuseOr(cached.principals, r.Principals, func(p *principalPattern) string { return p.s }, compilePrincipal); err != nil {
		return out, err
	}
	if out.hosts, err = reuseOr(cached.hosts, r.Hosts, func(p *hostPattern) string { return p.src }, compileHost); err != nil {
		return out, err
	}
	if out.paths, err = reuseOr(cached.paths, r.Paths, func(p *pathPattern) string { return p.src }, compilePath); err != nil {
		return out, err
	}
	return out, nil
}

// reuseOr returns cached when it is the compiled form of srcs, else srcs
// compiled with compile.
func reuseOr[P any](cached []P, srcs []string, srcOf func(*P) string, compile func(string) (P, error)) ([]P, error) {
	if len(cached) == len(srcs) {
		same := true
		for i := range cached {
			if srcOf(&cached[i]) != srcs[i] {
				same = false
				break
			}
		}
		if same {
			return cached, nil
		}
	}
	if len(srcs) == 0 {
		return nil, nil
	}
	out := make([]P, len(srcs))
	for i, src := range srcs {
		p, err := compile(src)
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

// PathCovers reports whether path pattern a matches every path that path
// pattern b matches, judged on the patterns as written: "/v1/**" covers
// "/v1/charges" and "/v1/files/**", "/v1/*" covers "/v1/ch*". It errs on
// the side of false: a pattern it says is not covered may still be.
func PathCovers(a, b string) bool {
	if a == b {
		return true
	}
	aGlob, aSub := strings.CutSuffix(a, "/**")
	bGlob, bSub := strings.CutSuffix(b, "/**")
	if !aSub {
		return !bSub && GlobCovers(a, b)
	}
	// a is "P/**": it covers P and anything below P/. b (or its head,
	// when b is itself a subtree) must lie there.
	if bSub {
		return GlobCovers(aGlob, bGlob) || prefixCovered(aGlob, bGlob)
	}
	return GlobCovers(aGlob, b) || prefixCovered(aGlob, b)
}

// prefixCovered reports whether pattern b lies strictly below pattern p:
// b's first segments are covered by p's and b has more.
func prefixCovered(p, b string) bool {
	n := strings.Count(p, "/")
	segs := strings.SplitAfterN(b, "/", n+2)
	if len(segs) <= n+1 {
		return false
	}
	head := strings.TrimSuffix(strings.Join(segs[:n+1], ""), "/")
	return GlobCovers(p, head)
}

// GlobCovers reports whether glob pattern a (a principal pattern, or a
// path pattern without a trailing "/**") matches everything glob pattern b
// does, segment by segment: a segment of a covers b's when they are equal,
// when a's is "*" (b's segments are never empty where they matter), or
// when b's has no '*' and a's matches it.
func GlobCovers(a, b string) bool {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	if len(as) != len(bs) {
		return false
	}
	for i := range as {
		switch {
		case as[i] == bs[i]:
		case as[i] == "*" && bs[i] != "":
		case !strings.Contains(bs[i], "*") && matchSegment(as[i], bs[i]):
		default:
			return false
		}
	}
	return true
}
