package main

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// HTTP/2 rapid reset (CVE-2023-44487): a client opens streams and resets
// them at once, so that the server does the work of each Check while the
// client waits for none. grpc-go bounds the handlers running on one
// connection to --max-streams (the reader stops until one ends); on top
// of that, a Check whose stream is already reset when it starts is not
// decided (skipReset), and a connection that resets more than resetBudget
// Checks within resetWindow is closed (resetGuard); its address (the IP)
// may not connect again for resetPenalty, so that reconnecting does not
// start the attack over.
const (
	resetBudget  = 1000
	resetWindow  = 10 * time.Second
	resetPenalty = 10 * time.Second
)

// skipReset is a unary interceptor that answers a Check whose client has
// gone (its stream reset) without deciding it.
func skipReset(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	return handler(ctx, req)
}

// resetGuard counts, per connection, the Checks that end cancelled, and
// closes a connection over its budget. It is the listener the gRPC server
// serves (to find a connection by its address) and its stats handler.
type resetGuard struct {
	net.Listener
	log   *slog.Logger
	now   func() time.Time
	conns sync.Map // remote address -> *guardedConn

	mu      sync.Mutex
	penalty map[string]time.Time // remote IP -> refused until
}

type guardedConn struct {
	net.Conn
	g       *resetGuard
	window  atomic.Int64 // the window's start, Unix nanoseconds
	resets  atomic.Int64 // in the window
	closing atomic.Bool
}

func (c *guardedConn) Close() error {
	c.g.conns.Delete(c.RemoteAddr().String())
	return c.Conn.Close()
}

func newResetGuard(log *slog.Logger) *resetGuard {
	return &resetGuard{log: log, now: time.Now}
}

// wrap makes g the listener in front of ln.
func (g *resetGuard) wrap(ln net.Listener) net.Listener {
	g.Listener = ln
	return g
}

// Accept implements net.Listener: a connection from an address in the
// penalty box is closed at once.
func (g *resetGuard) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if g.penalized(c.RemoteAddr()) {
			_ = c.Close()
			continue
		}
		return g.guard(c), nil
	}
}

func ipOf(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	return a.String()
}

func (g *resetGuard) penalized(a net.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.penalty[ipOf(a)]
	if ok && !g.now().Before(until) {
		delete(g.penalty, ipOf(a))
		return false
	}
	return ok
}

func (g *resetGuard) punish(a net.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.penalty == nil {
		g.penalty = map[string]time.Time{}
	}
	g.penalty[ipOf(a)] = g.now().Add(resetPenalty)
}

func (g *resetGuard) guard(c net.Conn) net.Conn {
	gc := &guardedConn{Conn: c, g: g}
	gc.window.Store(g.now().UnixNano())
	g.conns.Store(c.RemoteAddr().String(), gc)
	return gc
}

type connKey struct{}

// TagConn implements stats.Handler.
func (g *resetGuard) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	if info.RemoteAddr == nil {
		return ctx
	}
	if c, ok := g.conns.Load(info.RemoteAddr.String()); ok {
		return context.WithValue(ctx, connKey{}, c)
	}
	return ctx
}

// HandleConn implements stats.Handler.
func (g *resetGuard) HandleConn(context.Context, stats.ConnStats) {}

// TagRPC implements stats.Handler.
func (g *resetGuard) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

// HandleRPC implements stats.Handler: it counts a Check that ended
// cancelled against its connection's budget.
func (g *resetGuard) HandleRPC(ctx context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok || status.Code(end.Error) != codes.Canceled {
		return
	}
	c, ok := ctx.Value(connKey{}).(*guardedConn)
	if !ok {
		return
	}
	now := g.now().UnixNano()
	if start := c.window.Load(); now-start > int64(resetWindow) && c.window.CompareAndSwap(start, now) {
		c.resets.Store(0)
	}
	if c.resets.Add(1) > resetBudget && !c.closing.Swap(true) {
		g.log.Warn("grpc: closing a connection that reset too many Checks (HTTP/2 rapid reset); its address may not connect again for a while",
			"remote", c.RemoteAddr().String(), "resets", c.resets.Load(), "window", resetWindow.String(), "penalty", resetPenalty.String())
		g.punish(c.RemoteAddr())
		_ = c.Close()
	}
}
