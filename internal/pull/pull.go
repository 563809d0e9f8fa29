// Package pull keeps a server's rule set in step with a signed bundle
// (internal/bundle) published at one place for a fleet: an HTTPS URL or a
// tag in an OCI registry. A Remote is a rules.Fetcher: every Fetch asks
// the source whether the bundle changed (If-None-Match with the last
// ETag; the tag's manifest digest), downloads it within bundle.MaxSize,
// and returns its rules only if bundle.Verify accepts it with the
// configured keys and it is not older than the active bundle.
//
// The bundle a server accepted is kept in a directory, so that a restarted
// server starts from it (verified again) when the source is down, and so
// that a restart does not lower the bar a newer bundle must clear: the
// kept bundle is the active one until the source offers a newer one.
//
// Nothing here trusts the source or the network: the keys decide. TLS
// keeps what a cluster asks for private and tells it early that it is
// talking to the wrong server; it is not what makes a bundle trusted.
package pull

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/internal/bundle"
	"github.com/egress-authz/egress-authz/rules"
)

// Options configures a Remote.
type Options struct {
	// Keys are the public keys a bundle must be signed by (one of them).
	// Required: a Remote never accepts an unsigned bundle.
	Keys []ed25519.PublicKey
	// RootCAs verify the source's TLS certificate; nil means the system's.
	RootCAs *x509.CertPool
	// Dir is where the last accepted bundle is kept; "" keeps none.
	Dir string
	// Timeout bounds one Fetch; 0 means 30 s.
	Timeout time.Duration
	// Now is the clock expiry is judged by; nil means time.Now.
	Now func() time.Time
	// UserAgent is sent with every request.
	UserAgent string
}

// source is where a Remote downloads from.
type source interface {
	// get downloads the bundle unless token names what the source offers
	// (then data is nil); it returns the token of what it offers.
	get(ctx context.Context, token string) (data []byte, newToken string, err error)
	// at names what a token stands for, for Status: the URL, the digest.
	at(token string) string
}

// Remote fetches a signed bundle from one source. It is not safe for
// concurrent use: a Reloader calls it from one goroutine at a time.
type Remote struct {
	ref  string
	src  source
	opts Options
	// token is what the source offered at the last Fetch ("" after an
	// error reaching it, so that the next Fetch downloads in full).
	token string
	// active is the bundle last accepted: what a new one is compared to.
	active *bundle.Verified
}

// New returns a Remote for ref: https://HOST/PATH or
// oci://REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST).
func New(ref string, opts Options) (*Remote, error) {
	if len(opts.Keys) == 0 {
		return nil, fmt.Errorf("rules %s: no public key: a bundle is accepted only if signed by one", ref)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "egress-authz"
	}
	client := newClient(opts.RootCAs, opts.Timeout)
	r := &Remote{ref: ref, opts: opts}
	var err error
	switch {
	case strings.HasPrefix(ref, "https://"):
		r.src, err = newHTTPS(ref, client, opts.UserAgent)
	case strings.HasPrefix(ref, "oci://"):
		r.src, err = newOCI(strings.TrimPrefix(ref, "oci://"), client, opts.UserAgent)
	case strings.HasPrefix(ref, "http://"):
		err = errors.New("plain http: use https:// (the bundle is signed, but what a cluster asks for, and when, is nobody else's business)")
	default:
		err = errors.New("want https://HOST/PATH or oci://REGISTRY/REPOSITORY:TAG")
	}
	if err != nil {
		return nil, fmt.Errorf("rules %s: %w", ref, err)
	}
	return r, nil
}

// newClient is the HTTP client of both sources: TLS 1.2 or later against
// roots, redirects only to https, proxies from the environment as usual.
func newClient(roots *x509.CertPool, timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to %s: not https", req.URL.Redacted())
			}
			if len(via) >= 5 {
				return errors.New("more than 5 redirects")
			}
			return nil
		},
	}
}

// String returns the source's address.
func (r *Remote) String() string { return r.ref }

// Fetch asks the source for its bundle and returns the rules of a bundle
// that verifies and is not older than the active one, or nil when the
// source offers what it offered at the last Fetch. The returned set's
// Accept makes its bundle the active one and keeps it in Dir.
func (r *Remote) Fetch(ctx context.Context) (*rules.Fetched, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	data, token, err := r.src.get(ctx, r.token)
	if err != nil {
		r.token = ""
		return nil, fmt.Errorf("fetch %s: %w", r.ref, err)
	}
	if data == nil {
		return nil, nil
	}
	// Kept whatever the verdict: until the source changes, it stands.
	r.token = token
	v, err := r.verify(data)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", r.src.at(token), err)
	}
	if err := bundle.CheckNewer(v, r.active); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", r.src.at(token), err)
	}
	f := r.fetched(v, r.src.at(token))
	if r.active == nil || v.Digest != r.active.Digest {
		f.Accept = func() error {
			r.active = v
			return r.keep(data)
		}
	}
	return f, nil
}

func (r *Remote) verify(data []byte) (*bundle.Verified, error) {
	b, err := bundle.Open(data)
	if err != nil {
		return nil, err
	}
	return b.Verify(bundle.VerifyOptions{Keys: r.opts.Keys, Now: r.opts.Now()})
}

func (r *Remote) fetched(v *bundle.Verified, from string) *rules.Fetched {
	return &rules.Fetched{
		Sources: v.Rules,
		Source:  from,
		Bundle: &rules.BundleInfo{Revision: v.Manifest.Revision, Created: v.Manifest.Created,
			Expires: v.Manifest.Expires, Digest: v.Digest, SignedBy: v.SignedBy},
	}
}

// Kept returns the rules of the bundle kept in Dir from this source,
// verified again (keys, files, expiry), and makes it the active bundle.
// It returns nil and no error when none is kept; an error when the kept
// bundle is refused (expired, or signed by a key no longer configured).
func (r *Remote) Kept() (*rules.Fetched, error) {
	path := r.keptPath()
	if path == "" {
		return nil, nil
	}
	rd := rules.Reader{MaxFileSize: bundle.MaxSize}
	srcs, err := rd.ReadSources(context.Background(), path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kept bundle: %w", err)
	}
	v, err := r.verify(srcs[0].Data)
	if err != nil {
		return nil, fmt.Errorf("kept bundle %s: %w", path, err)
	}
	r.active = v
	return r.fetched(v, "kept copy "+path+" (of "+r.ref+")"), nil
}

// keptPath is where the bundle from this source is kept: a name of its
// own per source, so that a server pointed at another source does not
// start from a bundle it was not told to serve.
func (r *Remote) keptPath() string {
	if r.opts.Dir == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(r.ref))
	return filepath.Join(r.opts.Dir, hex.EncodeToString(sum[:8])+".tar.gz")
}

// keep writes data to the kept path atomically: a crash leaves the old
// bundle or the new one, never half of one.
func (r *Remote) keep(data []byte) error {
	path := r.keptPath()
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(r.opts.Dir, 0o700); err != nil {
		return fmt.Errorf("keep bundle: %w", err)
	}
	tmp, err := os.CreateTemp(r.opts.Dir, ".bundle-*")
	if err != nil {
		return fmt.Errorf("keep bundle: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("keep bundle: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("keep bundle: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("keep bundle: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("keep bundle: %w", err)
	}
	if d, err := os.Open(r.opts.Dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
