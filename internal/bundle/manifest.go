package bundle

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
)

// maxRevision is the longest revision a manifest may name.
const maxRevision = 128

// maxSignatures is the most signatures a bundle may carry: two during a key
// rotation, a few more for a second signer.
const maxSignatures = 16

// encodeManifest is the one encoding of a manifest, indented for people
// who open the bundle. The signatures sign these bytes as they are stored,
// so no canonical form has to be agreed on: a verifier never re-encodes.
func encodeManifest(m *Manifest) ([]byte, error) {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// decodeStrict decodes exactly one JSON value into v, refusing unknown
// fields and anything after the value.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON value")
	}
	return nil
}

// parseManifest decodes and checks a manifest.
func parseManifest(data []byte, m *Manifest) error {
	if err := decodeStrict(data, m); err != nil {
		return err
	}
	return m.check()
}

func (m *Manifest) check() error {
	switch {
	case m.APIVersion != apiVersion || m.Kind != kind:
		return fmt.Errorf("apiVersion %q, kind %q: want %s, %s", m.APIVersion, m.Kind, apiVersion, kind)
	case m.Revision == "":
		return errors.New("no revision")
	case len(m.Revision) > maxRevision || strings.IndexFunc(m.Revision, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) >= 0:
		return fmt.Errorf("revision %q: at most %d printable characters, no spaces", truncate(m.Revision), maxRevision)
	case m.Created.IsZero() || m.Expires.IsZero():
		return errors.New("created and expires are required")
	case !m.Expires.After(m.Created):
		return fmt.Errorf("expires %s is not after created %s", m.Expires, m.Created)
	case !isHex(m.RuleSet, 16):
		return fmt.Errorf("ruleset %q: want the rule set's 16-hex-digit version", truncate(m.RuleSet))
	}
	seen := map[string]bool{}
	nrules := 0
	for _, f := range m.Files {
		if err := layoutPath(f.Path); err != nil {
			return err
		}
		if seen[f.Path] {
			return fmt.Errorf("%q listed twice", f.Path)
		}
		seen[f.Path] = true
		if f.Size < 0 || f.Size > MaxFileSize {
			return fmt.Errorf("%s: size %d out of bounds", f.Path, f.Size)
		}
		if !isHex(f.SHA256, 64) {
			return fmt.Errorf("%s: sha256 %q is not 64 lower-case hex digits", f.Path, truncate(f.SHA256))
		}
		if strings.HasPrefix(f.Path, rulesDir) {
			nrules++
		}
	}
	if nrules == 0 {
		return errors.New("no rule files")
	}
	if len(m.Files) > MaxFiles {
		return fmt.Errorf("more than %d files", MaxFiles)
	}
	return nil
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// truncate shortens what a malformed manifest says before it is quoted in
// an error.
func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// Signature is one signature a bundle carries.
type Signature struct {
	// KeyID names the key that made it (see KeyID).
	KeyID string `json:"keyid"`
	// Algorithm is always "ed25519".
	Algorithm string `json:"algorithm"`
	// Signature is the Ed25519 signature of signedMessage(manifest).
	Signature []byte `json:"signature"`
}

type signaturesDoc struct {
	Signatures []Signature `json:"signatures"`
}

func parseSignatures(data []byte) ([]Signature, error) {
	var doc signaturesDoc
	if err := decodeStrict(data, &doc); err != nil {
		return nil, err
	}
	if len(doc.Signatures) > maxSignatures {
		return nil, fmt.Errorf("more than %d signatures", maxSignatures)
	}
	for _, s := range doc.Signatures {
		if s.Algorithm != "ed25519" || !isHex(s.KeyID, 16) || len(s.Signature) != 64 {
			return nil, fmt.Errorf("signature by %q: want algorithm ed25519, a 16-hex-digit keyid and 64 bytes", truncate(s.KeyID))
		}
	}
	return doc.Signatures, nil
}

func encodeSignatures(sigs []Signature) ([]byte, error) {
	data, err := json.MarshalIndent(signaturesDoc{Signatures: sigs}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}
