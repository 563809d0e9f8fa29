package rules

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	lru "github.com/hashicorp/golang-lru/v2"
)

// newLiveOneShard is NewLive with the whole cache behind one lock: every
// shard slot holds the same LRU. It exists to measure what sharding buys.
func newLiveOneShard(t *Table, opts LiveOptions) *Live {
	l := NewLive(t, LiveOptions{Now: opts.Now})
	c, err := lru.New[cacheKey, cacheEntry](opts.CacheSize)
	if err != nil {
		panic(err)
	}
	l.shards = make([]*lru.Cache[cacheKey, cacheEntry], cacheShards)
	for i := range l.shards {
		l.shards[i] = c
	}
	l.door = newDoorkeeper(opts.CacheSize)
	return l
}

// benchTable is the 10,000-rule table of BenchmarkDecide.
func benchTable(b *testing.B) (*Table, *generated) {
	b.Helper()
	g := generateRules(b, 10000, 1)
	set, err := Parse(Source{Name: "bench.yaml", Data: g.YAML})
	if err != nil {
		b.Fatal(err)
	}
	tab, err := Compile(set)
	if err != nil {
		b.Fatal(err)
	}
	checkGenerated(b, tab, g)
	return tab, g
}

// BenchmarkLiveDecide measures Live.Decide on a 10,000-rule table: without
// the cache, from the cache, and from the cache with 64 concurrent callers,
// with the cache sharded as NewLive builds it and behind a single lock.
func BenchmarkLiveDecide(b *testing.B) {
	tab, g := benchTable(b)
	// 1,000 distinct requests, all allowed, spread over principals, hosts
	// and paths as real traffic is.
	pool := make([]Request, 1000)
	for i := range pool {
		r := g.Allowed
		r.Path = fmt.Sprintf("/v1/items/it_%d", i)
		if i%2 == 1 {
			r.Method = "GET"
		}
		pool[i] = r
	}
	const cacheSize = 10000

	b.Run("uncached_10k", func(b *testing.B) {
		l := NewLive(tab, LiveOptions{})
		b.ReportAllocs()
		for b.Loop() {
			l.Decide(g.Allowed)
		}
	})
	b.Run("cached_10k", func(b *testing.B) {
		l := NewLive(tab, LiveOptions{CacheSize: cacheSize})
		warm(l, g.Allowed)
		if d := l.Decide(g.Allowed); !d.Cached || !d.Allow {
			b.Fatalf("warmed request: cached %v, allow %v", d.Cached, d.Allow)
		}
		b.ReportAllocs()
		for b.Loop() {
			l.Decide(g.Allowed)
		}
	})
	// The pool from one caller: the baseline of the parallel runs below.
	b.Run("cached_pool_1k", func(b *testing.B) {
		l := NewLive(tab, LiveOptions{CacheSize: cacheSize})
		for _, r := range pool {
			warm(l, r)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			l.Decide(pool[i%len(pool)])
			i++
		}
	})
	for _, v := range []struct {
		name string
		new  func(*Table, LiveOptions) *Live
	}{
		{"cached_parallel_64", NewLive},
		{"cached_parallel_64_one_shard", newLiveOneShard},
	} {
		b.Run(v.name, func(b *testing.B) {
			l := v.new(tab, LiveOptions{CacheSize: cacheSize})
			for _, r := range pool {
				warm(l, r)
			}
			for _, r := range pool {
				if d := l.Decide(r); !d.Cached || !d.Allow {
					b.Fatalf("warmed request %+v: cached %v, allow %v", r, d.Cached, d.Allow)
				}
			}
			var next atomic.Int64
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0))) // 64 callers
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)) * 7919
				for pb.Next() {
					l.Decide(pool[i%len(pool)])
					i++
				}
			})
		})
	}
}

// BenchmarkCompileSwap10k measures a reload of a parsed 10,000-rule set:
// Compile, then Swap into a Live whose cache is in use (one entry), or
// full (10,000 entries, for Swap to drop; filled outside the timer).
func BenchmarkCompileSwap10k(b *testing.B) {
	tab, g := benchTable(b)
	set := tab.Set()
	const cacheSize = 10000
	fill := make([]Request, cacheSize)
	for i := range fill {
		fill[i] = g.Allowed
		fill[i].Path = fmt.Sprintf("/v1/items/it_%d", i)
	}
	for _, full := range []bool{false, true} {
		name := "cache_one_entry"
		if full {
			name = "cache_full"
		}
		b.Run(name, func(b *testing.B) {
			l := NewLive(tab, LiveOptions{CacheSize: cacheSize})
			b.ReportAllocs()
			for b.Loop() {
				if full {
					b.StopTimer()
					for _, r := range fill {
						l.Decide(r)
					}
					b.StartTimer()
				} else {
					l.Decide(g.Allowed)
				}
				t, err := Compile(set)
				if err != nil {
					b.Fatal(err)
				}
				l.Swap(t)
			}
		})
	}
}

// BenchmarkParseCompileSwap10k measures a whole reload from the bytes of a
// 10,000-rule file: Parse, Compile, Swap.
func BenchmarkParseCompileSwap10k(b *testing.B) {
	tab, g := benchTable(b)
	l := NewLive(tab, LiveOptions{CacheSize: 10000})
	src := Source{Name: "bench.yaml", Data: g.YAML}
	b.SetBytes(int64(len(g.YAML)))
	b.ReportAllocs()
	for b.Loop() {
		l.Decide(g.Allowed)
		set, err := Parse(src)
		if err != nil {
			b.Fatal(err)
		}
		t, err := Compile(set)
		if err != nil {
			b.Fatal(err)
		}
		l.Swap(t)
	}
}
