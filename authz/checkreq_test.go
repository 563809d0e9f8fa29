package authz

import (
	"testing"

	"github.com/egress-authz/egress-authz/internal/checkreq"
)

// TestCheckreqRequestIsWhatTheServerDecides pins the promise "rules test"
// and "rules explain" rest on: the rules.Request they build for a URL is
// the one the server makes of the CheckRequest the check command sends.
func TestCheckreqRequestIsWhatTheServerDecides(t *testing.T) {
	const p = "spiffe://cluster.local/ns/payments/sa/checkout"
	for _, tc := range []struct{ method, url string }{
		{"POST", "https://api.stripe.com/v1/charges"},
		{"", "https://api.stripe.com"},
		{"GET", "http://api.stripe.com/v1/charges?limit=3#frag"},
		{"GET", "HTTPS://API.Stripe.com:8443/v1/./a/../b"},
		{"DELETE", "https://api.stripe.com/v1/charges%2F..%2Fbalance"},
		{"GET", "ftp://files.example/x"},
		{"PATCH", "https://[2001:db8::1]:8443/x"},
		{"GET", "https://user@api.stripe.com/"},
		{"get", "https://api.stripe.com/?q"},
	} {
		h := checkreq.HTTP{Principal: p, Method: tc.method, URL: tc.url}
		cr, err := h.Build()
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		want, _, invalid := mapProto(cr, false)
		if invalid != "" {
			t.Fatalf("%s: the server finds the request invalid: %s", tc.url, invalid)
		}
		got, err := h.Request()
		if err != nil || got != want {
			t.Errorf("%s %s:\n checkreq %+v (%v)\n   server %+v", tc.method, tc.url, got, err, want)
		}
	}
	for _, port := range []uint32{443, 8443} {
		want, _, _ := mapProto(checkreq.SNI(p, "api.sendgrid.com", port), false)
		if got := checkreq.SNIRequest(p, "api.sendgrid.com", port); got != want {
			t.Errorf("SNI port %d:\n checkreq %+v\n   server %+v", port, got, want)
		}
	}
}
