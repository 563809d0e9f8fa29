package audit

import (
	"strings"
	"testing"
)

func TestHostPattern(t *testing.T) {
	for _, tc := range []struct {
		in    string
		match []string // host:port
		miss  []string
		err   string
	}{
		{in: "api.stripe.com", match: []string{"api.stripe.com:443", "API.Stripe.com:80", "api.stripe.com.:443"}, miss: []string{"x.api.stripe.com:443", "stripe.com:443"}},
		{in: "API.STRIPE.COM", match: []string{"api.stripe.com:443"}},
		{in: "api.stripe.com:443", match: []string{"api.stripe.com:443"}, miss: []string{"api.stripe.com:8443"}},
		{in: "*.googleapis.com", match: []string{"storage.googleapis.com:443", "a.b.googleapis.com:443"}, miss: []string{"googleapis.com:443", "xgoogleapis.com:443"}},
		{in: "*.googleapis.com:8443", match: []string{"storage.googleapis.com:8443"}, miss: []string{"storage.googleapis.com:443"}},
		{in: "api.stripe.com:0", err: "1 to 65535"},
		{in: "api.stripe.com:https", err: "1 to 65535"},
		{in: "*.", err: "*.example.com"},
		{in: "a*.stripe.com", err: "*.example.com"},
		{in: "*.*.com", err: "*.example.com"},
	} {
		p, err := ParseHostPattern(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseHostPattern(%q) = %+v, %v; want an error with %q", tc.in, p, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseHostPattern(%q): %v", tc.in, err)
			continue
		}
		for _, hp := range tc.match {
			h, port := splitHostPort(t, hp)
			if !p.Match(h, port) {
				t.Errorf("%q does not match %s", tc.in, hp)
			}
		}
		for _, hp := range tc.miss {
			h, port := splitHostPort(t, hp)
			if p.Match(h, port) {
				t.Errorf("%q matches %s", tc.in, hp)
			}
		}
		back, err := ParseHostPattern(p.String())
		if err != nil || back != p {
			t.Errorf("%q: String %q reads back as %+v, %v", tc.in, p.String(), back, err)
		}
	}
}

func splitHostPort(t *testing.T, s string) (string, int) {
	i := strings.LastIndexByte(s, ':')
	port := 0
	for _, c := range s[i+1:] {
		port = port*10 + int(c-'0')
	}
	return s[:i], port
}
