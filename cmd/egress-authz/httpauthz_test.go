package main

// In-process tests of the HTTP authorization listener (--http-addr) as
// serve wires it: mutual TLS with the gRPC listener's identity source and
// --allowed-clients, forwarded client certificates verified against the
// trust bundle, every decision in the decision log, and a bounded request
// head.

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/spiffetest"
)

// proxyID is the egress proxy's identity: the one caller the HTTP
// listener admits.
const proxyID = "spiffe://cluster.local/ns/egress/sa/egress-proxy"

// storedRecords waits until the server's decision log holds a record for
// each of ids and returns the enforced records by request id.
func storedRecords(t *testing.T, s *inprocServer, ids ...string) map[string]*audit.Record {
	t.Helper()
	got := map[string]*audit.Record{}
	eventually(t, 10*time.Second, 50*time.Millisecond, "the decisions in the log", func() (bool, string) {
		clear(got)
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		if _, err := s.store.Query(ctx, audit.Filter{}, func(r *audit.Record) error {
			if r.Enforced {
				c := *r
				got[r.RequestID] = &c
			}
			return nil
		}); err != nil {
			return false, err.Error()
		}
		for _, id := range ids {
			if got[id] == nil {
				return false, "no record for " + id
			}
		}
		return true, ""
	})
	return got
}

// forwardAuth asks the HTTP listener at addr about method https://host/path
// as Traefik's forwardAuth does, presenting client; lines are extra
// headers.
func forwardAuth(c *http.Client, addr, method, host, path, id string, lines map[string]string) (*http.Response, string, error) {
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/forward-auth", nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("X-Forwarded-Method", method)
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Forwarded-Host", host)
	req.Header.Set("X-Forwarded-Uri", path)
	req.Header.Set("X-Request-Id", id)
	for k, v := range lines {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, err = io.Copy(&b, resp.Body)
	return resp, b.String(), err
}

func mtlsClient(t *testing.T, cert *spiffetest.Cert, roots ...*spiffetest.CA) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: spiffetest.ClientTLS(cert, roots...), ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: ioTimeout}
}

func TestHTTPAuthzServesMTLSToTheProxyOnly(t *testing.T) {
	p := newFilePKI(t)
	cfg := withTLSFiles(inprocConfig(t), p, proxyID, gatewayID)
	cfg.HTTPAddr, cfg.ClientCertHeader = "127.0.0.1:0", "X-Forwarded-Tls-Client-Cert"
	cfg.MaxRecvMsgSize = 64 << 10
	s := inprocStart(t, cfg)
	addr := s.httpAddr()
	proxy := mtlsClient(t, p.ca.SVID(t, proxyID), p.ca)
	certOf := func(c *spiffetest.Cert) map[string]string {
		return map[string]string{"X-Forwarded-Tls-Client-Cert": url.QueryEscape(string(c.CertPEM()))}
	}
	workload := p.ca.SVID(t, paymentsCaller)
	other := spiffetest.NewCA(t, "another CA")

	for _, tc := range []struct {
		name, host, id string
		lines          map[string]string
		status         int
		reason, rule   string
		principal      string
	}{
		{"allow", "api.example.com", "h-allow", certOf(workload), 200, "allowed-by-rule", "payments-example", paymentsCaller},
		{"deny_by_rule", "evil.example.com", "h-deny", certOf(workload), 403, "denied-by-rule", "deny-evil", paymentsCaller},
		{"no_certificate_is_no_identity", "api.example.com", "h-none", nil, 403, "no-identity", "", ""},
		{"forged_xfcc_is_no_identity", "api.example.com", "h-xfcc", map[string]string{"X-Forwarded-Client-Cert": "URI=" + paymentsCaller}, 403, "no-identity", "", ""},
		{"certificate_of_another_ca", "api.example.com", "h-other", certOf(other.SVID(t, paymentsCaller)), 403, "no-identity", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, err := forwardAuth(proxy, addr, "GET", tc.host, "/v1/x", tc.id, tc.lines)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d %s, want %d", resp.StatusCode, body, tc.status)
			}
			if resp.ProtoMajor != 2 {
				t.Errorf("served over %s, want HTTP/2 (ALPN h2)", resp.Proto)
			}
			if tc.status == 403 && (resp.Header.Get("X-Egress-Authz-Decision") != "deny" || !strings.Contains(body, `"reason":"`+tc.reason+`"`)) {
				t.Errorf("deny: headers %v body %s", resp.Header, body)
			}
			rec := storedRecords(t, s, tc.id)[tc.id]
			if rec.Reason != tc.reason || rec.Rule != tc.rule || rec.Principal != tc.principal || rec.Host != tc.host || rec.Port != 443 || rec.Path != "/v1/x" {
				t.Errorf("recorded %+v", rec)
			}
		})
	}

	t.Run("only_allowed_clients_may_ask", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			client *spiffetest.Cert
		}{
			{"workload_itself", workload},
			{"svid_of_another_ca", other.SVID(t, proxyID)},
			{"no_client_certificate", nil},
		} {
			if _, _, err := forwardAuth(mtlsClient(t, tc.client, p.ca), addr, "GET", "api.example.com", "/", "h-refused", certOf(workload)); err == nil {
				t.Errorf("%s: answered, want the TLS handshake refused", tc.name)
			}
		}
		plain := &http.Client{Timeout: ioTimeout}
		if resp, err := plain.Get("http://" + addr + "/forward-auth"); err == nil && resp.StatusCode == 200 {
			t.Error("plain HTTP answered 200")
		}
	})

	t.Run("request_head_bounded_by_max_recv_msg_size", func(t *testing.T) {
		// Over HTTP/2 the limit is advertised, and Go's client keeps to it;
		// HTTP/1.1 sends the head and is answered.
		h1 := spiffetest.ClientTLS(p.ca.SVID(t, proxyID), p.ca)
		h1.NextProtos = []string{"http/1.1"}
		tr := &http.Transport{TLSClientConfig: h1}
		defer tr.CloseIdleConnections()
		resp, _, err := forwardAuth(&http.Client{Transport: tr, Timeout: ioTimeout}, addr, "GET", "api.example.com", "/v1/"+strings.Repeat("a", 80<<10), "h-big", certOf(workload))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("HTTP %d for an 80 KiB head with --max-recv-msg-size 64KiB, want 431", resp.StatusCode)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		_, port, _ := strings.Cut(s.adminAddr(), ":")
		m := metricsClient{url: "http://127.0.0.1:" + port + "/metrics"}.scrape(t)
		if got := m[`egress_authz_forwarded_certs_refused_total{reason="untrusted"}`]; got != 1 {
			t.Errorf("forwarded certificates refused as untrusted: %v, want 1", got)
		}
		if got := m[`egress_authz_decisions_total{decision="deny",reason="no-identity"}`]; got != 3 {
			t.Errorf("no-identity denies: %v, want 3", got)
		}
		if got := m[`egress_authz_refused_clients_total{reason="not-allowed"}`]; got < 1 {
			t.Errorf("callers refused at the HTTP listener's handshake: %v, want at least 1", got)
		}
	})
}

func TestHTTPAuthzPlaintextWithTrustedXFCC(t *testing.T) {
	cfg := inprocConfig(t)
	cfg.HTTPAddr, cfg.TrustXFCC = "127.0.0.1:0", true
	s := inprocStart(t, cfg)
	req, _ := http.NewRequest("GET", "http://"+s.httpAddr()+"/auth-request", nil)
	req.Host = "api.example.com"
	req.Header.Set("X-Original-Method", "GET")
	req.Header.Set("X-Original-URI", "/")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Forwarded-Client-Cert", "By="+proxyID+";URI="+paymentsCaller)
	resp, err := (&http.Client{Timeout: ioTimeout}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("HTTP %d, want 200", resp.StatusCode)
	}
	if !strings.Contains(s.log.String(), "HTTP authorization served without TLS") {
		t.Error("no warning that HTTP authorization is plaintext")
	}
}

func TestHTTPAuthzStartupErrors(t *testing.T) {
	p := newFilePKI(t)
	s := inprocStart(t, withTLSFiles(inprocConfig(t), p, proxyID)) // holds a port
	cfg := withTLSFiles(inprocConfig(t), p, proxyID)
	cfg.HTTPAddr = s.grpcAddr()
	if err := newServerErr(t, cfg); !strings.Contains(err.Error(), "--http-addr") {
		t.Errorf("port in use: %v, want an error naming --http-addr", err)
	}
}
