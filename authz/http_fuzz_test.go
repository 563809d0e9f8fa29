package authz_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/rules"
)

// FuzzHTTP: whatever a front door is sent, it answers 200 with nothing, a
// 403 with the JSON deny body and a record of the same decision, or 404
// for a path that is no front door: never a 5xx, never a panic.
func FuzzHTTP(f *testing.F) {
	p := newPKI(f)
	pemEsc := url.PathEscape(string(p.ca.SVID(f, checkout).CertPEM()))
	for _, seed := range [][7]string{
		{"/auth-request", "api.stripe.com", "POST", "/v1/charges", "https", "URI=" + checkout, ""},
		{"/auth-request", "api.stripe.com", "POST", "/v1/charges", "https", "", pemEsc},
		{"/forward-auth", "api.stripe.com:443", "POST", "/v1/files/a?x=1", "", "", pemEsc},
		{"/ext-authz/v1/charges", "api.stripe.com", "POST", "", "https", "", pemEsc[:40]},
		{"/ext-authz/v1/%2e%2e/accounts", "API.stripe.com.", "GET", "", "HTTPS", `Cert="` + pemEsc + `";URI=` + crawler, "%zz"},
		{"/forward-auth", "user@api.stripe.com", "PO ST", "\\b", "gopher", "URI=\"" + checkout, "-----BEGIN CERTIFICATE-----"},
		{"/nope", "", "", "", "", "", ""},
	} {
		f.Add(seed[0], seed[1], seed[2], seed[3], seed[4], seed[5], seed[6])
	}
	rec := &recorder{}
	s := authz.NewServer(rules.NewLive(authztest.Table(f, "rules.yaml", testRules), rules.LiveOptions{CacheSize: 100}),
		authz.Options{TrustXFCC: true, Recorder: rec})
	h, err := s.HTTPHandler(authz.HTTPOptions{ClientCertHeader: certHeader, VerifyCert: p.verify})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, target, host, method, uri, proto, xfcc, cert string) {
		hdr := http.Header{}
		for k, v := range map[string]string{
			"X-Forwarded-Host": host, "X-Forwarded-Method": method, "X-Original-Method": method,
			"X-Forwarded-Uri": uri, "X-Original-Uri": uri, "X-Forwarded-Proto": proto,
			"X-Forwarded-Client-Cert": xfcc, certHeader: cert,
		} {
			if v != "" {
				hdr[k] = []string{v}
			}
		}
		r := &http.Request{Method: method, RequestURI: target, Host: host, Header: hdr}
		r = r.WithContext(t.Context())
		rec.mu.Lock()
		before := len(rec.calls)
		rec.mu.Unlock()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		rec.mu.Lock()
		calls := rec.calls[before:]
		rec.calls = nil // keep the corpus run's memory flat
		rec.mu.Unlock()
		switch w.Code {
		case http.StatusOK:
			if w.Body.Len() != 0 || len(calls) != 1 || calls[0][0].Decision != "allow" {
				t.Fatalf("200 with body %q, records %v", w.Body, calls)
			}
		case http.StatusForbidden:
			var body struct{ Decision, Reason, Rule string }
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Decision != "deny" {
				t.Fatalf("403 body %q: %v", w.Body, err)
			}
			if len(calls) != 1 || calls[0][0].Reason != body.Reason || calls[0][0].Rule != body.Rule {
				t.Fatalf("403 %+v, records %v", body, calls)
			}
		case http.StatusNotFound:
			route, _, _ := strings.Cut(target, "?")
			if route == authz.ForwardAuthPath || route == authz.AuthRequestPath || strings.HasPrefix(target, authz.ExtAuthzPath+"/") || len(calls) != 0 {
				t.Fatalf("404 for %q, records %v", target, calls)
			}
		default:
			t.Fatalf("HTTP %d: %s", w.Code, w.Body)
		}
	})
}
