package main

import (
	"fmt"
	"math/rand/v2"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/egress-authz/egress-authz/internal/checkreq"
)

// world is a synthetic but realistic company: namespaces of workloads,
// each calling a few vendors' APIs, and the allow-list that describes it.
// Rules and requests come from the same world, so most requests are
// allowed by some rule and a known share is denied.
type world struct {
	rules      int
	principals []string
	hosts      []string // exact hosts of the rules
	vendors    int
}

const (
	namespaces      = 50
	accountsPerNS   = 6
	resourcesPerAPI = 20
)

func newWorld(rules int) *world {
	w := &world{rules: rules, vendors: max(10, rules/40)}
	for ns := 0; ns < namespaces; ns++ {
		for sa := 0; sa < accountsPerNS; sa++ {
			w.principals = append(w.principals, fmt.Sprintf("spiffe://cluster.local/ns/team-%02d/sa/svc-%d", ns, sa))
		}
	}
	nHosts := max(20, rules/5)
	for h := 0; h < nHosts; h++ {
		w.hosts = append(w.hosts, fmt.Sprintf("api-%d.vendor-%d.example.com", h, h%w.vendors))
	}
	return w
}

// rule i allows principal i%P to reach host (i*7)%H with GET/POST under
// /v1/res-(i%20)/**. Every 100th rule is a deny for an admin path, every
// 97th a dry-run, and every 50th uses a wildcard host for its vendor.
func (w *world) ruleHost(i int) string { return w.hosts[(i*7)%len(w.hosts)] }

// RulesYAML renders the allow-list in the SPEC format.
func (w *world) RulesYAML() string {
	var b strings.Builder
	b.WriteString("apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules:\n")
	for i := 0; i < w.rules; i++ {
		p := w.principals[i%len(w.principals)]
		host := w.ruleHost(i)
		action, mode, paths := "allow", "enforce", fmt.Sprintf(`["/v1/res-%d/**"]`, i%resourcesPerAPI)
		switch {
		case i%100 == 99:
			action, paths = "deny", `["/v1/admin/**"]`
		case i%97 == 96:
			mode = "dry-run"
		case i%50 == 49:
			host = "*." + strings.SplitN(host, ".", 2)[1]
		}
		fmt.Fprintf(&b, "  - id: rule-%d\n    owner: team-%02d\n    ticket: SEC-%d\n    mode: %s\n    action: %s\n",
			i, (i%len(w.principals))/accountsPerNS, 1000+i, mode, action)
		fmt.Fprintf(&b, "    from:\n      principals: [%q]\n", p)
		fmt.Fprintf(&b, "    to:\n      hosts: [%q]\n      methods: [GET, POST]\n      paths: %s\n", host, paths)
	}
	return b.String()
}

// request is one request of the mix.
type request struct {
	msg *authv3.CheckRequest
}

// Request returns a request of the mix: for rule i (random), an allowed
// call; with probability denyShare a caller the rule does not name.
// unique makes the path (and so the cache key) unlike any other.
func (w *world) Request(rng *rand.Rand, denyShare float64, unique uint64) request {
	i := rng.IntN(w.rules)
	p := w.principals[i%len(w.principals)]
	if rng.Float64() < denyShare {
		p = w.principals[(i+1)%len(w.principals)]
	}
	id := rng.IntN(1000)
	path := fmt.Sprintf("/v1/res-%d/items/%d", i%resourcesPerAPI, id)
	if unique > 0 {
		path = fmt.Sprintf("/v1/res-%d/items/%d/u%d", i%resourcesPerAPI, id, unique)
	}
	method := "GET"
	if rng.IntN(4) == 0 {
		method = "POST"
	}
	msg, err := checkreq.HTTP{Principal: p, Method: method, URL: "https://" + w.ruleHost(i) + path}.Build()
	if err != nil {
		panic(err) // the generator's own URLs always parse
	}
	return request{msg: msg}
}

// mix draws requests: with probability repeat one of a fixed pool (cache
// hits once warm), otherwise a fresh unique one (a cache miss). With ids,
// every request carries a fresh x-request-id and traceparent (--ids random).
type mix struct {
	w         *world
	pool      []request
	repeat    float64
	denyShare float64
	ids       bool
}

func newMix(w *world, poolSize int, repeat, denyShare float64, seed uint64) *mix {
	rng := rand.New(rand.NewPCG(seed, 1))
	m := &mix{w: w, repeat: repeat, denyShare: denyShare}
	for i := 0; i < poolSize; i++ {
		m.pool = append(m.pool, w.Request(rng, denyShare, 0))
	}
	return m
}

// stream is one sender's state: its own generators and a counter for
// unique requests. The ids have a generator of their own, so that a run
// with --ids random sends the same requests in the same order as one
// without, only with ids added.
type stream struct {
	rng, ids *rand.Rand
	unique   uint64
	// own, when set, is reused for every pooled request given ids: for a
	// sender with one request in flight at a time (see idCopy).
	own *idCopy
}

// newStream returns the stream of sender n of a run seeded with seed;
// unique is where its counter for unique requests starts, apart from every
// other sender's.
func newStream(seed, n, unique uint64) *stream {
	return &stream{
		rng:    rand.New(rand.NewPCG(seed, n)),
		ids:    rand.New(rand.NewPCG(seed, n|1<<63)),
		unique: unique,
	}
}

// next returns the stream's next request.
func (m *mix) next(s *stream) *authv3.CheckRequest {
	if s.rng.Float64() < m.repeat {
		msg := m.pool[s.rng.IntN(len(m.pool))].msg
		switch {
		case m.ids && s.own != nil:
			msg = s.own.fill(msg, s.ids)
		case m.ids:
			msg = withIDs(msg, s.ids) // the pooled message is shared: copy
		}
		return msg
	}
	s.unique++
	msg := m.w.Request(s.rng, m.denyShare, s.unique).msg
	if m.ids {
		setIDs(msg.Attributes.Request.Http.Headers, s.ids) // built for this send alone
	}
	return msg
}
