package rules

import (
	"strings"
	"testing"
)

// BenchmarkDecide measures Table.Decide, without any cache, on a 10,000-rule
// table shaped like a large real one (see generateRules).
func BenchmarkDecide(b *testing.B) {
	g := generateRules(b, 10000, 1)
	set, err := Parse(Source{Name: "bench.yaml", Data: g.YAML})
	if err != nil {
		b.Fatal(err)
	}
	tab, err := Compile(set)
	if err != nil {
		b.Fatal(err)
	}
	checkGenerated(b, tab, g)
	for _, bc := range []struct {
		name string
		req  Request
	}{
		{"allowed", g.Allowed},
		{"denied_no_matching_rule", g.Denied},
		{"allowed_path_needs_normalization", g.Normalize},
		{"allowed_tls_passthrough", g.SNI},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tab.Decide(bc.req, testNow)
			}
		})
	}
}

// BenchmarkCompile10k measures what a reload costs: Parse and Compile of a
// 10,000-rule file.
func BenchmarkCompile10k(b *testing.B) {
	g := generateRules(b, 10000, 1)
	src := Source{Name: "bench.yaml", Data: g.YAML}
	b.SetBytes(int64(len(g.YAML)))
	b.ReportAllocs()
	for b.Loop() {
		set, err := Parse(src)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Compile(set); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExplain10k measures Table.Explain against 10,000 rules for a
// request with a long host and path: at the MaxExplainField bound, for the
// five near misses and for every rule, and over it (a 200 KB URL, refused).
func BenchmarkExplain10k(b *testing.B) {
	g := generateRules(b, 10000, 1)
	set, err := Parse(Source{Name: "bench.yaml", Data: g.YAML})
	if err != nil {
		b.Fatal(err)
	}
	tab, err := Compile(set)
	if err != nil {
		b.Fatal(err)
	}
	long := func(n int) Request {
		req := g.Allowed
		req.Host = strings.Repeat("h", n/2-len(".vendor-123.com")) + ".vendor-123.com"
		req.Path = "/v1/items/" + strings.Repeat("x", n/2-len("/v1/items/"))
		return req
	}
	for _, bc := range []struct {
		name string
		req  Request
		near int
	}{
		{"16KiB_url_5_near_misses", long(2 * MaxExplainField), 5},
		{"16KiB_url_every_rule", long(2 * MaxExplainField), -1},
		{"200KB_url_refused", long(200 << 10), 5},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = tab.Explain(bc.req, testNow, bc.near)
			}
		})
	}
}
