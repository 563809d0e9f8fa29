package authz_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/rules"
)

// Two rule sets that decide the same requests differently.
const (
	allowSet = `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: set-a-allows
    action: allow
    to: {hosts: ["*.example.com"]}
`
	denySet = `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: set-b-denies
    action: deny
    to: {hosts: ["*.example.com"]}
  - id: set-b-allows-nothing-else
    action: allow
    to: {hosts: [unused.test]}
`
)

// TestCheckConcurrentSwap: many callers over gRPC while the rule set is
// swapped under them. Every answer is well-formed and is exactly one of the
// two sets' decisions, never a mix (a set's rule with the other set's
// version) and never a gRPC error; once swapping stops, the cache serves
// the last set only.
func TestCheckConcurrentSwap(t *testing.T) {
	const (
		workers = 32
		checks  = 200
	)
	a := authztest.Table(t, "a.yaml", allowSet)
	b := authztest.Table(t, "b.yaml", denySet)
	live := rules.NewLive(a, rules.LiveOptions{CacheSize: 1000})
	s := authztest.NewServer(t, live, authz.Options{})

	// A few distinct requests, so that the cache is both hit and missed.
	reqs := make([]*authv3.CheckRequest, 8)
	for i := range reqs {
		if i%2 == 0 {
			reqs[i] = httpReq(crawler, "GET", fmt.Sprintf("https://h%d.example.com/p", i))
		} else {
			reqs[i] = tlsReq(crawler, fmt.Sprintf("h%d.example.com", i), 443)
		}
	}

	stop := make(chan struct{})
	var swaps atomic.Int64
	var swapper sync.WaitGroup
	swapper.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				live.Swap(b)
			} else {
				live.Swap(a)
			}
			swaps.Add(1)
			time.Sleep(50 * time.Microsecond) // many swaps per second, leaving the CPU to the callers
		}
	})

	var allows, denies atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range checks {
				req := reqs[(w+i)%len(reqs)]
				ctx, cancel := context.WithTimeout(context.Background(), authztest.Timeout)
				resp, err := s.Client.Check(ctx, req)
				cancel()
				if err != nil {
					t.Errorf("worker %d check %d: gRPC error %v", w, i, err)
					return
				}
				v := verdictOf(t, resp)
				tls := req.GetAttributes().GetRequest() == nil
				switch {
				case v.Allow && v.Rule == "set-a-allows" && v.RuleSet == a.Version():
					v.expect(t, want{reason: rules.ReasonAllowed, rule: "set-a-allows", tls: tls})
					allows.Add(1)
				case !v.Allow && v.Rule == "set-b-denies" && v.RuleSet == b.Version():
					v.expect(t, want{reason: rules.ReasonDeniedByRule, rule: "set-b-denies", tls: tls})
					denies.Add(1)
				default:
					t.Errorf("worker %d check %d: %+v is neither set's decision", w, i, v)
				}
				if t.Failed() {
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	swapper.Wait()
	t.Logf("%d allows, %d denies, %d swaps", allows.Load(), denies.Load(), swaps.Load())
	if n := allows.Load() + denies.Load(); n != workers*checks && !t.Failed() {
		t.Errorf("%d answers, want %d", n, workers*checks)
	}

	// The swaps are over: every request, cached or not, gets the last set's
	// decision.
	for _, set := range []struct {
		table *rules.Table
		rule  string
	}{{a, "set-a-allows"}, {b, "set-b-denies"}, {a, "set-a-allows"}} {
		live.Swap(set.table)
		for _, req := range reqs {
			if v := verdictOf(t, s.Check(t, req)); v.Rule != set.rule || v.RuleSet != set.table.Version() {
				t.Errorf("after the swap to %s: rule %q of rule set %q", set.rule, v.Rule, v.RuleSet)
			}
		}
	}
}
