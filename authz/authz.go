// Package authz answers Envoy's ext_authz Check calls
// (envoy.service.auth.v3.Authorization) for the egress gateway.
//
// It is a translation layer and nothing more: a CheckRequest becomes a
// rules.Request, a rules.Decision becomes a CheckResponse and an
// audit.Record. Bad input is a deny with a reason, never a gRPC error; gRPC
// errors are kept for the server's own faults.
package authz

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/rules"
)

// Decider decides a request against the active rule set. rules.Live is the
// production implementation.
type Decider interface {
	Decide(req rules.Request) rules.Decision
	// Version is the active rule set's version, reported with decisions
	// made before the rules were consulted (invalid requests).
	Version() string
}

// Recorder takes decisions for the decision log. Record must not block for
// long. A non-nil error means the decision cannot be recorded; the request
// is then denied with reason audit-unavailable, so that no decision is
// made without a record.
type Recorder interface {
	Record(ctx context.Context, recs []audit.Record) error
}

// Observer is told about every decided Check (metrics).
type Observer interface {
	Checked(d *rules.Decision, elapsed time.Duration)
}

// Options configures a Server. The zero value means: identity only from the
// peer principal, no decision log, the query string dropped from logged
// paths, the real clock.
type Options struct {
	// TrustXFCC takes the caller's identity from the URI= of
	// x-forwarded-client-cert when Envoy sent no peer principal.
	TrustXFCC bool
	// Recorder receives every decision; nil records nothing.
	Recorder Recorder
	// KeepQuery keeps the query string in logged paths.
	KeepQuery bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger reports the server's own faults; nil means slog.Default().
	Logger *slog.Logger
	// Observer, when set, is told about every decided Check.
	Observer Observer
	// Tracer, when set, makes a span per Check, child of the request's
	// W3C traceparent; its trace id goes into the decision record.
	Tracer trace.Tracer
}

// Server implements the ext_authz Authorization service.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	decider Decider
	opts    Options
	idPfx   string
	idSeq   atomic.Uint64
	// info is what checkHandler hands an interceptor: immutable, so built
	// once rather than allocated per call.
	info grpc.UnaryServerInfo

	templates atomic.Pointer[templateSets] // encoded allow responses of the current and previous rule-set versions
}

// NewServer returns a Server deciding with d.
func NewServer(d Decider, opts Options) *Server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	s := &Server{decider: d, opts: opts, idPfx: "ea-" + hex.EncodeToString(b[:]) + "-"}
	s.info = grpc.UnaryServerInfo{Server: s, FullMethod: authv3.Authorization_Check_FullMethodName}
	return s
}

// Register registers the Authorization service on g. g should be built with
// ServerCodec, so that undecodable requests are denied rather than failed.
func (s *Server) Register(g *grpc.Server) {
	g.RegisterService(&serviceDesc, s)
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "envoy.service.auth.v3.Authorization",
	HandlerType: (*authv3.AuthorizationServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Check", Handler: checkHandler}},
	Streams:     []grpc.StreamDesc{},
	Metadata:    "envoy/service/auth/v3/external_auth.proto",
}

// checkHandler is the generated handler's twin, decoding into a checkFrame
// so that the codec can pass on requests it could not decode strictly.
func checkHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	f := new(checkFrame)
	if err := dec(f); err != nil {
		return nil, err
	}
	s := srv.(*Server)
	if interceptor == nil {
		return s.wire(s.check(ctx, &f.req, f.invalid)), nil
	}
	return interceptor(ctx, &f.req, &s.info, func(ctx context.Context, req any) (any, error) {
		return s.wire(s.check(ctx, req.(*authv3.CheckRequest), f.invalid)), nil
	})
}

// Check decides one request. It never returns an error for bad input.
func (s *Server) Check(ctx context.Context, cr *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	o := s.check(ctx, cr, "")
	return response(&o.d, o.sni, o.requestID), nil
}

// outcome is a decided Check, before it is put into a response.
type outcome struct {
	d         rules.Decision
	sni       bool
	requestID string
}

// check decides a Check: mapping, decision, decision log, metrics, span.
func (s *Server) check(ctx context.Context, cr *authv3.CheckRequest, invalid string) outcome {
	start := s.opts.Now()
	req, m, bad := mapRequest(cr, s.opts.TrustXFCC)
	if invalid == "" {
		invalid = bad
	}
	var span trace.Span
	if s.opts.Tracer != nil {
		ctx = propagation.TraceContext{}.Extract(ctx, headerCarrier{cr.GetAttributes().GetRequest().GetHttp()})
		ctx, span = s.opts.Tracer.Start(ctx, "egress-authz.Check", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		if sc := span.SpanContext(); sc.HasTraceID() {
			m.TraceID = sc.TraceID().String()
		}
	}
	var d rules.Decision
	if invalid != "" {
		d = rules.Decision{Reason: rules.ReasonInvalidRequest, Version: s.decider.Version()}
	} else {
		d = s.decider.Decide(req)
	}
	if m.RequestID == "" {
		m.RequestID = s.idPfx + strconv.FormatUint(s.idSeq.Add(1), 16)
	}
	if s.opts.Recorder != nil {
		if err := s.opts.Recorder.Record(ctx, s.records(start, req, m, &d)); err != nil {
			// No decision without a record: deny. The failed record is not
			// retried here; the recorder counts the refusal.
			d = rules.Decision{Reason: rules.ReasonAuditUnavailable, Version: d.Version}
		}
	}
	if s.opts.Observer != nil {
		s.opts.Observer.Checked(&d, s.opts.Now().Sub(start))
	}
	if span != nil {
		ruleID := ""
		if d.Rule != nil {
			ruleID = d.Rule.ID
		}
		span.SetAttributes(
			attribute.String("egress_authz.decision", rules.DecisionWord(d.Allow)),
			attribute.String("egress_authz.reason", string(d.Reason)),
			attribute.String("egress_authz.rule", ruleID),
			attribute.String("egress_authz.host", d.Host),
			attribute.String("egress_authz.request_id", m.RequestID),
		)
	}
	return outcome{d: d, sni: req.SNI, requestID: m.RequestID}
}

// records builds the decision's audit records: the enforced decision, then
// one record per dry-run outcome.
func (s *Server) records(start time.Time, req rules.Request, m meta, d *rules.Decision) []audit.Record {
	path := d.Path
	if path == "" && !req.SNI {
		path = req.Path
		if i := strings.IndexAny(path, "?#"); i >= 0 {
			path = path[:i]
		}
	}
	if s.opts.KeepQuery {
		if i := strings.IndexByte(req.Path, '?'); i >= 0 {
			q := req.Path[i:]
			if j := strings.IndexByte(q, '#'); j >= 0 {
				q = q[:j]
			}
			path += q
		}
	}
	host := d.Host
	if host == "" {
		host = req.Host
	}
	port := d.Port
	if port == 0 {
		port = req.Port
	}
	rec := audit.Record{
		Time:           start,
		RequestID:      m.RequestID,
		TraceID:        m.TraceID,
		Principal:      req.Principal,
		TrustDomain:    d.Identity.TrustDomain,
		Namespace:      d.Identity.Namespace,
		ServiceAccount: d.Identity.ServiceAccount,
		Host:           host,
		Port:           port,
		Method:         req.Method,
		Path:           path,
		Decision:       rules.DecisionWord(d.Allow),
		Enforced:       true,
		RuleSet:        d.Version,
		Reason:         string(d.Reason),
		CacheHit:       d.Cached,
		Latency:        s.opts.Now().Sub(start),
	}
	setRule(&rec, d.Rule)
	recs := make([]audit.Record, 1, 1+len(d.DryRun))
	recs[0] = rec
	for _, o := range d.DryRun {
		dr := rec
		dr.Enforced = false
		dr.Decision = rules.DecisionWord(o.Allow)
		dr.Reason = "dry-run"
		setRule(&dr, o.Rule)
		recs = append(recs, dr)
	}
	return recs
}

func setRule(rec *audit.Record, r *rules.Rule) {
	if r == nil {
		rec.Rule, rec.Owner, rec.Ticket = "", "", ""
		return
	}
	rec.Rule, rec.Owner, rec.Ticket = r.ID, r.Owner, r.Ticket
}
