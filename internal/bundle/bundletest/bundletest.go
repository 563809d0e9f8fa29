// Package bundletest makes rule bundles for tests: signing keys, bundles
// of given revisions and times, and the bundles an attacker would make of
// a good one (a file changed, removed or added after signing), written
// byte for byte as the archive would be.
package bundletest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/bundle"
	"github.com/egress-authz/egress-authz/rules"
)

// Key is an Ed25519 signing key and its PEM forms.
type Key struct {
	Priv    ed25519.PrivateKey
	Pub     ed25519.PublicKey
	PrivPEM []byte
	PubPEM  []byte
}

// NewKey makes a signing key.
func NewKey(tb testing.TB) Key {
	tb.Helper()
	privPEM, pubPEM, err := bundle.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	priv, err := bundle.ParsePrivateKey(privPEM)
	if err != nil {
		tb.Fatal(err)
	}
	return Key{Priv: priv, Pub: priv.Public().(ed25519.PublicKey), PrivPEM: privPEM, PubPEM: pubPEM}
}

// WriteFiles writes the key as dir/name.key and dir/name.pub and returns
// their paths.
func (k Key) WriteFiles(tb testing.TB, dir, name string) (privFile, pubFile string) {
	tb.Helper()
	privFile, pubFile = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub")
	if err := os.WriteFile(privFile, k.PrivPEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(pubFile, k.PubPEM, 0o644); err != nil {
		tb.Fatal(err)
	}
	return privFile, pubFile
}

// Build builds a bundle of the rule files (name, content, name,
// content...) as revision rev, created at created, expiring 30 days later,
// signed by keys (unsigned without).
func Build(tb testing.TB, rev string, created time.Time, files []string, keys ...Key) []byte {
	tb.Helper()
	in := bundle.Input{Revision: rev, Created: created, Expires: created.Add(30 * 24 * time.Hour)}
	for i := 0; i+1 < len(files); i += 2 {
		in.Rules = append(in.Rules, rules.Source{Name: files[i], Data: []byte(files[i+1])})
	}
	return BuildInput(tb, in, keys...)
}

// BuildInput builds a bundle of in, signed by keys.
func BuildInput(tb testing.TB, in bundle.Input, keys ...Key) []byte {
	tb.Helper()
	data, err := bundle.Build(in)
	if err != nil {
		tb.Fatal(err)
	}
	return Sign(tb, data, keys...)
}

// Sign adds a signature by each key.
func Sign(tb testing.TB, data []byte, keys ...Key) []byte {
	tb.Helper()
	for _, k := range keys {
		b, err := bundle.Open(data)
		if err != nil {
			tb.Fatal(err)
		}
		if data, err = b.Sign(k.Priv); err != nil {
			tb.Fatal(err)
		}
	}
	return data
}

// Replace returns the bundle with the content of the file at name (as the
// archive names it: "rules/a.yaml") replaced, its signatures kept: a file
// tampered with after signing.
func Replace(tb testing.TB, data []byte, name, content string) []byte {
	tb.Helper()
	return edit(tb, data, func(es []entry) []entry {
		found := false
		for i := range es {
			if es[i].name == name {
				es[i].data, found = []byte(content), true
			}
		}
		if !found {
			tb.Fatalf("bundletest: no %s in the bundle", name)
		}
		return es
	})
}

// Remove returns the bundle without the file at name.
func Remove(tb testing.TB, data []byte, name string) []byte {
	tb.Helper()
	return edit(tb, data, func(es []entry) []entry {
		var out []entry
		for _, e := range es {
			if e.name != name {
				out = append(out, e)
			}
		}
		if len(out) == len(es) {
			tb.Fatalf("bundletest: no %s in the bundle", name)
		}
		return out
	})
}

// Add returns the bundle with a file added that its manifest does not list.
func Add(tb testing.TB, data []byte, name, content string) []byte {
	tb.Helper()
	return edit(tb, data, func(es []entry) []entry { return append(es, entry{name, []byte(content)}) })
}

type entry struct {
	name string
	data []byte
}

func edit(tb testing.TB, data []byte, fn func([]entry) []entry) []byte {
	tb.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		tb.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var es []entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			tb.Fatal(err)
		}
		es = append(es, entry{hdr.Name, b})
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range fn(es) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Size: int64(len(e.data)), Mode: 0o644}); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}
