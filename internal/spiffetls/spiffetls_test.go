package spiffetls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/spiffetest"
	"github.com/egress-authz/egress-authz/internal/spiffetls"
)

const (
	gatewayID = "spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account"
	serverID  = "spiffe://cluster.local/ns/egress-authz/sa/egress-authz"
	otherID   = "spiffe://cluster.local/ns/default/sa/curious"
)

// ioTimeout bounds every dial, handshake and read.
const ioTimeout = 5 * time.Second

// refusals counts OnRefused calls by reason.
type refusals struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *refusals) add(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[reason]++
}

func (r *refusals) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.n {
		out[k] = v
	}
	return out
}

// clock is a settable clock for the file source's reload checks.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// pki is a trust domain's CA and the server's files issued by it.
type pki struct {
	ca                        *spiffetest.CA
	dir                       string
	certFile, keyFile, caFile string
	server                    *spiffetest.Cert
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{ca: spiffetest.NewCA(t, "cluster.local CA"), dir: t.TempDir()}
	p.server = p.ca.ServerSVID(t, serverID)
	p.certFile, p.keyFile = p.server.WriteFiles(t, p.dir, "server")
	p.caFile = filepath.Join(p.dir, "ca.pem")
	spiffetest.WriteBundle(t, p.caFile, p.ca)
	return p
}

func (p *pki) options(allowed ...string) spiffetls.Options {
	return spiffetls.Options{CertFile: p.certFile, KeyFile: p.keyFile, CAFile: p.caFile, AllowedClients: allowed}
}

func open(t *testing.T, opts spiffetls.Options) *spiffetls.Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	src, err := spiffetls.Open(ctx, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = src.Close() })
	return src
}

// listen serves cfg on a real loopback socket: every connection is
// handshaken and, if the handshake succeeds, answered with "ok".
func listen(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(ioTimeout))
				if c.(*tls.Conn).Handshake() == nil {
					_, _ = c.Write([]byte("ok"))
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// dial connects as a client presenting client (none if nil), trusting
// roots, and returns the server's certificate once the server accepted the
// handshake. With TLS 1.3 the server's verdict on the client certificate
// arrives after the client's handshake: reading the "ok" is what proves
// acceptance.
func dial(t *testing.T, addr string, client *spiffetest.Cert, roots ...*spiffetest.CA) (*x509.Certificate, error) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", addr, spiffetest.ClientTLS(client, roots...))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return nil, err
	}
	if string(buf) != "ok" {
		return nil, errors.New("unexpected answer " + string(buf))
	}
	return conn.ConnectionState().PeerCertificates[0], nil
}

func TestFilesMTLSAcceptsOnlyAllowedSVIDs(t *testing.T) {
	p := newPKI(t)
	rogue := spiffetest.NewCA(t, "rogue CA")
	var refused refusals
	opts := p.options(gatewayID)
	opts.OnRefused = refused.add
	addr := listen(t, open(t, opts).ServerConfig())

	for _, tc := range []struct {
		name   string
		client *spiffetest.Cert
		reason string // "" for accepted; "-" for refused but not counted
	}{
		{"allowed_gateway_id", p.ca.SVID(t, gatewayID), ""},
		{"other_spiffe_id", p.ca.SVID(t, otherID), "not-allowed"},
		{"non_spiffe_certificate", p.ca.Issue(t, spiffetest.CertOptions{CommonName: "gateway", DNSNames: []string{"gateway.example"}}), "not-spiffe"},
		{"allowed_id_from_untrusted_ca", rogue.SVID(t, gatewayID), "untrusted"},
		{"no_client_certificate", nil, "-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := refused.snapshot()
			got, err := dial(t, addr, tc.client, p.ca)
			after := refused.snapshot()
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if got.SerialNumber.Cmp(p.server.Cert.SerialNumber) != 0 {
					t.Errorf("server presented serial %v, want %v", got.SerialNumber, p.server.Cert.SerialNumber)
				}
			} else if err == nil {
				t.Fatal("accepted, want the handshake refused")
			}
			for _, r := range []string{"not-allowed", "not-spiffe", "untrusted"} {
				want := before[r]
				if r == tc.reason {
					want++
				}
				if after[r] != want {
					t.Errorf("refusals %q: %d -> %d, want %d", r, before[r], after[r], want)
				}
			}
		})
	}
}

func TestFilesMTLSWithoutAllowListAcceptsAnySVIDFromTheBundle(t *testing.T) {
	p := newPKI(t)
	addr := listen(t, open(t, p.options()).ServerConfig())
	if _, err := dial(t, addr, p.ca.SVID(t, otherID), p.ca); err != nil {
		t.Errorf("SVID from the bundle refused: %v", err)
	}
	if _, err := dial(t, addr, p.ca.Issue(t, spiffetest.CertOptions{CommonName: "x"}), p.ca); err == nil {
		t.Error("non-SPIFFE certificate accepted")
	}
	if _, err := dial(t, addr, spiffetest.NewCA(t, "rogue").SVID(t, otherID), p.ca); err == nil {
		t.Error("SVID from an untrusted CA accepted")
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	p := newPKI(t)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	otherKey := filepath.Join(t.TempDir(), "other-key.pem")
	if err := os.WriteFile(otherKey, p.ca.SVID(t, otherID).KeyPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*spiffetls.Options)
		want string
	}{
		{"allowed_client_not_a_spiffe_id", func(o *spiffetls.Options) { o.AllowedClients = []string{"gateway"} }, `--allowed-clients "gateway"`},
		{"allowed_client_with_bad_scheme", func(o *spiffetls.Options) { o.AllowedClients = []string{gatewayID, "https://cluster.local/x"} }, "--allowed-clients"},
		{"cert_without_key", func(o *spiffetls.Options) { o.KeyFile = "" }, "go together"},
		{"missing_ca", func(o *spiffetls.Options) { o.CAFile = "" }, "go together"},
		{"missing_cert_file", func(o *spiffetls.Options) { o.CertFile = filepath.Join(p.dir, "nope.pem") }, "--tls-cert"},
		{"key_not_matching_cert", func(o *spiffetls.Options) { o.KeyFile = otherKey }, "--tls-cert/--tls-key"},
		{"ca_file_without_certificates", func(o *spiffetls.Options) { o.CAFile = garbage }, "no certificates"},
		{"missing_ca_file", func(o *spiffetls.Options) { o.CAFile = filepath.Join(p.dir, "nope.pem") }, "--tls-ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := p.options(gatewayID)
			tc.edit(&opts)
			src, err := spiffetls.Open(context.Background(), opts)
			if err == nil {
				src.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestFilesRotatedWithoutRestart(t *testing.T) {
	p := newPKI(t)
	var clk clock
	opts := p.options(gatewayID)
	opts.Now = clk.now
	src := open(t, opts)
	addr := listen(t, src.ServerConfig())
	gateway := p.ca.SVID(t, gatewayID)
	expiry := func(want *spiffetest.Cert) {
		t.Helper()
		if got := src.CertificateExpiry(); !got.Equal(want.Cert.NotAfter) {
			t.Errorf("CertificateExpiry %v, want the served certificate's %v", got, want.Cert.NotAfter)
		}
	}
	expiry(p.server)

	serial := func() string {
		t.Helper()
		c, err := dial(t, addr, gateway, p.ca)
		if err != nil {
			t.Fatalf("allowed client refused: %v", err)
		}
		return c.SerialNumber.String()
	}
	if got, want := serial(), p.server.Cert.SerialNumber.String(); got != want {
		t.Fatalf("serial %s, want %s", got, want)
	}

	// cert-manager writes a new pair over the files.
	next := p.ca.ServerSVID(t, serverID)
	next.WriteFiles(t, p.dir, "server")
	clk.advance(2 * time.Second)
	if got, want := serial(), next.Cert.SerialNumber.String(); got != want {
		t.Fatalf("after rotation: serial %s, want the new %s", got, want)
	}
	expiry(next)

	// A half-written certificate file does not take the server down: the
	// last good pair is served until the file parses again.
	if err := os.WriteFile(p.certFile, next.CertPEM()[:40], 0o644); err != nil {
		t.Fatal(err)
	}
	clk.advance(2 * time.Second)
	if got, want := serial(), next.Cert.SerialNumber.String(); got != want {
		t.Fatalf("with a torn cert file: serial %s, want the last good %s", got, want)
	}
	third := p.ca.ServerSVID(t, serverID)
	third.WriteFiles(t, p.dir, "server")
	clk.advance(2 * time.Second)
	if got, want := serial(), third.Cert.SerialNumber.String(); got != want {
		t.Fatalf("after the torn write was repaired: serial %s, want %s", got, want)
	}
}

func TestFilesRotatedCABundleIsHonoured(t *testing.T) {
	p := newPKI(t)
	var clk clock
	var refused refusals
	opts := p.options(gatewayID)
	opts.Now, opts.OnRefused = clk.now, refused.add
	addr := listen(t, open(t, opts).ServerConfig())
	oldGateway := p.ca.SVID(t, gatewayID)
	if _, err := dial(t, addr, oldGateway, p.ca); err != nil {
		t.Fatalf("before rotation: %v", err)
	}

	// The trust domain moves to a new CA: new bundle, new server pair.
	ca2 := spiffetest.NewCA(t, "cluster.local CA 2")
	server2 := ca2.ServerSVID(t, serverID)
	server2.WriteFiles(t, p.dir, "server")
	spiffetest.WriteBundle(t, p.caFile, ca2)
	clk.advance(2 * time.Second)

	got, err := dial(t, addr, ca2.SVID(t, gatewayID), p.ca, ca2)
	if err != nil {
		t.Fatalf("gateway SVID from the new CA refused: %v", err)
	}
	if got.SerialNumber.Cmp(server2.Cert.SerialNumber) != 0 {
		t.Errorf("server presented serial %v, want the new %v", got.SerialNumber, server2.Cert.SerialNumber)
	}
	before := refused.snapshot()["untrusted"]
	if _, err := dial(t, addr, oldGateway, p.ca, ca2); err == nil {
		t.Fatal("gateway SVID from the CA no longer in the bundle accepted")
	}
	if after := refused.snapshot()["untrusted"]; after != before+1 {
		t.Errorf("untrusted refusals %d -> %d, want +1", before, after)
	}
}

func TestWorkloadAPIServesAndRotatesTheSVID(t *testing.T) {
	ca := spiffetest.NewCA(t, "cluster.local CA")
	first := ca.ServerSVID(t, serverID)
	wl := spiffetest.StartWorkloadAPI(t, first, ca)
	var refused refusals
	src := open(t, spiffetls.Options{SocketAddr: wl.Addr, AllowedClients: []string{gatewayID}, OnRefused: refused.add})
	addr := listen(t, src.ServerConfig())
	gateway := ca.SVID(t, gatewayID)

	got, err := dial(t, addr, gateway, ca)
	if err != nil {
		t.Fatalf("allowed gateway refused: %v", err)
	}
	if got.SerialNumber.Cmp(first.Cert.SerialNumber) != 0 {
		t.Fatalf("serial %v, want the Workload API's %v", got.SerialNumber, first.Cert.SerialNumber)
	}
	if _, err := dial(t, addr, ca.SVID(t, otherID), ca); err == nil {
		t.Error("other SPIFFE ID accepted")
	}
	if _, err := dial(t, addr, ca.Issue(t, spiffetest.CertOptions{CommonName: "gw"}), ca); err == nil {
		t.Error("non-SPIFFE certificate accepted")
	}
	if _, err := dial(t, addr, nil, ca); err == nil {
		t.Error("caller without a certificate accepted")
	}
	if r := refused.snapshot(); r["not-allowed"] != 1 || r["not-spiffe"] != 1 || r["untrusted"] != 0 {
		t.Errorf("refusals %v, want one not-allowed and one not-spiffe", r)
	}

	// The agent rotates the SVID: new handshakes present it.
	second := ca.ServerSVID(t, serverID)
	wl.SetX509SVID(t, second, ca)
	waitSerial(t, addr, gateway, second, ca)
	if got := src.CertificateExpiry(); !got.Equal(second.Cert.NotAfter) {
		t.Errorf("CertificateExpiry %v, want the rotated SVID's %v", got, second.Cert.NotAfter)
	}

	// The agent rotates the trust domain's CA: callers with SVIDs from the
	// new CA are accepted, those from the old one no longer.
	ca2 := spiffetest.NewCA(t, "cluster.local CA 2")
	third := ca2.ServerSVID(t, serverID)
	wl.SetX509SVID(t, third, ca2)
	waitSerial(t, addr, ca2.SVID(t, gatewayID), third, ca, ca2)
	if _, err := dial(t, addr, gateway, ca, ca2); err == nil {
		t.Error("SVID from the CA no longer in the bundle accepted")
	}
	if n := wl.Streams(); n != 1 {
		t.Errorf("%d FetchX509SVID streams, want 1: updates should arrive on the open stream", n)
	}
}

// waitSerial dials until the server presents want's certificate: a pushed
// SVID reaches the source asynchronously.
func waitSerial(t *testing.T, addr string, client, want *spiffetest.Cert, roots ...*spiffetest.CA) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for {
		got, err := dial(t, addr, client, roots...)
		if err == nil && got.SerialNumber.Cmp(want.Cert.SerialNumber) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server does not present the rotated SVID (serial %v) within %s: got %v, %v", want.Cert.SerialNumber, ioTimeout, got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWorkloadAPIUnreachableFailsWithinTheContext(t *testing.T) {
	addr := "unix://" + filepath.Join(t.TempDir(), "none.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	src, err := spiffetls.Open(ctx, spiffetls.Options{SocketAddr: addr})
	if err == nil {
		src.Close()
		t.Fatal("Open succeeded without a Workload API")
	}
	if !strings.Contains(err.Error(), "spiffe workload api") || !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not say which Workload API failed", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Open returned after %s, want soon after its context ended", d)
	}
}

func TestParseCAs(t *testing.T) {
	a, b := spiffetest.NewCA(t, "a"), spiffetest.NewCA(t, "b")
	key := []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	broken := []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	join := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		pem     []byte
		want    int
		wantErr string
	}{
		{"two_certificates_and_a_key", join(a.CertPEM(), key, b.CertPEM()), 2, ""},
		{"one_certificate", a.CertPEM(), 1, ""},
		{"empty", nil, 0, "no certificates"},
		{"only_a_key", key, 0, "no certificates"},
		{"unparsable_certificate", join(a.CertPEM(), broken), 0, "x509"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cas, err := spiffetls.ParseCAs(tc.pem)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(cas) != tc.want {
				t.Fatalf("%d certificates, %v; want %d", len(cas), err, tc.want)
			}
			if cas[0].Subject.CommonName != "a" {
				t.Errorf("first certificate %q, want the bundle's order", cas[0].Subject.CommonName)
			}
		})
	}
}

// TestVerifyX509SVID: a forwarded certificate is an identity only when it is
// an X.509 SVID of the trust bundle the source holds now, whichever source
// it is; the allowed-clients list, which is about callers, does not apply.
func TestVerifyX509SVID(t *testing.T) {
	p := newPKI(t)
	var clk clock
	opts := p.options(gatewayID) // workloads are not on the allow list
	opts.Now = clk.now
	files := open(t, opts)
	wl := spiffetest.StartWorkloadAPI(t, p.ca.ServerSVID(t, serverID), p.ca)
	api := open(t, spiffetls.Options{SocketAddr: wl.Addr, AllowedClients: []string{gatewayID}})
	other := spiffetest.NewCA(t, "another CA")
	for _, src := range []struct {
		name string
		s    *spiffetls.Source
	}{{"files", files}, {"workload_api", api}} {
		t.Run(src.name, func(t *testing.T) {
			for _, tc := range []struct {
				name   string
				chain  []*x509.Certificate
				wantID string // "" when refused
			}{
				{"svid_of_the_bundle", []*x509.Certificate{p.ca.SVID(t, otherID).Cert}, otherID},
				{"svid_of_another_ca", []*x509.Certificate{other.SVID(t, otherID).Cert}, ""},
				{"svid_of_another_ca_with_the_bundle_ca_appended", []*x509.Certificate{other.SVID(t, otherID).Cert, p.ca.Cert}, ""},
				{"not_an_svid", []*x509.Certificate{p.ca.Issue(t, spiffetest.CertOptions{CommonName: "workload"}).Cert}, ""},
				{"the_ca_itself", []*x509.Certificate{p.ca.Cert}, ""},
				{"no_certificate", nil, ""},
			} {
				t.Run(tc.name, func(t *testing.T) {
					id, err := src.s.VerifyX509SVID(tc.chain)
					switch {
					case tc.wantID == "" && err == nil:
						t.Errorf("verified as %s, want refused", id)
					case tc.wantID != "" && (err != nil || id.String() != tc.wantID):
						t.Errorf("got %v, %v; want %s", id, err, tc.wantID)
					}
				})
			}
		})
	}

	t.Run("foreign_trust_domain_without_a_bundle", func(t *testing.T) {
		// The Workload API holds cluster.local's bundle only.
		if id, err := api.VerifyX509SVID([]*x509.Certificate{p.ca.SVID(t, "spiffe://evil.example/ns/a/sa/b").Cert}); err == nil {
			t.Errorf("verified as %s without a bundle for its trust domain", id)
		}
	})
	ca2 := spiffetest.NewCA(t, "cluster.local CA 2")
	t.Run("rotated_bundle_file", func(t *testing.T) {
		old := p.ca.SVID(t, otherID).Cert
		ca2.ServerSVID(t, serverID).WriteFiles(t, p.dir, "server")
		spiffetest.WriteBundle(t, p.caFile, ca2)
		clk.advance(2 * time.Second)
		if _, err := files.VerifyX509SVID([]*x509.Certificate{old}); err == nil {
			t.Error("an SVID of the CA no longer in the bundle verified")
		}
		if id, err := files.VerifyX509SVID([]*x509.Certificate{ca2.SVID(t, otherID).Cert}); err != nil || id.String() != otherID {
			t.Errorf("an SVID of the new CA: %v, %v", id, err)
		}
	})
	t.Run("validity_by_the_injected_clock", func(t *testing.T) {
		svid := ca2.SVID(t, otherID).Cert
		if _, err := files.VerifyX509SVID([]*x509.Certificate{svid}); err != nil {
			t.Fatalf("before it expires: %v", err)
		}
		clk.advance(48 * time.Hour) // test SVIDs are valid for a day; last, as the clock stays there
		if _, err := files.VerifyX509SVID([]*x509.Certificate{svid}); err == nil {
			t.Error("an expired SVID verified")
		}
	})
}
