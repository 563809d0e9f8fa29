package authz_test

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/internal/spiffetest"
	"github.com/egress-authz/egress-authz/rules"
)

// refusedCerts counts OnCertRefused calls by reason.
type refusedCerts struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *refusedCerts) add(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[reason]++
}

func (r *refusedCerts) get(reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[reason]
}

// httpFront starts an HTTP front door deciding testRules with opts and
// hopts.
func httpFront(t *testing.T, opts authz.Options, hopts authz.HTTPOptions) *front {
	t.Helper()
	rec := &recorder{}
	opts.Recorder = rec
	s := authz.NewServer(rules.NewLive(authztest.Table(t, "rules.yaml", testRules), rules.LiveOptions{}), opts)
	h, err := s.HTTPHandler(hopts)
	if err != nil {
		t.Fatal(err)
	}
	return &front{url: serveHandler(t, h), rec: rec}
}

// askAuthRequest asks f about POST https://api.stripe.com/v1/charges the
// way NGINX's auth_request does, with extra header lines.
func askAuthRequest(t *testing.T, f *front, id string, extra ...string) httpAnswer {
	t.Helper()
	head := doors[2].request("POST", "https", "api.stripe.com", "/v1/charges")
	for _, h := range extra {
		head += h + "\r\n"
	}
	return f.ask(t, head, id)
}

// TestHTTPIdentity: the principal comes from a forwarded certificate that
// verifies against the trust bundle, in each form proxies forward it, or
// from XFCC's URI= with TrustXFCC; from nothing else.
func TestHTTPIdentity(t *testing.T) {
	p := newPKI(t)
	other := spiffetest.NewCA(t, "another CA")
	svid := p.ca.SVID(t, checkout)
	pemEsc := url.PathEscape(string(svid.CertPEM()))
	der := base64.StdEncoding.EncodeToString(svid.Cert.Raw)
	xfccOf := func(id string) string { return "X-Forwarded-Client-Cert: By=" + gateway + ";URI=" + id }
	const charges = "payments-stripe-charges"
	for _, tc := range []struct {
		name      string
		trustXFCC bool
		header    string // ClientCertHeader; "" reads none
		lines     []string
		want      want
		refused   string // the OnCertRefused reason expected, if any
	}{
		{"escaped_pem_as_nginx_sends_it", false, certHeader, []string{certHeader + ": " + pemEsc}, allow(charges), ""},
		{"header_name_is_case_insensitive", false, "x-client-cert", []string{certHeader + ": " + pemEsc}, allow(charges), ""},
		{"query_escaped_pem", false, certHeader, []string{certHeader + ": " + url.QueryEscape(string(svid.CertPEM()))}, allow(charges), ""},
		{"base64_der_as_caddy_sends_it", false, certHeader, []string{certHeader + ": " + der}, allow(charges), ""},
		{"escaped_der_chain_as_traefik_sends_it", false, "X-Forwarded-Tls-Client-Cert", []string{"X-Forwarded-Tls-Client-Cert: " + url.QueryEscape(der) + "," + url.QueryEscape(base64.StdEncoding.EncodeToString(p.ca.Cert.Raw))}, allow(charges), ""},
		{"chain_with_the_root_appended", false, certHeader, []string{certHeader + ": " + url.PathEscape(string(svid.CertPEM())+string(p.ca.CertPEM()))}, allow(charges), ""},
		{"forged_xfcc_ignored_for_the_certificate", false, certHeader, []string{certHeader + ": " + pemEsc, xfccOf(crawler)}, allow(charges), ""},
		{"forged_xfcc_ignored_even_when_trusted", true, certHeader, []string{certHeader + ": " + pemEsc, xfccOf(crawler)}, allow(charges), ""},
		{"xfcc_not_trusted_is_no_identity", false, certHeader, []string{xfccOf(checkout)}, deny(rules.ReasonNoIdentity, ""), ""},
		{"xfcc_trusted_without_a_certificate", true, certHeader, []string{xfccOf(checkout)}, allow(charges), ""},
		{"xfcc_trusted_without_a_certificate_header_configured", true, "", []string{xfccOf(checkout)}, allow(charges), ""},
		{"certificate_header_not_read_when_not_configured", false, "", []string{certHeader + ": " + pemEsc}, deny(rules.ReasonNoIdentity, ""), ""},
		{"svid_of_another_ca", false, certHeader, []string{certHeader + ": " + url.PathEscape(string(other.SVID(t, checkout).CertPEM()))}, deny(rules.ReasonNoIdentity, ""), "untrusted"},
		{"svid_of_another_ca_does_not_fall_back_to_xfcc", true, certHeader, []string{certHeader + ": " + url.PathEscape(string(other.SVID(t, checkout).CertPEM())), xfccOf(checkout)}, deny(rules.ReasonNoIdentity, ""), "untrusted"},
		{"certificate_without_spiffe_id", false, certHeader, []string{certHeader + ": " + url.PathEscape(string(p.ca.Issue(t, spiffetest.CertOptions{CommonName: checkout}).CertPEM()))}, deny(rules.ReasonNoIdentity, ""), "untrusted"},
		{"the_ca_certificate_itself", false, certHeader, []string{certHeader + ": " + url.PathEscape(string(p.ca.CertPEM()))}, deny(rules.ReasonNoIdentity, ""), "untrusted"},
		{"garbage", false, certHeader, []string{certHeader + ": not-a-certificate"}, deny(rules.ReasonNoIdentity, ""), "malformed"},
		{"truncated_pem", false, certHeader, []string{certHeader + ": " + pemEsc[:len(pemEsc)/2]}, deny(rules.ReasonNoIdentity, ""), "malformed"},
		{"invalid_escape", false, certHeader, []string{certHeader + ": %zz" + pemEsc}, deny(rules.ReasonNoIdentity, ""), "malformed"},
		{"too_many_certificates", false, certHeader, []string{certHeader + ": " + strings.Repeat(der+",", 9) + der}, deny(rules.ReasonNoIdentity, ""), "malformed"},
		{"certificate_header_sent_twice", false, certHeader, []string{certHeader + ": " + pemEsc, certHeader + ": " + pemEsc}, deny(rules.ReasonInvalidRequest, ""), ""},
		// Envoy's XFCC with Cert: the last element is the nearest peer's.
		{"xfcc_cert", false, "x-forwarded-client-cert", []string{`X-Forwarded-Client-Cert: By=` + gateway + `;Cert="` + pemEsc + `";URI=` + crawler}, allow(charges), ""},
		{"xfcc_cert_of_an_earlier_element_ignored", false, "x-forwarded-client-cert", []string{`X-Forwarded-Client-Cert: Cert="` + pemEsc + `",By=` + gateway + `;URI=` + checkout}, deny(rules.ReasonNoIdentity, ""), ""},
		{"xfcc_cert_of_another_ca", true, "x-forwarded-client-cert", []string{`X-Forwarded-Client-Cert: By=` + gateway + `;Cert="` + url.PathEscape(string(other.SVID(t, checkout).CertPEM())) + `";URI=` + checkout}, deny(rules.ReasonNoIdentity, ""), "untrusted"},
		{"xfcc_uri_when_no_cert_and_trusted", true, "x-forwarded-client-cert", []string{`X-Forwarded-Client-Cert: By=` + gateway + `;URI=` + checkout}, allow(charges), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var refused refusedCerts
			hopts := authz.HTTPOptions{ClientCertHeader: tc.header, OnCertRefused: refused.add}
			if tc.header != "" {
				hopts.VerifyCert = p.verify
			}
			f := httpFront(t, authz.Options{TrustXFCC: tc.trustXFCC}, hopts)
			a := askAuthRequest(t, f, "id-1", tc.lines...)
			a.expect(t, tc.want, "id-1")
			if tc.want.reason == rules.ReasonAllowed && a.recs[0].Principal != checkout {
				t.Errorf("principal %q, want %s", a.recs[0].Principal, checkout)
			}
			for _, reason := range []string{"malformed", "untrusted"} {
				if got, want := refused.get(reason), boolInt(reason == tc.refused); got != want {
					t.Errorf("OnCertRefused(%q) called %d times, want %d", reason, got, want)
				}
			}
		})
	}

	t.Run("options_are_checked", func(t *testing.T) {
		s := authz.NewServer(rules.NewLive(authztest.Table(t, "rules.yaml", testRules), rules.LiveOptions{}), authz.Options{})
		if _, err := s.HTTPHandler(authz.HTTPOptions{ClientCertHeader: certHeader}); err == nil {
			t.Error("a certificate header without a verifier accepted")
		}
		if _, err := s.HTTPHandler(authz.HTTPOptions{ClientCertHeader: "X Client Cert", VerifyCert: p.verify}); err == nil {
			t.Error("a header name with spaces accepted")
		}
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestHTTPEndpoints: what each front door reads, and what it does with
// requests that are not what a proxy sends.
func TestHTTPEndpoints(t *testing.T) {
	f := httpFront(t, authz.Options{TrustXFCC: true}, authz.HTTPOptions{})
	id := "X-Forwarded-Client-Cert: By=" + gateway + ";URI=" + checkout + "\r\n"
	const charges = "payments-stripe-charges"
	for _, tc := range []struct {
		name string
		head string
		want want
	}{
		{"forward_auth_with_a_query", "GET /forward-auth?from=traefik HTTP/1.1\r\nHost: x\r\nX-Forwarded-Method: POST\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: api.stripe.com\r\nX-Forwarded-Uri: /v1/charges\r\n", allow(charges)},
		{"forward_auth_without_method", "GET /forward-auth HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: api.stripe.com\r\nX-Forwarded-Uri: /v1/charges\r\n", deny(rules.ReasonInvalidRequest, "")},
		{"forward_auth_without_uri", "GET /forward-auth HTTP/1.1\r\nHost: x\r\nX-Forwarded-Method: POST\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: api.stripe.com\r\n", deny(rules.ReasonUnsafePath, "")},
		{"forward_auth_does_not_take_host_for_the_authority", "GET /forward-auth HTTP/1.1\r\nHost: api.stripe.com\r\nX-Forwarded-Method: POST\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Uri: /v1/charges\r\n", deny(rules.ReasonNoHost, "")},
		{"forward_auth_without_proto_has_no_port", "GET /forward-auth HTTP/1.1\r\nHost: x\r\nX-Forwarded-Method: POST\r\nX-Forwarded-Host: api.stripe.com\r\nX-Forwarded-Uri: /v1/charges\r\n", deny(rules.ReasonNoMatchingRule, "")},
		{"forward_auth_port_from_the_authority", "GET /forward-auth HTTP/1.1\r\nHost: x\r\nX-Forwarded-Method: POST\r\nX-Forwarded-Host: api.stripe.com:443\r\nX-Forwarded-Uri: /v1/charges\r\n", allow(charges)},
		{"forward_auth_host_sent_twice", "GET /forward-auth HTTP/1.1\r\nHost: x\r\nX-Forwarded-Method: POST\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: api.stripe.com\r\nX-Forwarded-Host: pastebin.com\r\nX-Forwarded-Uri: /v1/charges\r\n", deny(rules.ReasonInvalidRequest, "")},
		{"auth_request_uri_sent_twice", "GET /auth-request HTTP/1.1\r\nHost: api.stripe.com\r\nX-Original-Method: POST\r\nX-Original-URI: /v1/charges\r\nX-Original-URI: /v1/accounts/x\r\nX-Forwarded-Proto: https\r\n", deny(rules.ReasonInvalidRequest, "")},
		{"auth_request_forwarded_host_wins_over_host", "POST /auth-request HTTP/1.1\r\nHost: api.stripe.com\r\nX-Forwarded-Host: pastebin.com\r\nX-Original-Method: POST\r\nX-Original-URI: /v1/charges\r\nX-Forwarded-Proto: https\r\n", deny(rules.ReasonDeniedByRule, "no-pastebin")},
		{"auth_request_empty_forwarded_host_is_no_host", "GET /auth-request HTTP/1.1\r\nHost: api.stripe.com\r\nX-Forwarded-Host: \r\nX-Original-Method: POST\r\nX-Original-URI: /v1/charges\r\nX-Forwarded-Proto: https\r\n", deny(rules.ReasonNoHost, "")},
		{"ext_authz_prefix_alone_has_no_path", "POST /ext-authz HTTP/1.1\r\nHost: api.stripe.com\r\nX-Forwarded-Proto: https\r\n", deny(rules.ReasonUnsafePath, "")},
		{"ext_authz_query_without_path", "POST /ext-authz?x=1 HTTP/1.1\r\nHost: api.stripe.com\r\nX-Forwarded-Proto: https\r\n", deny(rules.ReasonUnsafePath, "")},
		{"ext_authz_path_is_not_cleaned", "POST /ext-authz/v1/charges/../accounts/x HTTP/1.1\r\nHost: api.stripe.com\r\nX-Forwarded-Proto: https\r\n", deny(rules.ReasonDeniedByRule, "stripe-no-account-changes")},
		{"ext_authz_lower_case_scheme_header", "POST /ext-authz/v1/charges HTTP/1.1\r\nHost: api.stripe.com\r\nX-Forwarded-Proto: HTTPS\r\n", allow(charges)},
		{"ext_authz_head", "HEAD /ext-authz/v1/charges HTTP/1.1\r\nHost: api.stripe.com\r\nX-Forwarded-Proto: https\r\n", deny(rules.ReasonNoMatchingRule, "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := f.ask(t, tc.head+id, "id-"+tc.name)
			if strings.HasPrefix(tc.head, "HEAD ") {
				// No body in an answer to HEAD: the rest as for any deny.
				if a.status != 403 || a.body != "" || len(a.recs) == 0 || a.recs[0].Reason != string(tc.want.reason) {
					t.Errorf("HEAD: HTTP %d %q, records %v", a.status, a.body, a.recs)
				}
				return
			}
			a.expect(t, tc.want, "id-"+tc.name)
		})
	}

	t.Run("not_an_endpoint", func(t *testing.T) {
		for _, target := range []string{"/", "/ext-authzed/v1", "/forward-auth/x", "/auth-request/", "/healthz", "/EXT-AUTHZ/v1", "/%65xt-authz/v1"} {
			a := f.ask(t, "GET "+target+" HTTP/1.1\r\nHost: api.stripe.com\r\n"+id, "id-404")
			if a.status != 404 || len(a.recs) > 0 {
				t.Errorf("GET %s: HTTP %d with %d records, want 404 and nothing decided", target, a.status, len(a.recs))
			}
		}
	})

	t.Run("request_ids", func(t *testing.T) {
		long := strings.Repeat("r", 300)
		head := doors[1].request("GET", "https", "api.stripe.com", "/v1/charges") + id
		for _, tc := range []struct{ name, lines, want string }{
			{"echoed", "X-Request-Id: abc\r\n", "abc"},
			{"repeated_joined_as_envoy_joins_them", "X-Request-Id: a\r\nX-Request-Id: b\r\n", "a,b"},
			{"long_cut", "X-Request-Id: " + long + "\r\n", long[:128]},
		} {
			t.Run(tc.name, func(t *testing.T) {
				// ask adds its own X-Request-Id last: send the test's
				// through a raw head without it.
				a := f.askRaw(t, head+tc.lines)
				if len(a.recs) == 0 || a.recs[0].RequestID != tc.want {
					t.Fatalf("recorded %v, want request id %q", a.recs, tc.want)
				}
				if !strings.Contains(a.body, `"request_id":"`+tc.want+`"`) {
					t.Errorf("deny body %s does not carry request id %q", a.body, tc.want)
				}
			})
		}
		t.Run("generated_when_absent", func(t *testing.T) {
			a := f.askRaw(t, head)
			if len(a.recs) == 0 || !strings.HasPrefix(a.recs[0].RequestID, "ea-") || !strings.Contains(a.body, a.recs[0].RequestID) {
				t.Fatalf("recorded %v, body %s: want a generated id in both", a.recs, a.body)
			}
		})
		t.Run("trace_id_from_traceparent", func(t *testing.T) {
			const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
			a := f.askRaw(t, head+"Traceparent: 00-"+trace+"-00f067aa0ba902b7-01\r\n")
			if len(a.recs) == 0 || a.recs[0].TraceID != trace {
				t.Fatalf("recorded %v, want trace id %s", a.recs, trace)
			}
		})
	})
}

// TestHTTPDenyBodyIsTheGRPCOne: a deny's body is byte for byte the body of
// the gRPC deny for the same request, as both are cut from one template.
func TestHTTPDenyBodyIsTheGRPCOne(t *testing.T) {
	live := rules.NewLive(authztest.Table(t, "rules.yaml", testRules), rules.LiveOptions{})
	g := authztest.NewServer(t, live, authz.Options{})
	f := startFront(t, live, identitySources[0], nil)
	for i, pr := range []probe{
		{"no_matching_rule", checkout, "GET", "https://api.stripe.com/v1/charges", want{}},
		{"denied_by_rule", checkout, "POST", "https://api.stripe.com/v1/accounts/a", want{}},
		{"unsafe_path", crawler, "GET", "http://paths.test/a%2Fb", want{}},
		{"no_identity", "", "GET", "https://api.stripe.com/", want{}},
	} {
		t.Run(pr.name, func(t *testing.T) {
			rid := `id-<&>"` + strconv.Itoa(i) // escaped alike in both
			resp := g.Check(t, httpReq(pr.principal, pr.method, pr.url, withHeader("x-request-id", rid)))
			a := f.ask(t, headOf(doors[0], pr)+f.identityHeader(t, pr.principal), rid)
			if want := resp.GetDeniedResponse().GetBody(); a.body != want || want == "" {
				t.Errorf("HTTP body %s\n gRPC body %s", a.body, want)
			}
		})
	}
}

// TestHTTPAuditUnavailable: a decision that cannot be recorded is a 403
// audit-unavailable, as over gRPC: never a 5xx.
func TestHTTPAuditUnavailable(t *testing.T) {
	rec := &recorder{err: errors.New("log full")}
	s := authz.NewServer(rules.NewLive(authztest.Table(t, "rules.yaml", testRules), rules.LiveOptions{}), authz.Options{TrustXFCC: true, Recorder: rec})
	h, err := s.HTTPHandler(authz.HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := &front{url: serveHandler(t, h), rec: rec}
	a := askAuthRequest(t, f, "id-1", "X-Forwarded-Client-Cert: URI="+checkout)
	if a.status != 403 || !strings.Contains(a.body, `"reason":"audit-unavailable"`) {
		t.Errorf("HTTP %d %s, want 403 audit-unavailable", a.status, a.body)
	}
	if len(a.recs) != 1 || a.recs[0].Decision != "allow" {
		t.Errorf("the recorder was handed %v, want the allow it refused", a.recs)
	}
}

// TestHTTPRemembersVerifiedCertificates: a certificate that verified is not
// verified again for a second (nor past its NotAfter); one that did not is
// verified each time.
func TestHTTPRemembersVerifiedCertificates(t *testing.T) {
	p := newPKI(t)
	var mu sync.Mutex
	now := time.Now()
	calls := 0
	verify := func(chain []*x509.Certificate) (string, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		return p.verify(chain)
	}
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	advance := func(d time.Duration) {
		mu.Lock()
		now = now.Add(d)
		mu.Unlock()
	}
	verified := func() int {
		mu.Lock()
		defer mu.Unlock()
		return calls
	}
	f := httpFront(t, authz.Options{Now: clock}, authz.HTTPOptions{ClientCertHeader: certHeader, VerifyCert: verify})
	svid := p.ca.SVID(t, checkout)
	good := certHeader + ": " + url.PathEscape(string(svid.CertPEM()))
	bad := certHeader + ": " + url.PathEscape(string(spiffetest.NewCA(t, "other").SVID(t, checkout).CertPEM()))

	for i, tc := range []struct {
		name    string
		line    string
		advance time.Duration
		want    want
		calls   int // VerifyCert calls so far
	}{
		{"first_use_verifies", good, 0, allow("payments-stripe-charges"), 1},
		{"again_within_a_second_remembered", good, 900 * time.Millisecond, allow("payments-stripe-charges"), 1},
		{"after_a_second_verified_again", good, 200 * time.Millisecond, allow("payments-stripe-charges"), 2},
		{"refused_certificate", bad, 0, deny(rules.ReasonNoIdentity, ""), 3},
		{"refused_certificate_not_remembered", bad, 0, deny(rules.ReasonNoIdentity, ""), 4},
		// Half a second before the certificate's NotAfter (by the
		// handler's clock; the verifier keeps its own), and then past it,
		// though within a second: verified again.
		{"just_before_not_after", good, -1, allow("payments-stripe-charges"), 5},
		{"past_not_after_verified_again", good, 600 * time.Millisecond, allow("payments-stripe-charges"), 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.advance < 0 {
				mu.Lock()
				now = svid.Cert.NotAfter.Add(-500 * time.Millisecond)
				mu.Unlock()
			}
			advance(max(tc.advance, 0))
			id := "id-" + strconv.Itoa(i)
			askAuthRequest(t, f, id, tc.line).expect(t, tc.want, id)
			if got := verified(); got != tc.calls {
				t.Errorf("VerifyCert called %d times so far, want %d", got, tc.calls)
			}
		})
	}
}
