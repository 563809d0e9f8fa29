package main

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/egress-authz/egress-authz/internal/spiffetls"
)

// transportCredentials returns the gRPC server's transport security, or nil
// for --plaintext. The identity source also serves the admin listener when
// --admin-mtls is set.
func (s *server) transportCredentials() (grpc.ServerOption, error) {
	if s.cfg.Plaintext {
		if len(s.cfg.AllowedClients) > 0 {
			return nil, errors.New("--allowed-clients needs mTLS: it cannot be enforced with --plaintext")
		}
		s.log.Warn("gRPC served without TLS (--plaintext): for local runs and tests only")
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, err := spiffetls.Open(ctx, spiffetls.Options{
		CertFile: s.cfg.TLSCert, KeyFile: s.cfg.TLSKey, CAFile: s.cfg.TLSCA,
		SocketAddr:     s.cfg.SPIFFESocket,
		AllowedClients: s.cfg.AllowedClients,
		OnRefused:      s.metrics.Refused,
	})
	if err != nil {
		return nil, err
	}
	if len(s.cfg.AllowedClients) == 0 {
		s.log.Warn("no --allowed-clients: any caller with an SVID from the trust bundle may call Check")
	}
	s.tls = src
	s.closers = append(s.closers, func(context.Context) error { return src.Close() })
	return grpc.Creds(credentials.NewTLS(src.ServerConfig())), nil
}

// isLoopback reports whether a listen address only accepts local
// connections.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// adminGuard protects the admin listener. On loopback it is open. On any
// other address it requires a bearer token (--admin-token-file) or a client
// certificate (--admin-mtls), and start-up fails when neither is set:
// /v1/decisions holds personal data. /healthz and /readyz stay open for
// the kubelet's probes, and so does the static /ui/ page, whose data
// requests carry the token or the browser's certificate; none of them
// reveal anything. With both set, a request needs both.
func (s *server) adminGuard(h http.Handler) (http.Handler, *tls.Config, error) {
	if isLoopback(s.cfg.AdminAddr) && s.cfg.AdminTokenFile == "" && !s.cfg.AdminMTLS {
		return h, nil, nil
	}
	var tlsCfg *tls.Config
	if s.cfg.AdminMTLS {
		if s.tls == nil {
			return nil, nil, errors.New("--admin-mtls needs the gRPC mTLS identity (--tls-* or --spiffe-socket)")
		}
		tlsCfg = optionalClientCert(s.tls.ServerConfig())
		h = requireClientCert(h)
	}
	if s.cfg.AdminTokenFile == "" {
		if tlsCfg == nil {
			return nil, nil, fmt.Errorf("--admin-addr %s is not loopback: refusing to serve decisions and metrics there without --admin-token-file or --admin-mtls", s.cfg.AdminAddr)
		}
		return h, tlsCfg, nil
	}
	b, err := os.ReadFile(s.cfg.AdminTokenFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--admin-token-file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if len(token) < 16 {
		return nil, nil, errors.New("--admin-token-file: the token must be at least 16 characters")
	}
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if openAdminPath(r.URL.Path) {
			h.ServeHTTP(w, r)
			return
		}
		// The scheme is case-insensitive (RFC 9110 section 11.1).
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="egress-authz"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}), tlsCfg, nil
}

// openAdminPath reports whether path is served without credentials: the
// kubelet's probes and the static files of the auditors' console (a
// browser loads its scripts with no token; they hold no data).
func openAdminPath(path string) bool {
	return path == "/healthz" || path == "/readyz" || strings.HasPrefix(path, "/ui/")
}

// optionalClientCert returns the admin listener's TLS configuration: the
// gRPC server's, except that a client certificate is asked for rather than
// required, so that the kubelet's probes (which present none) complete the
// handshake. A certificate that is presented is verified as gRPC callers'
// are (an SVID of the bundle, on --allowed-clients), and refused at the
// handshake otherwise; requireClientCert then turns away requests without
// one.
func optionalClientCert(grpcCfg *tls.Config) *tls.Config {
	cfg := grpcCfg.Clone()
	cfg.ClientAuth = tls.RequestClientCert
	verify := grpcCfg.VerifyPeerCertificate
	cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return nil
		}
		return verify(raw, chains)
	}
	return cfg
}

// requireClientCert refuses requests whose connection presented no
// (verified) client certificate, except on the open paths.
func requireClientCert(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !openAdminPath(r.URL.Path) && (r.TLS == nil || len(r.TLS.PeerCertificates) == 0) {
			http.Error(w, "a client certificate is required", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
