package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// HTTP/2 rapid reset (CVE-2023-44487): a client opens streams and resets
// them at once, so that the server does the work of each Check while the
// client waits for none. grpc-go bounds the handlers running on one
// connection to --max-streams (the reader stops until one ends); on top
// of that, a Check whose stream is already reset when it starts is not
// decided, and a connection that resets more than resetBudget
// Checks within resetWindow is closed (resetGuard); its address (the IP)
// may not connect again for resetPenalty, so that reconnecting does not
// start the attack over.
const (
	resetBudget  = 1000
	resetWindow  = 10 * time.Second
	resetPenalty = 10 * time.Second
)

// resetGuard counts, per connection, the Checks that end with their
// stream reset, and closes a connection over its budget. It is the
// listener the gRPC server serves (to find a connection by its address)
// and a unary interceptor.
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

// intercept is a unary interceptor: a Check whose stream is already
// reset when it starts is not decided, and a Check that ends with its
// stream reset counts against its connection's budget.
func (g *resetGuard) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := ctx.Err(); err != nil {
		g.reset(ctx)
		return nil, status.FromContextError(err).Err()
	}
	resp, err := handler(ctx, req)
	if errors.Is(ctx.Err(), context.Canceled) {
		g.reset(ctx)
	}
	return resp, err
}

// reset counts a reset Check against its connection, and closes a
// connection over its budget.
func (g *resetGuard) reset(ctx context.Context) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return
	}
	v, ok := g.conns.Load(p.Addr.String())
	if !ok {
		return
	}
	c := v.(*guardedConn)
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
