package bundle

import (
	"cmp"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/rules"
)

// maxClockSkew is how far in the future a bundle's created time may be.
// Further, the building machine's clock is wrong, and accepting the bundle
// would make every later bundle look older (see Compare) until then.
const maxClockSkew = 10 * time.Minute

// Verified is a bundle Verify accepted: its files are exactly those of its
// manifest, and a configured key signed that manifest.
type Verified struct {
	Manifest Manifest
	// Digest identifies the bundle (Bundle.Digest).
	Digest string
	// SignedBy holds the ids of the configured keys whose signature
	// verified; empty when Verify was given no key.
	SignedBy []string
	// Rules are the rule files (rules/NAME) in the manifest's order,
	// ready for rules.Parse; Cases the test-case files (cases/NAME).
	Rules []rules.Source
	Cases []rules.Source
}

// Verify checks that b may be trusted, in the order trust flows: a
// signature by one of opts.Keys over the manifest (with no keys, none is
// checked), then every file against the manifest (none missing, none
// extra, every size and SHA-256 right), then the manifest's rule-set
// version against the files, then expiry. The error wraps ErrUnsigned,
// ErrBadSignature, ErrMissingFile, ErrExtraFile, ErrTampered, ErrExpired
// or ErrMalformed; every file problem is reported.
func (b *Bundle) Verify(opts VerifyOptions) (*Verified, error) {
	m := &b.Manifest
	v := &Verified{Manifest: *m, Digest: b.Digest()}
	if len(opts.Keys) > 0 {
		if len(b.signatures) == 0 {
			return nil, fmt.Errorf("%w (revision %s)", ErrUnsigned, m.Revision)
		}
		msg := signedMessage(b.manifest)
		configured := make([]string, 0, len(opts.Keys))
		failed := false
		for _, k := range opts.Keys {
			id := KeyID(k)
			configured = append(configured, id)
			for _, s := range b.signatures {
				if s.KeyID != id {
					continue
				}
				if ed25519.Verify(k, msg, s.Signature) {
					v.SignedBy = append(v.SignedBy, id)
				} else {
					failed = true
				}
			}
		}
		if len(v.SignedBy) == 0 {
			var by []string
			for _, s := range b.signatures {
				by = append(by, s.KeyID)
			}
			if failed {
				return nil, fmt.Errorf("%w: the signature by key %s does not verify: the manifest was changed after signing (revision %s)",
					ErrBadSignature, strings.Join(by, ", "), m.Revision)
			}
			return nil, fmt.Errorf("%w: signed by key %s, none of the configured keys (%s) (revision %s)",
				ErrBadSignature, strings.Join(by, ", "), strings.Join(configured, ", "), m.Revision)
		}
	}

	var errs []error
	listed := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		listed[f.Path] = true
		data, ok := b.files[f.Path]
		if !ok {
			errs = append(errs, fmt.Errorf("%w: %s", ErrMissingFile, f.Path))
			continue
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); int64(len(data)) != f.Size || got != f.SHA256 {
			errs = append(errs, fmt.Errorf("%w: %s: %d bytes with SHA-256 %s, the manifest says %d bytes with %s",
				ErrTampered, f.Path, len(data), got[:16], f.Size, f.SHA256[:16]))
			continue
		}
		src := rules.Source{Name: f.Path, Data: data}
		if strings.HasPrefix(f.Path, rulesDir) {
			v.Rules = append(v.Rules, src)
		} else {
			v.Cases = append(v.Cases, src)
		}
	}
	for _, name := range b.order {
		if !listed[name] {
			errs = append(errs, fmt.Errorf("%w: %s", ErrExtraFile, name))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if got := rules.Version(v.Rules...); got != m.RuleSet {
		return nil, fmt.Errorf("%w: the manifest's ruleset %s is not the files' version %s", ErrMalformed, m.RuleSet, got)
	}

	if !opts.IgnoreExpiry {
		now := opts.Now
		if now.IsZero() {
			now = time.Now()
		}
		if !now.Before(m.Expires) {
			return nil, fmt.Errorf("%w: revision %s expired at %s (%s ago); publish a new bundle",
				ErrExpired, m.Revision, m.Expires.Format(time.RFC3339), now.Sub(m.Expires).Round(time.Second))
		}
		if m.Created.After(now.Add(maxClockSkew)) {
			return nil, fmt.Errorf("%w: revision %s was created at %s, in the future: check the clock of the machine that built it, and this one's",
				ErrMalformed, m.Revision, m.Created.Format(time.RFC3339))
		}
	}
	return v, nil
}

// Compare orders bundles as they were published: by created time, then
// by revision (numerically when both are decimal numbers, else as text).
// It returns -1 when a is older than b, +1 when newer, 0 when neither is.
func Compare(a, b *Manifest) int {
	if c := a.Created.Compare(b.Created); c != 0 {
		return c
	}
	if isDecimal(a.Revision) && isDecimal(b.Revision) {
		x, y := strings.TrimLeft(a.Revision, "0"), strings.TrimLeft(b.Revision, "0")
		if c := cmp.Compare(len(x), len(y)); c != 0 {
			return c
		}
		return cmp.Compare(x, y)
	}
	return cmp.Compare(a.Revision, b.Revision)
}

func isDecimal(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// CheckNewer returns nil when v may replace active: it is the same bundle
// (the same digest), or a newer one (Compare). Otherwise the error wraps
// ErrNotNewer and names both revisions.
func CheckNewer(v, active *Verified) error {
	if active == nil || v.Digest == active.Digest || Compare(&v.Manifest, &active.Manifest) > 0 {
		return nil
	}
	return fmt.Errorf("%w: revision %s (created %s) is not newer than the active revision %s (created %s)",
		ErrNotNewer, v.Manifest.Revision, v.Manifest.Created.Format(time.RFC3339),
		active.Manifest.Revision, active.Manifest.Created.Format(time.RFC3339))
}
