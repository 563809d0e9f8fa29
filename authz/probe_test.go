package authz_test

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"bufio"
	"crypto/x509"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/internal/spiffetest"
	"github.com/egress-authz/egress-authz/internal/spiffetls"
	"github.com/egress-authz/egress-authz/rules"
)

// probe is a request stated as a person, a "rules test" case or the check
// command states it: a principal, a method and a URL, nothing about how a
// proxy carries it. Every transport must decide a probe alike.
type probe struct {
	name      string
	principal string
	method    string
	url       string
	want      want
}

// probes is the one table of probe-style cases: TestProbes asks each over
// gRPC (as the check command and Envoy send it) and through every HTTP
// front door, with the identity from XFCC and from a forwarded client
// certificate, and holds the decision records of all of them equal.
var probes = []probe{
	// Decisions by rule (TestCheckHTTP's).
	{"allow_by_rule", checkout, "POST", "https://api.stripe.com/v1/charges", allow("payments-stripe-charges")},
	{"allow_path_below_double_star_with_query", checkout, "POST", "https://api.stripe.com/v1/files/a/b?purpose=dispute", allow("payments-stripe-charges")},
	{"allow_host_case_insensitive_trailing_dot", crawler, "GET", "http://EXAMPLE.com./index.html", allow("crawler-example")},
	{"deny_no_matching_rule_has_empty_rule", checkout, "GET", "https://api.stripe.com/v1/charges", deny(rules.ReasonNoMatchingRule, "")},
	{"deny_other_principal", refunds, "POST", "https://api.stripe.com/v1/charges", deny(rules.ReasonNoMatchingRule, "")},
	{"deny_scheme_port_not_allowed", checkout, "POST", "http://api.stripe.com/v1/charges", deny(rules.ReasonNoMatchingRule, "")},
	{"deny_rule_names_the_rule", checkout, "POST", "https://api.stripe.com/v1/accounts/acct_1", deny(rules.ReasonDeniedByRule, "stripe-no-account-changes")},
	{"deny_rule_beats_allow_rule", crawler, "GET", "https://pastebin.com/raw/x", deny(rules.ReasonDeniedByRule, "no-pastebin")},
	{"deny_rule_not_bypassed_by_dot_segments", checkout, "POST", "https://api.stripe.com/v1/charges/../accounts/acct_1", deny(rules.ReasonDeniedByRule, "stripe-no-account-changes")},
	{"deny_rule_not_bypassed_by_encoded_letters", checkout, "POST", "https://api.stripe.com/v1/%61ccounts/acct_1", deny(rules.ReasonDeniedByRule, "stripe-no-account-changes")},
	{"deny_rule_not_bypassed_by_double_slash", checkout, "POST", "https://api.stripe.com//v1//accounts/acct_1", deny(rules.ReasonDeniedByRule, "stripe-no-account-changes")},
	{"lower_case_method_is_a_token_but_methods_are_case_sensitive", checkout, "post", "https://api.stripe.com/v1/charges", deny(rules.ReasonNoMatchingRule, "")},
	// Host and port.
	{"authority_from_host", crawler, "GET", "https://ports.test/", allow("port-443")},
	{"port_from_authority_beats_scheme", crawler, "GET", "https://ports.test:8443/", allow("port-8443")},
	{"port_not_allowed", crawler, "GET", "https://ports.test:7000/", deny(rules.ReasonNoMatchingRule, "")},
	{"ipv6_literal", crawler, "GET", "https://[::1]:8443/", deny(rules.ReasonNoMatchingRule, "")},
	// Path normalization.
	{"exact", crawler, "GET", "http://paths.test/b", allow("paths-b")},
	{"query_removed", crawler, "GET", "http://paths.test/b?x=../../a", allow("paths-b")},
	{"dot_segments_resolved", crawler, "GET", "http://paths.test/a/../b", allow("paths-b")},
	{"single_dot_segments_resolved", crawler, "GET", "http://paths.test/./b", allow("paths-b")},
	{"trailing_dot_segment_leaves_a_slash", crawler, "GET", "http://paths.test/b/.", deny(rules.ReasonNoMatchingRule, "")},
	{"encoded_dot_segments_resolved", crawler, "GET", "http://paths.test/a/%2e%2E/b", allow("paths-b")},
	{"dot_segments_never_above_root", crawler, "GET", "http://paths.test/../../b", allow("paths-b")},
	{"slashes_merged", crawler, "GET", "http://paths.test//b", allow("paths-b")},
	{"encoded_unreserved_decoded", crawler, "GET", "http://paths.test/%62", allow("paths-b")},
	{"trailing_slash_significant", crawler, "GET", "http://paths.test/b/", deny(rules.ReasonNoMatchingRule, "")},
	{"case_sensitive", crawler, "GET", "http://paths.test/B", deny(rules.ReasonNoMatchingRule, "")},
	{"unsafe_encoded_slash", crawler, "GET", "http://paths.test/a%2Fb", deny(rules.ReasonUnsafePath, "")},
	{"unsafe_encoded_slash_lower_case", crawler, "GET", "http://paths.test/a%2fb", deny(rules.ReasonUnsafePath, "")},
	{"unsafe_dot_dot_escaping_with_encoded_slash", crawler, "GET", "http://paths.test/a/..%2F..%2Fb", deny(rules.ReasonUnsafePath, "")},
	{"unsafe_dot_dot_escaping_with_encoded_backslash", crawler, "GET", "http://paths.test/a/..%5Cb", deny(rules.ReasonUnsafePath, "")},
	{"unsafe_dot_dot_escaping_with_raw_backslash", crawler, "GET", `http://paths.test/a/..\b`, deny(rules.ReasonUnsafePath, "")},
	{"unsafe_encoded_nul", crawler, "GET", "http://paths.test/b%00", deny(rules.ReasonUnsafePath, "")},
	{"unsafe_encoded_control", crawler, "GET", "http://paths.test/b%1f", deny(rules.ReasonUnsafePath, "")},
	{"unsafe_encoded_del", crawler, "GET", "http://paths.test/b%7F", deny(rules.ReasonUnsafePath, "")},
	{"unsafe_raw_control", crawler, "GET", "http://paths.test/b\x01", deny(rules.ReasonUnsafePath, "")},
	{"unsafe_invalid_escape", crawler, "GET", "http://paths.test/b%zz", deny(rules.ReasonUnsafePath, "")},
	{"unsafe_truncated_escape", crawler, "GET", "http://paths.test/b%2", deny(rules.ReasonUnsafePath, "")},
	// Bad input, with the SPEC's reason.
	{"no_identity", "", "POST", "https://api.stripe.com/v1/charges", deny(rules.ReasonNoIdentity, "")},
	{"invalid_identity_not_spiffe", "checkout", "POST", "https://api.stripe.com/v1/charges", deny(rules.ReasonInvalidIdentity, "")},
	{"invalid_identity_other_scheme", "https://cluster.local/ns/payments/sa/checkout", "POST", "https://api.stripe.com/v1/charges", deny(rules.ReasonInvalidIdentity, "")},
	{"invalid_identity_upper_case_trust_domain", "spiffe://Cluster.Local/ns/payments/sa/checkout", "POST", "https://api.stripe.com/v1/charges", deny(rules.ReasonInvalidIdentity, "")},
	{"invalid_identity_dot_segment", "spiffe://cluster.local/ns/payments/../sa/checkout", "POST", "https://api.stripe.com/v1/charges", deny(rules.ReasonInvalidIdentity, "")},
	{"untrusted_trust_domain", "spiffe://evil.example/ns/payments/sa/checkout", "POST", "https://api.stripe.com/v1/charges", deny(rules.ReasonUntrustedDomain, "")},
	{"unsafe_path", checkout, "POST", "https://api.stripe.com/v1/charges%2F..%2F..%2Faccounts", deny(rules.ReasonUnsafePath, "")},
	{"unsafe_path_before_denied_by_rule", checkout, "POST", "https://api.stripe.com/v1/accounts/%00", deny(rules.ReasonUnsafePath, "")}, {"invalid_method_with_space", checkout, "PO ST", "https://api.stripe.com/v1/charges", deny(rules.ReasonInvalidRequest, "")},
	{"invalid_method_with_slash", checkout, "POST/1", "https://api.stripe.com/v1/charges", deny(rules.ReasonInvalidRequest, "")},
	{"invalid_method_non_ascii", checkout, "PÖST", "https://api.stripe.com/v1/charges", deny(rules.ReasonInvalidRequest, "")},
	{"port_from_http_scheme", crawler, "GET", "http://ports.test/", allow("port-80")},
	{"userinfo_in_the_authority", checkout, "POST", "https://user@api.stripe.com/v1/charges", deny(rules.ReasonInvalidHost, "")},
	{"empty_port", checkout, "POST", "https://api.stripe.com:/v1/charges", deny(rules.ReasonInvalidHost, "")},
	{"no_host", checkout, "POST", "https:///v1/charges", deny(rules.ReasonNoHost, "")},
}

// httpRefuses lists the probes that some front doors' requests cannot
// carry as stated, and those doors: Go's HTTP server answers them 400
// before anything is decided, and no proxy sends them (Envoy and NGINX
// refuse such requests themselves). TestProbes holds each to that.
var httpRefuses = map[string][]string{
	// No request line or header field holds a control character.
	"unsafe_raw_control": {"ext_authz", "forward_auth", "auth_request", "auth_request_host"},
	// A request line's method is a token; a header's value need not be.
	"invalid_method_with_space": {"ext_authz"},
	"invalid_method_with_slash": {"ext_authz"},
	"invalid_method_non_ascii":  {"ext_authz"},
	// A request line's target parses as a URI: its escapes are valid.
	"unsafe_invalid_escape":   {"ext_authz"},
	"unsafe_truncated_escape": {"ext_authz"},
	// A Host header holds no userinfo (X-Forwarded-Host may).
	"userinfo_in_the_authority": {"ext_authz", "auth_request_host"},
}

// check is the CheckRequest the gateway sends for p.
func (p probe) check() *authv3.CheckRequest { return httpReq(p.principal, p.method, p.url) }

// door is an HTTP front door, and how a proxy in front of it asks about a
// request: request returns the raw HTTP/1.1 request head, without its
// final blank line, for the request's method, scheme, authority and
// target, exactly as given (nothing is cleaned or escaped, as a proxy
// passes on what it received).
type door struct {
	name    string
	request func(method, scheme, authority, target string) string
}

var doors = []door{
	{"ext_authz", func(m, scheme, authority, target string) string {
		// Envoy's HTTP service with path_prefix: the original request line
		// below the prefix, the authority in Host.
		return m + " " + authz.ExtAuthzPath + target + " HTTP/1.1\r\nHost: " + authority + "\r\nX-Forwarded-Proto: " + scheme + "\r\n"
	}},
	{"forward_auth", func(m, scheme, authority, target string) string {
		// Traefik and Caddy ask with a GET of their own.
		return "GET " + authz.ForwardAuthPath + " HTTP/1.1\r\nHost: egress-authz:9193\r\nX-Forwarded-Method: " + m +
			"\r\nX-Forwarded-Proto: " + scheme + "\r\nX-Forwarded-Host: " + authority + "\r\nX-Forwarded-Uri: " + target + "\r\n"
	}},
	{"auth_request", func(m, scheme, authority, target string) string {
		// NGINX as deploy/nginx configures it: the original request in
		// X-Original-*, the authority in X-Forwarded-Host, Host left to
		// name egress-authz.
		return "GET " + authz.AuthRequestPath + " HTTP/1.1\r\nHost: egress-authz:9193\r\nX-Original-Method: " + m +
			"\r\nX-Original-URI: " + target + "\r\nX-Forwarded-Host: " + authority + "\r\nX-Forwarded-Proto: " + scheme + "\r\n"
	}},
	{"auth_request_host", func(m, scheme, authority, target string) string {
		// NGINX with proxy_set_header Host $http_host instead.
		return "GET " + authz.AuthRequestPath + " HTTP/1.1\r\nHost: " + authority + "\r\nX-Original-Method: " + m +
			"\r\nX-Original-URI: " + target + "\r\nX-Forwarded-Proto: " + scheme + "\r\n"
	}},
}

// identitySource is how the principal reaches an HTTP front door.
type identitySource struct {
	name string
	// trustXFCC is the server's --trust-xfcc.
	trustXFCC bool
	// cert is set when the identity is a forwarded client certificate.
	cert bool
}

var identitySources = []identitySource{
	{name: "xfcc_uri", trustXFCC: true},
	{name: "client_cert", cert: true},
}

// certHeader is the header the client_cert front doors read, as NGINX's
// example sets it from $ssl_client_escaped_cert.
const certHeader = "X-Client-Cert"

// pki issues the forwarded certificates of the client_cert front doors and
// is the trust bundle they are verified against, through spiffetls as
// serve wires it.
type pki struct {
	ca    *spiffetest.CA
	src   *spiffetls.Source
	mu    sync.Mutex
	certs map[string]string // principal -> header value
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	ca := spiffetest.NewCA(t, "cluster.local CA")
	dir := t.TempDir()
	certFile, keyFile := ca.ServerSVID(t, "spiffe://cluster.local/ns/egress-authz/sa/egress-authz").WriteFiles(t, dir, "server")
	caFile := filepath.Join(dir, "ca.pem")
	spiffetest.WriteBundle(t, caFile, ca)
	src, err := spiffetls.Open(t.Context(), spiffetls.Options{CertFile: certFile, KeyFile: keyFile, CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	return &pki{ca: ca, src: src, certs: map[string]string{}}
}

// verify is the VerifyCert serve passes: the trust bundle's verdict.
func (p *pki) verify(chain []*x509.Certificate) (string, error) {
	id, err := p.src.VerifyX509SVID(chain)
	return id.String(), err
}

// certFor returns the forwarded certificate, URL-escaped PEM, that stands
// for principal: an X.509 SVID naming it, or, for a principal that is not
// a spiffe:// URI, a certificate without a SPIFFE ID.
func (p *pki) certFor(t testing.TB, principal string) string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if v, ok := p.certs[principal]; ok {
		return v
	}
	opts := spiffetest.CertOptions{CommonName: principal}
	if strings.HasPrefix(principal, "spiffe://") {
		opts = spiffetest.CertOptions{SPIFFEID: principal}
	}
	v := url.PathEscape(string(p.ca.Issue(t, opts).CertPEM()))
	p.certs[principal] = v
	return v
}

// certWant is what a probe is decided as when its principal arrives as a
// forwarded certificate. An X.509 SVID carries a valid SPIFFE ID (that is
// what verifying it means), so a principal that is none cannot be
// presented as one: the certificate standing for it does not verify, and
// there is no identity.
func certWant(p probe) (want, bool) {
	if p.principal == "" {
		return p.want, true
	}
	if _, err := spiffeid.FromString(p.principal); err != nil {
		return deny(rules.ReasonNoIdentity, ""), false
	}
	return p.want, true
}

// front is the HTTP authorization handler of one authz.Server on a real
// loopback HTTP server, and the records that server made.
type front struct {
	identitySource
	url string
	rec *recorder
	pki *pki
}

func startFront(t testing.TB, d authz.Decider, src identitySource, p *pki) *front {
	t.Helper()
	rec := &recorder{}
	s := authz.NewServer(d, authz.Options{TrustXFCC: src.trustXFCC, Recorder: rec})
	var hopts authz.HTTPOptions
	if src.cert {
		hopts = authz.HTTPOptions{ClientCertHeader: certHeader, VerifyCert: p.verify}
	}
	h, err := s.HTTPHandler(hopts)
	if err != nil {
		t.Fatal(err)
	}
	return &front{identitySource: src, url: serveHandler(t, h), rec: rec, pki: p}
}

// identityHeader is the header line that carries principal to f, or "".
func (f *front) identityHeader(t testing.TB, principal string) string {
	if principal == "" {
		return ""
	}
	if f.cert {
		return certHeader + ": " + f.pki.certFor(t, principal) + "\r\n"
	}
	return "X-Forwarded-Client-Cert: By=" + gateway + ";Hash=0123;URI=" + principal + "\r\n"
}

// httpAnswer is what a front door answered and recorded.
type httpAnswer struct {
	status int
	header http.Header
	body   string
	recs   []audit.Record // the records of the decision (none when the HTTP layer refused the request)
}

// ask sends head (a request head without its final blank line) to f on a
// new connection, with request id id, and returns the answer and what was
// recorded for it.
func (f *front) ask(t testing.TB, head, id string) httpAnswer {
	t.Helper()
	return f.askRaw(t, head+"X-Request-Id: "+id+"\r\n")
}

// askRaw is ask with head as it is. Requests are asked one at a time: the
// records made while one is answered are its own.
func (f *front) askRaw(t testing.TB, head string) httpAnswer {
	t.Helper()
	f.rec.mu.Lock()
	before := len(f.rec.calls)
	f.rec.mu.Unlock()
	conn, err := net.DialTimeout("tcp", f.url, authztest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(authztest.Timeout))
	if _, err := io.WriteString(conn, head+"Connection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	method, _, _ := strings.Cut(head, " ")
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := httpAnswer{status: resp.StatusCode, header: resp.Header, body: string(body)}
	f.rec.mu.Lock()
	defer f.rec.mu.Unlock()
	switch calls := f.rec.calls[before:]; len(calls) {
	case 0:
	case 1:
		a.recs = calls[0]
	default:
		t.Fatalf("one request, %d decisions recorded", len(calls))
	}
	return a
}

// serveHandler serves h on a real loopback HTTP server, stopped when the
// test ends, and returns its address.
func serveHandler(t testing.TB, h http.Handler) string {
	t.Helper()
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return hs.Listener.Addr().String()
}

// expect checks an answer against w, as the SPEC's "Response" section and
// the issue describe an HTTP front door's answer: 200 with nothing to
// pass on, or 403 with DecisionHeader and the JSON deny body; and checks
// that it was recorded as decided.
func (a httpAnswer) expect(t testing.TB, w want, id string) {
	t.Helper()
	if len(a.recs) == 0 {
		t.Fatalf("HTTP %d %q: no decision recorded", a.status, a.body)
	}
	rec := a.recs[0]
	if got := (want{reason: rules.Reason(rec.Reason), rule: rec.Rule}); got != w {
		t.Errorf("recorded reason %q rule %q, want %q %q", rec.Reason, rec.Rule, w.reason, w.rule)
	}
	if w.reason == rules.ReasonAllowed {
		if a.status != http.StatusOK || a.body != "" {
			t.Errorf("allow: HTTP %d %q, want 200 with no body", a.status, a.body)
		}
		// Nothing that a proxy could copy upstream to the third party.
		if keys := slices.Sorted(maps.Keys(a.header)); !slices.Equal(keys, []string{"Content-Length"}) {
			t.Errorf("allow: headers %v, want only Content-Length", a.header)
		}
		return
	}
	if a.status != http.StatusForbidden {
		t.Errorf("deny: HTTP %d, want 403", a.status)
	}
	if got := a.header.Values(authz.DecisionHeader); !slices.Equal(got, []string{"deny"}) {
		t.Errorf("deny: %s %q, want [deny]", authz.DecisionHeader, got)
	}
	if got := a.header.Values(authz.DenyBodyHeader); !slices.Equal(got, []string{a.body}) {
		t.Errorf("deny: %s %q, want the body %q", authz.DenyBodyHeader, got, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("deny: Content-Type %q", ct)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(a.body), &body); err != nil {
		t.Fatalf("deny body %q: %v", a.body, err)
	}
	if wantBody := map[string]any{"decision": "deny", "reason": string(w.reason), "rule": w.rule, "request_id": id}; !maps.Equal(body, wantBody) {
		t.Errorf("deny body %v, want %v", body, wantBody)
	}
}

// decided is the part of a decision record that says what was decided, on
// what: equal over every transport for one probe.
type decided struct {
	Principal, TrustDomain, Namespace, ServiceAccount, Host string
	Port                                                    int
	Method, Path, Decision, Reason, Rule, RuleSet           string
	Enforced                                                bool
}

func decidedOf(recs []audit.Record) []decided {
	var out []decided
	for _, r := range recs {
		out = append(out, decided{r.Principal, r.TrustDomain, r.Namespace, r.ServiceAccount, r.Host, r.Port,
			r.Method, r.Path, r.Decision, r.Reason, r.Rule, r.RuleSet, r.Enforced})
	}
	return out
}

// headOf is the request head door sends for p, or ok false when HTTP
// cannot carry p as stated.
func headOf(d door, p probe) string {
	scheme, authority, target, err := checkreq.SplitURL(p.url)
	if err != nil {
		panic(err)
	}
	method := p.method
	if method == "" {
		method = "GET"
	}
	return d.request(method, scheme, authority, target)
}

// TestProbes: every probe is decided alike over gRPC and through every HTTP
// front door, with either identity source: the same answer and the same
// decision record (principal, host, port, method, path, decision, reason,
// rule and rule set), with and without the decision cache.
func TestProbes(t *testing.T) {
	p := newPKI(t)
	for _, lv := range liveVariants {
		t.Run(lv.name, func(t *testing.T) {
			table := authztest.Table(t, "rules.yaml", testRules)
			live := rules.NewLive(table, rules.LiveOptions{CacheSize: lv.cache})
			grpcRec := &recorder{}
			g := authztest.NewServer(t, live, authz.Options{Recorder: grpcRec})
			var fronts []*front
			for _, src := range identitySources {
				fronts = append(fronts, startFront(t, live, src, p))
			}
			seq := 0
			for _, pr := range probes {
				t.Run(pr.name, func(t *testing.T) {
					authz.CheckDecode(t, pr.check())
					// Three times, so that the cached variant also answers
					// from its cache (a request is cached at its second miss).
					var ref []decided
					for range 3 {
						verdictOf(t, g.Check(t, pr.check())).expect(t, pr.want)
						ref = decidedOf(grpcRec.last(t))
					}
					if ref[0].RuleSet != table.Version() && pr.want.reason != rules.ReasonInvalidRequest {
						t.Errorf("grpc: ruleset %q, want %q", ref[0].RuleSet, table.Version())
					}
					for _, f := range fronts {
						w, same := pr.want, true
						if f.cert {
							w, same = certWant(pr)
						}
						for _, d := range doors {
							t.Run(f.name+"/"+d.name, func(t *testing.T) {
								head := headOf(d, pr) + f.identityHeader(t, pr.principal)
								if slices.Contains(httpRefuses[pr.name], d.name) {
									seq++
									if a := f.ask(t, head, "probe-"+strconv.Itoa(seq)); a.status != http.StatusBadRequest || len(a.recs) > 0 {
										t.Errorf("HTTP %d %q with %d records, want HTTP's own 400 and nothing decided", a.status, a.body, len(a.recs))
									}
									return
								}
								for range 3 {
									seq++
									id := "probe-" + strconv.Itoa(seq)
									a := f.ask(t, head, id)
									a.expect(t, w, id)
									if got := decidedOf(a.recs); same && !slices.Equal(got, ref) {
										t.Errorf("decided differently from gRPC:\n http %+v\n grpc %+v", got, ref)
									}
								}
							})
						}
					}
				})
			}
		})
	}
}
