package main

// A real NGINX (Debian's nginx package; scripts/ensure-nginx installs it)
// in front of egress-authz, configured by deploy/nginx/egress-proxy.conf:
// workloads connect to NGINX over mutual TLS with their X.509 SVID, NGINX
// asks egress-authz with auth_request and the escaped certificate, and
// proxies allowed requests to a local upstream.

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/spiffetest"
)

// nginxBinary returns the nginx executable, or skips the test when there
// is none: only where scripts/ensure-nginx could not install it.
func nginxBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("nginx is not installed and scripts/ensure-nginx could not install it (it needs root and Debian's nginx package): the NGINX tests do not run")
	return ""
}

// nginxConfig is deploy/nginx/egress-proxy.conf with each of its
// production values replaced by the test's; it fails the test when one is
// not in the file, so that the example and the test cannot drift apart.
func nginxConfig(t *testing.T, dir string, replace ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nginx", "egress-proxy.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for i := 0; i+1 < len(replace); i += 2 {
		if !strings.Contains(conf, replace[i]) {
			t.Fatalf("deploy/nginx/egress-proxy.conf no longer says %q", replace[i])
		}
		conf = strings.ReplaceAll(conf, replace[i], replace[i+1])
	}
	p := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// startNGINX runs nginx in the foreground as a child of the test, with its
// prefix, configuration and logs in dir, until the test ends, and returns
// once addr accepts connections.
func startNGINX(t *testing.T, bin, dir, conf, addr string) {
	t.Helper()
	global := "daemon off;"
	if os.Geteuid() == 0 {
		// Workers would switch to nobody, who cannot reach the test's
		// temporary directories.
		global += " user root;"
	}
	cmd := exec.Command(bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"), "-g", global)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	errorLog := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return out.String() + string(b)
	}
	t.Cleanup(func() {
		// SIGQUIT: NGINX's graceful shutdown.
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("nginx did not stop within 10 s of SIGQUIT")
		}
		if t.Failed() {
			t.Logf("nginx error log:\n%s", errorLog())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("nginx exited: %s\n%s", cmd.ProcessState, errorLog())
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not listen on %s within 10 s\n%s", addr, errorLog())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// upstream is the third party: it answers every request it gets and keeps
// what it saw.
type upstream struct {
	mu   sync.Mutex
	seen []string // "METHOD host path"
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.seen = append(u.seen, r.Method+" "+r.Host+" "+r.URL.RequestURI())
	u.mu.Unlock()
	_, _ = io.WriteString(w, "hello from the upstream")
}

func (u *upstream) saw(line string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, s := range u.seen {
		if s == line {
			return true
		}
	}
	return false
}

func TestNGINXAuthRequest(t *testing.T) {
	bin := nginxBinary(t)
	p := newFilePKI(t)
	other := spiffetest.NewCA(t, "another CA")
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if err := os.Mkdir(tlsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// NGINX's identity: the proxy's SVID, also its server certificate for
	// the workloads (it names localhost).
	p.ca.ServerSVID(t, proxyID).WriteFiles(t, tlsDir, "proxy")
	spiffetest.WriteBundle(t, filepath.Join(tlsDir, "spiffe-bundle.pem"), p.ca)
	// NGINX is made to accept the other CA's SVIDs too, so that what
	// egress-authz does with a certificate its own bundle does not hold
	// shows: it must refuse it.
	spiffetest.WriteBundle(t, filepath.Join(tlsDir, "clients-bundle.pem"), p.ca, other)

	cfg := withTLSFiles(inprocConfig(t), p, proxyID)
	cfg.HTTPAddr, cfg.ClientCertHeader = "127.0.0.1:0", "X-Client-Cert"
	s := inprocStart(t, cfg)
	up := &upstream{}
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)

	nginxAddr := freeAddr(t)
	conf := nginxConfig(t, dir,
		"pid /run/nginx-egress-proxy.pid;", "pid "+filepath.Join(dir, "nginx.pid")+";",
		"/var/log/nginx/egress-proxy-error.log", filepath.Join(dir, "error.log"),
		"/var/log/nginx/egress-proxy-access.log", filepath.Join(dir, "access.log"),
		"http {\n", "http {\n    client_body_temp_path "+dir+"/body;\n    proxy_temp_path "+dir+"/proxy;\n    fastcgi_temp_path "+dir+"/fastcgi;\n    uwsgi_temp_path "+dir+"/uwsgi;\n    scgi_temp_path "+dir+"/scgi;\n",
		"listen 8443 ssl;", "listen "+nginxAddr+" ssl;",
		"/etc/egress-proxy/tls/", tlsDir+"/",
		"proxy_pass https://$host;", "proxy_pass "+upSrv.URL+";",
		"proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;", "proxy_ssl_trusted_certificate "+tlsDir+"/spiffe-bundle.pem;",
		"https://egress-authz.egress-authz.svc.cluster.local:9193/auth-request", "https://"+s.httpAddr()+"/auth-request",
		"proxy_ssl_name                egress-authz.egress-authz.svc.cluster.local;", "proxy_ssl_name localhost;",
	)
	startNGINX(t, bin, dir, conf, nginxAddr)

	checkout := p.ca.SVID(t, paymentsCaller)
	curious := p.ca.SVID(t, curiousID)
	// send asks NGINX for https://host/path as client; it returns the
	// answer, or the error of a refused connection.
	send := func(client *spiffetest.Cert, host, path string, header map[string]string) (*http.Response, string, error) {
		cfg := spiffetest.ClientTLS(client, p.ca)
		cfg.ServerName = "localhost"
		tr := &http.Transport{TLSClientConfig: cfg}
		defer tr.CloseIdleConnections()
		req, err := http.NewRequest(http.MethodGet, "https://"+nginxAddr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := (&http.Client{Transport: tr, Timeout: ioTimeout}).Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, string(b), err
	}
	type denyBody struct {
		Decision, Reason, Rule string
		RequestID              string `json:"request_id"`
	}
	// denied checks a deny as it reaches the client and returns its body.
	denied := func(t *testing.T, resp *http.Response, body, reason, rule string) denyBody {
		t.Helper()
		var d denyBody
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("HTTP %d %q, want 403", resp.StatusCode, body)
		}
		if got := resp.Header.Get("X-Egress-Authz-Decision"); got != "deny" {
			t.Errorf("x-egress-authz-decision %q, want deny", got)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q, want application/json", ct)
		}
		dec := json.NewDecoder(strings.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&d); err != nil {
			t.Fatalf("deny body %q: %v", body, err)
		}
		if d.Decision != "deny" || d.Reason != reason || d.Rule != rule || d.RequestID == "" {
			t.Errorf("deny body %+v, want reason %s rule %q and a request id", d, reason, rule)
		}
		return d
	}

	var ids []string // request ids of the denies, for the log below
	t.Run("allow", func(t *testing.T) {
		resp, body, err := send(checkout, "api.example.com", "/v1/allowed?q=1", nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || body != "hello from the upstream" || !up.saw("GET api.example.com /v1/allowed?q=1") {
			t.Errorf("HTTP %d %q; upstream saw %v", resp.StatusCode, body, up.seen)
		}
	})
	t.Run("deny_by_rule_with_the_json_body", func(t *testing.T) {
		resp, body, err := send(checkout, "evil.example.com", "/v1/denied", nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, denied(t, resp, body, "denied-by-rule", "deny-evil").RequestID)
		if up.saw("GET evil.example.com /v1/denied") {
			t.Error("a denied request reached the upstream")
		}
	})
	t.Run("deny_no_matching_rule", func(t *testing.T) {
		resp, body, err := send(curious, "api.example.com", "/v1/curious", nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, denied(t, resp, body, "no-matching-rule", "").RequestID)
	})
	t.Run("forged_identity_headers_ignored", func(t *testing.T) {
		// curious sends checkout's certificate and XFCC naming checkout;
		// NGINX replaces both, and curious is not allowed.
		resp, body, err := send(curious, "api.example.com", "/v1/forged-identity", map[string]string{
			"X-Client-Cert":           url.PathEscape(string(checkout.CertPEM())),
			"X-Forwarded-Client-Cert": "URI=" + paymentsCaller,
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, denied(t, resp, body, "no-matching-rule", "").RequestID)
		if up.saw("GET api.example.com /v1/forged-identity") {
			t.Error("a denied request reached the upstream")
		}
	})
	t.Run("forged_request_headers_ignored", func(t *testing.T) {
		// checkout asks for evil.example.com with headers describing an
		// allowed request; NGINX replaces them with the real one.
		resp, body, err := send(checkout, "evil.example.com", "/v1/forged-request", map[string]string{
			"X-Forwarded-Host":  "api.example.com",
			"X-Original-URI":    "/v1/allowed",
			"X-Original-Method": "GET",
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, denied(t, resp, body, "denied-by-rule", "deny-evil").RequestID)
		if up.saw("GET evil.example.com /v1/forged-request") {
			t.Error("a denied request reached the upstream")
		}
	})
	t.Run("certificate_of_another_ca_refused_by_egress_authz", func(t *testing.T) {
		// NGINX accepts it (its bundle holds the other CA); egress-authz,
		// verifying against its own trust bundle, finds no identity.
		resp, body, err := send(other.SVID(t, paymentsCaller), "api.example.com", "/v1/other-ca", nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, denied(t, resp, body, "no-identity", "").RequestID)
	})
	t.Run("no_client_certificate_refused_by_nginx", func(t *testing.T) {
		resp, body, err := send(nil, "api.example.com", "/v1/anonymous", nil)
		var tlsErr *tls.CertificateVerificationError
		switch {
		case errors.As(err, &tlsErr):
			t.Fatalf("the client could not verify NGINX: %v", err)
		case err == nil && resp.StatusCode != http.StatusBadRequest:
			t.Errorf("HTTP %d %q without a client certificate, want NGINX's 400", resp.StatusCode, body)
		}
		if up.saw("GET api.example.com /v1/anonymous") {
			t.Error("a request without a client certificate reached the upstream")
		}
	})

	t.Run("decision_log", func(t *testing.T) {
		// Records are stored in order: with the last deny's, the allow's
		// before it is there too.
		recs := storedRecords(t, s, ids...)
		byPath := map[string]*struct{ principal, reason, rule string }{}
		for _, r := range recs {
			byPath[r.Path] = &struct{ principal, reason, rule string }{r.Principal, r.Reason, r.Rule}
			if r.Port != 443 || r.Method != "GET" {
				t.Errorf("record %s: port %d method %s, want 443 GET", r.RequestID, r.Port, r.Method)
			}
		}
		for _, tc := range []struct{ path, principal, reason, rule string }{
			{"/v1/allowed", paymentsCaller, "allowed-by-rule", "payments-example"},
			{"/v1/denied", paymentsCaller, "denied-by-rule", "deny-evil"},
			{"/v1/curious", curiousID, "no-matching-rule", ""},
			{"/v1/forged-identity", curiousID, "no-matching-rule", ""},
			{"/v1/forged-request", paymentsCaller, "denied-by-rule", "deny-evil"},
			{"/v1/other-ca", "", "no-identity", ""},
		} {
			got := byPath[tc.path]
			if got == nil || *got != (struct{ principal, reason, rule string }{tc.principal, tc.reason, tc.rule}) {
				t.Errorf("record of %s: %+v, want principal %q reason %s rule %q", tc.path, got, tc.principal, tc.reason, tc.rule)
			}
		}
		if len(recs) != 6 {
			t.Errorf("%d decisions recorded, want 6 (the request without a certificate is not asked about)", len(recs))
		}
	})
}
