package rules

import (
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
