package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/egress-authz/egress-authz/authz"
)

// listenHTTP opens the HTTP authorization listener (--http-addr), when
// asked for, serving az's front doors: the same decisions, decision log,
// metrics and traces as gRPC. It is secured as the gRPC listener is: the
// same identity source and --allowed-clients (only the proxy may ask),
// plaintext only with --plaintext.
func (s *server) listenHTTP(az *authz.Server) error {
	if s.cfg.HTTPAddr == "" {
		return nil
	}
	hopts := authz.HTTPOptions{ClientCertHeader: s.cfg.ClientCertHeader, OnCertRefused: s.metrics.ForwardedCertRefused}
	if s.cfg.ClientCertHeader != "" {
		src := s.tls
		if src == nil {
			return errors.New("--client-cert-header needs the trust bundle (--tls-* or --spiffe-socket)")
		}
		hopts.VerifyCert = func(chain []*x509.Certificate) (string, error) {
			id, err := src.VerifyX509SVID(chain)
			if err != nil {
				return "", err
			}
			return id.String(), nil
		}
	}
	h, err := az.HTTPHandler(hopts)
	if err != nil {
		return fmt.Errorf("--client-cert-header: %w", err)
	}
	s.httpSrv = &http.Server{
		Handler:           checkDeadline(h, s.cfg.CheckTimeout),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// As --max-recv-msg-size bounds a CheckRequest: a larger request
		// head is refused by the HTTP server (431) before anything is read
		// into a decision.
		MaxHeaderBytes: s.cfg.MaxRecvMsgSize,
		// Refused handshakes are counted (egress_authz_refused_clients_total);
		// net/http's own line for each would only be noise.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if s.tls != nil {
		cfg := s.tls.ServerConfig().Clone()
		cfg.NextProtos = []string{"h2", "http/1.1"}
		s.httpSrv.TLSConfig = cfg
	} else {
		s.log.Warn("HTTP authorization served without TLS (--plaintext): for local runs and tests only")
	}
	ln, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("--http-addr: %w", err)
	}
	if s.httpSrv.TLSConfig != nil {
		ln = tls.NewListener(ln, s.httpSrv.TLSConfig)
	}
	s.httpLn = ln
	return nil
}

// serveHTTP serves the HTTP authorization listener, if there is one,
// until stopHTTP; a failure is sent to errc.
func (s *server) serveHTTP(errc chan<- error) {
	if s.httpSrv == nil {
		return
	}
	go func() {
		if err := s.httpSrv.Serve(s.httpLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http authorization listener: %w", err)
		}
	}()
}

// stopHTTP stops accepting HTTP authorization requests and waits, until
// ctx is done, for those in flight; then it closes what is left.
func (s *server) stopHTTP(ctx context.Context) {
	if s.httpSrv == nil {
		return
	}
	if err := s.httpSrv.Shutdown(ctx); err != nil {
		s.log.Warn("shutdown grace period over; closing remaining HTTP authorization connections")
		_ = s.httpSrv.Close()
	}
}

// httpAddr is the HTTP authorization listener's address, or "" when off.
func (s *server) httpAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// checkDeadline gives every HTTP authorization request the deadline the
// gRPC interceptor gives a Check that came without one (see deadline).
func checkDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}
