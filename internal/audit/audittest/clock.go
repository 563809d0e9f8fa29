package audittest

import (
	"sync"
	"testing"
	"time"
)

// Clock is a fake clock for the Writer (Options.Now and Options.After):
// time stands still until Advance moves it, and WaitTimers tells a test
// when the goroutines it drives have gone back to waiting on it. It is
// safe for concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []clockTimer
	changed chan struct{} // closed and replaced whenever timers change
}

type clockTimer struct {
	at time.Time
	c  chan time.Time
}

// NewClock returns a clock standing at now.
func NewClock(now time.Time) *Clock { return &Clock{now: now, changed: make(chan struct{})} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives once the clock has been moved d
// past now.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, clockTimer{at: c.now.Add(d), c: ch})
	c.signalLocked()
	return ch
}

// Advance moves the clock d forward and fires the timers that are due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.c <- c.now
	}
	c.timers = kept
	c.signalLocked()
}

func (c *Clock) signalLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Timers returns how many timers wait for the clock. A goroutine that
// stopped waiting for one (woken by something else) leaves it counted
// until Advance fires it.
func (c *Clock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// WaitTimers waits until at least n timers wait for the clock: the
// goroutines that were to wait on it are back at that point. It fails the
// test after 10 seconds of real time.
func (c *Clock) WaitTimers(t testing.TB, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		got, changed := len(c.timers), c.changed
		c.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %d timers on the fake clock (%d)", n, got)
		}
	}
}
