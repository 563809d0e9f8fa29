package pull

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/egress-authz/egress-authz/internal/bundle"
)

// maxManifestSize bounds an OCI manifest: one layer's takes a few hundred
// bytes.
const maxManifestSize = 1 << 20

// ociSource pulls a bundle from an OCI registry: the tag's manifest, which
// must have exactly one layer of bundle.MediaType, and that layer. The
// manifest's digest is the change token: resolving the tag costs one HEAD
// request, and nothing is downloaded while the tag does not move. Every
// download is checked against its digest and size (content.FetchAll).
type ociSource struct {
	repo *remote.Repository
	ref  string // REGISTRY/REPOSITORY:TAG as given
	tag  string // the tag or digest
}

func newOCI(ref string, client *http.Client, userAgent string) (*ociSource, error) {
	repo, err := remote.NewRepository(ref)
	if err != nil {
		return nil, err
	}
	if repo.Reference.Reference == "" {
		return nil, fmt.Errorf("want oci://REGISTRY/REPOSITORY:TAG: no tag")
	}
	header := http.Header{}
	header.Set("User-Agent", userAgent)
	// Anonymous: the registry may still hand out a pull token for a public
	// repository, which auth.Client asks for.
	repo.Client = &auth.Client{Client: client, Header: header, Cache: auth.NewCache()}
	repo.MaxMetadataBytes = maxManifestSize
	return &ociSource{repo: repo, ref: ref, tag: repo.Reference.Reference}, nil
}

func (s *ociSource) at(token string) string {
	if token == "" {
		return "oci://" + s.ref
	}
	return "oci://" + s.ref + "@" + token
}

func (s *ociSource) get(ctx context.Context, token string) ([]byte, string, error) {
	desc, err := s.repo.Resolve(ctx, s.tag)
	if err != nil {
		return nil, "", err
	}
	digest := desc.Digest.String()
	if digest == token {
		return nil, token, nil
	}
	if desc.MediaType != ocispec.MediaTypeImageManifest {
		return nil, "", fmt.Errorf("%s: a %s, want an OCI image manifest with one layer", digest, desc.MediaType)
	}
	if desc.Size > maxManifestSize {
		return nil, "", fmt.Errorf("%s: a manifest of %d bytes", digest, desc.Size)
	}
	raw, err := content.FetchAll(ctx, s.repo, desc)
	if err != nil {
		return nil, "", fmt.Errorf("manifest %s: %w", digest, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, "", fmt.Errorf("manifest %s: %w", digest, err)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != bundle.MediaType {
		var types []string
		for _, l := range m.Layers {
			types = append(types, l.MediaType)
		}
		return nil, "", fmt.Errorf("manifest %s: layers %v, want exactly one of %s (oras push REF bundle.tar.gz:%s)",
			digest, types, bundle.MediaType, bundle.MediaType)
	}
	layer := m.Layers[0]
	if layer.Size > bundle.MaxSize || layer.Size < 0 {
		return nil, "", fmt.Errorf("layer %s: %d bytes, more than the %d MiB a bundle may hold", layer.Digest, layer.Size, bundle.MaxSize>>20)
	}
	data, err := content.FetchAll(ctx, s.repo.Blobs(), layer)
	if err != nil {
		return nil, "", fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	return data, digest, nil
}
