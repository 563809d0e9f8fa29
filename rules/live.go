package rules

import (
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// LiveOptions configures a Live. The zero value means no cache and the real
// clock.
type LiveOptions struct {
	// CacheSize is the number of decisions kept; 0 disables the cache.
	CacheSize int
	// Now is the clock used for rule expiry; nil means time.Now.
	Now func() time.Time

	// timers makes a Live with an injected clock watch it with timers, as
	// it does time.Now (for tests of that watch).
	timers bool
}

// Live is the active rule table, swapped atomically on reload, in front of
// a decision cache. It is safe for concurrent use; Decide takes no lock
// other than one cache shard's.
//
// The cache invariant: an entry is keyed by the generation of the table
// that made it (each Swap starts a new generation), so a decision of an
// older rule set can never be served; and an entry carries the instant of
// the table's next rule expiry after it was made, past which it is not
// served, so a decision never outlives the rule that made it.
//
// A decision is cached at its request's second miss, not its first (see
// doorkeeper).
type Live struct {
	cur       atomic.Pointer[generation]
	now       func() time.Time
	realClock bool // timers stand in for clock reads on cache hits: now is time.Now (or a test set timers)
	shards    []*lru.Cache[cacheKey, cacheEntry]
	door      doorkeeper
	seed      maphash.Seed
	flight    singleflight.Group
}

// doorkeeper remembers, in a fixed array of hashes, requests that missed
// the cache once. Real traffic holds many requests seen once (an order id
// in the path): cached at their first miss, they would push out decisions
// that repeat, and each would cost a copy, an insert, an eviction, and
// garbage-collector work for as long as it stays. A request is therefore
// cached when it misses a second time.
//
// The array is cut into buckets of doorWays slots, and a hash may sit in
// any slot of its bucket, so that two requests in one bucket rarely evict
// each other's mark (one slot each, they could alternate for ever and
// neither be cached). A hash evicted all the same only waits for one more
// miss. The array holds no pointers.
type doorkeeper []atomic.Uint64

const (
	doorWays     = 4
	doorMinSlots = 1 << 16 // 512 KiB: small caches get a doorkeeper with few collisions too
)

func newDoorkeeper(cacheSize int) doorkeeper {
	n := doorMinSlots
	for n < 2*cacheSize {
		n <<= 1
	}
	return make(doorkeeper, n)
}

// admit reports whether h missed before, and otherwise remembers it.
func (d doorkeeper) admit(h uint64) bool {
	mark := h | 1 // never 0, the empty slot
	first := ((h >> 1) & uint64(len(d)/doorWays-1)) * doorWays
	bucket := d[first : first+doorWays]
	way := -1 // the first empty slot
	for i := range bucket {
		switch bucket[i].Load() {
		case mark:
			return true
		case 0:
			if way < 0 {
				way = i
			}
		}
	}
	if way < 0 {
		way = int(h >> 62) // the top bits, independent of the bucket's
	}
	bucket[way].Store(mark)
	return false
}

// expiryGuard is how long before a rule's expiry cache hits start reading
// the clock.
const expiryGuard = time.Second

// clockRecheck is the longest a watch waits before reading the clock again.
// Timers run on the monotonic clock, which a step of the wall clock (NTP)
// or a suspended VM leaves behind: a rule expiry they jumped over is seen
// within clockRecheck.
const clockRecheck = time.Second

// generation is one active table. Reading the clock on every cache hit
// costs more than the rest of the hit on some machines, so with the real
// clock a timer does the watching: hits compare the clock with their
// entry's expiry only while checkClock is set, from expiryGuard before a
// rule expiry until just after it, when the epoch (part of the cache key)
// moves on and every decision made before the expiry becomes unreachable.
// With an injected clock, checkClock is always set.
type generation struct {
	n          uint64
	table      *Table
	loaded     time.Time
	epoch      atomic.Uint64
	checkClock atomic.Bool
	mu         sync.Mutex
	timer      *time.Timer // nil when no expiry is ahead
	awaiting   time.Time   // the expiry the timer watches for; zero if none
	retired    bool
}

// watch sets checkClock for the time to come and arms the timer for the
// next change.
func (l *Live) watch(g *generation) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.retired {
		return
	}
	now := l.now()
	if !g.awaiting.IsZero() && !now.Before(g.awaiting) {
		// The expiry watched for has passed, on time or jumped over by
		// the wall clock: retire the decisions made before it.
		g.epoch.Add(1)
	}
	next := g.table.NextExpiry(now)
	g.awaiting = next
	if next.IsZero() {
		g.checkClock.Store(false)
		return
	}
	left := next.Sub(now)
	if left <= expiryGuard {
		// Inside the guard: check the clock until just after the expiry.
		g.checkClock.Store(true)
		g.timer = time.AfterFunc(left+time.Millisecond, func() { l.watch(g) })
		return
	}
	g.checkClock.Store(false)
	g.timer = time.AfterFunc(min(left-expiryGuard, clockRecheck), func() { l.watch(g) })
}

func (l *Live) activate(g *generation) {
	if !l.realClock {
		g.checkClock.Store(true)
		return
	}
	l.watch(g)
}

func (g *generation) retire() {
	g.mu.Lock()
	g.retired = true
	if g.timer != nil {
		g.timer.Stop()
	}
	g.mu.Unlock()
}

// cacheKey is a generation and the request's 64-bit hash: cheap to hash
// and compare inside the LRU. The entry keeps the whole request (its query cut
// off, see Decide), compared on a hit, so two requests that share a hash
// never share a decision.
type cacheKey struct {
	gen   uint64
	epoch uint64
	hash  uint64
}

type cacheEntry struct {
	req   Request
	d     Decision
	until int64 // unix nanoseconds; 0: valid for the whole generation
}

const cacheShards = 16

// NewLive returns a Live serving t.
func NewLive(t *Table, opts LiveOptions) *Live {
	l := &Live{now: opts.Now, seed: maphash.MakeSeed()}
	if l.now == nil {
		l.now, l.realClock = time.Now, true
	}
	l.realClock = l.realClock || opts.timers
	if opts.CacheSize > 0 {
		per := (opts.CacheSize + cacheShards - 1) / cacheShards
		l.shards = make([]*lru.Cache[cacheKey, cacheEntry], cacheShards)
		for i := range l.shards {
			l.shards[i], _ = lru.New[cacheKey, cacheEntry](per)
		}
		l.door = newDoorkeeper(opts.CacheSize)
	}
	g := &generation{n: 1, table: t, loaded: l.now()}
	l.activate(g)
	l.cur.Store(g)
	return l
}

// Swap makes t the active table. Decisions already cached become
// unreachable at once; their memory is released.
func (l *Live) Swap(t *Table) {
	for {
		old := l.cur.Load()
		g := &generation{n: old.n + 1, table: t, loaded: l.now()}
		l.activate(g)
		if l.cur.CompareAndSwap(old, g) {
			old.retire()
			break
		}
		g.retire()
	}
	for _, s := range l.shards {
		s.Purge()
	}
}

// Version returns the active table's rule-set version.
func (l *Live) Version() string { return l.cur.Load().table.Version() }

// Table returns the active table.
func (l *Live) Table() *Table { return l.cur.Load().table }

// Generation returns the number of the active table, starting at 1 and
// increased by each Swap, and when it was made active.
func (l *Live) Generation() (uint64, time.Time) {
	g := l.cur.Load()
	return g.n, g.loaded
}

// maxCachedRequest is the most bytes of strings a request may carry, its
// query and fragment cut off, to have its decision cached. Larger requests
// are rare and decided afresh each time, so that the cache's memory stays
// bounded whatever headers callers send.
const maxCachedRequest = 1024

// Decide decides req with the active table, from the cache when it can.
func (l *Live) Decide(req Request) Decision {
	g := l.cur.Load()
	if l.shards == nil {
		return g.table.Decide(req, l.now())
	}
	// The key is req with the path's query and fragment cut off: Table.Decide
	// ignores them (NormalizePath drops them first), so the decision is the
	// same, and requests that differ only there share one entry instead of
	// each keeping its own copy of the query. Requests larger than
	// maxCachedRequest even so are decided afresh.
	key := req
	key.Path = withoutQuery(req.Path)
	if len(key.Principal)+len(key.Host)+len(key.Method)+len(key.Path) > maxCachedRequest {
		return g.table.Decide(req, l.now())
	}
	shard, hash := l.slot(g, key)
	if e, ok := shard.Get(hash); ok && e.req == key && (e.until == 0 || !g.checkClock.Load() || l.now().UnixNano() < e.until) {
		e.d.Cached = true
		return e.d
	}
	v, _, shared := l.flight.Do(flightKey(g.n, &key), func() (any, error) {
		now := l.now()
		var e cacheEntry
		if next := g.table.NextExpiry(now); !next.IsZero() {
			e.until = next.UnixNano()
		}
		if !l.door.admit(hash.hash) {
			e.d = g.table.Decide(key, now)
			return e, nil
		}
		e.req = key.clone()
		e.d = g.table.Decide(e.req, now)
		shard.Add(hash, e)
		return e, nil
	})
	e := v.(cacheEntry)
	if shared && e.until != 0 && l.now().UnixNano() >= e.until {
		// This call joined a computation that read the clock before a rule
		// expired, and that instant has passed: the shared decision may
		// rest on the expired rule.
		return g.table.Decide(req, l.now())
	}
	return e.d
}

// withoutQuery returns path up to its query or fragment.
func withoutQuery(path string) string {
	for i := 0; i < len(path); i++ {
		if c := path[i]; c == '?' || c == '#' {
			return path[:i]
		}
	}
	return path
}

// clone returns req with its strings copied into one new allocation, so
// that a cache entry, and the decision made from it, keep none of the
// caller's memory (req.Path may be a slice of a far longer target).
func (req Request) clone() Request {
	var b strings.Builder
	b.Grow(len(req.Principal) + len(req.Host) + len(req.Method) + len(req.Path))
	b.WriteString(req.Principal)
	b.WriteString(req.Host)
	b.WriteString(req.Method)
	b.WriteString(req.Path)
	s := b.String()
	cut := func(n int) string {
		v := s[:n]
		s = s[n:]
		return v
	}
	req.Principal = cut(len(req.Principal))
	req.Host = cut(len(req.Host))
	req.Method = cut(len(req.Method))
	req.Path = cut(len(req.Path))
	return req
}

// slot is where req's decision of generation gen is cached.
func (l *Live) slot(g *generation, req Request) (*lru.Cache[cacheKey, cacheEntry], cacheKey) {
	h := maphash.Comparable(l.seed, req)
	return l.shards[h%cacheShards], cacheKey{gen: g.n, epoch: g.epoch.Load(), hash: h}
}

// flightKey is the singleflight key of a cache miss, built only on a miss.
// Every field is length-prefixed so that no two keys can collide, whatever
// bytes the strings hold.
func flightKey(gen uint64, req *Request) string {
	var b strings.Builder
	b.WriteString(strconv.FormatUint(gen, 10))
	for _, s := range []string{req.Principal, req.Host, req.Method, req.Path, strconv.Itoa(req.Port), strconv.FormatBool(req.SNI)} {
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	return b.String()
}
