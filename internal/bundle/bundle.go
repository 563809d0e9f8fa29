// Package bundle is the signed rule bundle: one file that carries a rule
// set from the git repository where it is reviewed to every cluster that
// enforces it, and proves on arrival that it is what was approved.
//
// A bundle is a gzip-compressed tar archive of regular files:
//
//	manifest.json    what the bundle is: revision, created, expires, the
//	                 rule-set version, and every other file's size and SHA-256
//	signatures.json  Ed25519 signatures over manifest.json's bytes; absent
//	                 while the bundle is unsigned; one per signing key
//	rules/NAME.yaml  the rule files, as rules.Parse reads them
//	cases/NAME.yaml  the test cases they passed when the bundle was built
//
// The trust runs one way: a signature by a configured key makes the
// manifest authentic, and the manifest's hashes make every file authentic.
// Open reads an archive within bounds and trusts nothing; Verify checks the
// signatures, that the files are exactly those of the manifest, byte for
// byte, and that the bundle has not expired, and only then hands out the
// files (as a Verified). Compare orders two bundles so that a server can
// refuse an older one: a signed bundle stays valid until it expires, so an
// attacker who kept an old one could otherwise roll a fleet back to it.
package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/rules"
)

// Bounds on what Open reads. A bundle of 10,000 rules is about 200 KB
// compressed; these are far above any real rule set and far below what
// would run a server out of memory.
const (
	// MaxSize is the most bytes a bundle (the compressed archive) may hold.
	MaxSize = 64 << 20
	// MaxFileSize is the most bytes one file in a bundle may hold, the
	// same bound rules.Reader puts on a rule file.
	MaxFileSize = rules.DefaultMaxFileSize
	// MaxTotalSize bounds the files of a bundle together, uncompressed: a
	// small archive can inflate a thousandfold.
	MaxTotalSize = 256 << 20
	// MaxFiles is the most files a bundle may hold.
	MaxFiles = 1024
	// maxMetaSize bounds manifest.json and signatures.json.
	maxMetaSize = 1 << 20
)

// The names of the two files that describe a bundle, and of the folders of
// the files it carries.
const (
	ManifestFile   = "manifest.json"
	SignaturesFile = "signatures.json"
	rulesDir       = "rules/"
	casesDir       = "cases/"
)

// MediaType is the media type of a bundle: the one layer of its OCI
// artifact, and what an HTTPS server may call it.
const MediaType = "application/vnd.egress-authz.bundle.v1.tar+gzip"

// ArtifactType is the artifactType of a bundle's OCI manifest.
const ArtifactType = "application/vnd.egress-authz.bundle.v1"

// The ways a bundle is refused. Each error Open or Verify returns wraps
// one of them (errors.Is), with the details: which file, which keys,
// which revisions.
var (
	// ErrMalformed: not a bundle, or one that breaks a bound or the
	// layout (an unsafe path, a link, a duplicate, an invalid manifest).
	ErrMalformed = errors.New("malformed bundle")
	// ErrUnsigned: the bundle carries no signature and a public key is
	// configured. Never accepted as if no key were configured.
	ErrUnsigned = errors.New("unsigned bundle: a public key is configured, so a signature is required")
	// ErrBadSignature: no signature verifies with a configured key.
	ErrBadSignature = errors.New("bad signature")
	// ErrTampered: a file's size or SHA-256 is not the manifest's.
	ErrTampered = errors.New("file does not match the manifest")
	// ErrMissingFile: a file the manifest lists is not in the bundle.
	ErrMissingFile = errors.New("file in the manifest missing from the bundle")
	// ErrExtraFile: a file in the bundle is not in the manifest.
	ErrExtraFile = errors.New("file in the bundle not in the manifest")
	// ErrExpired: the bundle's expires time has passed.
	ErrExpired = errors.New("expired bundle")
	// ErrNotNewer: the bundle is not newer than the active one.
	ErrNotNewer = errors.New("bundle not newer than the active one: a rollback is refused")
)

// Bundle is a bundle as read by Open: within bounds and well formed, but
// not trusted. Verify tells whether it may be.
type Bundle struct {
	// Manifest is manifest.json as the bundle holds it, parsed. Nothing
	// in it is trusted before Verify.
	Manifest Manifest
	// manifest is manifest.json's bytes: what the signatures sign.
	manifest   []byte
	signatures []Signature
	hasSigFile bool
	// files are the other entries, by name, and their order in the archive.
	files map[string][]byte
	order []string
}

// Manifest says what a bundle is. It is stored as manifest.json, and its
// bytes are what a signature signs.
type Manifest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Revision names the bundle for people: a build number, a git commit.
	Revision string `json:"revision"`
	// Created and Expires bound the bundle's life; Created (then
	// Revision) orders bundles (see Compare).
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// RuleSet is the version (rules.Version) of the rule files: the one
	// every server serving the bundle reports and records in decisions.
	RuleSet string `json:"ruleset"`
	Files   []File `json:"files"`
}

// File is one file a manifest lists.
type File struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

const (
	apiVersion = "egress-authz/v1"
	kind       = "RuleBundle"
)

// Digest identifies a bundle: the SHA-256 of its manifest, in hex. Two
// bundles with the same digest carry the same files, byte for byte, and
// whatever their signatures, every cluster reports the same digest.
func (b *Bundle) Digest() string {
	sum := sha256.Sum256(b.manifest)
	return hex.EncodeToString(sum[:])
}

// Signatures returns the signatures the bundle carries, unverified.
func (b *Bundle) Signatures() []Signature { return append([]Signature(nil), b.signatures...) }

// Open reads a bundle within the bounds above. It checks the archive's
// shape: only regular files, at safe relative paths, each once, within
// the size and count bounds, with a valid manifest.json and (if present)
// signatures.json. It does not check signatures or hashes: Verify does.
func Open(data []byte) (*Bundle, error) {
	return open(data, defaultLimits)
}

// limits are Open's bounds; tests make them small.
type limits struct {
	size, fileSize, totalSize int64
	files                     int
}

var defaultLimits = limits{size: MaxSize, fileSize: MaxFileSize, totalSize: MaxTotalSize, files: MaxFiles}

func open(data []byte, lim limits) (*Bundle, error) {
	if int64(len(data)) > lim.size {
		return nil, fmt.Errorf("%w: %d bytes, more than the %s a bundle may hold", ErrMalformed, len(data), mib(lim.size))
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: not gzip-compressed: %v", ErrMalformed, err)
	}
	tr := tar.NewReader(zr)
	b := &Bundle{files: map[string][]byte{}}
	var total int64
	seen := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		name := hdr.Name
		if err := checkEntry(hdr); err != nil {
			return nil, fmt.Errorf("%w: %s", ErrMalformed, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: %q appears twice", ErrMalformed, name)
		}
		seen[name] = true
		if len(seen) > lim.files {
			return nil, fmt.Errorf("%w: more than %d files", ErrMalformed, lim.files)
		}
		limit := lim.fileSize
		if name == ManifestFile || name == SignaturesFile {
			limit = maxMetaSize
		}
		if hdr.Size > limit {
			return nil, fmt.Errorf("%w: %s: %d bytes, more than the %d a bundle file may hold", ErrMalformed, name, hdr.Size, limit)
		}
		if total += hdr.Size; total > lim.totalSize {
			return nil, fmt.Errorf("%w: its files hold more than %s", ErrMalformed, mib(lim.totalSize))
		}
		content := make([]byte, hdr.Size)
		if _, err := io.ReadFull(tr, content); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, name, err)
		}
		switch name {
		case ManifestFile:
			b.manifest = content
		case SignaturesFile:
			b.hasSigFile = true
			if b.signatures, err = parseSignatures(content); err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, name, err)
			}
		default:
			b.files[name] = content
			b.order = append(b.order, name)
		}
	}
	if b.manifest == nil {
		return nil, fmt.Errorf("%w: no %s", ErrMalformed, ManifestFile)
	}
	if err := parseManifest(b.manifest, &b.Manifest); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, ManifestFile, err)
	}
	return b, nil
}

// mib writes n bytes as "64 MiB", or as bytes when it is not whole MiB.
func mib(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// checkEntry refuses what a bundle never holds: anything but a regular
// file (a link could point anywhere once extracted, a device or a FIFO has
// no business here), and a name that is absolute, climbs with "..", has
// empty or "." elements, or a backslash.
func checkEntry(hdr *tar.Header) error {
	name := hdr.Name
	switch {
	case hdr.Typeflag != tar.TypeReg: // (the reader turns the old TypeRegA into TypeReg)
		return fmt.Errorf("%q is not a regular file (tar type %q)", name, hdr.Typeflag)
	case !fs.ValidPath(name) || name == "." || strings.ContainsAny(name, "\\\x00") || path.Clean(name) != name:
		return fmt.Errorf("%q is not a safe relative path", name)
	case hdr.Size < 0:
		return fmt.Errorf("%q has a negative size", name)
	}
	return nil
}

// layoutPath checks a file path as a manifest may list it: rules/NAME or
// cases/NAME, a YAML file directly in the folder, not hidden.
func layoutPath(p string) error {
	dir, name, ok := strings.Cut(p, "/")
	if !ok || (dir+"/" != rulesDir && dir+"/" != casesDir) {
		return fmt.Errorf("%q: a bundle's files are rules/NAME.yaml or cases/NAME.yaml", p)
	}
	if name == "" || strings.Contains(name, "/") || strings.HasPrefix(name, ".") || !fs.ValidPath(p) || strings.ContainsAny(p, "\\\x00") {
		return fmt.Errorf("%q: a bundle's files are rules/NAME.yaml or cases/NAME.yaml", p)
	}
	if ext := path.Ext(name); ext != ".yaml" && ext != ".yml" {
		return fmt.Errorf("%q: a bundle's files are YAML (.yaml or .yml)", p)
	}
	return nil
}
