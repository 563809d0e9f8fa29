package audittest

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// Realistic returns n chained records of the load test's world: 300
// principals in 50 namespaces, 2,000 hosts, 10,000 rules, 10 % denied,
// paths with an id, a random UUIDv4 request id and a random W3C trace id
// in every record, 30,000 decisions a second.
func Realistic(writer string, from uint64, prev string, n int, start time.Time, rng *rand.Rand) []audit.Record {
	out := make([]audit.Record, n)
	t := start
	for j := range out {
		i := rng.IntN(10000)
		pi := i % 300
		allow := rng.Float64() > 0.1
		if !allow {
			pi = (i + 1) % 300
		}
		t = t.Add(time.Duration(rng.IntN(66000)))
		r := audit.Record{
			Time:      t,
			RequestID: fmt.Sprintf("%08x-%04x-4%03x-%x%03x-%012x", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<12), 8+rng.IntN(4), rng.IntN(1<<12), rng.Uint64()&(1<<48-1)),
			TraceID:   fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64()|1),
			Principal: fmt.Sprintf("spiffe://cluster.local/ns/team-%02d/sa/svc-%d", pi/6, pi%6), TrustDomain: "cluster.local",
			Namespace: fmt.Sprintf("team-%02d", pi/6), ServiceAccount: fmt.Sprintf("svc-%d", pi%6),
			Host: fmt.Sprintf("api-%d.vendor-%d.example.com", (i*7)%2000, (i*7)%2000%250), Port: 443,
			Method: []string{"GET", "GET", "GET", "POST"}[rng.IntN(4)], Path: fmt.Sprintf("/v1/res-%d/items/%d", i%20, rng.IntN(1000)),
			Enforced: true, RuleSet: "1edfe46c626abce8", CacheHit: rng.Float64() < 0.9,
			Latency: time.Duration(1000 + rng.IntN(40000)), Writer: writer, Seq: from + uint64(j) + 1, PrevHash: prev,
		}
		if allow {
			r.Decision, r.Reason, r.Rule, r.Owner, r.Ticket = audit.Allow, "allowed-by-rule", fmt.Sprintf("rule-%d", i), fmt.Sprintf("team-%02d", pi/6), fmt.Sprintf("SEC-%d", 1000+i)
		} else {
			r.Decision, r.Reason = audit.Deny, "no-matching-rule"
		}
		r.Hash = audit.ComputeHash(&r)
		prev = r.Hash
		out[j] = r
	}
	return out
}
