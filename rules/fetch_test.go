package rules

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeFetcher answers Fetch with what the test queued, then with nil (the
// source offers what it offered), and counts its calls and Accepts.
type fakeFetcher struct {
	mu       sync.Mutex
	queue    []fetchAnswer
	calls    []time.Time
	accepted []string // the revisions accepted
}

type fetchAnswer struct {
	f   *Fetched
	err error
}

func (f *fakeFetcher) push(a fetchAnswer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = append(f.queue, a)
}

func (f *fakeFetcher) Fetch(context.Context) (*Fetched, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, time.Now())
	if len(f.queue) == 0 {
		return nil, nil
	}
	a := f.queue[0]
	f.queue = f.queue[1:]
	return a.f, a.err
}

func (f *fakeFetcher) acceptedRevisions() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.accepted, ",")
}

// fetched is a set of one rule file, as bundle revision rev, whose Accept
// records rev.
func (f *fakeFetcher) fetched(rev, rules string) *Fetched {
	return &Fetched{
		Sources: []Source{{Name: "rules/rules.yaml", Data: []byte(rules)}},
		Source:  "oci://registry.example/rules:prod@sha256:" + rev,
		Bundle:  &BundleInfo{Revision: rev, Created: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), Digest: "d" + rev},
		Accept: func() error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.accepted = append(f.accepted, rev)
			return nil
		},
	}
}

func newFetchReloader(t *testing.T, f *fakeFetcher, first *Fetched, opts ReloaderOptions) (*Live, *Reloader, *reloads, *bytes.Buffer) {
	t.Helper()
	set, err := Parse(first.Sources...)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	live := NewLive(tab, LiveOptions{CacheSize: 100})
	hook := &reloads{}
	opts.OnReload = hook.hook
	var log bytes.Buffer
	opts.Logger = slog.New(slog.NewTextHandler(&log, nil))
	first.Accept = nil // taken at start-up
	return live, NewFetchReloader("oci://registry.example/rules:prod", f, first, live, opts), hook, &log
}

func decides(t *testing.T, live *Live, want bool) {
	t.Helper()
	if got := live.Decide(watchReq).Allow; got != want {
		t.Errorf("watchReq allowed %v, want %v (serving %s)", got, want, live.Table().Version())
	}
}

func TestFetchReloaderKeepsTheLastGoodSet(t *testing.T) {
	f := &fakeFetcher{}
	live, r, hook, log := newFetchReloader(t, f, f.fetched("1", ruleSet("one", "deny")), ReloaderOptions{})
	st := r.Status()
	if st.Path != "oci://registry.example/rules:prod" || st.Source != "oci://registry.example/rules:prod@sha256:1" ||
		st.Bundle == nil || st.Bundle.Revision != "1" || st.Bundle.AgeSeconds <= 0 || !st.LastCheck.IsZero() {
		t.Fatalf("status at start: %+v (bundle %+v)", st, st.Bundle)
	}
	decides(t, live, false)

	// A new set: swapped in, accepted, described.
	f.push(fetchAnswer{f: f.fetched("2", ruleSet("two", "allow"))})
	if swapped, err := r.Reload(); !swapped || err != nil {
		t.Fatalf("Reload: %v, %v", swapped, err)
	}
	decides(t, live, true)
	st = r.Status()
	if st.Bundle.Revision != "2" || st.Source != "oci://registry.example/rules:prod@sha256:2" || st.LastCheck.IsZero() || st.LastError != "" {
		t.Errorf("after revision 2: %+v (bundle %+v)", st, st.Bundle)
	}
	if got := f.acceptedRevisions(); got != "2" {
		t.Errorf("accepted %q, want 2", got)
	}

	// Refused by the fetcher (a bad signature, say): the last good set
	// keeps deciding, the error is shown and counted once.
	refused := errors.New("bad signature: signed by key 0123456789abcdef, none of the configured keys")
	f.push(fetchAnswer{err: refused})
	if _, err := r.Reload(); !errors.Is(err, refused) {
		t.Fatalf("Reload: %v, want the fetcher's error", err)
	}
	decides(t, live, true)
	check1 := r.Status().LastCheck
	// The source offers the same refused bundle (a 304): nothing changes
	// but the time of the check.
	time.Sleep(2 * time.Millisecond)
	if swapped, err := r.Reload(); swapped || err != nil {
		t.Fatalf("Reload of an unchanged source: %v, %v", swapped, err)
	}
	st = r.Status()
	if st.LastError != refused.Error() || st.Failures != 1 || st.Bundle.Revision != "2" || !st.LastCheck.After(check1) {
		t.Errorf("after the refusal: %+v", st)
	}

	// A set that does not compile: never accepted, never served.
	f.push(fetchAnswer{f: f.fetched("3", invalidSet)})
	if _, err := r.Reload(); err == nil || !strings.Contains(err.Error(), "rules/rules.yaml:6:5") {
		t.Fatalf("Reload of an invalid set: %v, want rules/rules.yaml:6:5", err)
	}
	decides(t, live, true)
	if got := f.acceptedRevisions(); got != "2" {
		t.Errorf("accepted %q after an invalid set, want 2", got)
	}
	if st := r.Status(); st.Failures != 2 || st.Bundle.Revision != "2" {
		t.Errorf("after the invalid set: %+v", st)
	}

	// The source offers the served set again: the error is cleared.
	f.push(fetchAnswer{f: &Fetched{Sources: f.fetched("2", ruleSet("two", "allow")).Sources,
		Source: "oci://registry.example/rules:prod@sha256:2", Bundle: &BundleInfo{Revision: "2"}}})
	if _, err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); st.LastError != "" || st.Bundle.Revision != "2" {
		t.Errorf("after the source offered the served set again: %+v", st)
	}
	hook.wait(t, 4)
	if errs := hook.get(); errs[0] != nil || errs[1] == nil || errs[2] == nil || errs[3] != nil {
		t.Errorf("OnReload errors %v, want nil, error, error, nil", errs)
	}
	if n := strings.Count(log.String(), "rule reload failed"); n != 2 {
		t.Errorf("%d failures logged, want 2\n%s", n, log)
	}
}

// A bundle that carries the served rules (re-published to push its
// expiry back) is accepted without a swap, and Status shows it.
func TestFetchReloaderAcceptsANewBundleOfTheSameRules(t *testing.T) {
	f := &fakeFetcher{}
	live, r, hook, _ := newFetchReloader(t, f, f.fetched("1", ruleSet("one", "deny")), ReloaderOptions{})
	gen, _ := live.Generation()
	f.push(fetchAnswer{f: f.fetched("2", ruleSet("one", "deny"))})
	if swapped, err := r.Reload(); swapped || err != nil {
		t.Fatalf("Reload: swapped %v, %v; want no swap, no error", swapped, err)
	}
	if g, _ := live.Generation(); g != gen {
		t.Errorf("generation %d, want %d: the same rules were swapped in", g, gen)
	}
	if got := f.acceptedRevisions(); got != "2" {
		t.Errorf("accepted %q, want 2", got)
	}
	if st := r.Status(); st.Bundle.Revision != "2" || st.Source != "oci://registry.example/rules:prod@sha256:2" {
		t.Errorf("status %+v (bundle %+v), want revision 2", st, st.Bundle)
	}
	hook.wait(t, 1)
}

// Run asks the source at once, then every Poll less up to a quarter: a
// new set is picked up within one Poll.
func TestFetchReloaderPollsWithJitterWithinOnePoll(t *testing.T) {
	const poll = 100 * time.Millisecond
	f := &fakeFetcher{}
	live, r, _, _ := newFetchReloader(t, f, f.fetched("1", ruleSet("one", "deny")), ReloaderOptions{Poll: poll})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- r.Run(ctx) }()
	waitFor(t, "10 fetches", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.calls) >= 10
	})
	f.push(fetchAnswer{f: f.fetched("2", ruleSet("two", "allow"))})
	pushed := time.Now()
	took := waitFor(t, "the new set served", func() bool { return live.Decide(watchReq).Allow })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if took > poll+100*time.Millisecond { // slack for a busy machine
		t.Errorf("new set served %s after it was offered; want within one poll (%s)", took, poll)
	}
	f.mu.Lock()
	calls := append([]time.Time(nil), f.calls...)
	f.mu.Unlock()
	if first := calls[0].Sub(start); first > poll/2 {
		t.Errorf("first fetch %s after Run, want at once", first)
	}
	distinct := map[time.Duration]bool{}
	for i := 1; i < len(calls) && calls[i].Before(pushed); i++ {
		gap := calls[i].Sub(calls[i-1])
		if gap < poll*3/4-5*time.Millisecond {
			t.Errorf("fetch %d came %s after the one before; want at least %s", i, gap, poll*3/4)
		}
		distinct[gap.Round(time.Millisecond)] = true
	}
	if len(distinct) < 3 {
		t.Errorf("gaps between fetches %v: no jitter", distinct)
	}
}

// An Accept that fails (the data directory is full) does not stop the
// newer set from being served: it is logged.
func TestFetchReloaderServesWhenAcceptFails(t *testing.T) {
	f := &fakeFetcher{}
	live, r, _, log := newFetchReloader(t, f, f.fetched("1", ruleSet("one", "deny")), ReloaderOptions{})
	next := f.fetched("2", ruleSet("two", "allow"))
	next.Accept = func() error { return errors.New("write data/rules-bundles: no space left on device") }
	f.push(fetchAnswer{f: next})
	if swapped, err := r.Reload(); !swapped || err != nil {
		t.Fatalf("Reload: %v, %v", swapped, err)
	}
	decides(t, live, true)
	if !strings.Contains(log.String(), "no space left on device") {
		t.Errorf("the failed Accept is not logged:\n%s", log)
	}
}
