package rules

import (
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want string // "" with ok false: unsafe
		ok   bool
	}{
		{"root", "/", "/", true},
		{"clean_path_is_unchanged", "/v1/charges", "/v1/charges", true},
		{"trailing_slash_is_kept", "/v1/charges/", "/v1/charges/", true},
		{"query_is_removed", "/v1/charges?limit=10", "/v1/charges", true},
		{"fragment_is_removed", "/v1/charges#top", "/v1/charges", true},
		{"query_then_fragment_is_removed", "/v1/charges?a=b#c", "/v1/charges", true},
		{"empty_query_is_removed", "/?", "/", true},
		{"query_is_removed_before_escapes_are_checked", "/a?%zz%2F\\", "/a", true},
		{"query_is_removed_before_dot_segments", "/a/b?/../..", "/a/b", true},
		{"unreserved_lower_case_letter_is_decoded", "/%61", "/a", true},
		{"every_unreserved_class_is_decoded", "/%41%5a%7e%2d%2E%5f%30%39", "/AZ~-._09", true},
		{"reserved_escape_is_upper_cased", "/a%3ab", "/a%3Ab", true},
		{"reserved_escape_stays_upper_case", "/a%3Ab", "/a%3Ab", true},
		{"non_ascii_escape_is_upper_cased", "/caf%c3%a9", "/caf%C3%A9", true},
		{"escaped_percent_is_not_decoded_twice", "/%2541", "/%2541", true},
		{"escape_built_from_decoded_digits_is_not_decoded", "/%25%34%31", "/%2541", true},
		{"escaped_question_mark_stays_in_path", "/a%3fb", "/a%3Fb", true},
		{"escaped_space_stays_encoded", "/a%20b", "/a%20b", true},
		{"dot_segment_is_removed", "/a/./b", "/a/b", true},
		{"dot_dot_segment_removes_parent", "/a/b/../c", "/a/c", true},
		{"trailing_dot_dot_leaves_slash", "/a/b/..", "/a/", true},
		{"trailing_dot_leaves_slash", "/a/b/.", "/a/b/", true},
		{"dot_dot_at_root_stays_at_root", "/..", "/", true},
		{"many_dot_dots_stay_at_root", "/../../../etc/passwd", "/etc/passwd", true},
		{"dot_at_root", "/.", "/", true},
		{"dot_slash_at_root", "/./", "/", true},
		{"encoded_dot_dot_is_resolved", "/a/%2E%2E/b", "/b", true},
		{"encoded_lower_case_dot_dot_is_resolved", "/a/%2e%2e/b", "/b", true},
		{"half_encoded_dot_dot_is_resolved", "/a/.%2e/b", "/b", true},
		{"encoded_dot_is_resolved", "/a/%2e/b", "/a/b", true},
		{"encoded_dot_dot_at_root_stays_at_root", "/%2e%2e/%2E%2E/x", "/x", true},
		{"double_slashes_are_merged", "//a//b", "/a/b", true},
		{"many_slashes_are_merged", "/a////b///", "/a/b/", true},
		{"only_slashes", "////", "/", true},
		{"dot_dot_after_double_slash_resolved_before_merging", "/a//../b", "/a/b", true},
		{"dot_dot_after_double_slash_at_end", "/a//..", "/a/", true},
		{"dots_in_names_are_kept", "/.well-known/a..b/c.", "/.well-known/a..b/c.", true},
		{"three_dots_are_a_name", "/a/.../b", "/a/.../b", true},
		{"dot_dot_name_prefix_is_kept", "/a/..b", "/a/..b", true},
		{"raw_space_is_kept", "/a b", "/a b", true},

		{"empty_is_unsafe", "", "", false},
		{"relative_is_unsafe", "v1/charges", "", false},
		{"only_query_is_unsafe", "?a=/b", "", false},
		{"asterisk_form_is_unsafe", "*", "", false},
		{"absolute_form_is_unsafe", "http://example.com/", "", false},
		{"encoded_slash_is_unsafe", "/a%2Fb", "", false},
		{"encoded_lower_case_slash_is_unsafe", "/a%2fb", "", false},
		{"encoded_backslash_is_unsafe", "/a%5Cb", "", false},
		{"encoded_lower_case_backslash_is_unsafe", "/a%5cb", "", false},
		{"raw_backslash_is_unsafe", `/a\b`, "", false},
		{"raw_backslash_alone_is_unsafe", `\`, "", false},
		{"invalid_first_hex_digit_is_unsafe", "/%G1", "", false},
		{"invalid_second_hex_digit_is_unsafe", "/%1G", "", false},
		{"trailing_percent_is_unsafe", "/a%", "", false},
		{"percent_with_one_digit_is_unsafe", "/a%4", "", false},
		{"percent_with_one_digit_before_query_is_unsafe", "/a%4?b", "", false},
		{"percent_sign_alone_is_unsafe", "/%/", "", false},
		{"encoded_nul_is_unsafe", "/%00", "", false},
		{"encoded_newline_is_unsafe", "/a%0Ab", "", false},
		{"encoded_0x1f_is_unsafe", "/%1f", "", false},
		{"encoded_del_is_unsafe", "/%7F", "", false},
		{"encoded_lower_case_del_is_unsafe", "/%7f", "", false},
		{"raw_nul_is_unsafe", "/\x00", "", false},
		{"raw_tab_is_unsafe", "/a\tb", "", false},
		{"raw_carriage_return_is_unsafe", "/a\rb", "", false},
		{"raw_0x1f_is_unsafe", "/\x1f", "", false},
		{"raw_del_is_unsafe", "/\x7f", "", false},
		{"unsafe_escape_after_dot_segment_is_unsafe", "/a/../%2F", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := NormalizePath(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Errorf("NormalizePath(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestNormalizePathDoesNotAllocateForNormalPaths(t *testing.T) {
	for _, p := range []string{
		"/",
		"/v1/charges",
		"/v1/customers/cus_123/sources/",
		"/v1/charges?limit=10&starting_after=ch_1",
		"/v1/files/report.final.pdf#page=2",
		"/a-b_c~d/e..f",
	} {
		var out string
		allocs := testing.AllocsPerRun(100, func() { out, _ = NormalizePath(p) })
		if allocs != 0 {
			t.Errorf("NormalizePath(%q): %v allocations, want 0", p, allocs)
		}
		if want, _, _ := strings.Cut(p, "?"); strings.IndexByte(want, '#') < 0 && out != want {
			t.Errorf("NormalizePath(%q) = %q", p, out)
		}
	}
}

func TestParseAuthority(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		sni  bool
		host string
		port int
		ok   bool
	}{
		{"host", "api.stripe.com", false, "api.stripe.com", 0, true},
		{"host_and_port", "api.stripe.com:8443", false, "api.stripe.com", 8443, true},
		{"upper_case_is_lowered", "API.Stripe.COM", false, "api.stripe.com", 0, true},
		{"trailing_dot_is_removed", "api.stripe.com.", false, "api.stripe.com", 0, true},
		{"trailing_dot_before_port_is_removed", "API.stripe.com.:443", false, "api.stripe.com", 443, true},
		{"single_label", "localhost:1", false, "localhost", 1, true},
		{"highest_port", "a:65535", false, "a", 65535, true},
		{"underscore_and_hyphen", "_srv.tenant-1.example.com", false, "_srv.tenant-1.example.com", 0, true},
		{"digits_only_labels", "93.184.216.34:80", false, "93.184.216.34", 80, true},
		{"ipv6", "[::1]", false, "[::1]", 0, true},
		{"ipv6_with_port", "[::1]:443", false, "[::1]", 443, true},
		{"ipv6_is_canonicalized", "[2001:DB8:0:0::0001]:8443", false, "[2001:db8::1]", 8443, true},
		{"ipv4_mapped_ipv6", "[::ffff:192.0.2.1]", false, "[::ffff:192.0.2.1]", 0, true},
		{"sni_host", "api.stripe.com", true, "api.stripe.com", 0, true},
		{"sni_is_lowered_and_loses_trailing_dot", "API.Stripe.com.", true, "api.stripe.com", 0, true},

		{"empty", "", false, "", 0, false},
		{"only_colon", ":", false, "", 0, false},
		{"only_port", ":443", false, "", 0, false},
		{"empty_port", "a.example:", false, "", 0, false},
		{"non_numeric_port", "a.example:https", false, "", 0, false},
		{"negative_port", "a.example:-1", false, "", 0, false},
		{"signed_port", "a.example:+1", false, "", 0, false},
		{"port_zero", "a.example:0", false, "", 0, false},
		{"port_too_large", "a.example:65536", false, "", 0, false},
		{"port_with_space", "a.example: 443", false, "", 0, false},
		{"two_ports", "a.example:1:2", false, "", 0, false},
		{"userinfo", "user@a.example", false, "", 0, false},
		{"userinfo_with_password_and_port", "user:pw@a.example:443", false, "", 0, false},
		{"space", "a .example", false, "", 0, false},
		{"slash", "a.example/x", false, "", 0, false},
		{"star", "*.example.com", false, "", 0, false},
		{"bare_star", "*", false, "", 0, false},
		{"percent", "%61.example", false, "", 0, false},
		{"non_ascii", "bücher.example", false, "", 0, false},
		{"empty_label", "a..example", false, "", 0, false},
		{"leading_dot", ".a.example", false, "", 0, false},
		{"two_trailing_dots", "a.example..", false, "", 0, false},
		{"only_dot", ".", false, "", 0, false},
		{"only_dots", "..", false, "", 0, false},
		{"ipv6_without_brackets", "2001:db8::1", false, "", 0, false},
		{"ipv6_unclosed", "[::1", false, "", 0, false},
		{"ipv6_junk_after_bracket", "[::1]x", false, "", 0, false},
		{"ipv6_empty_port", "[::1]:", false, "", 0, false},
		{"ipv6_bad_port", "[::1]:x", false, "", 0, false},
		{"ipv6_empty_brackets", "[]", false, "", 0, false},
		{"ipv4_in_brackets", "[192.0.2.1]", false, "", 0, false},
		{"ipv6_with_zone", "[fe80::1%25eth0]", false, "", 0, false},
		{"ipv6_not_an_address", "[example.com]", false, "", 0, false},
		{"sni_with_port", "api.stripe.com:443", true, "", 0, false},
		{"sni_with_empty_port", "api.stripe.com:", true, "", 0, false},
		{"sni_ipv6_with_port", "[::1]:443", true, "", 0, false},
		{"sni_empty", "", true, "", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, port, ok := ParseAuthority(tc.in, tc.sni)
			if ok != tc.ok || (ok && (host != tc.host || port != tc.port)) {
				t.Errorf("ParseAuthority(%q, %v) = %q, %d, %v; want %q, %d, %v", tc.in, tc.sni, host, port, ok, tc.host, tc.port, tc.ok)
			}
		})
	}
}

func TestParseAuthorityDoesNotAllocateForLowerCaseHosts(t *testing.T) {
	for _, s := range []string{"api.stripe.com", "api.stripe.com:443", "api.stripe.com."} {
		allocs := testing.AllocsPerRun(100, func() { ParseAuthority(s, false) })
		if allocs != 0 {
			t.Errorf("ParseAuthority(%q): %v allocations, want 0", s, allocs)
		}
	}
}

func TestParseIdentity(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Identity
		ok   bool
	}{
		{"istio_path", checkout, Identity{"cluster.local", "payments", "checkout"}, true},
		{"istio_path_with_dots_and_dashes", "spiffe://prod.example.com/ns/team-a.b/sa/svc_1", Identity{"prod.example.com", "team-a.b", "svc_1"}, true},
		{"keywords_as_names", "spiffe://cluster.local/ns/sa/sa/ns", Identity{"cluster.local", "sa", "ns"}, true},
		{"no_path", "spiffe://cluster.local", Identity{TrustDomain: "cluster.local"}, true},
		{"namespace_only", "spiffe://cluster.local/ns/payments", Identity{TrustDomain: "cluster.local"}, true},
		{"sa_keyword_without_name", "spiffe://cluster.local/ns/payments/sa", Identity{TrustDomain: "cluster.local"}, true},
		{"longer_path", "spiffe://cluster.local/ns/payments/sa/checkout/v2", Identity{TrustDomain: "cluster.local"}, true},
		{"other_keyword", "spiffe://cluster.local/ns/payments/serviceaccount/checkout", Identity{TrustDomain: "cluster.local"}, true},
		{"prefix_before_ns", "spiffe://cluster.local/k8s/ns/payments/sa/checkout", Identity{TrustDomain: "cluster.local"}, true},
		{"upper_case_keyword", "spiffe://cluster.local/NS/payments/SA/checkout", Identity{TrustDomain: "cluster.local"}, true},
		{"non_istio_path", "spiffe://cluster.local/workload/payments", Identity{TrustDomain: "cluster.local"}, true},

		{"empty", "", Identity{}, false},
		{"not_a_uri", "checkout", Identity{}, false},
		{"other_scheme", "https://cluster.local/ns/a/sa/b", Identity{}, false},
		{"upper_case_scheme", "SPIFFE://cluster.local/ns/a/sa/b", Identity{}, false},
		{"no_trust_domain", "spiffe:///ns/a/sa/b", Identity{}, false},
		{"only_scheme", "spiffe://", Identity{}, false},
		{"upper_case_trust_domain", "spiffe://Cluster.Local/ns/a/sa/b", Identity{}, false},
		{"trust_domain_with_port", "spiffe://cluster.local:443/ns/a/sa/b", Identity{}, false},
		{"trust_domain_with_userinfo", "spiffe://u@cluster.local/ns/a/sa/b", Identity{}, false},
		{"trailing_slash", "spiffe://cluster.local/ns/a/sa/b/", Identity{}, false},
		{"empty_segment", "spiffe://cluster.local/ns//sa/b", Identity{}, false},
		{"dot_segment", "spiffe://cluster.local/ns/./sa/b", Identity{}, false},
		{"dot_dot_segment", "spiffe://cluster.local/ns/a/sa/b/..", Identity{}, false},
		{"query", "spiffe://cluster.local/ns/a/sa/b?x=1", Identity{}, false},
		{"fragment", "spiffe://cluster.local/ns/a/sa/b#x", Identity{}, false},
		{"percent_encoding", "spiffe://cluster.local/ns/a%2Fb/sa/c", Identity{}, false},
		{"space", "spiffe://cluster.local/ns/a b/sa/c", Identity{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseIdentity(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Errorf("ParseIdentity(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// FuzzNormalizePath checks the properties path matching relies on: the
// result is a fixed point, absolute, free of empty and dot segments, of a
// query and a fragment, and carries only escapes that must stay escaped.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{
		"/",
		"/v1/charges?limit=10",
		"/v1/ch%61rges#x",
		"/a/b/../c/./d",
		"/a/%2E%2E/%2e%2E/b",
		"/../../etc/passwd",
		"//a//b///",
		"/a//../b",
		"/%2F",
		`/a\b`,
		"/%G1",
		"/a%",
		"/%00%1F%7F",
		"/%c3%a9%3a",
		"/%25%34%31",
		"/.%2e/.well-known/",
		"relative",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		out, ok := NormalizePath(raw)
		if again, ok2 := NormalizePath(raw + "?q=/../%2F#f"); again != out || ok2 != ok {
			t.Fatalf("a query changes the result: %q -> %q, %v; with query %q, %v", raw, out, ok, again, ok2)
		}
		if !ok {
			if out != "" {
				t.Fatalf("NormalizePath(%q) = %q, false; want an empty result when unsafe", raw, out)
			}
			return
		}
		again, ok := NormalizePath(out)
		if !ok || again != out {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", raw, out, again, ok)
		}
		if !strings.HasPrefix(out, "/") {
			t.Fatalf("NormalizePath(%q) = %q does not start with /", raw, out)
		}
		if strings.Contains(out, "//") {
			t.Fatalf("NormalizePath(%q) = %q has //", raw, out)
		}
		if strings.ContainsAny(out, "?#\\") {
			t.Fatalf("NormalizePath(%q) = %q has ?, # or \\", raw, out)
		}
		for _, seg := range strings.Split(out[1:], "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("NormalizePath(%q) = %q has a dot segment", raw, out)
			}
		}
		for i := 0; i < len(out); i++ {
			c := out[i]
			if c < 0x20 || c == 0x7f {
				t.Fatalf("NormalizePath(%q) = %q has control character %#x", raw, out, c)
			}
			if c != '%' {
				continue
			}
			if i+2 >= len(out) || !isUpperHex(out[i+1]) || !isUpperHex(out[i+2]) {
				t.Fatalf("NormalizePath(%q) = %q has an escape that is invalid or not upper case at %d", raw, out, i)
			}
			v, _ := unhex(out[i+1])
			lo, _ := unhex(out[i+2])
			v = v<<4 | lo
			if isUnreserved(v) || v == '/' || v == '\\' || v < 0x20 || v == 0x7f {
				t.Fatalf("NormalizePath(%q) = %q keeps escape %q", raw, out, out[i:i+3])
			}
		}
	})
}

func isUpperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }

func TestResolvesDotSegments(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want bool
	}{
		{"/3.0/lists/abc/members", false},
		{"/3.0/lists/../../admin", true},
		{"/a/./b", true},
		{"/a/b/.", true},
		{"/a/%2E%2E/b", true},
		{"/a/%2e/b", true},
		{"/a/.well-known/x", false},
		{"/a/..b/c", false},
		{"/a//b", false},        // merged, not resolved
		{"/a/b?x=/../c", false}, // the query is not the path
		{"/a/%2F../b", false},   // unsafe: never normalized
		{"/v1/charges/ch_1/..", true},
	} {
		if got := ResolvesDotSegments(tc.raw); got != tc.want {
			t.Errorf("ResolvesDotSegments(%q) = %v, want %v", tc.raw, got, tc.want)
		}
	}
}
