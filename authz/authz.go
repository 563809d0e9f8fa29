// Package authz answers Envoy's ext_authz Check calls
// (envoy.service.auth.v3.Authorization) for the egress gateway, and the
// same question from egress proxies that ask over plain HTTP (Envoy's HTTP
// service, NGINX auth_request, forward-auth: Server.HTTPHandler). Every
// transport fills one input and is decided by one Server.check, so that
// no two can decide differently.
//
// It is a translation layer and nothing more: a CheckRequest becomes a
// rules.Request, a rules.Decision becomes a CheckResponse and an
// audit.Record. Bad input is a deny with a reason, never a gRPC error; gRPC
// errors are kept for the server's own faults.
//
// The gRPC handler is built for the request path's cost: it reads only the
// fields a decision reads, straight from the wire bytes, into an input that
// any transport can fill (decode.go, input.go), and answers from responses
// encoded once per rule (wire.go). A Check the decision cache answers
// allocates one frame and nothing else.
package authz

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
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
// long, and must not keep recs once it returns: the slice is reused for
// the next Check (the records' strings may be kept). A non-nil error means
// the decision cannot be recorded; the request is then denied with reason
// audit-unavailable, so that no decision is made without a record.
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
	// Cluster names the cluster in every decision record.
	Cluster string
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
	// info and unary are what checkHandler hands an interceptor:
	// immutable, so built once rather than allocated per call.
	info  grpc.UnaryServerInfo
	unary grpc.UnaryHandler
	recs  sync.Pool // *recordSlice

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
	s.unary = s.serve
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
// so that the codec can pass on requests it could not decode strictly, and
// so that one allocation holds a Check's memory.
func checkHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	f := new(checkFrame)
	if err := dec(f); err != nil {
		return nil, err
	}
	s := srv.(*Server)
	if interceptor == nil {
		return s.serveFrame(ctx, f), nil
	}
	return interceptor(ctx, f, &s.info, s.unary)
}

// serve is the handler an interceptor calls: req is the frame it was
// given, or a CheckRequest it put in its place.
func (s *Server) serve(ctx context.Context, req any) (any, error) {
	switch r := req.(type) {
	case *checkFrame:
		return s.serveFrame(ctx, r), nil
	case *authv3.CheckRequest:
		f := &checkFrame{decoded: true}
		f.in = inputFromProto(r)
		f.in.spare = f.buf[:0]
		return s.serveFrame(ctx, f), nil
	}
	return nil, fmt.Errorf("authz: Check handler given a %T", req)
}

// serveFrame decides the Check in f and encodes its response into f.
func (s *Server) serveFrame(ctx context.Context, f *checkFrame) *encoded {
	if !f.decoded {
		// Decoded by grpc-go's own codec, into the proto.
		f.in = inputFromProto(f.req)
		f.in.spare = f.buf[:0]
		f.decoded = true
	}
	s.check(ctx, &f.in, &f.o)
	return s.wire(&f.o, f.in.spare, &f.out)
}

// Check decides one request. It never returns an error for bad input.
func (s *Server) Check(ctx context.Context, cr *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	in := inputFromProto(cr)
	var o outcome
	s.check(ctx, &in, &o)
	return response(&o.d, o.sni, o.requestID), nil
}

// outcome is a decided Check, before it is put into a response.
type outcome struct {
	d         rules.Decision
	sni       bool
	requestID string
}

// check decides a Check: mapping, decision, decision log, metrics, span.
// The outcome is written to o, which the caller provides so that the
// decision, which the Recorder and the Observer are handed by pointer,
// lives in memory the Check already has (a frame).
func (s *Server) check(ctx context.Context, in *input, o *outcome) {
	start := s.opts.Now()
	req, m, invalid := mapRequest(in, s.opts.TrustXFCC)
	if in.invalid != "" {
		invalid = in.invalid
	}
	var span trace.Span
	if s.opts.Tracer != nil {
		ctx = propagation.TraceContext{}.Extract(ctx, traceCarrier{in.h.traceparent, in.h.tracestate})
		ctx, span = s.opts.Tracer.Start(ctx, "egress-authz.Check", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		if sc := span.SpanContext(); sc.HasTraceID() {
			m.TraceID = sc.TraceID().String()
		}
	}
	d := &o.d
	if invalid != "" {
		*d = rules.Decision{Reason: rules.ReasonInvalidRequest, Version: s.decider.Version()}
	} else {
		*d = s.decider.Decide(req)
	}
	if m.RequestID == "" {
		m.RequestID = s.newRequestID(&in.spare)
	}
	if s.opts.Recorder != nil {
		if err := s.record(ctx, start, req, m, d); err != nil {
			// No decision without a record: deny. The failed record is not
			// retried here; the recorder counts the refusal.
			*d = rules.Decision{Reason: rules.ReasonAuditUnavailable, Version: d.Version}
		}
	}
	if s.opts.Observer != nil {
		s.opts.Observer.Checked(d, s.opts.Now().Sub(start))
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
	o.sni, o.requestID = req.SNI, m.RequestID
}

// maxGeneratedID is the length of the longest generated request id: the
// prefix "ea-" and 12 hex digits and "-", then up to 16 hex digits.
const maxGeneratedID = 3 + 12 + 1 + 16

// newRequestID returns a request id for a request that brought none,
// written into *spare when it has room (*spare then starts after it).
func (s *Server) newRequestID(spare *[]byte) string {
	b := *spare
	inSpare := cap(b)-len(b) >= maxGeneratedID
	if !inSpare {
		b = make([]byte, 0, maxGeneratedID)
	}
	start := len(b)
	b = append(b, s.idPfx...)
	b = strconv.AppendUint(b, s.idSeq.Add(1), 16)
	if inSpare {
		*spare = b[len(b):]
	}
	return bytesString(b[start:])
}

// maxPooledRecords bounds the record slices kept for reuse: a decision with
// more dry-run outcomes than that gets a slice of its own.
const maxPooledRecords = 16

// recordSlice is a reusable slice of records, kept in Server.recs.
type recordSlice struct{ recs []audit.Record }

// record hands the decision's records to the recorder, in a slice reused
// from one Check to the next (the Recorder does not keep it).
func (s *Server) record(ctx context.Context, start time.Time, req rules.Request, m meta, d *rules.Decision) error {
	rs, _ := s.recs.Get().(*recordSlice)
	if rs == nil {
		rs = &recordSlice{recs: make([]audit.Record, 0, 4)}
	}
	rs.recs = s.appendRecords(rs.recs[:0], start, req, m, d)
	err := s.opts.Recorder.Record(ctx, rs.recs)
	// A pooled slice must not keep a request's memory alive.
	clear(rs.recs)
	if cap(rs.recs) <= maxPooledRecords {
		s.recs.Put(rs)
	}
	return err
}

// appendRecords appends the decision's audit records to recs: the enforced
// decision, then one record per dry-run outcome.
func (s *Server) appendRecords(recs []audit.Record, start time.Time, req rules.Request, m meta, d *rules.Decision) []audit.Record {
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
		Cluster:        s.opts.Cluster,
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
	recs = append(recs, rec)
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
		rec.Rule, rec.Owner, rec.Ticket, rec.Processor = "", "", "", ""
		return
	}
	rec.Rule, rec.Owner, rec.Ticket, rec.Processor = r.ID, r.Owner, r.Ticket, r.Processor
}
