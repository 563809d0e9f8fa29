// Package spiffetest stands in for SPIRE in tests: a certificate authority
// that issues X.509 SVIDs (and plain certificates), trust bundles as files
// and pools, and an in-process SPIFFE Workload API serving them.
//
// It imports no code of egress-authz, so that the tests of any package,
// including those of the code it helps to test, can use it. Every helper
// that can fail takes a testing.TB, fails the test on its own errors and
// releases what it started when the test ends.
package spiffetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a test certificate authority: a self-signed ECDSA P-256 root that
// issues X.509 SVIDs (a spiffe:// URI SAN, as SPIRE issues them) and plain
// certificates without one. It is safe for concurrent use.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA returns a new root CA named name, valid from an hour ago for a day.
func NewCA(tb testing.TB, name string) *CA {
	tb.Helper()
	key := newKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(tb),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"egress-authz tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("create CA %s: %v", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("parse CA %s: %v", name, err)
	}
	return &CA{Cert: cert, Key: key}
}

// CertPEM is the CA certificate in PEM, as a trust bundle file holds it.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// Pool is a certificate pool holding the given CAs.
func Pool(cas ...*CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return p
}

// WriteBundle writes the CAs' certificates, concatenated in PEM, to path.
func WriteBundle(tb testing.TB, path string, cas ...*CA) {
	tb.Helper()
	var b []byte
	for _, ca := range cas {
		b = append(b, ca.CertPEM()...)
	}
	writeFileAtomic(tb, path, b, 0o644)
}

// CertOptions says what an issued certificate names. The zero value is a
// client certificate with no names at all.
type CertOptions struct {
	SPIFFEID   string // the URI SAN; empty for a non-SPIFFE certificate
	CommonName string
	DNSNames   []string
	IPs        []net.IP
}

// Loopback are the SANs a test server's certificate needs to be verified
// by host name on 127.0.0.1 or localhost.
var Loopback = CertOptions{DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}}

// Cert is an issued leaf certificate and its key.
type Cert struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	CA   *CA // the issuer
}

// Issue issues a leaf certificate usable for both TLS client and server
// authentication, valid from an hour ago for a day, with a fresh random
// serial number.
func (ca *CA) Issue(tb testing.TB, opts CertOptions) *Cert {
	tb.Helper()
	key := newKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(tb),
		Subject:      pkix.Name{CommonName: opts.CommonName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     opts.DNSNames,
		IPAddresses:  opts.IPs,
	}
	if opts.SPIFFEID != "" {
		u, err := url.Parse(opts.SPIFFEID)
		if err != nil || u.Scheme != "spiffe" {
			tb.Fatalf("issue: SPIFFE ID %q: not a spiffe:// URI", opts.SPIFFEID)
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		tb.Fatalf("issue %+v: %v", opts, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("parse issued certificate: %v", err)
	}
	return &Cert{Cert: cert, Key: key, CA: ca}
}

// SVID issues a client X.509 SVID for id.
func (ca *CA) SVID(tb testing.TB, id string) *Cert {
	tb.Helper()
	return ca.Issue(tb, CertOptions{SPIFFEID: id})
}

// ServerSVID issues an X.509 SVID for id that also names 127.0.0.1, ::1
// and localhost, so that clients can verify it by host name or by SPIFFE
// ID.
func (ca *CA) ServerSVID(tb testing.TB, id string) *Cert {
	tb.Helper()
	opts := Loopback
	opts.SPIFFEID = id
	return ca.Issue(tb, opts)
}

// CertPEM is the leaf certificate in PEM.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
}

// KeyPEM is the private key in PKCS #8 PEM.
func (c *Cert) KeyPEM(tb testing.TB) []byte {
	tb.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		tb.Fatalf("marshal key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// TLS is the certificate as crypto/tls uses it.
func (c *Cert) TLS() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
}

// WriteFiles writes the certificate and key as PEM files in dir, named
// name.pem and name-key.pem, replacing them atomically (a rename) if they
// exist, and returns their paths.
func (c *Cert) WriteFiles(tb testing.TB, dir, name string) (certFile, keyFile string) {
	tb.Helper()
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writeFileAtomic(tb, certFile, c.CertPEM(), 0o644)
	writeFileAtomic(tb, keyFile, c.KeyPEM(tb), 0o600)
	return certFile, keyFile
}

// ClientTLS is a client configuration presenting c (none when c is nil)
// and trusting roots for the server's certificate, verified by host name.
func ClientTLS(c *Cert, roots ...*CA) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: Pool(roots...)}
	if c != nil {
		cfg.Certificates = []tls.Certificate{c.TLS()}
	}
	return cfg
}

func writeFileAtomic(tb testing.TB, path string, data []byte, mode os.FileMode) {
	tb.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, mode); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("generate key: %v", err)
	}
	return key
}

func newSerial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		tb.Fatalf("serial number: %v", err)
	}
	return n.Add(n, big.NewInt(1)) // never zero
}
