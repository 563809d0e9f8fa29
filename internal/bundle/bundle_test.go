package bundle_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/bundle"
	"github.com/egress-authz/egress-authz/rules"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

const ruleA = `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: stripe
    action: allow
    from:
      namespaces: [payments]
    to:
      hosts: [api.stripe.com]
`

const ruleB = `apiVersion: egress-authz/v1
kind: RuleSet
rules:
  - id: sendgrid
    action: allow
    from:
      namespaces: [notify]
    to:
      hosts: [api.sendgrid.com]
`

const cases = `cases:
  - name: checkout charges Stripe
    principal: spiffe://cluster.local/ns/payments/sa/checkout
    url: https://api.stripe.com/v1/charges
    expect: allow
`

func input(rev string, created time.Time) bundle.Input {
	return bundle.Input{
		Rules:    []rules.Source{{Name: "/src/rules/b.yaml", Data: []byte(ruleB)}, {Name: "/src/rules/a.yaml", Data: []byte(ruleA)}},
		Cases:    []rules.Source{{Name: "/src/tests/cases.yaml", Data: []byte(cases)}},
		Revision: rev, Created: created, Expires: created.Add(30 * 24 * time.Hour),
	}
}

func build(t *testing.T, in bundle.Input) []byte {
	t.Helper()
	data, err := bundle.Build(in)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func open(t *testing.T, data []byte) *bundle.Bundle {
	t.Helper()
	b, err := bundle.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type key struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

func newKey(t *testing.T) key {
	t.Helper()
	privPEM, pubPEM, err := bundle.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := bundle.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := bundle.ParsePublicKeys(pubPEM)
	if err != nil || len(pubs) != 1 {
		t.Fatalf("ParsePublicKeys: %v, %d keys", err, len(pubs))
	}
	return key{priv, pubs[0]}
}

func sign(t *testing.T, data []byte, k key) []byte {
	t.Helper()
	out, err := open(t, data).Sign(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// entry is one file of a hand-made archive.
type entry struct {
	name string
	data string
	typ  byte
}

// entriesOf lists a bundle's archive as it is.
func entriesOf(t *testing.T, data []byte) []entry {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out []entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out = append(out, entry{name: hdr.Name, data: string(b), typ: hdr.Typeflag})
	}
}

// archive writes entries as a tar.gz, as an attacker or a foreign tool
// would.
func archive(t *testing.T, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range es {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o644, Size: int64(len(e.data))}
		if typ != tar.TypeReg {
			hdr.Size, hdr.Linkname = 0, "/etc/passwd"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.data)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// edit rewrites a bundle's archive with fn applied to its entries.
func edit(t *testing.T, data []byte, fn func([]entry) []entry) []byte {
	t.Helper()
	return archive(t, fn(entriesOf(t, data)))
}

func TestBuildSignVerifyRoundTrip(t *testing.T) {
	k := newKey(t)
	data := sign(t, build(t, input("42", t0)), k)
	v, err := open(t, data).Verify(bundle.VerifyOptions{Keys: []ed25519.PublicKey{k.pub}, Now: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(v.SignedBy) != 1 || v.SignedBy[0] != bundle.KeyID(k.pub) {
		t.Errorf("SignedBy %v, want [%s]", v.SignedBy, bundle.KeyID(k.pub))
	}
	var names []string
	for _, s := range v.Rules {
		names = append(names, s.Name)
	}
	if got := strings.Join(names, ","); got != "rules/a.yaml,rules/b.yaml" {
		t.Errorf("rule files %s, want rules/a.yaml,rules/b.yaml (sorted, as a directory is read)", got)
	}
	if len(v.Cases) != 1 || v.Cases[0].Name != "cases/cases.yaml" || string(v.Cases[0].Data) != cases {
		t.Errorf("cases %+v", v.Cases)
	}
	set, err := rules.Parse(v.Rules...)
	if err != nil {
		t.Fatal(err)
	}
	if set.Version != v.Manifest.RuleSet || len(set.Rules) != 2 {
		t.Errorf("parsed version %s with %d rules; the manifest says %s", set.Version, len(set.Rules), v.Manifest.RuleSet)
	}
	if v.Manifest.Revision != "42" || !v.Manifest.Created.Equal(t0) || !v.Manifest.Expires.Equal(t0.Add(30*24*time.Hour)) {
		t.Errorf("manifest %+v", v.Manifest)
	}
}

// A bundle serves the version its directory has on disk, so that a
// cluster's /v1/rules and "rules lint rules/" name the same version.
func TestBundleKeepsTheDirectorysVersion(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{"b.yaml": ruleB, "a.yaml": ruleA} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srcs, err := rules.ReadSources(dir)
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.Parse(srcs...)
	if err != nil {
		t.Fatal(err)
	}
	in := input("1", t0)
	in.Rules = srcs
	v, err := open(t, build(t, in)).Verify(bundle.VerifyOptions{Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if v.Manifest.RuleSet != set.Version {
		t.Errorf("bundle ruleset %s, directory version %s", v.Manifest.RuleSet, set.Version)
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	a, b := build(t, input("7", t0)), build(t, input("7", t0))
	if !bytes.Equal(a, b) {
		t.Error("two builds of the same input differ")
	}
	if bytes.Equal(a, build(t, input("8", t0))) {
		t.Error("builds of different revisions are equal")
	}
}

func TestVerifyRefuses(t *testing.T) {
	k, other := newKey(t), newKey(t)
	keys := []ed25519.PublicKey{k.pub}
	now := t0.Add(time.Hour)
	good := sign(t, build(t, input("42", t0)), k)
	replace := func(name, data string) func([]entry) []entry {
		return func(es []entry) []entry {
			for i := range es {
				if es[i].name == name {
					es[i].data = data
				}
			}
			return es
		}
	}
	tests := []struct {
		name string
		data []byte
		keys []ed25519.PublicKey
		now  time.Time
		want error
		says string
	}{
		{"tampered_rule_file", edit(t, good, replace("rules/a.yaml", strings.Replace(ruleA, "api.stripe.com", "*", 1))), keys, now, bundle.ErrTampered, "rules/a.yaml"},
		{"tampered_case_file", edit(t, good, replace("cases/cases.yaml", "cases: []\n")), keys, now, bundle.ErrTampered, "cases/cases.yaml"},
		{"missing_file", edit(t, good, func(es []entry) []entry {
			var out []entry
			for _, e := range es {
				if e.name != "rules/b.yaml" {
					out = append(out, e)
				}
			}
			return out
		}), keys, now, bundle.ErrMissingFile, "rules/b.yaml"},
		{"extra_file", edit(t, good, func(es []entry) []entry {
			return append(es, entry{name: "rules/allow-all.yaml", data: ruleA})
		}), keys, now, bundle.ErrExtraFile, "rules/allow-all.yaml"},
		{"manifest_changed_after_signing", edit(t, good, func(es []entry) []entry {
			return replace(bundle.ManifestFile, strings.Replace(es[0].data, `"revision": "42"`, `"revision": "43"`, 1))(es)
		}), keys, now, bundle.ErrBadSignature, "does not verify"},
		{"signed_by_another_key", sign(t, build(t, input("42", t0)), other), keys, now, bundle.ErrBadSignature, bundle.KeyID(other.pub)},
		{"unsigned_with_a_key_configured", build(t, input("42", t0)), keys, now, bundle.ErrUnsigned, "revision 42"},
		{"unsigned_with_an_empty_signature_list", edit(t, good, replace(bundle.SignaturesFile, `{"signatures": []}`)), keys, now, bundle.ErrUnsigned, ""},
		{"expired", good, keys, t0.Add(31 * 24 * time.Hour), bundle.ErrExpired, "expired at 2026-12-01T12:00:00Z"},
		{"expires_now", good, keys, t0.Add(30 * 24 * time.Hour), bundle.ErrExpired, ""},
		{"created_in_the_future", good, keys, t0.Add(-time.Hour), bundle.ErrMalformed, "in the future"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := bundle.Open(tc.data)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			_, err = b.Verify(bundle.VerifyOptions{Keys: tc.keys, Now: tc.now})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
			for _, sentinel := range []error{bundle.ErrTampered, bundle.ErrMissingFile, bundle.ErrExtraFile, bundle.ErrBadSignature,
				bundle.ErrUnsigned, bundle.ErrExpired, bundle.ErrMalformed} {
				if sentinel != tc.want && errors.Is(err, sentinel) {
					t.Errorf("the error is also %v: %v", sentinel, err)
				}
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
		})
	}
}

// Without keys (an offline tool told none), the files are still checked
// against the manifest, and an unsigned bundle passes.
func TestVerifyWithoutKeysChecksTheFiles(t *testing.T) {
	data := build(t, input("1", t0))
	if _, err := open(t, data).Verify(bundle.VerifyOptions{Now: t0}); err != nil {
		t.Errorf("unsigned bundle without keys: %v", err)
	}
	bad := edit(t, data, func(es []entry) []entry { es[1].data += "# more\n"; return es })
	if _, err := open(t, bad).Verify(bundle.VerifyOptions{Now: t0}); !errors.Is(err, bundle.ErrTampered) {
		t.Errorf("tampered bundle without keys: %v, want ErrTampered", err)
	}
}

func TestKeyRotationTwoSignatures(t *testing.T) {
	oldKey, newKey_ := newKey(t), newKey(t)
	both := sign(t, sign(t, build(t, input("5", t0)), oldKey), newKey_)
	if n := len(open(t, both).Signatures()); n != 2 {
		t.Fatalf("%d signatures, want 2", n)
	}
	for _, tc := range []struct {
		name string
		keys []ed25519.PublicKey
	}{
		{"old_key_only", []ed25519.PublicKey{oldKey.pub}},
		{"new_key_only", []ed25519.PublicKey{newKey_.pub}},
		{"both_keys", []ed25519.PublicKey{oldKey.pub, newKey_.pub}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := open(t, both).Verify(bundle.VerifyOptions{Keys: tc.keys, Now: t0})
			if err != nil {
				t.Fatal(err)
			}
			if len(v.SignedBy) != len(tc.keys) {
				t.Errorf("SignedBy %v, want %d keys", v.SignedBy, len(tc.keys))
			}
		})
	}
	// Signing again with the same key replaces its signature.
	again := sign(t, both, newKey_)
	if n := len(open(t, again).Signatures()); n != 2 {
		t.Errorf("%d signatures after re-signing with one key, want 2", n)
	}
	// Signing does not change what is signed: the digest stays.
	if open(t, both).Digest() != open(t, build(t, input("5", t0))).Digest() {
		t.Error("signing changed the bundle's digest")
	}
}

func TestSignRefusesATamperedBundle(t *testing.T) {
	bad := edit(t, build(t, input("1", t0)), func(es []entry) []entry { es[1].data = ruleB; return es })
	if _, err := open(t, bad).Sign(newKey(t).priv); !errors.Is(err, bundle.ErrTampered) {
		t.Errorf("Sign: %v, want ErrTampered", err)
	}
}

func TestOpenRefusesMalformedArchives(t *testing.T) {
	good := build(t, input("1", t0))
	es := entriesOf(t, good)
	with := func(extra ...entry) []byte { return archive(t, append(append([]entry(nil), es...), extra...)) }
	var many []entry
	for i := 0; i <= 20; i++ {
		many = append(many, entry{name: "rules/f" + string(rune('a'+i)) + ".yaml"})
	}
	// Small bounds (OpenWithLimits) stand for the real ones, tested below.
	const fileSize, totalSize, files = 4 << 10, 16 << 10, 20
	tests := []struct {
		name string
		data []byte
		says string
	}{
		{"not_gzip", []byte("apiVersion: egress-authz/v1\n"), "not gzip"},
		{"no_manifest", archive(t, es[1:]), "no manifest.json"},
		{"parent_path", with(entry{name: "../etc/cron.d/x", data: "x"}), "not a safe relative path"},
		{"nested_parent_path", with(entry{name: "rules/../../x.yaml", data: "x"}), "not a safe relative path"},
		{"absolute_path", with(entry{name: "/etc/passwd", data: "x"}), "not a safe relative path"},
		{"dot_path", with(entry{name: "./rules/a.yaml", data: "x"}), "not a safe relative path"},
		{"backslash", with(entry{name: `rules\a.yaml`, data: "x"}), "not a safe relative path"},
		{"symlink", with(entry{name: "rules/link.yaml", typ: tar.TypeSymlink}), "not a regular file"},
		{"hard_link", with(entry{name: "rules/link.yaml", typ: tar.TypeLink}), "not a regular file"},
		{"directory", with(entry{name: "rules", typ: tar.TypeDir}), "not a regular file"},
		{"fifo", with(entry{name: "rules/fifo.yaml", typ: tar.TypeFifo}), "not a regular file"},
		{"duplicate", with(es[1]), "appears twice"},
		{"file_too_large", with(entry{name: "rules/big.yaml", data: strings.Repeat("#", fileSize+1)}), "more than the 4096"},
		{"too_many_files", archive(t, many), "more than 20 files"},
		// A gzip bomb: a small archive whose files inflate past the total
		// bound is refused before it is all inflated.
		{"gzip_bomb", archive(t, []entry{{name: "rules/a.yaml", data: strings.Repeat("a", fileSize)}, {name: "rules/b.yaml", data: strings.Repeat("a", fileSize)},
			{name: "rules/c.yaml", data: strings.Repeat("a", fileSize)}, {name: "rules/d.yaml", data: strings.Repeat("a", fileSize)},
			{name: "rules/e.yaml", data: "a"}}), "more than 16384 bytes"},
		{"manifest_unknown_field", archive(t, append([]entry{{name: bundle.ManifestFile, data: strings.Replace(es[0].data, `"revision"`, `"trust": true, "revision"`, 1)}}, es[1:]...)), "unknown field"},
		{"manifest_path_outside_layout", archive(t, append([]entry{{name: bundle.ManifestFile, data: strings.Replace(es[0].data, `"rules/a.yaml"`, `"etc/a.yaml"`, 1)}}, es[1:]...)), "rules/NAME.yaml"},
		{"signatures_not_ed25519", with(entry{name: bundle.SignaturesFile, data: `{"signatures":[{"keyid":"0123456789abcdef","algorithm":"rsa","signature":"AA=="}]}`}), "ed25519"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bundle.OpenWithLimits(tc.data, fileSize, totalSize, files)
			if !errors.Is(err, bundle.ErrMalformed) {
				t.Fatalf("Open: %v, want ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
		})
	}
	if _, err := bundle.OpenWithLimits(good, fileSize, totalSize, files); err != nil {
		t.Errorf("the good bundle within the small bounds: %v", err)
	}
}

// The real bounds are the documented ones, and the per-file bound is the
// one rule files have.
func TestBoundsAreTheDocumentedOnes(t *testing.T) {
	if bundle.MaxSize != 64<<20 || bundle.MaxFileSize != rules.DefaultMaxFileSize || bundle.MaxTotalSize != 256<<20 || bundle.MaxFiles != 1024 {
		t.Errorf("bounds %d, %d, %d, %d; the README says 64 MiB, 64 MiB, 256 MiB, 1024 files",
			bundle.MaxSize, bundle.MaxFileSize, bundle.MaxTotalSize, bundle.MaxFiles)
	}
}

func TestOpenRefusesAnArchiveOverMaxSize(t *testing.T) {
	if _, err := bundle.Open(make([]byte, bundle.MaxSize+1)); !errors.Is(err, bundle.ErrMalformed) {
		t.Errorf("Open: %v, want ErrMalformed", err)
	}
}

func TestBuildRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*bundle.Input)
		says string
	}{
		{"no_rules", func(in *bundle.Input) { in.Rules = nil }, "no rule files"},
		{"two_files_one_name", func(in *bundle.Input) {
			in.Rules = append(in.Rules, rules.Source{Name: "/elsewhere/a.yaml", Data: []byte(ruleA)})
		}, "would both be rules/a.yaml"},
		{"hidden_file", func(in *bundle.Input) { in.Rules[0].Name = "/src/.a.yaml" }, "rules/NAME.yaml"},
		{"not_yaml", func(in *bundle.Input) { in.Cases[0].Name = "cases.json" }, "YAML"},
		{"revision_with_space", func(in *bundle.Input) { in.Revision = "a b" }, "no spaces"},
		{"no_revision", func(in *bundle.Input) { in.Revision = "" }, "no revision"},
		{"expires_before_created", func(in *bundle.Input) { in.Expires = in.Created.Add(-time.Second) }, "not after created"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := input("1", t0)
			tc.mod(&in)
			_, err := bundle.Build(in)
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("Build: %v, want an error saying %q", err, tc.says)
			}
		})
	}
}

func TestCompareAndCheckNewer(t *testing.T) {
	verified := func(rev string, created time.Time) *bundle.Verified {
		v, err := open(t, build(t, input(rev, created))).Verify(bundle.VerifyOptions{Now: created})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	active := verified("10", t0)
	for _, tc := range []struct {
		name  string
		cand  *bundle.Verified
		newer bool
	}{
		{"created_later", verified("9", t0.Add(time.Second)), true},
		{"created_earlier", verified("11", t0.Add(-time.Second)), false},
		{"same_time_higher_number", verified("9", t0), false}, // 9 < 10 numerically
		{"same_time_higher_revision", verified("11", t0), true},
		{"same_time_text_revision", verified("abc", t0), true},
		{"the_same_bundle", verified("10", t0), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := bundle.CheckNewer(tc.cand, active)
			if tc.newer && err != nil {
				t.Errorf("CheckNewer: %v, want nil", err)
			}
			if !tc.newer && !errors.Is(err, bundle.ErrNotNewer) {
				t.Errorf("CheckNewer: %v, want ErrNotNewer", err)
			}
		})
	}
	if err := bundle.CheckNewer(active, nil); err != nil {
		t.Errorf("CheckNewer with no active bundle: %v", err)
	}
}

func TestParseKeys(t *testing.T) {
	privPEM, pubPEM, err := bundle.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	_, pub2PEM, _ := bundle.GenerateKey()
	keys, err := bundle.ParsePublicKeys(append(append([]byte(nil), pubPEM...), pub2PEM...))
	if err != nil || len(keys) != 2 {
		t.Errorf("two keys in one file: %d keys, %v", len(keys), err)
	}
	if _, err := bundle.ParsePublicKeys(privPEM); err == nil || !strings.Contains(err.Error(), "private key does not belong") {
		t.Errorf("a private key as a public key: %v", err)
	}
	if _, err := bundle.ParsePrivateKey(pubPEM); err == nil {
		t.Error("a public key parsed as a private key")
	}
	if _, err := bundle.ParsePublicKeys([]byte("not pem")); err == nil {
		t.Error("garbage parsed as a public key")
	}
	// The form openssl writes (genpkey -algorithm ed25519; pkey -pubout).
	const opensslPub = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n"
	if keys, err := bundle.ParsePublicKeys([]byte(opensslPub)); err != nil || len(keys) != 1 || len(bundle.KeyID(keys[0])) != 16 {
		t.Errorf("openssl's public key: %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(mustBuild(f, input("1", t0)))
	f.Add([]byte{0x1f, 0x8b})
	f.Add([]byte("apiVersion: egress-authz/v1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := bundle.Open(data)
		if err != nil {
			if !errors.Is(err, bundle.ErrMalformed) {
				t.Fatalf("Open error %v is not ErrMalformed", err)
			}
			return
		}
		// Whatever Open accepts, Verify decides on without panicking.
		_, _ = b.Verify(bundle.VerifyOptions{Now: t0})
	})
}

func mustBuild(tb testing.TB, in bundle.Input) []byte {
	data, err := bundle.Build(in)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}
