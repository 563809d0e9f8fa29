package main

// In-process tests of the server's own security: mTLS on the gRPC listener
// with identities from files or from the SPIFFE Workload API, the
// --allowed-clients list, rotation without restart, the check command's
// client identity, and the admin listener's guard. Each test builds the
// server with newServer from a config.Config, as serve does, on
// 127.0.0.1:0, and talks to it over real sockets with certificates from a
// test CA.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/internal/config"
	"github.com/egress-authz/egress-authz/internal/spiffetest"
)

const (
	gatewayID      = "spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account"
	authzID        = "spiffe://cluster.local/ns/egress-authz/sa/egress-authz"
	curiousID      = "spiffe://cluster.local/ns/default/sa/curious"
	paymentsCaller = "spiffe://cluster.local/ns/payments/sa/checkout"
)

// inprocRules allows payments to api.example.com, denies evil.example.com
// to everyone, and watches a dry-run allow for payments to
// trial.example.com.
const inprocRules = `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: payments-example
    owner: team-payments
    action: allow
    from: {namespaces: [payments]}
    to: {hosts: [api.example.com]}
  - id: deny-evil
    action: deny
    to: {hosts: [evil.example.com]}
  - id: payments-trial
    mode: dry-run
    action: allow
    from: {namespaces: [payments]}
    to: {hosts: [trial.example.com]}
`

// ioTimeout bounds every call, handshake and wait of these tests.
const ioTimeout = 5 * time.Second

// inprocConfig is a configuration serving inprocRules on 127.0.0.1:0, with
// its decision log and data directory in a temporary directory, plaintext
// until the test says otherwise.
func inprocConfig(t *testing.T) config.Config {
	t.Helper()
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(inprocRules), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Rules = rulesPath
	cfg.GRPCAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Audit = []string{"sqlite:" + filepath.Join(dir, "data", "decisions.db")}
	cfg.ShutdownGrace = ioTimeout
	cfg.Plaintext = true
	return cfg
}

// withTLSFiles switches cfg to mTLS with the server identity from files.
func withTLSFiles(cfg config.Config, p *filePKI, allowed ...string) config.Config {
	cfg.Plaintext = false
	cfg.TLSCert, cfg.TLSKey, cfg.TLSCA = p.certFile, p.keyFile, p.caFile
	cfg.AllowedClients = allowed
	return cfg
}

// lockedBuffer collects the server's log.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// inprocServer is a server built by newServer and running in this process.
type inprocServer struct {
	*server
	log *lockedBuffer
	// stop shuts the server down as SIGTERM does and returns run's error;
	// calling it again returns the same error.
	stop func() error
}

func (s *inprocServer) grpcAddr() string  { return s.grpcLn.Addr().String() }
func (s *inprocServer) adminAddr() string { return s.adminLn.Addr().String() }

// inprocStart builds and runs the server; it is stopped when the test ends.
func inprocStart(t *testing.T, cfg config.Config) *inprocServer {
	t.Helper()
	logBuf := &lockedBuffer{}
	s, err := newServer(cfg, slog.New(slog.NewTextHandler(logBuf, nil)))
	if err != nil {
		t.Fatalf("newServer: %v\n%s", err, logBuf)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx, nil) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(2*cfg.ShutdownGrace + ioTimeout):
				runErr = fmt.Errorf("server did not stop within %s", 2*cfg.ShutdownGrace+ioTimeout)
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("server: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logBuf)
		}
	})
	return &inprocServer{server: s, log: logBuf, stop: stop}
}

// newServerErr builds a server that must not start and returns its error.
func newServerErr(t *testing.T, cfg config.Config) error {
	t.Helper()
	s, err := newServer(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		s.grpcLn.Close()
		s.adminLn.Close()
		if s.httpLn != nil {
			s.httpLn.Close()
		}
		_ = s.close(context.Background())
		t.Fatal("newServer succeeded, want a start-up error")
	}
	return err
}

// filePKI is a trust domain's CA and the server's identity files.
type filePKI struct {
	ca                        *spiffetest.CA
	dir                       string
	server                    *spiffetest.Cert
	certFile, keyFile, caFile string
}

func newFilePKI(t *testing.T) *filePKI {
	t.Helper()
	p := &filePKI{ca: spiffetest.NewCA(t, "cluster.local CA"), dir: t.TempDir()}
	p.server = p.ca.ServerSVID(t, authzID)
	p.certFile, p.keyFile = p.server.WriteFiles(t, p.dir, "server")
	p.caFile = filepath.Join(p.dir, "ca.pem")
	spiffetest.WriteBundle(t, p.caFile, p.ca)
	return p
}

func httpCheck(t *testing.T, principal, url string, headers map[string]string) *authv3.CheckRequest {
	t.Helper()
	req, err := checkreq.HTTP{Principal: principal, URL: url, Headers: headers}.Build()
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// mtlsCheck sends one Check on a new connection (so a new handshake),
// presenting client (no certificate when nil) and verifying the server by
// host name against roots. It returns the answer and the certificate the
// server presented.
func mtlsCheck(t *testing.T, addr string, client *spiffetest.Cert, roots []*spiffetest.CA, req *authv3.CheckRequest) (*authv3.CheckResponse, *x509.Certificate, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(spiffetest.ClientTLS(client, roots...))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	var p peer.Peer
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req, grpc.Peer(&p))
	if err != nil {
		return nil, nil, err
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		t.Fatalf("Check answered without TLS (auth info %v)", p.AuthInfo)
	}
	return resp, info.State.PeerCertificates[0], nil
}

// tlsHandshake opens a raw TLS connection to addr presenting client and
// reports whether the server accepted it: with TLS 1.3 the server's verdict
// on the client certificate arrives after the client's handshake, so a
// refusal shows on the first read, where an accepted connection reads the
// server's HTTP/2 SETTINGS frame.
func tlsHandshake(t *testing.T, addr string, client *spiffetest.Cert, roots ...*spiffetest.CA) error {
	t.Helper()
	cfg := spiffetest.ClientTLS(client, roots...)
	cfg.NextProtos = []string{"h2"} // gRPC servers insist on ALPN
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The server sends its HTTP/2 settings frame first on an accepted
	// connection, or an alert on a refused one.
	_ = conn.SetReadDeadline(time.Now().Add(ioTimeout))
	_, err = conn.Read(make([]byte, 1))
	return err
}

// metricsClient scrapes /metrics.
type metricsClient struct {
	url    string
	client *http.Client
	header map[string]string
}

// scrape returns every sample on /metrics, keyed by the series as the text
// format prints it (labels in name order): egress_authz_x{reason="y"}.
func (m metricsClient) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	code, _, body := adminGet(t, m.client, m.url, m.header)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", m.url, code, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("/metrics: unparsable line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// adminGet fetches url and returns the status, the headers and the body.
func adminGet(t *testing.T, c *http.Client, url string, header map[string]string) (int, http.Header, string) {
	t.Helper()
	code, h, body, err := adminTry(c, url, header)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return code, h, body
}

func adminTry(c *http.Client, url string, header map[string]string) (int, http.Header, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, "", err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if c == nil {
		c = &http.Client{}
	}
	c.Timeout = ioTimeout
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), err
}

func decisionOf(resp *authv3.CheckResponse) string { return authztest.Metadata(resp)["decision"] }

func TestTLSFilesAllowedGatewayGetsDecisions(t *testing.T) {
	p := newFilePKI(t)
	s := inprocStart(t, withTLSFiles(inprocConfig(t), p, gatewayID))
	gateway := p.ca.SVID(t, gatewayID)
	roots := []*spiffetest.CA{p.ca}

	resp, served, err := mtlsCheck(t, s.grpcAddr(), gateway, roots, httpCheck(t, paymentsCaller, "https://api.example.com/v1", nil))
	if err != nil {
		t.Fatalf("allowed gateway: %v", err)
	}
	if got := decisionOf(resp); got != "allow" {
		t.Errorf("decision %q, want allow (metadata %v)", got, authztest.Metadata(resp))
	}
	if served.SerialNumber.Cmp(p.server.Cert.SerialNumber) != 0 {
		t.Errorf("server presented serial %v, want its --tls-cert's %v", served.SerialNumber, p.server.Cert.SerialNumber)
	}
	resp, _, err = mtlsCheck(t, s.grpcAddr(), gateway, roots, httpCheck(t, paymentsCaller, "https://evil.example.com/", nil))
	if err != nil {
		t.Fatalf("allowed gateway: %v", err)
	}
	if md := authztest.Metadata(resp); md["decision"] != "deny" || md["rule"] != "deny-evil" {
		t.Errorf("metadata %v, want a deny by deny-evil", md)
	}
}

// TestTLSRefusesOtherCallers checks every way a caller that is not the
// gateway is turned away at the handshake, and the count of each.
func TestTLSRefusesOtherCallers(t *testing.T) {
	p := newFilePKI(t)
	s := inprocStart(t, withTLSFiles(inprocConfig(t), p, gatewayID))
	metrics := metricsClient{url: "http://" + s.adminAddr() + "/metrics"}
	rogue := spiffetest.NewCA(t, "rogue CA")
	cases := []struct {
		name   string
		client *spiffetest.Cert
		reason string // the refused_clients_total reason; "" when not counted
	}{
		{"other_spiffe_id", p.ca.SVID(t, curiousID), "not-allowed"},
		{"non_spiffe_certificate", p.ca.Issue(t, spiffetest.CertOptions{CommonName: "istio-egressgateway", DNSNames: []string{"gateway.example"}}), "not-spiffe"},
		{"gateway_id_from_untrusted_ca", rogue.SVID(t, gatewayID), "untrusted"},
		{"no_client_certificate", nil, ""},
	}
	reasons := []string{"not-allowed", "not-spiffe", "untrusted"}
	series := func(r string) string { return `egress_authz_refused_clients_total{reason="` + r + `"}` }

	// One raw handshake each, counted exactly.
	if err := tlsHandshake(t, s.grpcAddr(), p.ca.SVID(t, gatewayID), p.ca); err != nil {
		t.Fatalf("allowed gateway's handshake refused: %v", err)
	}
	for _, tc := range cases {
		t.Run("handshake/"+tc.name, func(t *testing.T) {
			before := metrics.scrape(t)
			err := tlsHandshake(t, s.grpcAddr(), tc.client, p.ca)
			if err == nil {
				t.Fatal("handshake accepted, want it refused")
			}
			after := metrics.scrape(t)
			for _, r := range reasons {
				want := before[series(r)]
				if r == tc.reason {
					want++
				}
				if got := after[series(r)]; got != want {
					t.Errorf("%s: %v -> %v, want %v", series(r), before[series(r)], got, want)
				}
			}
		})
	}

	// And as a gRPC client sees it: no decision, an Unavailable error.
	for _, tc := range cases {
		t.Run("grpc/"+tc.name, func(t *testing.T) {
			resp, _, err := mtlsCheck(t, s.grpcAddr(), tc.client, []*spiffetest.CA{p.ca}, httpCheck(t, paymentsCaller, "https://api.example.com/", nil))
			if err == nil {
				t.Fatalf("Check answered (%v), want the connection refused", authztest.Metadata(resp))
			}
			if status.Code(err) != codes.Unavailable {
				t.Errorf("error %v, want code Unavailable (a refused handshake)", err)
			}
		})
	}
}

func TestTLSFilesRotatedWithoutRestart(t *testing.T) {
	p := newFilePKI(t)
	s := inprocStart(t, withTLSFiles(inprocConfig(t), p, gatewayID))
	gateway := p.ca.SVID(t, gatewayID)
	req := httpCheck(t, paymentsCaller, "https://api.example.com/", nil)

	// cert-manager writes a new server pair over the files; new
	// handshakes present it, and decisions go on.
	next := p.ca.ServerSVID(t, authzID)
	next.WriteFiles(t, p.dir, "server")
	waitServed(t, s.grpcAddr(), gateway, []*spiffetest.CA{p.ca}, req, next)

	// The trust domain moves to a new CA: bundle and server pair replaced.
	// The gateway's new SVID is accepted, its old one no longer.
	ca2 := spiffetest.NewCA(t, "cluster.local CA 2")
	server2 := ca2.ServerSVID(t, authzID)
	server2.WriteFiles(t, p.dir, "server")
	spiffetest.WriteBundle(t, p.caFile, ca2)
	both := []*spiffetest.CA{p.ca, ca2}
	waitServed(t, s.grpcAddr(), ca2.SVID(t, gatewayID), both, req, server2)
	if _, _, err := mtlsCheck(t, s.grpcAddr(), gateway, both, req); err == nil {
		t.Error("gateway SVID from the CA no longer in --tls-ca accepted")
	}
}

// waitServed sends Checks on new connections until the server presents
// want's certificate and answers with a decision.
func waitServed(t *testing.T, addr string, client *spiffetest.Cert, roots []*spiffetest.CA, req *authv3.CheckRequest, want *spiffetest.Cert) {
	t.Helper()
	took := eventually(t, ioTimeout, 50*time.Millisecond, "server presents the rotated certificate", func() (bool, string) {
		resp, served, err := mtlsCheck(t, addr, client, roots, req)
		if err != nil {
			return false, err.Error()
		}
		if served.SerialNumber.Cmp(want.Cert.SerialNumber) != 0 {
			return false, fmt.Sprintf("serial %v, want %v", served.SerialNumber, want.Cert.SerialNumber)
		}
		if decisionOf(resp) != "allow" {
			return false, fmt.Sprintf("metadata %v, want an allow", authztest.Metadata(resp))
		}
		return true, ""
	})
	t.Logf("rotated certificate served after %s", took.Round(time.Millisecond))
}

func TestTLSWorkloadAPIServesAndRotatesTheSVID(t *testing.T) {
	ca := spiffetest.NewCA(t, "cluster.local CA")
	first := ca.ServerSVID(t, authzID)
	wl := spiffetest.StartWorkloadAPI(t, first, ca)
	cfg := inprocConfig(t)
	cfg.Plaintext, cfg.SPIFFESocket, cfg.AllowedClients = false, wl.Addr, []string{gatewayID}
	s := inprocStart(t, cfg)
	gateway := ca.SVID(t, gatewayID)
	roots := []*spiffetest.CA{ca}
	req := httpCheck(t, paymentsCaller, "https://api.example.com/", nil)

	resp, served, err := mtlsCheck(t, s.grpcAddr(), gateway, roots, req)
	if err != nil {
		t.Fatalf("allowed gateway: %v", err)
	}
	if decisionOf(resp) != "allow" || served.SerialNumber.Cmp(first.Cert.SerialNumber) != 0 {
		t.Errorf("decision %q from serial %v, want allow from the Workload API's SVID %v", decisionOf(resp), served.SerialNumber, first.Cert.SerialNumber)
	}
	if _, _, err := mtlsCheck(t, s.grpcAddr(), ca.SVID(t, curiousID), roots, req); status.Code(err) != codes.Unavailable {
		t.Errorf("other SPIFFE ID: %v, want the connection refused", err)
	}

	// The agent pushes a rotated SVID: new handshakes present it.
	second := ca.ServerSVID(t, authzID)
	wl.SetX509SVID(t, second, ca)
	waitServed(t, s.grpcAddr(), gateway, roots, req, second)

	// The agent rotates the trust domain's CA.
	ca2 := spiffetest.NewCA(t, "cluster.local CA 2")
	third := ca2.ServerSVID(t, authzID)
	wl.SetX509SVID(t, third, ca2)
	both := []*spiffetest.CA{ca, ca2}
	waitServed(t, s.grpcAddr(), ca2.SVID(t, gatewayID), both, req, third)
	if _, _, err := mtlsCheck(t, s.grpcAddr(), gateway, both, req); err == nil {
		t.Error("gateway SVID from the CA no longer in the bundle accepted")
	}
}

func TestTLSCheckCommandWithClientCertificate(t *testing.T) {
	p := newFilePKI(t)
	s := inprocStart(t, withTLSFiles(inprocConfig(t), p, gatewayID))
	gwCert, gwKey := p.ca.SVID(t, gatewayID).WriteFiles(t, p.dir, "gateway")
	otherCert, otherKey := p.ca.SVID(t, curiousID).WriteFiles(t, p.dir, "curious")

	// A second server whose certificate is an SVID with no DNS or IP
	// names, as SPIRE issues them: only --server-id can verify it.
	p2 := &filePKI{ca: p.ca, dir: t.TempDir(), caFile: p.caFile}
	p2.server = p.ca.SVID(t, authzID)
	p2.certFile, p2.keyFile = p2.server.WriteFiles(t, p2.dir, "server")
	svidOnly := inprocStart(t, withTLSFiles(inprocConfig(t), p2, gatewayID))

	tlsFlags := []string{"--tls-cert", gwCert, "--tls-key", gwKey, "--tls-ca", p.caFile}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"allowed", append([]string{"--addr", s.grpcAddr(), "--principal", paymentsCaller, "https://api.example.com/"}, tlsFlags...), exitOK, "decision:   allow", ""},
		{"denied", append([]string{"--addr", s.grpcAddr(), "--principal", paymentsCaller, "https://evil.example.com/"}, tlsFlags...), exitDeny, "rule:       deny-evil", ""},
		{"server_id_verifies_the_server_svid", append([]string{"--addr", s.grpcAddr(), "--server-id", authzID, "--principal", paymentsCaller, "https://api.example.com/"}, tlsFlags...), exitOK, "decision:   allow", ""},
		{"svid_only_server_with_server_id", append([]string{"--addr", svidOnly.grpcAddr(), "--server-id", authzID, "--principal", paymentsCaller, "https://api.example.com/"}, tlsFlags...), exitOK, "decision:   allow", ""},
		{"svid_only_server_without_server_id", append([]string{"--addr", svidOnly.grpcAddr(), "--principal", paymentsCaller, "https://api.example.com/"}, tlsFlags...), exitFail, "", "certificate"},
		{"wrong_server_id", append([]string{"--addr", svidOnly.grpcAddr(), "--server-id", curiousID, "--principal", paymentsCaller, "https://api.example.com/"}, tlsFlags...), exitFail, "", "unexpected ID"},
		{"bad_server_id", append([]string{"--addr", s.grpcAddr(), "--server-id", "egress-authz", "--principal", paymentsCaller, "https://api.example.com/"}, tlsFlags...), exitUsage, "", "--server-id"},
		{"client_not_allowed", []string{"--addr", s.grpcAddr(), "--tls-cert", otherCert, "--tls-key", otherKey, "--tls-ca", p.caFile, "--principal", paymentsCaller, "https://api.example.com/"}, exitFail, "", "Unavailable"},
		{"no_client_certificate", []string{"--addr", s.grpcAddr(), "--principal", paymentsCaller, "https://api.example.com/"}, exitFail, "", "Unavailable"},
		{"sni_port_out_of_range", append([]string{"--addr", s.grpcAddr(), "--principal", paymentsCaller, "--sni", "api.example.com", "--port", "65979"}, tlsFlags...), exitUsage, "", "--port 65979"}, // 443 + 65536
		{"sni_port_zero", append([]string{"--addr", s.grpcAddr(), "--principal", paymentsCaller, "--sni", "api.example.com", "--port", "0"}, tlsFlags...), exitUsage, "", "--port 0"},
		{"incomplete_tls_flags", []string{"--addr", s.grpcAddr(), "--tls-cert", gwCert, "--tls-ca", p.caFile, "--principal", paymentsCaller, "https://api.example.com/"}, exitUsage, "", "go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 2*ioTimeout)
			defer cancel()
			code := run(ctx, append([]string{"check", "--timeout", ioTimeout.String()}, tc.args...), &stdout, &stderr)
			if code != tc.code || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("exit %d, want %d with stdout ~ %q, stderr ~ %q\n--- stdout:\n%s--- stderr:\n%s",
					code, tc.code, tc.stdout, tc.stderr, stdout.String(), stderr.String())
			}
		})
	}
}

func TestTLSAllowedClientsNeedMTLS(t *testing.T) {
	cfg := inprocConfig(t)
	cfg.AllowedClients = []string{gatewayID}
	if err := newServerErr(t, cfg); !strings.Contains(err.Error(), "--allowed-clients") || !strings.Contains(err.Error(), "--plaintext") {
		t.Errorf("error %q, want it to say --allowed-clients cannot be enforced with --plaintext", err)
	}
}

func TestAdminOffLoopbackRefusesToStartUnguarded(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		t.Run(addr, func(t *testing.T) {
			cfg := inprocConfig(t)
			cfg.AdminAddr = addr
			err := newServerErr(t, cfg)
			for _, want := range []string{"--admin-addr", "not loopback", "--admin-token-file", "--admin-mtls"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %s", err, want)
				}
			}
		})
	}

	// The same through the serve command: exit status 1, the message on
	// stderr. Its context is already done, so that a server that wrongly
	// started stops at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cfg := inprocConfig(t)
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"serve", "--rules", cfg.Rules, "--plaintext", "--audit", "none", "--log-format", "json",
		"--grpc-addr", "127.0.0.1:0", "--admin-addr", "0.0.0.0:0"}, &stdout, &stderr)
	if code != exitFail || !strings.Contains(stderr.String(), "--admin-token-file") {
		t.Errorf("serve --admin-addr 0.0.0.0:0: exit %d, want 1 with a message naming --admin-token-file\n%s", code, stderr.String())
	}
}

func TestAdminTokenGuardsDecisionsAndMetrics(t *testing.T) {
	const token = "s3cret-admin-token-0123456789"
	for _, addr := range []string{"127.0.0.1:0", "0.0.0.0:0"} {
		t.Run(addr, func(t *testing.T) {
			cfg := inprocConfig(t)
			cfg.AdminAddr = addr
			cfg.AdminTokenFile = filepath.Join(t.TempDir(), "token")
			// Kubernetes secrets often end in a newline.
			if err := os.WriteFile(cfg.AdminTokenFile, []byte(token+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			s := inprocStart(t, cfg)
			_, port, _ := net.SplitHostPort(s.adminAddr())
			base := "http://127.0.0.1:" + port
			// Some traffic, so that there are decisions to hide.
			conn := authztest.Dial(t, s.grpcAddr())
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			defer cancel()
			if _, err := authv3.NewAuthorizationClient(conn).Check(ctx, httpCheck(t, paymentsCaller, "https://api.example.com/", nil)); err != nil {
				t.Fatal(err)
			}
			good := map[string]string{"Authorization": "Bearer " + token}
			// The decision reaches the store off the request path (group
			// commits every 200 ms): wait for it before checking who sees it.
			eventually(t, 5*time.Second, 20*time.Millisecond, "the decision in the log", func() (bool, string) {
				_, _, body := adminGet(t, nil, base+"/v1/decisions", good)
				return strings.Contains(body, paymentsCaller), body
			})

			for _, tc := range []struct {
				path   string
				header map[string]string
				want   int
			}{
				{"/v1/decisions", nil, http.StatusUnauthorized},
				{"/v1/decisions?principal=" + paymentsCaller, nil, http.StatusUnauthorized},
				{"/metrics", nil, http.StatusUnauthorized},
				{"/v1/rules", nil, http.StatusUnauthorized},
				{"/v1/verify", nil, http.StatusUnauthorized},
				{"/v1/explain?principal=" + paymentsCaller + "&url=https://api.stripe.com/", nil, http.StatusUnauthorized},
				{"/v1/decisions", map[string]string{"Authorization": "Bearer wrong-token-wrong-token"}, http.StatusUnauthorized},
				{"/v1/decisions", map[string]string{"Authorization": token}, http.StatusUnauthorized},
				{"/v1/decisions", map[string]string{"Authorization": "Bearer " + token + "x"}, http.StatusUnauthorized},
				{"/v1/decisions", good, http.StatusOK},
				{"/v1/decisions", map[string]string{"Authorization": "bearer " + token}, http.StatusOK},
				{"/v1/decisions", map[string]string{"Authorization": "Basic " + token}, http.StatusUnauthorized},
				{"/metrics", good, http.StatusOK},
				{"/v1/rules", good, http.StatusOK},
				{"/v1/verify", good, http.StatusOK},
				{"/healthz", nil, http.StatusOK},
				{"/ui/", nil, http.StatusOK}, // the static page; its data requests carry the token
				{"/ui/views/decisions.js", nil, http.StatusOK},
				{"/v1/stats", nil, http.StatusUnauthorized},
				{"/v1/stats", good, http.StatusOK},
				{"/readyz", nil, http.StatusOK},
			} {
				code, h, body := adminGet(t, nil, base+tc.path, tc.header)
				if code != tc.want {
					t.Errorf("GET %s with %v: %d, want %d\n%s", tc.path, tc.header, code, tc.want, body)
				}
				if code == http.StatusUnauthorized {
					if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
						t.Errorf("GET %s: 401 without a Bearer WWW-Authenticate challenge", tc.path)
					}
					if strings.Contains(body, paymentsCaller) || strings.Contains(body, "api.example.com") {
						t.Errorf("GET %s: 401 body leaks decisions: %s", tc.path, body)
					}
				}
				if tc.path == "/v1/decisions" && code == http.StatusOK && !strings.Contains(body, paymentsCaller) {
					t.Errorf("GET /v1/decisions with the token: the decision is missing\n%s", body)
				}
			}
		})
	}
}

func TestAdminTokenFileMustHoldAStrongToken(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"fifteen_characters", "0123456789abcde", "at least 16"},
		{"short_token_padded_with_whitespace", "   short-token  \n\n", "at least 16"},
		{"empty", "", "at least 16"},
		{"missing_file", "-", "--admin-token-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := inprocConfig(t)
			cfg.AdminAddr = "0.0.0.0:0"
			cfg.AdminTokenFile = filepath.Join(t.TempDir(), "token")
			if tc.content != "-" {
				if err := os.WriteFile(cfg.AdminTokenFile, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := newServerErr(t, cfg); !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestAdminMTLSRequiresAClientCertificate(t *testing.T) {
	p := newFilePKI(t)
	cfg := withTLSFiles(inprocConfig(t), p, gatewayID)
	cfg.AdminAddr, cfg.AdminMTLS = "0.0.0.0:0", true // off loopback: mTLS alone satisfies the guard
	s := inprocStart(t, cfg)
	_, port, _ := net.SplitHostPort(s.adminAddr())
	base := "https://127.0.0.1:" + port
	client := func(c *spiffetest.Cert) *http.Client {
		tr := &http.Transport{TLSClientConfig: spiffetest.ClientTLS(c, p.ca)}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}

	// A certificate that is presented must be an allowed SVID.
	for _, tc := range []struct {
		name   string
		client *spiffetest.Cert
	}{
		{"other_spiffe_id", p.ca.SVID(t, curiousID)},
		{"non_spiffe_certificate", p.ca.Issue(t, spiffetest.CertOptions{CommonName: "admin"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/v1/decisions", "/metrics", "/healthz"} {
				code, _, body, err := adminTry(client(tc.client), base+path, nil)
				if err == nil {
					t.Errorf("GET %s: %d, want the TLS handshake refused\n%s", path, code, body)
				}
			}
		})
	}

	// No certificate at all, as the kubelet's probes: the handshake
	// completes, the probes and the static page answer, nothing else does.
	t.Run("no_client_certificate", func(t *testing.T) {
		anon := client(nil)
		for _, tc := range []struct {
			path string
			want int
		}{
			{"/healthz", http.StatusOK},
			{"/readyz", http.StatusOK},
			{"/ui/", http.StatusOK},
			{"/ui/app.js", http.StatusOK},
			{"/v1/decisions", http.StatusForbidden},
			{"/v1/stats", http.StatusForbidden},
			{"/v1/verify", http.StatusForbidden},
			{"/v1/rules", http.StatusForbidden},
			{"/metrics", http.StatusForbidden},
		} {
			if code, _, body := adminGet(t, anon, base+tc.path, nil); code != tc.want {
				t.Errorf("GET %s without a client certificate: %d, want %d\n%s", tc.path, code, tc.want, body)
			}
		}
	})
	// Plain HTTP is not served either.
	if code, _, _, err := adminTry(nil, "http://127.0.0.1:"+port+"/v1/decisions", nil); err == nil && code == http.StatusOK {
		t.Error("plain HTTP GET /v1/decisions answered 200")
	}

	gw := client(p.ca.SVID(t, gatewayID))
	for _, path := range []string{"/v1/decisions", "/v1/verify", "/v1/rules", "/metrics", "/healthz", "/readyz", "/ui/"} {
		if code, _, body := adminGet(t, gw, base+path, nil); code != http.StatusOK {
			t.Errorf("GET %s with an allowed client certificate: %d\n%s", path, code, body)
		}
	}
}

func TestAdminMTLSNeedsTheMTLSIdentity(t *testing.T) {
	cfg := inprocConfig(t)
	cfg.AdminMTLS = true
	if err := newServerErr(t, cfg); !strings.Contains(err.Error(), "--admin-mtls") {
		t.Errorf("error %q, want it to name --admin-mtls", err)
	}
}
