package rules

import (
	"net/netip"
	"strings"
)

// NormalizePath returns the form of an HTTP request target that path
// patterns are matched against, or ok=false when it cannot be normalized
// safely (the request is then denied with ReasonUnsafePath).
//
// The steps run in this order, and the order matters: an encoded dot
// ("%2E") must be decoded before dot-segments are resolved, or "/a/%2E%2E/b"
// would slip past a rule on "/b"; and runs of "/" are merged last so that
// "/a//../b" resolves as RFC 3986 says before being tidied.
//
//  1. The query and the fragment are removed.
//  2. Percent-escapes of unreserved characters (A-Z a-z 0-9 - . _ ~) are
//     decoded; other escapes are kept, upper-cased. An escaped "/" or "\",
//     a raw "\", an invalid escape, a control character raw or escaped
//     (0x00-0x1F, 0x7F), or a path not starting with "/" is unsafe.
//  3. Dot-segments are resolved (RFC 3986 section 5.2.4), never above "/".
//  4. Runs of "/" are merged into one.
//
// A path that needs none of this is returned as is, without allocating.
func NormalizePath(raw string) (string, bool) {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	if raw == "" || raw[0] != '/' {
		return "", false
	}
	clean := true
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c < 0x20 || c == 0x7f || c == '\\':
			return "", false
		case c == '%':
			clean = false
		case c == '.' && (raw[i-1] == '/'):
			clean = false // possibly a dot-segment
		case c == '/' && i > 0 && raw[i-1] == '/':
			clean = false
		}
	}
	if clean {
		return raw, true
	}
	decoded, ok := decodeUnreserved(raw)
	if !ok {
		return "", false
	}
	return mergeSlashes(removeDotSegments(decoded)), true
}

// ResolvesDotSegments reports whether normalizing the request target raw
// resolves a dot-segment ("." or "..", also when written "%2E"): whether
// the path a rule matches is one the caller did not spell out. The steps
// before resolution run as NormalizePath runs them, so the two cannot
// disagree; an unsafe path reports false (it is never normalized at all).
func ResolvesDotSegments(raw string) bool {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	if _, ok := NormalizePath(raw); !ok {
		return false
	}
	decoded, _ := decodeUnreserved(raw)
	return removeDotSegments(decoded) != decoded
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func decodeUnreserved(s string) (string, bool) {
	if strings.IndexByte(s, '%') < 0 {
		return s, true
	}
	const upperhex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		v := hi<<4 | lo
		switch {
		case v == '/' || v == '\\' || v < 0x20 || v == 0x7f:
			return "", false
		case isUnreserved(v):
			b.WriteByte(v)
		default:
			b.WriteByte('%')
			b.WriteByte(upperhex[v>>4])
			b.WriteByte(upperhex[v&15])
		}
		i += 2
	}
	return b.String(), true
}

// removeDotSegments resolves "." and ".." segments of an absolute path.
// A ".." at the root stays at the root. A path ending in a dot-segment ends
// in "/", as RFC 3986 prescribes ("/a/b/.." is "/a/").
func removeDotSegments(p string) string {
	if !strings.Contains(p, "/.") {
		return p
	}
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

func mergeSlashes(p string) string {
	if !strings.Contains(p, "//") {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// ParseAuthority splits an HTTP authority (or, with sni set, a TLS server
// name) into a lower-case host without trailing dot and a port (0 when the
// authority has none). ok is false for anything the SPEC calls an invalid
// host: userinfo, an empty or non-numeric port, a port in an SNI, a
// character outside letters, digits, '-', '_' and '.', or an empty label.
// Bracketed IPv6 literals are accepted.
func ParseAuthority(s string, sni bool) (host string, port int, ok bool) {
	if s == "" {
		return "", 0, false
	}
	hostPart := s
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, false
		}
		addr, err := netip.ParseAddr(s[1:end])
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return "", 0, false
		}
		rest := s[end+1:]
		if rest != "" {
			if sni || rest[0] != ':' {
				return "", 0, false
			}
			if port, ok = parsePort(rest[1:]); !ok {
				return "", 0, false
			}
		}
		return "[" + addr.String() + "]", port, true
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		if sni {
			return "", 0, false
		}
		if port, ok = parsePort(s[i+1:]); !ok {
			return "", 0, false
		}
		hostPart = s[:i]
	}
	hostPart = strings.TrimSuffix(hostPart, ".")
	if !validHostname(hostPart) {
		return "", 0, false
	}
	return lower(hostPart), port, true
}

func parsePort(s string) (int, bool) {
	if s == "" || len(s) > 5 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n >= 1 && n <= 65535
}

// validHostname accepts letters, digits, '-', '_' and '.' with no empty
// label. '_' is allowed because real service names use it (SRV-style
// labels, some SaaS tenants); '*' never is.
func validHostname(s string) bool {
	if s == "" {
		return false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			label++
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		default:
			return false
		}
	}
	return label > 0
}

// lower is strings.ToLower for ASCII that does not allocate when s is
// already lower case (the common case for hosts).
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}
