package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"github.com/egress-authz/egress-authz/rules"
)

// Input is what Build puts into a bundle.
type Input struct {
	// Rules are the rule files, as rules.Reader read them. They are
	// stored under their base names, so a directory's set keeps the
	// version (rules.Version) it has on disk.
	Rules []rules.Source
	// Cases are the test-case files the rules passed; may be empty.
	Cases []rules.Source
	// Revision names the bundle (a build number, a commit).
	Revision string
	// Created and Expires bound the bundle's life, to the second.
	Created, Expires time.Time
}

// Build makes an unsigned bundle of in. It checks the layout (file names,
// sizes, the revision) but not the rules: the caller parses and tests
// them first, as "rules bundle build" does.
func Build(in Input) ([]byte, error) {
	m := Manifest{
		APIVersion: apiVersion, Kind: kind, Revision: in.Revision,
		Created: in.Created.UTC().Truncate(time.Second),
		Expires: in.Expires.UTC().Truncate(time.Second),
	}
	rulesSrcs, err := entries(rulesDir, in.Rules)
	if err != nil {
		return nil, err
	}
	caseSrcs, err := entries(casesDir, in.Cases)
	if err != nil {
		return nil, err
	}
	if len(rulesSrcs) == 0 {
		return nil, errors.New("build bundle: no rule files")
	}
	m.RuleSet = rules.Version(rulesSrcs...)
	files := append(rulesSrcs, caseSrcs...)
	for _, f := range files {
		sum := sha256.Sum256(f.Data)
		m.Files = append(m.Files, File{Path: f.Name, Size: int64(len(f.Data)), SHA256: hex.EncodeToString(sum[:])})
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("build bundle: %w", err)
	}
	manifest, err := encodeManifest(&m)
	if err != nil {
		return nil, fmt.Errorf("build bundle: %w", err)
	}
	return writeArchive(m.Created, manifest, nil, files)
}

// entries names srcs as a bundle stores them, dir + base name, sorted by
// name: the order rules.Reader reads a directory in.
func entries(dir string, srcs []rules.Source) ([]rules.Source, error) {
	out := make([]rules.Source, 0, len(srcs))
	seen := map[string]string{}
	for _, s := range srcs {
		name := dir + filepath.Base(s.Name)
		if err := layoutPath(name); err != nil {
			return nil, fmt.Errorf("build bundle: %s: %w", s.Name, err)
		}
		if other, ok := seen[name]; ok {
			return nil, fmt.Errorf("build bundle: %s and %s would both be %s", other, s.Name, name)
		}
		seen[name] = s.Name
		out = append(out, rules.Source{Name: name, Data: s.Data})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// writeArchive writes a bundle's archive: the manifest first, then the
// signatures (when sigs is not nil), then the files in the manifest's
// order. The bytes depend only on the content: every entry has the
// manifest's created time, mode 0644 and no owner, and the gzip header
// has no name or time, so two builds of the same input are identical.
func writeArchive(created time.Time, manifest, sigs []byte, files []rules.Source) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	add := func(name string, data []byte) error {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(data)), Mode: 0o644, ModTime: created}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add(ManifestFile, manifest); err != nil {
		return nil, fmt.Errorf("write bundle: %w", err)
	}
	if sigs != nil {
		if err := add(SignaturesFile, sigs); err != nil {
			return nil, fmt.Errorf("write bundle: %w", err)
		}
	}
	for _, f := range files {
		if err := add(f.Name, f.Data); err != nil {
			return nil, fmt.Errorf("write bundle: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("write bundle: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("write bundle: %w", err)
	}
	if buf.Len() > MaxSize {
		return nil, fmt.Errorf("write bundle: %d bytes, more than the %d MiB a bundle may hold", buf.Len(), MaxSize>>20)
	}
	return buf.Bytes(), nil
}
