// Package spiffetls builds the server's mutual-TLS configuration: its own
// certificate and the trust bundle from the SPIFFE Workload API (rotated by
// the agent) or from PEM files (reloaded when they change), and callers
// accepted only when they present an X.509 SVID whose SPIFFE ID is allowed.
// The same trust bundle verifies X.509 SVIDs that reach the server another
// way (a proxy's forwarded client certificate): Source.VerifyX509SVID.
package spiffetls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// Options says where the server's identity comes from and whom it accepts.
// Exactly one of the file trio and SocketAddr is set.
type Options struct {
	CertFile, KeyFile, CAFile string // PEM files, reloaded when they change
	SocketAddr                string // SPIFFE Workload API, e.g. unix:///run/spire/sockets/agent.sock
	// AllowedClients are the SPIFFE IDs accepted; empty accepts any SVID
	// that chains to the trust bundle.
	AllowedClients []string
	// OnRefused, when set, is called for each refused caller with a short
	// reason ("not-allowed", "not-spiffe", "untrusted").
	OnRefused func(reason string)
	// Now is the clock for reload checks; nil means time.Now.
	Now func() time.Time
}

// Source is a running identity source: Config returns the server TLS
// configuration, Close stops it.
type Source struct {
	config  *tls.Config
	close   func() error
	bundles x509bundle.Source // the trust bundle callers are verified against
	now     func() time.Time
	expiry  func() time.Time // the serving certificate's NotAfter
}

// ServerConfig returns the mutual-TLS server configuration.
func (s *Source) ServerConfig() *tls.Config { return s.config }

// VerifyX509SVID verifies chain, a leaf certificate and the intermediates
// after it, as an X.509 SVID of the current trust bundle (the one TLS
// callers are verified against, as rotated), and returns its SPIFFE ID.
// The allowed-clients list does not apply: it says who may call the
// server, not whose requests a caller may ask about. It is safe for
// concurrent use.
func (s *Source) VerifyX509SVID(chain []*x509.Certificate) (spiffeid.ID, error) {
	if len(chain) == 0 {
		return spiffeid.ID{}, errors.New("verify x509 svid: no certificate")
	}
	id, _, err := x509svid.Verify(chain, s.bundles, x509svid.WithTime(s.now()))
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("verify x509 svid: %w", err)
	}
	return id, nil
}

// CertificateExpiry is when the certificate the server presents now
// expires (zero if it cannot be read). It is safe for concurrent use.
func (s *Source) CertificateExpiry() time.Time { return s.expiry() }

// Close releases the source.
func (s *Source) Close() error { return s.close() }

// Open starts the identity source and builds the server configuration. With
// SocketAddr it blocks until the Workload API delivered a first SVID or ctx
// is done.
func Open(ctx context.Context, opts Options) (*Source, error) {
	authorizer, err := authorizer(opts)
	if err != nil {
		return nil, err
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if opts.SocketAddr != "" {
		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(opts.SocketAddr)))
		if err != nil {
			return nil, fmt.Errorf("spiffe workload api %s: %w", opts.SocketAddr, err)
		}
		cfg := tlsconfig.MTLSServerConfig(src, src, authorizer)
		cfg.MinVersion = tls.VersionTLS12
		cfg.VerifyPeerCertificate = counted(cfg.VerifyPeerCertificate, opts.OnRefused)
		expiry := func() time.Time {
			svid, err := src.GetX509SVID()
			if err != nil || len(svid.Certificates) == 0 {
				return time.Time{}
			}
			return svid.Certificates[0].NotAfter
		}
		return &Source{config: cfg, close: src.Close, bundles: src, now: now, expiry: expiry}, nil
	}
	fs, err := newFileSource(opts)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:            tls.VersionTLS12,
		ClientAuth:            tls.RequireAnyClientCert, // verified below, as SVIDs
		GetCertificate:        fs.certificate,
		VerifyPeerCertificate: counted(tlsconfig.VerifyPeerCertificate(fs, authorizer), opts.OnRefused),
	}
	return &Source{config: cfg, close: func() error { return nil }, bundles: fs, now: now, expiry: fs.notAfter}, nil
}

var errNotAllowed = errors.New("not an allowed client")

// authorizer accepts the allowed SPIFFE IDs, or any when none are given.
func authorizer(opts Options) (tlsconfig.Authorizer, error) {
	if len(opts.AllowedClients) == 0 {
		return tlsconfig.AuthorizeAny(), nil
	}
	allowed := map[spiffeid.ID]bool{}
	for _, s := range opts.AllowedClients {
		id, err := spiffeid.FromString(s)
		if err != nil {
			return nil, fmt.Errorf("--allowed-clients %q: %w", s, err)
		}
		allowed[id] = true
	}
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		if !allowed[id] {
			return fmt.Errorf("caller %s: %w", id, errNotAllowed)
		}
		return nil
	}, nil
}

// counted reports each refused handshake to onRefused, with a reason that
// keeps the metric's cardinality fixed. (A caller with no certificate at
// all is refused by crypto/tls before this runs.)
func counted(verify func([][]byte, [][]*x509.Certificate) error, onRefused func(string)) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, chains [][]*x509.Certificate) error {
		err := verify(raw, chains)
		if err != nil && onRefused != nil {
			switch {
			case errors.Is(err, errNotAllowed):
				onRefused("not-allowed")
			case len(raw) > 0 && !hasSPIFFEID(raw[0]):
				onRefused("not-spiffe")
			default:
				onRefused("untrusted")
			}
		}
		return err
	}
}

func hasSPIFFEID(der []byte) bool {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return false
	}
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			return true
		}
	}
	return false
}

// fileSource serves a certificate and a CA bundle from PEM files, reloading
// them when their modification time or size changes (checked at most once
// a second, on use), so that cert-manager or a CSI driver can rotate them
// without a restart.
type fileSource struct {
	opts Options
	now  func() time.Time

	mu      sync.Mutex
	checked time.Time
	stamp   string
	cert    *tls.Certificate
	cas     []*x509.Certificate
}

func newFileSource(opts Options) (*fileSource, error) {
	if opts.CertFile == "" || opts.KeyFile == "" || opts.CAFile == "" {
		return nil, errors.New("--tls-cert, --tls-key and --tls-ca go together")
	}
	fs := &fileSource{opts: opts, now: opts.Now}
	if fs.now == nil {
		fs.now = time.Now
	}
	if err := fs.reload(); err != nil {
		return nil, err
	}
	return fs, nil
}

func (fs *fileSource) stampNow() string {
	s := ""
	for _, f := range []string{fs.opts.CertFile, fs.opts.KeyFile, fs.opts.CAFile} {
		if st, err := os.Stat(f); err == nil {
			s += fmt.Sprintf("%d/%d;", st.ModTime().UnixNano(), st.Size())
		}
	}
	return s
}

// reload reads the files; on error the previous material stays in use.
func (fs *fileSource) reload() error {
	stamp := fs.stampNow()
	cert, err := tls.LoadX509KeyPair(fs.opts.CertFile, fs.opts.KeyFile)
	if err != nil {
		return fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	pemBytes, err := os.ReadFile(fs.opts.CAFile)
	if err != nil {
		return fmt.Errorf("--tls-ca: %w", err)
	}
	cas, err := ParseCAs(pemBytes)
	if err != nil {
		return fmt.Errorf("--tls-ca %s: %w", fs.opts.CAFile, err)
	}
	fs.mu.Lock()
	fs.cert, fs.cas, fs.stamp = &cert, cas, stamp
	fs.mu.Unlock()
	return nil
}

// ParseCAs reads a PEM CA bundle: every CERTIFICATE block, in order;
// other blocks are skipped. A certificate that does not parse, or a bundle
// without any, is an error.
func ParseCAs(pemBytes []byte) ([]*x509.Certificate, error) {
	var cas []*x509.Certificate
	for rest := pemBytes; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		cas = append(cas, c)
	}
	if len(cas) == 0 {
		return nil, errors.New("no certificates")
	}
	return cas, nil
}

// notAfter is the served certificate's expiry, after reloading rotated
// files.
func (fs *fileSource) notAfter() time.Time {
	fs.maybeReload()
	fs.mu.Lock()
	cert := fs.cert
	fs.mu.Unlock()
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return time.Time{}
		}
	}
	return leaf.NotAfter
}

func (fs *fileSource) maybeReload() {
	fs.mu.Lock()
	now := fs.now()
	due := now.Sub(fs.checked) >= time.Second
	if due {
		fs.checked = now
	}
	stamp := fs.stamp
	fs.mu.Unlock()
	if due && fs.stampNow() != stamp {
		_ = fs.reload() // a half-written file fails; the old pair stays until it parses
	}
}

func (fs *fileSource) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	fs.maybeReload()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.cert, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source: the CA file is
// the bundle of every trust domain (the allowed-clients list is what
// restricts callers).
func (fs *fileSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	fs.maybeReload()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return x509bundle.FromX509Authorities(td, fs.cas), nil
}
