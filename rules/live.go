package rules

import (
	"hash/maphash"
	"strconv"
	"strings"
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
type Live struct {
	cur    atomic.Pointer[generation]
	now    func() time.Time
	shards []*lru.Cache[cacheKey, cacheEntry]
	seed   maphash.Seed
	flight singleflight.Group
}

type generation struct {
	n      uint64
	table  *Table
	loaded time.Time
}

type cacheKey struct {
	gen uint64
	req Request
}

type cacheEntry struct {
	d     Decision
	until int64 // unix nanoseconds; 0: valid for the whole generation
}

const cacheShards = 16

// NewLive returns a Live serving t.
func NewLive(t *Table, opts LiveOptions) *Live {
	l := &Live{now: opts.Now, seed: maphash.MakeSeed()}
	if l.now == nil {
		l.now = time.Now
	}
	if opts.CacheSize > 0 {
		per := (opts.CacheSize + cacheShards - 1) / cacheShards
		l.shards = make([]*lru.Cache[cacheKey, cacheEntry], cacheShards)
		for i := range l.shards {
			l.shards[i], _ = lru.New[cacheKey, cacheEntry](per)
		}
	}
	l.cur.Store(&generation{n: 1, table: t, loaded: l.now()})
	return l
}

// Swap makes t the active table. Decisions already cached become
// unreachable at once; their memory is released.
func (l *Live) Swap(t *Table) {
	for {
		old := l.cur.Load()
		if l.cur.CompareAndSwap(old, &generation{n: old.n + 1, table: t, loaded: l.now()}) {
			break
		}
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

// Decide decides req with the active table, from the cache when it can.
func (l *Live) Decide(req Request) Decision {
	g := l.cur.Load()
	if l.shards == nil {
		return g.table.Decide(req, l.now())
	}
	key := cacheKey{gen: g.n, req: req}
	shard := l.shards[l.shardOf(&req)]
	if e, ok := shard.Get(key); ok && (e.until == 0 || l.now().UnixNano() < e.until) {
		e.d.Cached = true
		return e.d
	}
	v, _, shared := l.flight.Do(flightKey(&key), func() (any, error) {
		now := l.now()
		e := cacheEntry{d: g.table.Decide(req, now)}
		if next := g.table.NextExpiry(now); !next.IsZero() {
			e.until = next.UnixNano()
		}
		shard.Add(key, e)
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

func (l *Live) shardOf(req *Request) int {
	var h maphash.Hash
	h.SetSeed(l.seed)
	h.WriteString(req.Principal)
	h.WriteString(req.Host)
	h.WriteString(req.Path)
	return int(h.Sum64() % cacheShards)
}

// flightKey is the singleflight key of a cache miss, built only on a miss.
// Every field is length-prefixed so that no two keys can collide, whatever
// bytes the strings hold.
func flightKey(k *cacheKey) string {
	var b strings.Builder
	b.WriteString(strconv.FormatUint(k.gen, 10))
	for _, s := range []string{k.req.Principal, k.req.Host, k.req.Method, k.req.Path, strconv.Itoa(k.req.Port), strconv.FormatBool(k.req.SNI)} {
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	return b.String()
}
