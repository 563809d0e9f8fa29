package rules

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"", "", true},
		{"", "a", false},
		{"a", "a", true},
		{"a", "b", false},
		{"*", "a", true},
		{"*", "abc", true},
		{"*", "", false},
		{"*", "a/b", false},
		{"*", "/", false},
		{"a*", "a", false},
		{"a*", "ab", true},
		{"*a", "ba", true},
		{"*a", "a", false},
		{"*b", "bbb", true},
		{"*a*", "a", false},
		{"*a*", "aa", false},
		{"*a*", "aaa", true},
		{"*a*", "bab", true},
		{"**", "a", false},
		{"**", "ab", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "abc", false},
		{"a*b*c", "aXbbYc", true},
		{"a*b*c", "aXbYcZ", false},
		{"a*b*c", "aXcYb", false},
		{"*.pdf", "x.pdf.pdf", true},
		{"/a/*", "/a/b", true},
		{"/a/*", "/a/", false},
		{"/a/*", "/a/b/", false},
		{"/a/*/c", "/a/b/c", true},
		{"/a/*/c", "/a//c", false},
		{"/a/*/c", "/a/b/d/c", false},
		{"/*/*", "/a/b", true},
		{"/*/*", "/a", false},
		{"spiffe://cluster.local/ns/*/sa/*", checkout, true},
		{"spiffe://*/ns/payments/sa/checkout", checkout, true},
		{"spiffe://cluster.local/ns/*", checkout, false},
	} {
		if got := globMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

func TestGlobMatchIsNotExponential(t *testing.T) {
	pattern := strings.Repeat("a*", 30) + "b"
	s := strings.Repeat("a", 20000)
	start := time.Now()
	if globMatch(pattern, s) {
		t.Fatal("matched a subject without b")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("globMatch took %v on a pathological input", d)
	}
}

func TestPathPatternMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, path string
		want          bool
	}{
		{"/v1/files/**", "/v1/files", true},
		{"/v1/files/**", "/v1/files/", true},
		{"/v1/files/**", "/v1/files/a/b", true},
		{"/v1/files/**", "/v1/filesystem", false},
		{"/v1/files/**", "/v1/file", false},
		{"/v1/files/**", "/v1", false},
		{"/v1/*/files/**", "/v1/x/files", true},
		{"/v1/*/files/**", "/v1/x/files/y", true},
		{"/v1/*/files/**", "/v1/x/filesx", false},
		{"/**", "/", true},
		{"/**", "/a/b/c", true},
		{"/*/**", "/", false},
		{"/*/**", "/a", true},
		{"/*/**", "/a/b", true},
		{"/v1/", "/v1/", true},
		{"/v1/", "/v1", false},
		{"/v1/*", "/v1/a", true},
	} {
		pp, err := compilePath(tc.pattern)
		if err != nil {
			t.Fatalf("compilePath(%q): %v", tc.pattern, err)
		}
		if got := pp.match(tc.path); got != tc.want {
			t.Errorf("%q matches %q = %v, want %v", tc.pattern, tc.path, got, tc.want)
		}
	}
}

func TestCompileHost(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want hostPattern
		ok   bool
	}{
		{"*", hostPattern{any: true}, true},
		{"api.stripe.com", hostPattern{exact: "api.stripe.com"}, true},
		{"API.Stripe.com.", hostPattern{exact: "api.stripe.com"}, true},
		{"*.stripe.com", hostPattern{suffix: ".stripe.com"}, true},
		{"*.Stripe.COM.", hostPattern{suffix: ".stripe.com"}, true},
		{"[2001:DB8::1]", hostPattern{exact: "[2001:db8::1]"}, true},
		{"*.", hostPattern{}, false},
		{"*.*", hostPattern{}, false},
		{"**", hostPattern{}, false},
		{"*stripe.com", hostPattern{}, false},
		{"api.*.com", hostPattern{}, false},
		{"*.[::1]", hostPattern{}, false},
		{"*.stripe.com:443", hostPattern{}, false},
		{"api.stripe.com:443", hostPattern{}, false},
		{"", hostPattern{}, false},
	} {
		got, err := compileHost(tc.in)
		if tc.ok {
			tc.want.src = tc.in // the pattern as written, to tell a changed list
		}
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("compileHost(%q) = %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// globRegexp is the reference for globMatch: '*' is [^/]+. globMatch works
// on bytes and regexp on runes, so both the pattern and the subject go
// through byteRunes first.
func globRegexp(pattern string) string {
	parts := strings.Split(byteRunes(pattern), "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return strings.Join(parts, "[^/]+")
}

// byteRunes turns every byte of s into the rune of the same value, so that
// a regexp sees one character per byte.
func byteRunes(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteRune(rune(s[i]))
	}
	return b.String()
}

// FuzzGlob compares globMatch, and path patterns with and without a
// trailing "/**", with regular expressions that say the same thing.
func FuzzGlob(f *testing.F) {
	for _, s := range [][2]string{
		{"*", "a"},
		{"*", ""},
		{"*", "a/b"},
		{"a*b*c", "aXbbYc"},
		{"*a*", "aa"},
		{"**", "ab"},
		{"/v1/*/refunds", "/v1/ch_1/refunds"},
		{"/v1/files", "/v1/files/a/b"},
		{"/v1/files", "/v1/filesystem"},
		{"/*.pdf", "/x.pdf.pdf"},
		{"spiffe://cluster.local/ns/*/sa/*", "spiffe://cluster.local/ns/a/sa/b"},
		{"*b", "bbb"},
		{"/a/*", "/a/"},
		{"", "/"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if len(pattern) > 256 {
			t.Skip()
		}
		re := globRegexp(pattern)
		bs := byteRunes(s)
		want := regexp.MustCompile(`^` + re + `$`).MatchString(bs)
		if got := globMatch(pattern, s); got != want {
			t.Fatalf("globMatch(%q, %q) = %v, regexp %q says %v", pattern, s, got, re, want)
		}
		// The same glob as a compiled path pattern, alone and as a subtree.
		pp := pathPattern{glob: pattern, literal: !strings.Contains(pattern, "*"), segs: strings.Count(pattern, "/")}
		if got := pp.match(s); got != want {
			t.Fatalf("path pattern %q matches %q = %v, regexp says %v", pattern, s, got, want)
		}
		pp.subtree = true
		want = regexp.MustCompile(`^` + re + `(?s:/.*)?$`).MatchString(bs)
		if got := pp.match(s); got != want {
			t.Fatalf("path pattern %q/** matches %q = %v, regexp says %v", pattern, s, got, want)
		}
	})
}

func TestPathCovers(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"/v1/charges", "/v1/charges", true},
		{"/v1/*", "/v1/charges", true},
		{"/v1/*", "/v1/ch*", true},
		{"/v1/ch*", "/v1/*", false},
		{"/v1/*", "/v1/", false},
		{"/v1/*", "/v1/a/b", false},
		{"/v1/**", "/v1", true},
		{"/v1/**", "/v1/", true},
		{"/v1/**", "/v1/a/b/c", true},
		{"/v1/**", "/v1/files/**", true},
		{"/v1/**", "/v1x", false},
		{"/v1/files/**", "/v1/**", false},
		{"/v1/*/files/**", "/v1/a/files/b", true},
		{"/**", "/anything/at/all", true},
		{"/**", "/", true},
		{"/v1/charges", "/v1/*", false},
	} {
		if got := PathCovers(tc.a, tc.b); got != tc.want {
			t.Errorf("PathCovers(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestGlobCovers(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"spiffe://cluster.local/ns/payments/sa/*", "spiffe://cluster.local/ns/payments/sa/checkout", true},
		{"spiffe://cluster.local/ns/*/sa/*", "spiffe://cluster.local/ns/payments/sa/c*", true},
		{"spiffe://cluster.local/ns/payments/sa/c*", "spiffe://cluster.local/ns/payments/sa/*", false},
		{"spiffe://cluster.local/ns/payments/sa/*", "spiffe://cluster.local/ns/payments/sa/checkout/x", false},
		{"/v1/ch*", "/v1/charges", true},
		{"/v1/*", "/v1/", false},
	} {
		if got := GlobCovers(tc.a, tc.b); got != tc.want {
			t.Errorf("GlobCovers(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
