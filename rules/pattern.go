package rules

import (
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
	glob    string // the pattern without a trailing "/**"
	subtree bool   // the pattern ended in "/**"
	literal bool   // glob has no '*'
	segs    int    // number of '/' in glob
}

func compilePath(s string) (pathPattern, error) {
	if !strings.HasPrefix(s, "/") {
		return pathPattern{}, fmt.Errorf("%q must start with /", s)
	}
	if strings.ContainsAny(s, "?#") {
		return pathPattern{}, fmt.Errorf("%q: the query and fragment are never matched; leave them out", s)
	}
	pp := pathPattern{glob: s}
	if strings.HasSuffix(s, "/**") {
		pp.glob, pp.subtree = s[:len(s)-3], true
	}
	if strings.Contains(pp.glob, "**") {
		return pathPattern{}, fmt.Errorf("%q: ** is allowed only as a trailing /**", s)
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
		return pathPattern{}, fmt.Errorf("%q is not a safe path (requests with such a path are denied as unsafe-path, so it could never match)", s)
	}
	if n != probe {
		if pp.subtree {
			n = strings.TrimSuffix(n, "/x") + "/**"
		}
		return pathPattern{}, fmt.Errorf("%q is not a normalized path (requests are matched after normalization, so it could never match; write %q)", s, n)
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
	exact  string // "api.stripe.com"
	suffix string // ".stripe.com" for "*.stripe.com"
	any    bool   // "*"
}

func compileHost(s string) (hostPattern, error) {
	if s == "*" {
		return hostPattern{any: true}, nil
	}
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		h, port, ok := ParseAuthority(rest, false)
		if !ok || port != 0 || strings.HasPrefix(h, "[") {
			return hostPattern{}, fmt.Errorf("%q is not a host name pattern", s)
		}
		return hostPattern{suffix: "." + h}, nil
	}
	h, port, ok := ParseAuthority(s, false)
	if !ok {
		return hostPattern{}, fmt.Errorf("%q is not a host name (use *.example.com for sub-domains, * for any host)", s)
	}
	if port != 0 {
		return hostPattern{}, fmt.Errorf("%q: write ports under to.ports, not in the host", s)
	}
	return hostPattern{exact: h}, nil
}

// principalPattern is a compiled entry of from.principals.
type principalPattern struct {
	s       string
	literal bool
}

func compilePrincipal(s string) (principalPattern, error) {
	probe := strings.ReplaceAll(s, "*", "x")
	if _, err := spiffeid.FromString(probe); err != nil {
		return principalPattern{}, fmt.Errorf("%q is not a SPIFFE ID (spiffe://TRUST-DOMAIN/PATH, '*' for one path segment or part of one): %v", s, err)
	}
	return principalPattern{s: s, literal: !strings.Contains(s, "*")}, nil
}

func (pp *principalPattern) match(id string) bool {
	if pp.literal {
		return pp.s == id
	}
	return globMatch(pp.s, id)
}
