package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// sender sends one Check and reports whether it was allowed.
type sender func(ctx context.Context, req *authv3.CheckRequest) (allowed bool, err error)

// dial opens conns gRPC connections to addr and returns a sender that
// spreads calls over them, as Envoy's worker threads do.
func dial(addr string, conns int) (sender, func(), error) {
	var clients []authv3.AuthorizationClient
	var closers []*grpc.ClientConn
	for i := 0; i < conns; i++ {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		closers = append(closers, cc)
		clients = append(clients, authv3.NewAuthorizationClient(cc))
	}
	var next atomic.Uint64
	send := func(ctx context.Context, req *authv3.CheckRequest) (bool, error) {
		c := clients[next.Add(1)%uint64(len(clients))]
		resp, err := c.Check(ctx, req)
		if err != nil {
			return false, err
		}
		return resp.GetStatus().GetCode() == int32(code.Code_OK), nil
	}
	return send, func() {
		for _, c := range closers {
			c.Close()
		}
	}, nil
}

// counts collects the outcome of a run.
type counts struct {
	mu       sync.Mutex
	hist     *hdr.Histogram
	requests atomic.Int64
	errors   atomic.Int64
	allowed  atomic.Int64
}

func newCounts() *counts { return &counts{hist: newHistogram()} }

func (c *counts) record(lat time.Duration, allowed bool, err error) {
	c.requests.Add(1)
	if err != nil {
		c.errors.Add(1)
	} else if allowed {
		c.allowed.Add(1)
	}
	c.mu.Lock()
	_ = c.hist.RecordValue(int64(lat))
	c.mu.Unlock()
}

// closedLoop runs `workers` callers, each sending its next request when the
// previous one returns, for d.
func closedLoop(ctx context.Context, send sender, m *mix, workers int, d time.Duration, seed uint64) (*counts, time.Duration) {
	c := newCounts()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	end, _ := ctx.Deadline()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			s := newStream(seed, uint64(w), uint64(w)<<40)
			s.own = new(idCopy) // one request in flight: reuse its copy
			local := newHistogram()
			var n, errs, allowed int64
			for ctx.Err() == nil {
				req := m.next(s)
				t := time.Now()
				ok, err := send(ctx, req)
				if ctx.Err() != nil || (err != nil && time.Until(end) < 5*time.Millisecond) {
					// Cut off by the end of the run (gRPC's own timer may
					// fire just before the context's): not a result.
					break
				}
				_ = local.RecordValue(int64(time.Since(t)))
				n++
				if err != nil {
					if errs == 0 {
						fmt.Fprintln(os.Stderr, "loadtest: first error of a worker:", err)
					}
					errs++
				} else if ok {
					allowed++
				}
			}
			c.mu.Lock()
			c.hist.Merge(local)
			c.mu.Unlock()
			c.requests.Add(n)
			c.errors.Add(errs)
			c.allowed.Add(allowed)
		}(w)
	}
	wg.Wait()
	return c, time.Since(start)
}

// openLoop sends at a fixed rate for d, whatever the server's pace, and
// measures each latency from the request's intended send time, so that a
// server that falls behind shows its queueing (no coordinated omission).
func openLoop(ctx context.Context, send sender, m *mix, rate float64, d time.Duration, seed uint64) (*counts, time.Duration) {
	c := newCounts()
	interval := time.Duration(float64(time.Second) / rate)
	total := int(d / interval)
	s := newStream(seed, 99, uint64(1)<<50)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < total; i++ {
		intended := start.Add(time.Duration(i) * interval)
		if wait := time.Until(intended); wait > 0 {
			time.Sleep(wait)
		}
		req := m.next(s)
		wg.Add(1)
		go func(intended time.Time) {
			defer wg.Done()
			ok, err := send(ctx, req)
			c.record(time.Since(intended), ok, err)
		}(intended)
	}
	wg.Wait()
	return c, time.Since(start)
}
