package pull

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/egress-authz/egress-authz/internal/bundle"
)

// httpsSource downloads a bundle from a URL, conditionally: with the last
// ETag in If-None-Match, an unchanged bundle costs a 304 and no body.
type httpsSource struct {
	url       string
	client    *http.Client
	userAgent string
}

func newHTTPS(ref string, client *http.Client, userAgent string) (*httpsSource, error) {
	u, err := url.Parse(ref)
	if err != nil {
		return nil, err
	}
	if u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("want https://HOST/PATH, without user information")
	}
	return &httpsSource{url: u.String(), client: client, userAgent: userAgent}, nil
}

func (s *httpsSource) at(string) string { return s.url }

func (s *httpsSource) get(ctx context.Context, etag string) ([]byte, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("User-Agent", s.userAgent)
	req.Header.Set("Accept", bundle.MediaType+", application/gzip;q=0.9, */*;q=0.1")
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && etag != "":
		return nil, etag, nil
	case resp.StatusCode != http.StatusOK:
		return nil, "", fmt.Errorf("GET: %s", resp.Status)
	case resp.ContentLength > bundle.MaxSize:
		return nil, "", fmt.Errorf("GET: %d bytes, more than the %d MiB a bundle may hold", resp.ContentLength, bundle.MaxSize>>20)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, bundle.MaxSize+1))
	if err != nil {
		return nil, "", fmt.Errorf("GET: %w", err)
	}
	if len(data) > bundle.MaxSize {
		return nil, "", fmt.Errorf("GET: more than the %d MiB a bundle may hold", bundle.MaxSize>>20)
	}
	return data, resp.Header.Get("ETag"), nil
}
