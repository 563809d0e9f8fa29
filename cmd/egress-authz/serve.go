package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/term"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/internal/admin"
	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/stores"
	"github.com/egress-authz/egress-authz/internal/config"
	"github.com/egress-authz/egress-authz/internal/spiffetls"
	"github.com/egress-authz/egress-authz/internal/telemetry"
	"github.com/egress-authz/egress-authz/rules"
)

func serveCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: egress-authz serve --rules PATH|https://...|oci://... [flags]\n\nServes Envoy's ext_authz gRPC API (envoy.service.auth.v3.Authorization/Check) and, with\n--http-addr, HTTP authorization: Envoy's HTTP ext_authz at /ext-authz, forward-auth\n(Traefik, Caddy) at /forward-auth, NGINX auth_request at /auth-request.\n\nFlags:")
		fs.PrintDefaults()
	}
	cfg, err := config.FromArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz serve:", err)
		return exitUsage
	}
	log := newLogger(cfg.LogFormat, stderr)
	srv, err := newServer(cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz serve:", err)
		return exitFail
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if err := srv.run(ctx, hup); err != nil {
		log.Error("server stopped", "error", err.Error())
		return exitFail
	}
	return exitOK
}

func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, nil))
	}
	return slog.New(slog.NewJSONHandler(w, nil))
}

// server is one running egress-authz: the pieces serve wires together.
type server struct {
	cfg      config.Config
	log      *slog.Logger
	live     *rules.Live
	reloader *rules.Reloader
	grpc     *grpc.Server
	health   *health.Server
	admin    *http.Server
	grpcLn   net.Listener
	resets   *resetGuard // the gRPC listener's (rapidreset.go)
	adminLn  net.Listener
	httpSrv  *http.Server // nil without --http-addr (httpauthz.go)
	httpLn   net.Listener
	closers  []func(context.Context) error // run in order at shutdown, after gRPC stopped

	auditWriter *audit.Writer   // nil with --audit none
	archive     *audit.Archiver // the rule-set archive; nil with --audit none
	store       audit.Store     // the first queryable decision log, opened apart from its sink, for /v1/decisions
	storeSink   string          // the name (audit.Sink.Name) of the sink that writes store, for /v1/verify
	metrics     *telemetry.Metrics
	tls         *spiffetls.Source // nil with --plaintext
}

// newServer loads the rules and opens the listeners. An invalid rule set
// stops start-up here, with every error's file:line:col.
func newServer(cfg config.Config, log *slog.Logger) (*server, error) {
	s := &server{cfg: cfg, log: log, metrics: telemetry.NewMetrics()}
	reloaded := func(err error) {
		s.metrics.Reloaded(err)
		if err == nil {
			debug.FreeOSMemory()
		}
	}
	if cfg.RulesFromBundle() {
		remote, first, table, err := openRemote(cfg, log)
		if err != nil {
			return nil, fmt.Errorf("load rules: %w", err)
		}
		s.live = rules.NewLive(table, rules.LiveOptions{CacheSize: cfg.CacheSize})
		s.reloader = rules.NewFetchReloader(cfg.Rules, remote, first, s.live,
			rules.ReloaderOptions{Logger: log, Poll: cfg.RulesPoll, OnReload: reloaded, BeforeSwap: s.keepRuleSet})
	} else {
		rd := rules.Reader{MaxFileSize: int64(cfg.RulesMaxFileSize), Warn: func(d rules.Diagnostic) {
			log.Warn("rule directory entry skipped", "file", d.Pos.File, "reason", d.Msg)
		}}
		set, err := rd.Load(context.Background(), cfg.Rules)
		if err != nil {
			return nil, fmt.Errorf("load rules: %w", err)
		}
		table, err := rules.Compile(set)
		if err != nil {
			return nil, fmt.Errorf("load rules: %w", err)
		}
		s.live = rules.NewLive(table, rules.LiveOptions{CacheSize: cfg.CacheSize})
		s.reloader = rules.NewReloader(cfg.Rules, s.live, rules.ReloaderOptions{Logger: log, Reader: rd, OnReload: reloaded, BeforeSwap: s.keepRuleSet})
	}
	// Parsing a large rule set leaves hundreds of MB of garbage (the YAML
	// node tree); give it back to the OS now rather than when the
	// scavenger gets to it, so resident memory reflects the live set.
	debug.FreeOSMemory()
	s.metrics.WatchRules(s.reloader.Status)

	rec, err := s.openAudit()
	if err != nil {
		return nil, err
	}
	if s.auditWriter != nil {
		s.metrics.WatchAudit(s.auditWriter.Stats)
	}
	creds, err := s.transportCredentials()
	if err != nil {
		s.close(context.Background())
		return nil, err
	}
	if s.tls != nil {
		s.metrics.WatchServingCertificate(s.tls.CertificateExpiry)
	} else {
		s.metrics.WatchServingCertificate(nil)
	}
	opts := []grpc.ServerOption{
		authz.ServerCodec(),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(uint32(cfg.MaxStreams)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// Checks run on a pool of long-lived goroutines instead of one new
		// goroutine per stream, whose stack grew (and was copied) on every
		// Check: 9 % of the server's CPU under load.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	}
	s.resets = newResetGuard(s.log)
	opts = append(opts, grpc.ChainUnaryInterceptor(s.resets.intercept, deadline(cfg.CheckTimeout)))
	if creds != nil {
		opts = append(opts, creds)
	}
	var tracer trace.Tracer
	if telemetry.TracingEnabled(os.Getenv) {
		var shutdown func(context.Context) error
		if tracer, shutdown, err = telemetry.NewTracer(context.Background(), version); err != nil {
			s.close(context.Background())
			return nil, err
		}
		s.closers = append(s.closers, shutdown)
		log.Info("tracing: a span per Check, exported by OTLP")
	}
	s.grpc = grpc.NewServer(opts...)
	az := authz.NewServer(s.live, authz.Options{
		TrustXFCC: cfg.TrustXFCC,
		Recorder:  rec,
		KeepQuery: cfg.AuditKeepQuery,
		Cluster:   cfg.Cluster,
		Logger:    log,
		Observer:  s.metrics,
		Tracer:    tracer,
	})
	az.Register(s.grpc)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)

	extras := s.adminExtras()
	extras["GET /metrics"] = s.metrics.Handler()
	if cfg.Pprof {
		extras["/debug/pprof/"] = http.HandlerFunc(pprof.Index)
		extras["/debug/pprof/profile"] = http.HandlerFunc(pprof.Profile)
	}
	handler, adminTLS, err := s.adminGuard(admin.Handler(admin.Options{Rules: s.reloader.Status, Extra: extras}))
	if err != nil {
		s.close(context.Background())
		return nil, err
	}
	s.admin = &http.Server{
		Handler:           handler,
		TLSConfig:         adminTLS,
		ReadHeaderTimeout: 10 * time.Second,
		// Probes open a connection every few seconds; an idle one is
		// closed, so that keep-alive connections cannot pile up.
		IdleTimeout: 2 * time.Minute,
	}
	if s.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr); err == nil {
		s.grpcLn = s.resets.wrap(s.grpcLn)
	}
	if err != nil {
		s.close(context.Background())
		return nil, fmt.Errorf("--grpc-addr: %w", err)
	}
	if s.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
		s.grpcLn.Close()
		s.close(context.Background())
		return nil, fmt.Errorf("--admin-addr: %w", err)
	}
	if adminTLS != nil {
		s.adminLn = tls.NewListener(s.adminLn, adminTLS)
	}
	if err := s.listenHTTP(az); err != nil {
		s.grpcLn.Close()
		s.adminLn.Close()
		s.close(context.Background())
		return nil, err
	}
	return s, nil
}

// run serves until ctx is done, then shuts down gracefully: the health
// service turns NOT_SERVING, new calls are refused, in-flight Checks finish
// (for at most ShutdownGrace), and the decision log is drained.
func (s *server) run(ctx context.Context, hup <-chan os.Signal) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
	go func() { errc <- s.grpc.Serve(s.grpcLn) }()
	s.serveHTTP(errc)
	go func() {
		if err := s.admin.Serve(s.adminLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	go func() {
		if err := s.reloader.Run(ctx); err != nil {
			s.log.Error("rule watch stopped; SIGHUP still reloads", "error", err.Error())
		}
	}()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	// The log line names the sinks as metrics do, without credentials.
	logged := s.cfg
	logged.Audit = nil
	for _, dsn := range s.cfg.Audit {
		logged.Audit = append(logged.Audit, stores.Key(dsn))
	}
	s.log.Info("serving", "grpc_addr", s.grpcLn.Addr().String(), "admin_addr", s.adminLn.Addr().String(), "http_addr", s.httpAddr(),
		"rules_version", s.live.Table().Version(), "rules", len(s.live.Table().Set().Rules), "config", logged.String())

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-hup:
			// Reload logs a new failure itself; an unchanged invalid set
			// is not reported again, so say here that it still stands.
			if _, err := s.reloader.Reload(); err == nil {
				if st := s.reloader.Status(); st.LastError != "" {
					s.log.Warn("SIGHUP: the rule files are still invalid; serving the last good set",
						"version", st.Version, "error", st.LastError)
				} else {
					s.log.Info("SIGHUP: rules checked", "version", st.Version)
				}
			}
		case err := <-errc:
			runErr = err
			break loop
		}
	}
	s.log.Info("shutting down")
	s.health.Shutdown()
	graceCtx, graceDone := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	httpStopped := make(chan struct{})
	go func() { s.stopHTTP(graceCtx); close(httpStopped) }()
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(s.cfg.ShutdownGrace):
		s.log.Warn("shutdown grace period over; closing remaining connections")
		s.grpc.Stop()
		<-stopped
	}
	<-httpStopped
	graceDone()
	shutCtx, done := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer done()
	_ = s.admin.Shutdown(shutCtx)
	if err := s.close(shutCtx); err != nil && runErr == nil {
		runErr = err
	}
	s.log.Info("stopped")
	return runErr
}

func (s *server) close(ctx context.Context) error {
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c(ctx))
	}
	s.closers = nil
	return errors.Join(errs...)
}

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

// deadline gives every call a deadline when the caller sent none, so that
// nothing (a full decision log with --audit-overflow block, say) holds a
// Check forever.
func deadline(d time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return handler(ctx, req)
	}
}
