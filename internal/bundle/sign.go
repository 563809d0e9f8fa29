package bundle

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/egress-authz/egress-authz/rules"
)

// signedPrefix is put before the manifest's bytes in what is signed, so
// that a signature over a bundle can never be taken for a signature over
// anything else made with the same key.
const signedPrefix = "egress-authz bundle manifest v1\x00"

func signedMessage(manifest []byte) []byte {
	return append([]byte(signedPrefix), manifest...)
}

// KeyID names a public key: the first 16 hex digits of the SHA-256 of its
// PKIX (SubjectPublicKeyInfo) encoding, the bytes of its PEM file.
func KeyID(pub ed25519.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "invalid-key"
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8])
}

// GenerateKey makes a new Ed25519 signing key, as PEM: the private key in
// PKCS #8 ("PRIVATE KEY"), the public key in PKIX ("PUBLIC KEY"), the
// forms "openssl genpkey -algorithm ed25519" and "openssl pkey -pubout"
// write.
func GenerateKey() (privPEM, pubPEM []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), nil
}

// ParsePrivateKey reads an Ed25519 private key in PEM (PKCS #8).
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM \"PRIVATE KEY\" (PKCS #8) block")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an Ed25519 key", key)
	}
	return priv, nil
}

// ParsePublicKeys reads the Ed25519 public keys in PEM ("PUBLIC KEY",
// PKIX) in data: one or more, so that a file can hold both keys of a
// rotation.
func ParsePublicKeys(data []byte) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("a PEM %q block: want \"PUBLIC KEY\" (a private key does not belong here)", block.Type)
		}
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		pub, ok := key.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("a %T, not an Ed25519 key", key)
		}
		keys = append(keys, pub)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM \"PUBLIC KEY\" block")
	}
	return keys, nil
}

// Sign returns b's archive with a signature by key added. A signature by
// the same key is replaced; others are kept, so that a bundle can carry
// the old key's and the new key's during a rotation. Only a bundle whose
// files match its manifest is signed: a signature vouches for the files.
func (b *Bundle) Sign(key ed25519.PrivateKey) ([]byte, error) {
	if _, err := b.Verify(VerifyOptions{IgnoreExpiry: true}); err != nil {
		return nil, fmt.Errorf("sign bundle: %w", err)
	}
	id := KeyID(key.Public().(ed25519.PublicKey))
	sigs := slices.DeleteFunc(b.Signatures(), func(s Signature) bool { return s.KeyID == id })
	sigs = append(sigs, Signature{KeyID: id, Algorithm: "ed25519", Signature: ed25519.Sign(key, signedMessage(b.manifest))})
	if len(sigs) > maxSignatures {
		return nil, fmt.Errorf("sign bundle: it carries %d signatures already", maxSignatures)
	}
	sigFile, err := encodeSignatures(sigs)
	if err != nil {
		return nil, fmt.Errorf("sign bundle: %w", err)
	}
	return writeArchive(b.Manifest.Created, b.manifest, sigFile, b.manifestFiles())
}

// manifestFiles returns the bundle's files in the manifest's order. Call
// only once the files are known to match the manifest.
func (b *Bundle) manifestFiles() []rules.Source {
	out := make([]rules.Source, 0, len(b.Manifest.Files))
	for _, f := range b.Manifest.Files {
		out = append(out, rules.Source{Name: f.Path, Data: b.files[f.Path]})
	}
	return out
}

// VerifyOptions says what Verify trusts.
type VerifyOptions struct {
	// Keys are the public keys a signature must verify with. When there
	// are any, a bundle must carry a signature by one of them; when there
	// are none, signatures are not checked (the files still must match
	// the manifest): only for offline tools told no key.
	Keys []ed25519.PublicKey
	// Now is the time expiry is judged at; zero means time.Now().
	Now time.Time
	// IgnoreExpiry accepts an expired bundle, for tools that look at old
	// ones. A server never sets it.
	IgnoreExpiry bool
}
