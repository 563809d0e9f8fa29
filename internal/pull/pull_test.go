package pull_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/bundle"
	"github.com/egress-authz/egress-authz/internal/bundle/bundletest"
	"github.com/egress-authz/egress-authz/internal/ocitest"
	"github.com/egress-authz/egress-authz/internal/pull"
	"github.com/egress-authz/egress-authz/internal/spiffetest"
	"github.com/egress-authz/egress-authz/rules"
)

var t0 = time.Now().UTC().Add(-time.Hour).Truncate(time.Second)

func ruleFile(host string) []string {
	return []string{"rules.yaml", `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: r
    action: allow
    to:
      hosts: [` + host + `]
`}
}

// httpsServer serves one bundle with an ETag, answering If-None-Match
// with 304, as a plain web server or object store does.
type httpsServer struct {
	*httptest.Server
	mu       sync.Mutex
	data     []byte
	gets     int
	notMod   int
	noETag   bool
	failWith int
}

func newHTTPSServer(t *testing.T) *httpsServer {
	s := &httpsServer{}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.gets++
		if s.failWith != 0 {
			http.Error(w, "down", s.failWith)
			return
		}
		sum := sha256.Sum256(s.data)
		etag := `"` + hex.EncodeToString(sum[:8]) + `"`
		if !s.noETag {
			if r.Header.Get("If-None-Match") == etag {
				s.notMod++
				w.WriteHeader(http.StatusNotModified)
				return
			}
			w.Header().Set("ETag", etag)
		}
		w.Header().Set("Content-Type", bundle.MediaType)
		_, _ = w.Write(s.data)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *httpsServer) publish(data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data = data
}

func (s *httpsServer) counts() (gets, notModified int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets, s.notMod
}

func (s *httpsServer) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.Certificate())
	return p
}

func newRemote(t *testing.T, ref string, roots *x509.CertPool, dir string, keys ...bundletest.Key) *pull.Remote {
	t.Helper()
	var pubs []ed25519.PublicKey
	for _, k := range keys {
		pubs = append(pubs, k.Pub)
	}
	r, err := pull.New(ref, pull.Options{Keys: pubs, RootCAs: roots, Dir: dir, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fetch fetches and, when a set came, accepts it as a Reloader would.
func fetch(t *testing.T, r *pull.Remote) (*rules.Fetched, error) {
	t.Helper()
	f, err := r.Fetch(context.Background())
	if f != nil && f.Accept != nil {
		if err := f.Accept(); err != nil {
			t.Fatalf("Accept: %v", err)
		}
	}
	return f, err
}

func TestHTTPSFetchesConditionallyAndVerifies(t *testing.T) {
	key := bundletest.NewKey(t)
	srv := newHTTPSServer(t)
	srv.publish(bundletest.Build(t, "1", t0, ruleFile("a.example"), key))
	r := newRemote(t, srv.URL+"/rules/bundle.tar.gz", srv.pool(), t.TempDir(), key)

	f, err := fetch(t, r)
	if err != nil || f == nil {
		t.Fatalf("first Fetch: %v, %v", f, err)
	}
	if f.Bundle.Revision != "1" || f.Source != srv.URL+"/rules/bundle.tar.gz" || len(f.Bundle.SignedBy) != 1 ||
		len(f.Sources) != 1 || f.Sources[0].Name != "rules/rules.yaml" {
		t.Errorf("fetched %+v (bundle %+v)", f, f.Bundle)
	}
	// Unchanged: a 304, nothing returned.
	if f, err := fetch(t, r); f != nil || err != nil {
		t.Errorf("second Fetch: %v, %v; want nil, nil", f, err)
	}
	if gets, nm := srv.counts(); gets != 2 || nm != 1 {
		t.Errorf("%d GETs, %d answered 304; want 2 and 1", gets, nm)
	}
	srv.publish(bundletest.Build(t, "2", t0.Add(time.Minute), ruleFile("b.example"), key))
	if f, err := fetch(t, r); err != nil || f == nil || f.Bundle.Revision != "2" {
		t.Fatalf("Fetch after a new bundle: %+v, %v", f, err)
	}
	// A server that sends no ETag: every poll downloads, and the same
	// bundle comes back as the active one, with nothing to accept.
	srv.mu.Lock()
	srv.noETag = true
	srv.mu.Unlock()
	f, err = fetch(t, r)
	if err != nil || f == nil || f.Accept != nil || f.Bundle.Revision != "2" {
		t.Errorf("Fetch without ETag: %+v, %v; want revision 2 with no Accept", f, err)
	}
}

// Every refusal is its own error; after it, the source offering the same
// bundle (a 304) leaves the error standing, and the active bundle is not
// lowered.
func TestRemoteRefuses(t *testing.T) {
	key, other := bundletest.NewKey(t), bundletest.NewKey(t)
	good := bundletest.Build(t, "10", t0, ruleFile("a.example"), key)
	newer := func(rev string) []byte {
		return bundletest.Build(t, rev, t0.Add(time.Minute), ruleFile("b.example"), key)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"tampered", bundletest.Replace(t, newer("11"), "rules/rules.yaml", ruleFile("*")[1]), bundle.ErrTampered},
		{"missing_file", bundletest.Remove(t, newer("11"), "rules/rules.yaml"), bundle.ErrMissingFile},
		{"extra_file", bundletest.Add(t, newer("11"), "rules/more.yaml", ruleFile("*")[1]), bundle.ErrExtraFile},
		{"bad_signature", bundletest.Build(t, "11", t0.Add(time.Minute), ruleFile("b.example"), other), bundle.ErrBadSignature},
		{"unsigned", bundletest.Build(t, "11", t0.Add(time.Minute), ruleFile("b.example")), bundle.ErrUnsigned},
		{"older", bundletest.Build(t, "9", t0.Add(-time.Minute), ruleFile("b.example"), key), bundle.ErrNotNewer},
		{"expired", bundletest.Build(t, "11", t0.Add(-31*24*time.Hour+time.Minute), ruleFile("b.example"), key), bundle.ErrExpired},
		{"not_a_bundle", []byte("<html>Sign in</html>"), bundle.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newHTTPSServer(t)
			srv.publish(good)
			r := newRemote(t, srv.URL+"/b.tgz", srv.pool(), "", key)
			if _, err := fetch(t, r); err != nil {
				t.Fatal(err)
			}
			srv.publish(tc.data)
			f, err := fetch(t, r)
			if !errors.Is(err, tc.want) || f != nil {
				t.Fatalf("Fetch: %v, %v; want %v", f, err, tc.want)
			}
			if !strings.Contains(err.Error(), srv.URL+"/b.tgz") {
				t.Errorf("error %q does not name the source", err)
			}
			if f, err := fetch(t, r); f != nil || err != nil {
				t.Errorf("Fetch of the same refused bundle: %v, %v; want nil, nil (the error stands)", f, err)
			}
			// The active bundle is still 10: a newer one is accepted, an
			// 11 never became the bar.
			srv.publish(newer("12"))
			if f, err := fetch(t, r); err != nil || f == nil || f.Bundle.Revision != "12" {
				t.Errorf("Fetch of revision 12: %+v, %v", f, err)
			}
		})
	}
}

// A source that cannot be reached is an error; the next Fetch downloads
// in full, so that what the source offers then is judged afresh.
func TestRemoteRetriesInFullAfterAnError(t *testing.T) {
	key := bundletest.NewKey(t)
	srv := newHTTPSServer(t)
	srv.publish(bundletest.Build(t, "1", t0, ruleFile("a.example"), key))
	r := newRemote(t, srv.URL+"/b", srv.pool(), "", key)
	if _, err := fetch(t, r); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	srv.failWith = http.StatusServiceUnavailable
	srv.mu.Unlock()
	if _, err := fetch(t, r); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Fetch from a failing server: %v", err)
	}
	srv.mu.Lock()
	srv.failWith = 0
	srv.mu.Unlock()
	f, err := fetch(t, r)
	if err != nil || f == nil || f.Accept != nil {
		t.Errorf("Fetch after the outage: %+v, %v; want the active bundle again, with nothing to accept", f, err)
	}
}

func TestRemoteKeepsTheBundleAndStartsFromIt(t *testing.T) {
	key := bundletest.NewKey(t)
	dir := t.TempDir()
	srv := newHTTPSServer(t)
	srv.publish(bundletest.Build(t, "7", t0, ruleFile("a.example"), key))
	ref := srv.URL + "/b"
	r := newRemote(t, ref, srv.pool(), dir, key)
	if f, err := r.Kept(); f != nil || err != nil {
		t.Fatalf("Kept before anything was kept: %v, %v", f, err)
	}
	if _, err := fetch(t, r); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	srv.failWith = http.StatusBadGateway // the source is down
	srv.mu.Unlock()

	again := newRemote(t, ref, srv.pool(), dir, key)
	f, err := again.Kept()
	if err != nil || f == nil || f.Bundle.Revision != "7" || !strings.Contains(f.Source, "kept copy") {
		t.Fatalf("Kept: %+v, %v", f, err)
	}
	if _, err := rules.Parse(f.Sources...); err != nil {
		t.Errorf("the kept rules do not parse: %v", err)
	}
	if _, err := again.Fetch(context.Background()); err == nil {
		t.Error("Fetch from a source that is down: no error")
	}
	// The kept bundle is the bar after a restart: the source back with an
	// older bundle is refused.
	srv.mu.Lock()
	srv.failWith = 0
	srv.mu.Unlock()
	srv.publish(bundletest.Build(t, "6", t0.Add(-time.Minute), ruleFile("b.example"), key))
	if _, err := again.Fetch(context.Background()); !errors.Is(err, bundle.ErrNotNewer) {
		t.Errorf("Fetch of an older bundle after a restart: %v, want ErrNotNewer", err)
	}

	// Another source does not start from this one's bundle.
	if f, err := newRemote(t, ref+"-other", srv.pool(), dir, key).Kept(); f != nil || err != nil {
		t.Errorf("Kept for another source: %v, %v", f, err)
	}
	// A kept bundle is verified again: a server no longer trusting its
	// key refuses it.
	if _, err := newRemote(t, ref, srv.pool(), dir, bundletest.NewKey(t)).Kept(); !errors.Is(err, bundle.ErrBadSignature) {
		t.Errorf("Kept with another key: %v, want ErrBadSignature", err)
	}
	// ...and so is a kept file changed on disk.
	files, _ := filepath.Glob(filepath.Join(dir, "*.tar.gz"))
	if len(files) != 1 {
		t.Fatalf("kept files %v, want one", files)
	}
	data, _ := os.ReadFile(files[0])
	if err := os.WriteFile(files[0], bundletest.Replace(t, data, "rules/rules.yaml", ruleFile("*")[1]), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newRemote(t, ref, srv.pool(), dir, key).Kept(); !errors.Is(err, bundle.ErrTampered) {
		t.Errorf("Kept after the file changed: %v, want ErrTampered", err)
	}
}

func TestNewRefuses(t *testing.T) {
	key := bundletest.NewKey(t)
	for _, tc := range []struct {
		ref  string
		keys []ed25519.PublicKey
		says string
	}{
		{"https://example.com/b.tar.gz", nil, "no public key"},
		{"http://example.com/b.tar.gz", []ed25519.PublicKey{key.Pub}, "use https://"},
		{"https://user:pw@example.com/b", []ed25519.PublicKey{key.Pub}, "without user information"},
		{"oci://registry.example.com/rules", []ed25519.PublicKey{key.Pub}, "no tag"},
		{"oci://not a reference", []ed25519.PublicKey{key.Pub}, "invalid"},
	} {
		_, err := pull.New(tc.ref, pull.Options{Keys: tc.keys})
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("New(%q): %v, want an error saying %q", tc.ref, err, tc.says)
		}
	}
}

// startRegistry runs the real registry with TLS from a test CA.
func startRegistry(t *testing.T) (*ocitest.Registry, *x509.CertPool) {
	t.Helper()
	ca := spiffetest.NewCA(t, "registry CA")
	cert, key := ca.Issue(t, spiffetest.Loopback).WriteFiles(t, t.TempDir(), "registry")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: spiffetest.ClientTLS(nil, ca)}, Timeout: 10 * time.Second}
	return ocitest.Start(t, cert, key, client), spiffetest.Pool(ca)
}

func pushBundle(t *testing.T, reg *ocitest.Registry, tag string, data []byte) string {
	t.Helper()
	return reg.Push(t, "platform/egress-rules", tag, bundle.ArtifactType,
		ocitest.Layer{MediaType: bundle.MediaType, Data: data, Title: "bundle.tar.gz"})
}

func TestOCIPullsByTagWithTheDigestAsToken(t *testing.T) {
	reg, roots := startRegistry(t)
	key := bundletest.NewKey(t)
	ref := "oci://" + reg.Host + "/platform/egress-rules:prod"
	digest1 := pushBundle(t, reg, "prod", bundletest.Build(t, "1", t0, ruleFile("a.example"), key))
	r := newRemote(t, ref, roots, t.TempDir(), key)

	f, err := fetch(t, r)
	if err != nil || f == nil {
		t.Fatalf("first Fetch: %v, %v", f, err)
	}
	if f.Source != ref+"@"+digest1 || f.Bundle.Revision != "1" {
		t.Errorf("fetched from %s revision %s; want %s@%s revision 1", f.Source, f.Bundle.Revision, ref, digest1)
	}
	if f, err := fetch(t, r); f != nil || err != nil {
		t.Errorf("Fetch of an unmoved tag: %v, %v; want nil, nil", f, err)
	}
	pushBundle(t, reg, "prod", bundletest.Build(t, "2", t0.Add(time.Minute), ruleFile("b.example"), key))
	if f, err := fetch(t, r); err != nil || f == nil || f.Bundle.Revision != "2" {
		t.Fatalf("Fetch after the tag moved: %+v, %v", f, err)
	}

	// A rollback through the registry: the tag moved back to revision 1.
	pushBundle(t, reg, "prod", bundletest.Build(t, "1", t0, ruleFile("a.example"), key))
	if _, err := fetch(t, r); !errors.Is(err, bundle.ErrNotNewer) {
		t.Errorf("Fetch of revision 1 again: %v, want ErrNotNewer", err)
	}
	// An artifact that is not one bundle layer.
	good := bundletest.Build(t, "3", t0.Add(2*time.Minute), ruleFile("c.example"), key)
	reg.Push(t, "platform/egress-rules", "prod", bundle.ArtifactType,
		ocitest.Layer{MediaType: bundle.MediaType, Data: good}, ocitest.Layer{MediaType: bundle.MediaType, Data: []byte("more")})
	if _, err := fetch(t, r); err == nil || !strings.Contains(err.Error(), "want exactly one") {
		t.Errorf("Fetch of a two-layer artifact: %v", err)
	}
	reg.Push(t, "platform/egress-rules", "prod", bundle.ArtifactType, ocitest.Layer{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Data: good})
	if _, err := fetch(t, r); err == nil || !strings.Contains(err.Error(), bundle.MediaType) {
		t.Errorf("Fetch of a layer of another media type: %v", err)
	}
	// A tag that does not exist.
	if _, err := fetch(t, newRemote(t, "oci://"+reg.Host+"/platform/egress-rules:nope", roots, "", key)); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("Fetch of a missing tag: %v", err)
	}
	// The registry down: an error, and the bundle is still kept for the
	// next start.
	reg.Stop()
	if _, err := fetch(t, r); err == nil {
		t.Error("Fetch from a stopped registry: no error")
	}
}

// The registry's TLS certificate must chain to the configured roots.
func TestOCIRefusesAnUntrustedRegistry(t *testing.T) {
	reg, _ := startRegistry(t)
	key := bundletest.NewKey(t)
	pushBundle(t, reg, "prod", bundletest.Build(t, "1", t0, ruleFile("a.example"), key))
	other := spiffetest.Pool(spiffetest.NewCA(t, "another CA"))
	_, err := fetch(t, newRemote(t, "oci://"+reg.Host+"/platform/egress-rules:prod", other, "", key))
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Fetch from a registry with an untrusted certificate: %v", err)
	}
}
