package rules

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	lru "github.com/hashicorp/golang-lru/v2"
)

// fakeClock is an injectable clock for LiveOptions.Now, safe for
// concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.Set(t)
	return c
}

func (c *fakeClock) Now() time.Time  { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// cacheLen is the number of decisions l holds, over all shards (counting a
// shard used for several slots once).
func cacheLen(l *Live) int {
	seen := map[*lru.Cache[cacheKey, cacheEntry]]bool{}
	n := 0
	for _, s := range l.shards {
		if !seen[s] {
			seen[s] = true
			n += s.Len()
		}
	}
	return n
}

// sameDecision reports whether a and b are the same decision, whether or
// not either came from the cache.
func sameDecision(a, b Decision) bool {
	a.Cached, b.Cached = false, false
	return reflect.DeepEqual(a, b)
}

// liveRules is a small rule set whose decisions cover every kind of
// answer, dry-run outcomes included.
const liveRules = header + `  - {id: deny-admin, action: deny, to: {hosts: [api.stripe.com], paths: ["/admin/**"]}}
  - {id: dry-stripe, mode: dry-run, action: deny, to: {hosts: ["*.stripe.com"]}}
  - {id: stripe, action: allow, from: {principals: ["` + checkout + `"]}, to: {hosts: [api.stripe.com], ports: [443], methods: [GET, POST], paths: ["/v1/**"]}}
  - {id: files-tls, action: allow, from: {namespaces: [payments]}, to: {hosts: [files.stripe.com], ports: [443]}}
`

// liveRequests are requests of every kind, each with the reason liveRules
// gives it.
var liveRequests = []struct {
	name   string
	req    Request
	reason Reason
}{
	{"allowed", httpReq(checkout, "POST", "api.stripe.com", "/v1/charges"), ReasonAllowed},
	{"allowed_after_normalization", httpReq(checkout, "POST", "API.Stripe.com.:443", "//v1/x/../charges?a=1"), ReasonAllowed},
	{"denied_by_rule", httpReq(checkout, "GET", "api.stripe.com", "/admin/users"), ReasonDeniedByRule},
	{"no_matching_rule", httpReq(crawler, "GET", "api.stripe.com", "/v1/charges"), ReasonNoMatchingRule},
	{"tls_allowed", sniReq(refunds, "files.stripe.com"), ReasonAllowed},
	{"tls_no_matching_rule", sniReq(crawler, "files.stripe.com"), ReasonNoMatchingRule},
	{"invalid_no_identity", httpReq("", "GET", "api.stripe.com", "/"), ReasonNoIdentity},
	{"invalid_identity", httpReq("not a spiffe id", "GET", "api.stripe.com", "/"), ReasonInvalidIdentity},
	{"invalid_untrusted_domain", httpReq("spiffe://evil.example/ns/a/sa/b", "GET", "api.stripe.com", "/"), ReasonUntrustedDomain},
	{"invalid_host", httpReq(checkout, "GET", "api.stripe.com:99999", "/"), ReasonInvalidHost},
	{"invalid_unsafe_path", httpReq(checkout, "GET", "api.stripe.com", "/v1/a%2Fb"), ReasonUnsafePath},
}

// warm decides req until its decision is cached: the doorkeeper caches a
// request at its second miss.
func warm(l *Live, req Request) {
	l.Decide(req)
	l.Decide(req)
}

// TestLiveDoorkeeper: a request is cached at its second miss, so requests
// seen once (an id in the path) never enter the cache.
func TestLiveDoorkeeper(t *testing.T) {
	tab := compileRules(t, `- {id: r, action: allow, to: {hosts: [api.stripe.com], paths: ["/v1/charges/*"]}}`)
	l := NewLive(tab, LiveOptions{CacheSize: 1000})
	for i := range 500 {
		if d := l.Decide(httpReq(checkout, "GET", "api.stripe.com", fmt.Sprintf("/v1/charges/ch_%d", i))); !d.Allow || d.Cached {
			t.Fatalf("one-off request %d: %s, cached %v", i, fmtDecision(d), d.Cached)
		}
	}
	if n := cacheLen(l); n != 0 {
		t.Errorf("%d one-off requests left %d entries in the cache, want none", 500, n)
	}
	again := httpReq(checkout, "GET", "api.stripe.com", "/v1/charges/ch_499") // the last one-off
	if d := l.Decide(again); d.Cached || cacheLen(l) != 1 {
		t.Errorf("a request's second miss: cached %v, %d entries; want a miss that is cached", d.Cached, cacheLen(l))
	}
	if d := l.Decide(again); !d.Cached || !d.Allow {
		t.Errorf("its third call: %s, cached %v; want the cached allow", fmtDecision(d), d.Cached)
	}
}

// TestDoorkeeperBuckets: requests whose hashes share a bucket each keep
// their mark, so that two hot requests in one bucket, alternating, are
// both admitted at their second miss; a full bucket evicts one mark.
func TestDoorkeeperBuckets(t *testing.T) {
	d := newDoorkeeper(0)
	if len(d) != doorMinSlots {
		t.Fatalf("%d slots, want %d", len(d), doorMinSlots)
	}
	same := func(i uint64) uint64 { return 2 + i<<40 } // bucket 1, top bits 0
	for round := range 2 {
		for i := range uint64(doorWays) {
			if got := d.admit(same(i)); got != (round == 1) {
				t.Errorf("round %d, hash %d: admit %v", round, i, got)
			}
		}
	}
	// A fifth hash in the full bucket takes way 0 (its top bits): the
	// first hash's mark is gone, the others stay.
	if d.admit(same(doorWays)) {
		t.Error("a new hash was admitted")
	}
	if d.admit(same(0)) {
		t.Error("the evicted hash was admitted")
	}
	if !d.admit(same(2)) {
		t.Error("a hash in another way was evicted")
	}
}

func TestLiveCacheHit(t *testing.T) {
	tab := compileYAML(t, liveRules)
	l := NewLive(tab, LiveOptions{CacheSize: 100, Now: func() time.Time { return testNow }})
	for _, tc := range liveRequests {
		t.Run(tc.name, func(t *testing.T) {
			want := tab.Decide(tc.req, testNow)
			if want.Reason != tc.reason {
				t.Fatalf("the table decides %s, want reason %q", fmtDecision(want), tc.reason)
			}
			// The first miss is remembered, the second is cached (see
			// doorkeeper), the others are hits.
			first := l.Decide(tc.req)
			if first.Cached {
				t.Errorf("first decision is marked cached")
			}
			if d := l.Decide(tc.req); d.Cached || !sameDecision(d, want) {
				t.Errorf("second decision %s, cached %v; want the table's, not cached", fmtDecision(d), d.Cached)
			}
			for i := range 3 {
				d := l.Decide(tc.req)
				if !d.Cached {
					t.Errorf("decision %d after the second is not cached", i+3)
				}
				if !sameDecision(d, want) {
					t.Errorf("cached decision %s,\nwant %s", fmtDecision(d), fmtDecision(want))
				}
			}
			if !sameDecision(first, want) {
				t.Errorf("first decision %s,\nwant %s", fmtDecision(first), fmtDecision(want))
			}
		})
	}
	// Invalid requests are decisions too, each cached once under its own
	// request; nothing else is kept.
	if n := cacheLen(l); n != len(liveRequests) {
		t.Errorf("cache holds %d entries, want one per request (%d)", n, len(liveRequests))
	}
}

// TestLiveCachedDecideDoesNotAllocate: a cache hit allocates nothing, with
// or without an expiry ahead (which makes the hit read the clock).
func TestLiveCachedDecideDoesNotAllocate(t *testing.T) {
	for _, tc := range []struct {
		name string
		tab  *Table
	}{
		{"no_expiry", compileYAML(t, liveRules)},
		{"expiry_ahead", compileYAML(t, liveRules+"  - {id: temp, action: allow, expires: 2099-01-01, to: {hosts: [temp.example]}}\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLive(tc.tab, LiveOptions{CacheSize: 100})
			for _, r := range liveRequests {
				l.Decide(r.req)
				var d Decision
				if allocs := testing.AllocsPerRun(100, func() { d = l.Decide(r.req) }); allocs != 0 {
					t.Errorf("%s: %v allocations per cached decision, want 0", r.name, allocs)
				}
				if !d.Cached {
					t.Errorf("%s: not served from the cache", r.name)
				}
			}
		})
	}
}

// TestLiveCacheKeyIsTheWholeRequest: requests that differ in a single field
// are cached apart, so that a decision is never served for a request it was
// not made for.
func TestLiveCacheKeyIsTheWholeRequest(t *testing.T) {
	tab := compileRules(t, `- {id: r, action: allow, from: {principals: ["`+checkout+`"]}, to: {hosts: [api.stripe.com], ports: [443], methods: [GET], paths: ["/v1/**"]}}`)
	base := Request{Principal: checkout, Host: "api.stripe.com", Port: 443, Method: "GET", Path: "/v1/x"}
	for _, tc := range []struct {
		field string
		edit  func(*Request)
	}{
		{"principal", func(r *Request) { r.Principal = crawler }},
		{"host", func(r *Request) { r.Host = "api.stripe.org" }},
		{"sni", func(r *Request) { r.SNI = true }},
		{"port", func(r *Request) { r.Port = 8443 }},
		{"method", func(r *Request) { r.Method = "POST" }},
		{"path", func(r *Request) { r.Path = "/v2/x" }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			l := NewLive(tab, LiveOptions{CacheSize: 100})
			other := base
			tc.edit(&other)
			warm(l, base)
			if d := l.Decide(base); !d.Cached || !d.Allow {
				t.Fatalf("base request: cached %v, allow %v; want a cached allow", d.Cached, d.Allow)
			}
			if d := l.Decide(other); d.Allow || d.Cached {
				t.Errorf("request with another %s: %s (cached %v), want its own deny", tc.field, fmtDecision(d), d.Cached)
			}
		})
	}
}

// TestLiveSwapMakesCachedDecisionsUnreachable: right after Swap returns, a
// request cached under the old table is decided by the new one.
func TestLiveSwapMakesCachedDecisionsUnreachable(t *testing.T) {
	a := compileRules(t, `- {id: a-allows, action: allow, to: {hosts: [api.stripe.com]}}`)
	b := compileRules(t, `- {id: b-denies, action: deny, to: {hosts: [api.stripe.com]}}`)
	req := httpReq(checkout, "GET", "api.stripe.com", "/")
	l := NewLive(a, LiveOptions{CacheSize: 100})
	warm(l, req)
	if d := l.Decide(req); !d.Cached || ruleID(d) != "a-allows" {
		t.Fatalf("under a: %s, cached %v; want a-allows, cached", fmtDecision(d), d.Cached)
	}

	for i, next := range []*Table{b, a, a} {
		gen, _ := l.Generation()
		l.Swap(next)
		if g, _ := l.Generation(); g != gen+1 {
			t.Errorf("swap %d: generation %d, want %d", i+1, g, gen+1)
		}
		if l.Table() != next || l.Version() != next.Version() {
			t.Errorf("swap %d: Table/Version do not report the new table", i+1)
		}
		// Even a swap to the same table starts a new generation: nothing
		// cached before it is served after it. (The doorkeeper still knows
		// the request, so its first miss caches the new decision.)
		d := l.Decide(req)
		if d.Cached || !sameDecision(d, next.Decide(req, time.Now())) {
			t.Errorf("swap %d: first decision %s, cached %v; want the new table's, not cached", i+1, fmtDecision(d), d.Cached)
		}
		if d := l.Decide(req); !d.Cached || d.Version != next.Version() {
			t.Errorf("swap %d: second decision cached %v, version %q; want cached, %q", i+1, d.Cached, d.Version, next.Version())
		}
	}
	if n := cacheLen(l); n != 1 {
		t.Errorf("cache holds %d entries after the swaps, want 1: Swap must drop the old generations'", n)
	}
}

// TestLiveNeverServesAnOlderGeneration is a property test, meant for -race:
// readers decide requests from a small pool (so that the cache is hit)
// while the table is swapped under them through many distinct tables. Every
// decision must come from a table that was active at some point during the
// call, and be exactly what that table decides.
func TestLiveNeverServesAnOlderGeneration(t *testing.T) {
	const (
		tables  = 48 // distinct versions; generation n serves tables[(n-1)%tables]
		swaps   = 400
		readers = 8
	)
	var tabs []*Table
	byVersion := map[string]*Table{}
	for i := range tables {
		action := []string{"allow", "deny"}[i%2]
		entries := []string{
			fmt.Sprintf(`- {id: t%02d-stripe, action: %s, to: {hosts: ["*.stripe.com"]}}`, i, action),
			fmt.Sprintf(`- {id: t%02d-dry, mode: dry-run, action: deny, from: {namespaces: [payments]}}`, i),
		}
		if i%3 == 0 {
			entries = append(entries, fmt.Sprintf(`- {id: t%02d-example, action: allow, from: {principals: ["`+crawler+`"]}, to: {hosts: [example.com], methods: [GET]}}`, i))
		}
		tab := compileRules(t, entries...)
		if byVersion[tab.Version()] != nil {
			t.Fatalf("tables %d and another have the same version", i)
		}
		tabs = append(tabs, tab)
		byVersion[tab.Version()] = tab
	}
	pool := []Request{
		httpReq(checkout, "GET", "api.stripe.com", "/v1/charges"),
		httpReq(checkout, "POST", "files.stripe.com", "/"),
		httpReq(crawler, "GET", "example.com", "/"),
		httpReq(crawler, "POST", "example.com", "/"),
		sniReq(refunds, "api.stripe.com"),
		sniReq(crawler, "example.com"),
		httpReq("", "GET", "example.com", "/"),
		httpReq(checkout, "GET", "example.com", "/../x"),
	}
	clock := newFakeClock(testNow)
	l := NewLive(tabs[0], LiveOptions{CacheSize: 64, Now: clock.Now})

	stop := make(chan struct{})
	var swapper sync.WaitGroup
	swapper.Go(func() {
		defer close(stop)
		for i := 1; i <= swaps; i++ {
			l.Swap(tabs[i%tables])
			time.Sleep(50 * time.Microsecond)
		}
	})
	var decisions, cached, spanned atomic.Int64
	var wg sync.WaitGroup
	for w := range readers {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req := pool[i%len(pool)]
				before, _ := l.Generation()
				d := l.Decide(req)
				after, _ := l.Generation()
				decisions.Add(1)
				if d.Cached {
					cached.Add(1)
				}
				if after != before {
					spanned.Add(1)
				}
				tab := byVersion[d.Version]
				active := false
				for g := before; g <= after && !active; g++ {
					active = tabs[(g-1)%tables] == tab
				}
				if !active {
					t.Errorf("reader %d: decision of version %q (cached %v), but generations %d..%d were active during the call",
						w, d.Version, d.Cached, before, after)
					return
				}
				if want := tab.Decide(req, testNow); !sameDecision(d, want) {
					t.Errorf("reader %d: %+v decided %s (cached %v),\nits table decides %s", w, req, fmtDecision(d), d.Cached, fmtDecision(want))
					return
				}
			}
		})
	}
	wg.Wait()
	swapper.Wait()
	t.Logf("%d decisions, %d from the cache, %d spanning a swap; %d swaps", decisions.Load(), cached.Load(), spanned.Load(), swaps)
	if cached.Load() == 0 {
		t.Errorf("no decision came from the cache: the test exercised nothing")
	}
}

// TestLiveExpiryBoundary: a cached decision is not served past the next
// expiry of any rule of its table, to the nanosecond, and the cache goes on
// to the expiry after that. The uncached Live gives the same answers.
func TestLiveExpiryBoundary(t *testing.T) {
	tab := compileRules(t,
		`- {id: temp, action: allow, expires: 2027-01-01, to: {hosts: [a.example]}}`,
		`- {id: later, action: allow, expires: 2027-06-01, to: {hosts: [b.example]}}`,
	)
	a := httpReq(checkout, "GET", "a.example", "/")
	b := httpReq(checkout, "GET", "b.example", "/")
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	steps := []struct {
		now    string
		req    Request
		rule   string // deciding rule; "" for a deny
		cached bool
	}{
		{"2026-12-31T23:59:59.999Z", a, "temp", false},
		{"2026-12-31T23:59:59.999Z", a, "temp", true},
		{"2026-12-31T23:59:59.999999999Z", a, "temp", true},
		{"2026-12-31T23:59:59.999999999Z", b, "later", false},
		{"2026-12-31T23:59:59.999999999Z", b, "later", true},
		// 2027-01-01 00:00 UTC: temp no longer matches. Its cached allow is
		// still in the cache but must not be served.
		{"2027-01-01T00:00:00Z", a, "", false},
		{"2027-01-01T00:00:00Z", a, "", true},
		// b's allow was bounded by the table's next expiry, temp's: made
		// again, now good until later's.
		{"2027-01-01T00:00:00Z", b, "later", false},
		{"2027-01-01T00:00:01Z", b, "later", true},
		{"2027-05-31T23:59:59.999999999Z", b, "later", true},
		{"2027-06-01T00:00:00Z", b, "", false},
		{"2027-06-01T00:00:00Z", b, "", true},
		// No expiry is left: decisions are good for the generation.
		{"2027-06-01T00:00:00Z", a, "", false},
		{"2099-01-01T00:00:00Z", a, "", true},
	}
	for _, size := range []int{0, 100} {
		t.Run(fmt.Sprintf("cache_%d", size), func(t *testing.T) {
			clock := newFakeClock(at(steps[0].now))
			l := NewLive(tab, LiveOptions{CacheSize: size, Now: clock.Now})
			// One miss each first: from now on the doorkeeper lets every
			// miss of a and b into the cache.
			l.Decide(a)
			l.Decide(b)
			for i, st := range steps {
				now := at(st.now)
				clock.Set(now)
				if i == 5 && size > 0 {
					if shard, key := l.slot(l.cur.Load(), a); !func() bool { _, ok := shard.Peek(key); return ok }() {
						t.Fatalf("step %d: a's allow is no longer in the cache: the test would prove nothing", i)
					}
				}
				d := l.Decide(st.req)
				if ruleID(d) != st.rule || d.Allow != (st.rule != "") {
					t.Errorf("step %d at %s, %s: %s, want rule %q", i, st.now, st.req.Host, fmtDecision(d), st.rule)
				}
				if d.Cached != (st.cached && size > 0) {
					t.Errorf("step %d at %s, %s: cached %v, want %v", i, st.now, st.req.Host, d.Cached, st.cached && size > 0)
				}
				if want := tab.Decide(st.req, now); !sameDecision(d, want) {
					t.Errorf("step %d: %s, the table decides %s", i, fmtDecision(d), fmtDecision(want))
				}
			}
		})
	}
}

// TestLiveSharedMissPastExpiry: a call that joins another's computation of
// the same decision must not get an answer that rests on a rule that has
// expired since that computation read the clock.
func TestLiveSharedMissPastExpiry(t *testing.T) {
	tab := compileRules(t, `- {id: temp, action: allow, expires: 2027-01-01, to: {hosts: [a.example]}}`)
	req := httpReq(checkout, "GET", "a.example", "/")
	before := time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC)
	after := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)

	clock := newFakeClock(before)
	var hold atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	now := func() time.Time {
		if hold.CompareAndSwap(true, false) {
			// The first computation has read the clock (before the
			// expiry); it is held there while the clock moves on.
			t0 := clock.Now()
			close(entered)
			<-release
			return t0
		}
		return clock.Now()
	}
	l := NewLive(tab, LiveOptions{CacheSize: 100, Now: now})
	hold.Store(true)

	var wg sync.WaitGroup
	wg.Go(func() { l.Decide(req) }) // its call began before the expiry: either answer is right
	<-entered
	clock.Set(after)
	var late Decision
	wg.Go(func() { late = l.Decide(req) })
	time.Sleep(100 * time.Millisecond) // let the late call join the computation in flight
	close(release)
	wg.Wait()
	if late.Allow {
		t.Errorf("a call made after the expiry was answered %s", fmtDecision(late))
	}
}

// TestLiveCoalescesConcurrentMisses: concurrent misses for the same request
// are computed once. Each computation reads the injected clock once (and a
// cache hit, with no expiry in the table, does not read it), so the clock
// counts computations; it holds every computation until all callers have
// been let go, so that they miss together.
func TestLiveCoalescesConcurrentMisses(t *testing.T) {
	const callers = 8 // per request
	tab := compileYAML(t, liveRules)
	reqs := []Request{liveRequests[0].req, liveRequests[2].req, liveRequests[4].req, liveRequests[6].req}

	var counting atomic.Bool
	var computations atomic.Int64
	release := make(chan struct{})
	now := func() time.Time {
		if counting.Load() {
			computations.Add(1)
			<-release
		}
		return testNow
	}
	l := NewLive(tab, LiveOptions{CacheSize: 100, Now: now})
	for _, r := range reqs {
		l.Decide(r) // the doorkeeper's first miss: the next is cached
	}
	counting.Store(true)

	var ready, wg sync.WaitGroup
	got := make([]Decision, callers*len(reqs))
	for i := range got {
		ready.Add(1)
		wg.Go(func() {
			ready.Done()
			got[i] = l.Decide(reqs[i%len(reqs)])
		})
	}
	ready.Wait()
	time.Sleep(100 * time.Millisecond) // every caller is now at, or past, its miss
	close(release)
	wg.Wait()

	if n := computations.Load(); n != int64(len(reqs)) {
		t.Errorf("%d computations for %d distinct requests missed by %d callers each, want %d", n, len(reqs), callers, len(reqs))
	}
	shared := 0
	for i, d := range got {
		if want := tab.Decide(reqs[i%len(reqs)], testNow); !sameDecision(d, want) {
			t.Errorf("caller %d: %s, want %s", i, fmtDecision(d), fmtDecision(want))
		}
		if !d.Cached {
			shared++
		}
	}
	t.Logf("%d of %d callers shared a computation, the others hit the cache", shared, len(got))
	if n := cacheLen(l); n != len(reqs) {
		t.Errorf("cache holds %d entries, want %d", n, len(reqs))
	}
}

// TestLiveWithoutCache: --cache-size 0 decides every request with the
// active table and caches nothing.
func TestLiveWithoutCache(t *testing.T) {
	a := compileYAML(t, liveRules)
	b := compileRules(t, `- {id: b-denies, action: deny, to: {hosts: ["*.stripe.com"]}}`)
	l := NewLive(a, LiveOptions{CacheSize: 0, Now: func() time.Time { return testNow }})
	if l.shards != nil {
		t.Fatalf("a Live with cache size 0 has %d cache shards", len(l.shards))
	}
	for i, tab := range []*Table{a, b, a} {
		if i > 0 {
			l.Swap(tab)
		}
		for _, tc := range liveRequests {
			for range 2 {
				d := l.Decide(tc.req)
				if d.Cached || !sameDecision(d, tab.Decide(tc.req, testNow)) {
					t.Errorf("%s: %s, cached %v; want the active table's decision, not cached", tc.name, fmtDecision(d), d.Cached)
				}
			}
		}
	}
}

// TestLiveCacheIsBounded: the cache holds at most about --cache-size
// decisions, however many requests it sees.
func TestLiveCacheIsBounded(t *testing.T) {
	const size = 64
	l := NewLive(compileYAML(t, liveRules), LiveOptions{CacheSize: size})
	for i := range 2000 {
		warm(l, httpReq(checkout, "GET", "api.stripe.com", fmt.Sprintf("/v1/items/%d", i)))
	}
	// Each of the 16 shards holds size/16, rounded up.
	if n := cacheLen(l); n > size || n == 0 {
		t.Errorf("cache holds %d entries, want at most %d", n, size)
	}
}

// TestLiveRealClockExpiry exercises the timer that stands in for clock
// reads on cache hits: a rule expiring a second or two from now, decided
// over and over (from the cache) across its expiry with the real clock.
// A call that starts at or after the expiry must never be allowed; one
// that ends before it must be.
func TestLiveRealClockExpiry(t *testing.T) {
	expires := time.Now().Truncate(time.Second).Add(2 * time.Second)
	set := &Set{Version: "v", TrustDomains: []string{"cluster.local"}, Rules: []*Rule{{
		ID: "soon", Action: Allow, Mode: Enforce, Hosts: []string{"api.example.com"}, Expires: expires,
	}}}
	tab, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	l := NewLive(tab, LiveOptions{CacheSize: 100})
	req := Request{Principal: "spiffe://cluster.local/ns/a/sa/b", Host: "api.example.com", Port: 443, Method: "GET", Path: "/"}
	var allowedBefore, deniedAfter, hitsBefore int
	for time.Now().Before(expires.Add(300 * time.Millisecond)) {
		start := time.Now()
		d := l.Decide(req)
		end := time.Now()
		switch {
		case !start.Before(expires):
			if d.Allow {
				t.Fatalf("allowed at %s by a rule that expired at %s (cached %v)", start.Format(time.StampMicro), expires.Format(time.StampMicro), d.Cached)
			}
			deniedAfter++
		case end.Before(expires):
			if !d.Allow {
				t.Fatalf("denied at %s before the rule expired", start.Format(time.StampMicro))
			}
			allowedBefore++
			if d.Cached {
				hitsBefore++
			}
		}
		time.Sleep(time.Millisecond)
	}
	if allowedBefore == 0 || deniedAfter == 0 || hitsBefore == 0 {
		t.Fatalf("the test saw %d allows (%d cached) before and %d denies after the expiry", allowedBefore, hitsBefore, deniedAfter)
	}
	g := l.cur.Load()
	if g.epoch.Load() != 1 || g.checkClock.Load() {
		t.Fatalf("after the expiry: epoch %d, checkClock %v; want 1, false (no expiry left)", g.epoch.Load(), g.checkClock.Load())
	}
}

// TestLiveWallClockJumpsOverAnExpiry: the timers run on the monotonic
// clock, so a wall clock that steps forward (NTP) or a VM that resumes from
// suspension can leave a rule's expiry behind without its timer firing. The
// watch reads the clock again within clockRecheck, sees the expiry passed,
// and the cached allow is no longer served.
func TestLiveWallClockJumpsOverAnExpiry(t *testing.T) {
	var mu sync.Mutex
	wall := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return wall
	}
	expires := wall.Add(time.Hour)
	set := &Set{Version: "v", TrustDomains: []string{"cluster.local"}, Rules: []*Rule{
		{ID: "trial", Action: Allow, Mode: Enforce, Hosts: []string{"api.example.com"}, Expires: expires},
		{ID: "later", Action: Allow, Mode: Enforce, Hosts: []string{"other.example.com"}, Expires: wall.Add(30 * 24 * time.Hour)},
	}}
	tab, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	l := NewLive(tab, LiveOptions{CacheSize: 100, Now: now, timers: true})
	defer l.cur.Load().retire()
	req := Request{Principal: "spiffe://cluster.local/ns/a/sa/b", Host: "api.example.com", Port: 443, Method: "GET", Path: "/"}
	warm(l, req)
	if d := l.Decide(req); !d.Allow || !d.Cached {
		t.Fatalf("before the expiry: %+v, want the cached allow", d)
	}
	if l.cur.Load().checkClock.Load() {
		t.Fatal("an hour before the expiry, cache hits read the clock")
	}

	mu.Lock()
	wall = expires.Add(2 * time.Hour) // a step forward, past the expiry
	mu.Unlock()
	deadline := time.Now().Add(clockRecheck + 2*time.Second)
	for l.Decide(req).Allow {
		if time.Now().After(deadline) {
			t.Fatalf("the allow of the expired rule was still served %v after the clock stepped past its expiry", clockRecheck+2*time.Second)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := l.Decide(req); d.Allow || d.Reason != ReasonNoMatchingRule {
		t.Fatalf("after the expiry: %+v, want no-matching-rule", d)
	}
	g := l.cur.Load()
	g.mu.Lock()
	awaiting := g.awaiting
	g.mu.Unlock()
	if g.epoch.Load() != 1 || !awaiting.Equal(set.Rules[1].Expires) {
		t.Fatalf("epoch %d, awaiting %v; want 1 and the next expiry", g.epoch.Load(), awaiting)
	}
}

// TestLiveCacheIgnoresTheQuery: requests that differ only in their query or
// fragment share one cache entry, which keeps no query; each is given the
// decision the table makes for it.
func TestLiveCacheIgnoresTheQuery(t *testing.T) {
	tab := compileYAML(t, liveRules)
	for _, tc := range []struct {
		name  string
		paths []string
	}{
		{"allowed", []string{"/v1/charges", "/v1/charges?a=1", "/v1/charges?a=2&b=%zz", "/v1/charges#frag", "/v1/charges?q#f", "/v1/charges?\x00"}},
		{"allowed_after_normalization", []string{"//v1/x/../charges?a=1", "//v1/x/../charges?a=2", "//v1/x/../charges#?"}},
		{"denied_by_rule", []string{"/admin/users?x=1", "/admin/users?x=2"}},
		{"unsafe_path", []string{"/v1/a%2Fb?x=1", "/v1/a%2Fb?x=2"}},
		{"no_path_before_the_query", []string{"?a=1", "?a=2", "#a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLive(tab, LiveOptions{CacheSize: 100, Now: func() time.Time { return testNow }})
			for i, p := range tc.paths {
				req := httpReq(checkout, "GET", "api.stripe.com", p)
				want := tab.Decide(req, testNow)
				for range 2 {
					if d := l.Decide(req); !sameDecision(d, want) {
						t.Errorf("path %q: %s,\nwant the table's %s", p, fmtDecision(d), fmtDecision(want))
					} else if i > 0 && !d.Cached {
						t.Errorf("path %q: not served from the entry of %q", p, tc.paths[0])
					}
				}
			}
			if n := cacheLen(l); n != 1 {
				t.Errorf("cache holds %d entries, want 1", n)
			}
			for _, e := range l.shards[0].Values() {
				if strings.ContainsAny(e.req.Path, "?#") {
					t.Errorf("cache entry keeps the path %q", e.req.Path)
				}
			}
		})
	}
}

// TestLiveCacheKeepsNoneOfTheCallersMemory: an entry's request and decision
// are copies, not slices of the caller's strings, which may hold a long
// query (or sit in a larger buffer) that the entry would keep alive.
func TestLiveCacheKeepsNoneOfTheCallersMemory(t *testing.T) {
	l := NewLive(compileYAML(t, liveRules), LiveOptions{CacheSize: 100})
	req := httpReq(checkout, "POST", "api.stripe.com", "/v1/charges?"+strings.Repeat("q", 60<<10))
	l.Decide(req) // remembered by the doorkeeper; the next miss is cached
	if d := l.Decide(req); !d.Allow {
		t.Fatalf("%s, want an allow", fmtDecision(d))
	}
	inside := func(s, in string) bool {
		if len(s) == 0 {
			return false
		}
		p, lo := uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(unsafe.Pointer(unsafe.StringData(in)))
		return lo <= p && p < lo+uintptr(len(in))
	}
	n := 0
	for _, s := range l.shards {
		for _, e := range s.Values() {
			n++
			for _, v := range []string{e.req.Principal, e.req.Host, e.req.Method, e.req.Path, e.d.Path, e.d.Host, e.d.Identity.Namespace} {
				for _, in := range []string{req.Principal, req.Host, req.Method, req.Path} {
					if inside(v, in) {
						t.Errorf("cache entry string %q points into the caller's %.20q...", v, in)
					}
				}
			}
		}
	}
	if n != 1 {
		t.Errorf("cache holds %d entries, want 1", n)
	}
}

// TestLiveDoesNotCacheLargeRequests: a request with more than
// maxCachedRequest bytes of strings, its query aside, is decided afresh
// each time and never kept.
func TestLiveDoesNotCacheLargeRequests(t *testing.T) {
	tab := compileYAML(t, liveRules)
	l := NewLive(tab, LiveOptions{CacheSize: 100, Now: func() time.Time { return testNow }})
	long := httpReq(checkout, "POST", "api.stripe.com", "/v1/"+strings.Repeat("a", maxCachedRequest))
	for i := range 3 {
		d := l.Decide(long)
		if d.Cached || !sameDecision(d, tab.Decide(long, testNow)) {
			t.Errorf("decision %d: %s, cached %v; want the table's, not cached", i+1, fmtDecision(d), d.Cached)
		}
	}
	if n := cacheLen(l); n != 0 {
		t.Errorf("cache holds %d entries, want none", n)
	}
	// At the limit, it is cached.
	req := httpReq(checkout, "POST", "api.stripe.com", "/v1/")
	req.Path += strings.Repeat("a", maxCachedRequest-len(req.Principal)-len(req.Host)-len(req.Method)-len(req.Path))
	warm(l, req)
	if d := l.Decide(req); !d.Cached {
		t.Errorf("a request of exactly %d bytes is not cached", maxCachedRequest)
	}
}
