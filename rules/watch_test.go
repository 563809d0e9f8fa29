package rules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// reloadDeadline is how soon a change of the rule files must be served.
const reloadDeadline = 2 * time.Second

// watchReq is the request the watch tests' rule sets decide differently.
var watchReq = httpReq(checkout, "GET", "api.example.com", "/v1/x")

// ruleSet is a valid rule file with one rule, id, deciding watchReq with
// action.
func ruleSet(id, action string) string {
	return header + fmt.Sprintf("  - {id: %s, action: %s, to: {hosts: [api.example.com]}}\n", id, action)
}

// invalidSet is a rule file with one error, at line 6, column 5.
const invalidSet = header + `  - id: broken
    acton: allow
    to: {hosts: [api.example.com]}
`

// reloads counts OnReload calls.
type reloads struct {
	mu   sync.Mutex
	errs []error
}

func (r *reloads) hook(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

// wait waits until OnReload has been called at least n times. The hook
// runs after the Reloader publishes its status and swaps the table, so a
// test that saw either must still wait for it.
func (r *reloads) wait(t *testing.T, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d OnReload calls", n), func() bool { return len(r.get()) >= n })
}

func (r *reloads) get() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

// newReloader loads the rule set at path and returns a Live serving it
// and a Reloader keeping it in step with path, with hook counting
// OnReload calls. Unless opts says otherwise, the slow poll is
// disabled (an hour), so that only file events can trigger a reload.
func newReloader(t *testing.T, path string, opts ReloaderOptions) (*Live, *Reloader, *reloads) {
	t.Helper()
	set, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	tab, err := Compile(set)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	live := NewLive(tab, LiveOptions{CacheSize: 100})
	if opts.Poll == 0 {
		opts.Poll = time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	rl := &reloads{}
	if opts.OnReload == nil {
		opts.OnReload = rl.hook
	}
	return live, NewReloader(path, live, opts), rl
}

// run runs r until the test ends.
func run(t *testing.T, r *Reloader) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// waitFor polls cond until it holds, failing the test if it does not
// within reloadDeadline; it returns how long that took.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > reloadDeadline {
			t.Fatalf("%s: not within %v", what, reloadDeadline)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// waitDecided waits until live decides watchReq with rule id.
func waitDecided(t *testing.T, live *Live, id, action string) time.Duration {
	t.Helper()
	return waitFor(t, "decided by "+id, func() bool {
		d := live.Decide(watchReq)
		return ruleID(d) == id && d.Allow == (action == "allow")
	})
}

// settle gives the watcher time to act on any event it saw (several
// debounce periods).
func settle() { time.Sleep(500 * time.Millisecond) }

// checkServing fails unless r's status describes what live serves, without
// an error.
func checkServing(t *testing.T, live *Live, r *Reloader, wantFiles []string) {
	t.Helper()
	st := r.Status()
	gen, at := live.Generation()
	if st.Version != live.Version() || st.Generation != gen || !st.LoadedAt.Equal(at) || st.Rules != len(live.Table().Set().Rules) {
		t.Errorf("Status: version %q, generation %d, loaded at %v, %d rules; Live serves %q, generation %d, loaded at %v, %d rules",
			st.Version, st.Generation, st.LoadedAt, st.Rules, live.Version(), gen, at, len(live.Table().Set().Rules))
	}
	if st.LastError != "" || !st.LastErrorAt.IsZero() {
		t.Errorf("Status: last error %q at %v, want none", st.LastError, st.LastErrorAt)
	}
	if strings.Join(st.Files, ",") != strings.Join(wantFiles, ",") {
		t.Errorf("Status: files %q, want %q", st.Files, wantFiles)
	}
}

// writeRenamed replaces path by a new file, as editors and `kubectl cp`
// style tools do: write a temporary file beside it, then rename it over.
func writeRenamed(t *testing.T, path, data string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestReloaderSingleFileEditedInPlace(t *testing.T) {
	path := writeFile(t, t.TempDir(), "rules.yaml", ruleSet("v1", "allow"))
	live, r, hook := newReloader(t, path, ReloaderOptions{})
	run(t, r)
	for i, action := range []string{"deny", "allow", "deny"} {
		id := fmt.Sprintf("v%d", i+2)
		// os.WriteFile truncates, then writes: the watcher sees the file
		// empty, then whole.
		if err := os.WriteFile(path, []byte(ruleSet(id, action)), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s live after %v", id, waitDecided(t, live, id, action))
	}
	settle()
	if gen, _ := live.Generation(); gen != 4 {
		t.Errorf("generation %d after 3 edits, want 4", gen)
	}
	checkServing(t, live, r, []string{path})
	if n := len(hook.get()); n < 3 {
		t.Errorf("OnReload called %d times, want at least 3", n)
	}
}

func TestReloaderSingleFileReplacedByRename(t *testing.T) {
	path := writeFile(t, t.TempDir(), "rules.yaml", ruleSet("v1", "allow"))
	live, r, hook := newReloader(t, path, ReloaderOptions{})
	run(t, r)
	for i, action := range []string{"deny", "allow", "deny"} {
		id := fmt.Sprintf("v%d", i+2)
		writeRenamed(t, path, ruleSet(id, action))
		t.Logf("%s live after %v", id, waitDecided(t, live, id, action))
	}
	settle()
	if gen, _ := live.Generation(); gen != 4 {
		t.Errorf("generation %d after 3 replacements, want 4", gen)
	}
	checkServing(t, live, r, []string{path})
	if errs := hook.get(); len(errs) != 3 || errors.Join(errs...) != nil {
		t.Errorf("OnReload calls: %v, want 3 without error", errs)
	}
}

// configMap is a directory laid out and updated as the kubelet does for a
// ConfigMap volume: the files are symlinks into ..data, itself a symlink
// to a timestamped directory holding the content, and an update writes a
// new timestamped directory and swaps ..data to it with one rename.
type configMap struct {
	t   *testing.T
	dir string
	n   int
	cur string            // the timestamped directory ..data points to
	old map[string]string // the files of the current version
}

func newConfigMap(t *testing.T, files map[string]string) *configMap {
	c := &configMap{t: t, dir: t.TempDir()}
	c.update(files)
	return c
}

// update follows the kubelet's AtomicWriter step by step.
func (c *configMap) update(files map[string]string) {
	t := c.t
	t.Helper()
	c.n++
	ts := fmt.Sprintf("..2026_11_22_01_%02d_00.%09d", c.n, c.n)
	// Write the payload into a new timestamped directory.
	for name, data := range files {
		writeFile(t, filepath.Join(c.dir, ts), name, data)
	}
	// Point ..data_tmp at it, and rename ..data_tmp over ..data.
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	// Link new files into the volume, remove those gone from the payload,
	// then remove the old payload.
	for name := range files {
		if _, ok := c.old[name]; !ok {
			if err := os.Symlink(filepath.Join("..data", name), filepath.Join(c.dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name := range c.old {
		if _, ok := files[name]; !ok {
			if err := os.Remove(filepath.Join(c.dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if c.cur != "" {
		if err := os.RemoveAll(filepath.Join(c.dir, c.cur)); err != nil {
			t.Fatal(err)
		}
	}
	c.cur, c.old = ts, files
}

func (c *configMap) path(name string) string { return filepath.Join(c.dir, name) }

func TestReloaderConfigMap(t *testing.T) {
	cm := newConfigMap(t, map[string]string{"rules.yaml": ruleSet("v1", "allow")})
	live, r, hook := newReloader(t, cm.dir, ReloaderOptions{})
	run(t, r)
	rulesOnly := []string{cm.path("rules.yaml")}
	extraDeny := "apiVersion: egress-authz/v1\nkind: RuleSet\nrules:\n  - {id: extra-deny, action: deny, to: {hosts: [api.example.com]}}\n"

	steps := []struct {
		name   string
		files  map[string]string
		id     string // rule deciding watchReq once the update is served
		action string
		served []string
	}{
		{"content_changed", map[string]string{"rules.yaml": ruleSet("v2", "deny")}, "v2", "deny", rulesOnly},
		{"content_changed_back", map[string]string{"rules.yaml": ruleSet("v3", "allow")}, "v3", "allow", rulesOnly},
		{"file_added", map[string]string{"rules.yaml": ruleSet("v3", "allow"), "extra.yaml": extraDeny}, "extra-deny", "deny",
			[]string{cm.path("extra.yaml"), cm.path("rules.yaml")}},
		{"file_removed", map[string]string{"rules.yaml": ruleSet("v3", "allow")}, "v3", "allow", rulesOnly},
	}
	for i, st := range steps {
		cm.update(st.files)
		t.Logf("%s: live after %v", st.name, waitDecided(t, live, st.id, st.action))
		settle()
		if gen, _ := live.Generation(); gen != uint64(i+2) {
			t.Errorf("%s: generation %d, want %d: one update, one swap", st.name, gen, i+2)
		}
		checkServing(t, live, r, st.served)
	}

	// An invalid update is not served; the error names the file, line and
	// column; the next valid update clears it.
	cm.update(map[string]string{"rules.yaml": invalidSet})
	waitFor(t, "reload failure reported", func() bool { return r.Status().Failures == 1 })
	st := r.Status()
	if want := cm.path("rules.yaml") + ":6:5:"; !strings.Contains(st.LastError, want) {
		t.Errorf("LastError %q does not name %s", st.LastError, want)
	}
	if d := live.Decide(watchReq); ruleID(d) != "v3" || !d.Allow {
		t.Errorf("after an invalid update: %s, want the last good set's allow", fmtDecision(d))
	}
	if gen, _ := live.Generation(); gen != uint64(len(steps)+1) {
		t.Errorf("generation %d after an invalid update, want %d", gen, len(steps)+1)
	}
	cm.update(map[string]string{"rules.yaml": ruleSet("v4", "deny")})
	waitDecided(t, live, "v4", "deny")
	checkServing(t, live, r, rulesOnly)
	hook.wait(t, len(steps)+2)
	settle() // time for any extra call to show

	var nils, errs int
	for _, err := range hook.get() {
		if err == nil {
			nils++
		} else {
			errs++
		}
	}
	if nils != len(steps)+1 || errs != 1 {
		t.Errorf("OnReload called with nil %d times and an error %d times, want %d and 1", nils, errs, len(steps)+1)
	}
}

// TestReloaderInvalidSetKeepsTheLastGoodOne, for a single file, and the
// cache: decisions made before the invalid set are still served, from the
// cache, since the generation did not change.
func TestReloaderInvalidSetKeepsTheLastGoodOne(t *testing.T) {
	path := writeFile(t, t.TempDir(), "rules.yaml", ruleSet("v1", "allow"))
	live, r, hook := newReloader(t, path, ReloaderOptions{})
	run(t, r)
	live.Decide(watchReq) // the doorkeeper's first miss: the next is cached
	before := live.Decide(watchReq)
	gen, at := live.Generation()

	writeRenamed(t, path, invalidSet)
	waitFor(t, "reload failure reported", func() bool { return r.Status().Failures == 1 })
	hook.wait(t, 1)
	st := r.Status()
	if want := path + ":6:5: "; !strings.Contains(st.LastError, want) {
		t.Errorf("LastError %q does not name %s", st.LastError, want)
	}
	if st.LastErrorAt.IsZero() {
		t.Errorf("LastErrorAt is zero")
	}
	if st.Version != before.Version || st.Generation != gen || !st.LoadedAt.Equal(at) {
		t.Errorf("Status after an invalid set: version %q, generation %d, loaded %v; want the last good set's %q, %d, %v",
			st.Version, st.Generation, st.LoadedAt, before.Version, gen, at)
	}
	if d := live.Decide(watchReq); !d.Cached || !sameDecision(d, before) {
		t.Errorf("after an invalid set: %s (cached %v), want the earlier decision, cached", fmtDecision(d), d.Cached)
	}
	if errs := hook.get(); len(errs) != 1 || errs[0] == nil || !strings.Contains(errs[0].Error(), path+":6:5") {
		t.Errorf("OnReload calls: %v, want one with the error", errs)
	}

	// Events that do not change the files again do not parse the invalid
	// set again.
	if err := os.Chtimes(path, time.Now(), time.Now()); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Dir(path), "notes.txt", "not a rule file")
	settle()
	if st := r.Status(); st.Failures != 1 || st.Reloads != 1 {
		t.Errorf("after unrelated events: %d reloads, %d failures; want 1, 1", st.Reloads, st.Failures)
	}

	writeRenamed(t, path, ruleSet("v2", "deny"))
	waitDecided(t, live, "v2", "deny")
	checkServing(t, live, r, []string{path})
	if st := r.Status(); st.Failures != 1 || st.Reloads != 2 {
		t.Errorf("after a valid set: %d reloads, %d failures; want 2, 1", st.Reloads, st.Failures)
	}
}

func TestReloaderReload(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "rules.yaml", ruleSet("v1", "allow"))
	live, r, hook := newReloader(t, path, ReloaderOptions{})
	gen := func() uint64 { g, _ := live.Generation(); return g }
	steps := []struct {
		name    string
		data    string // written before Reload; "" leaves the file alone
		swapped bool
		err     bool
		gen     uint64
		hooks   int // OnReload calls so far
		lastErr bool
	}{
		{"unchanged", "", false, false, 1, 0, false},
		{"rewritten_same_content", ruleSet("v1", "allow"), false, false, 1, 0, false},
		{"changed", ruleSet("v2", "deny"), true, false, 2, 1, false},
		{"unchanged_after_change", "", false, false, 2, 1, false},
		{"invalid", invalidSet, false, true, 2, 2, true},
		// The invalid set is not parsed, reported or counted again.
		{"invalid_unchanged", "", false, false, 2, 2, true},
		// Back to the served set: nothing to swap, and the error shown no
		// longer describes the files.
		{"reverted_to_served", ruleSet("v2", "deny"), false, false, 2, 3, false},
		{"invalid_again", invalidSet, false, true, 2, 4, true},
		{"fixed", ruleSet("v3", "allow"), true, false, 3, 5, false},
	}
	for _, st := range steps {
		if st.data != "" {
			writeRenamed(t, path, st.data)
		}
		swapped, err := r.Reload()
		if swapped != st.swapped || (err != nil) != st.err {
			t.Errorf("%s: Reload() = %v, %v; want %v, error %v", st.name, swapped, err, st.swapped, st.err)
		}
		if g := gen(); g != st.gen {
			t.Errorf("%s: generation %d, want %d", st.name, g, st.gen)
		}
		if n := len(hook.get()); n != st.hooks {
			t.Errorf("%s: OnReload called %d times in all, want %d", st.name, n, st.hooks)
		}
		if s := r.Status(); (s.LastError != "") != st.lastErr {
			t.Errorf("%s: LastError %q", st.name, s.LastError)
		}
	}
	if st := r.Status(); st.Reloads != 4 || st.Failures != 2 {
		t.Errorf("%d reloads, %d failures; want 4, 2", st.Reloads, st.Failures)
	}
}

// TestReloaderOnReloadMayCallStatus: the hook runs without the Reloader's
// lock, so that it can read the status it is told about.
func TestReloaderOnReloadMayCallStatus(t *testing.T) {
	path := writeFile(t, t.TempDir(), "rules.yaml", ruleSet("v1", "allow"))
	var r *Reloader
	var seen []Status
	_, r, _ = newReloader(t, path, ReloaderOptions{OnReload: func(error) { seen = append(seen, r.Status()) }})
	for _, data := range []string{ruleSet("v2", "deny"), invalidSet} {
		writeRenamed(t, path, data)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = r.Reload()
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Reload did not return: OnReload deadlocked calling Status")
		}
	}
	if len(seen) != 2 || seen[0].Generation != 2 || seen[0].LastError != "" || seen[1].Failures != 1 || seen[1].LastError == "" {
		t.Errorf("statuses seen by OnReload: %+v", seen)
	}
}

// TestReloaderRunCatchesChangesBeforeTheWatch: a change made after the
// rules were loaded but before Run set up its watch is served at once, not
// at the next poll.
func TestReloaderRunCatchesChangesBeforeTheWatch(t *testing.T) {
	path := writeFile(t, t.TempDir(), "rules.yaml", ruleSet("v1", "allow"))
	live, r, _ := newReloader(t, path, ReloaderOptions{})
	writeRenamed(t, path, ruleSet("v2", "deny"))
	time.Sleep(50 * time.Millisecond) // the event, had anyone watched, is gone
	run(t, r)
	waitDecided(t, live, "v2", "deny")
}

func TestReloaderRunPolls(t *testing.T) {
	path := writeFile(t, t.TempDir(), "rules.yaml", ruleSet("v1", "allow"))
	// A debounce longer than the test: only the poll can reload.
	live, r, _ := newReloader(t, path, ReloaderOptions{Debounce: time.Hour, Poll: 50 * time.Millisecond})
	run(t, r)
	settle()
	writeRenamed(t, path, ruleSet("v2", "deny"))
	waitDecided(t, live, "v2", "deny")
}

func TestReloaderRunStops(t *testing.T) {
	path := writeFile(t, t.TempDir(), "rules.yaml", ruleSet("v1", "allow"))
	_, r, _ := newReloader(t, path, ReloaderOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}

	if err := os.RemoveAll(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err == nil {
		t.Errorf("Run on a removed directory: nil error")
	}
}

func TestReloaderStatus(t *testing.T) {
	path := writeFile(t, t.TempDir(), "rules.yaml", header+
		"  - {id: a, action: allow, expires: 2027-01-01, to: {hosts: [a.example]}}\n"+
		"  - {id: b, action: allow, expires: 2027-06-01, to: {hosts: [b.example]}}\n")
	set, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock(time.Date(2026, 12, 31, 12, 0, 0, 0, time.UTC))
	live := NewLive(tab, LiveOptions{Now: clock.Now})
	r := NewReloader(path, live, ReloaderOptions{Logger: slog.New(slog.DiscardHandler)})
	st := r.Status()
	want := Status{Path: path, Source: path, Version: tab.Version(), Generation: 1, LoadedAt: clock.Now(), Rules: 2, Files: []string{path},
		NextExpiry: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	if fmt.Sprint(st) != fmt.Sprint(want) {
		t.Errorf("Status() =\n  %+v\nwant\n  %+v", st, want)
	}
	clock.Set(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	if got := r.Status().NextExpiry; !got.Equal(time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("NextExpiry at 2027-01-01 00:00 = %v, want 2027-06-01", got)
	}
}

// TestReloaderRecoversFromAReadError: when the rule files cannot be read
// for a while (an editor's save by rename, a ConfigMap swap) and come back
// unchanged, the error shown is cleared and OnReload hears of it; a read
// error that persists is reported, counted and logged once.
func TestReloaderRecoversFromAReadError(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "rules.yaml", ruleSet("v1", "allow"))
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{mu: &logMu, w: &logs}, nil))
	live, r, hook := newReloader(t, path, ReloaderOptions{Logger: logger})
	errorLines := func() int {
		logMu.Lock()
		defer logMu.Unlock()
		return strings.Count(logs.String(), "level=ERROR")
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if swapped, err := r.Reload(); swapped || err == nil {
			t.Errorf("Reload %d with the file missing = %v, %v; want false and an error", i+1, swapped, err)
		}
	}
	st := r.Status()
	if st.LastError == "" || st.LastErrorAt.IsZero() || st.Failures != 1 || st.Reloads != 1 {
		t.Errorf("file missing: last error %q at %v, %d failures, %d reloads; want the error, once", st.LastError, st.LastErrorAt, st.Failures, st.Reloads)
	}
	if n := errorLines(); n != 1 {
		t.Errorf("file missing for three reloads: %d error lines logged, want 1", n)
	}
	if errs := hook.get(); len(errs) != 1 || errs[0] == nil {
		t.Errorf("OnReload calls: %v, want one with the error", errs)
	}

	writeFile(t, dir, "rules.yaml", ruleSet("v1", "allow"))
	if swapped, err := r.Reload(); swapped || err != nil {
		t.Errorf("Reload with the same file back = %v, %v; want false, nil", swapped, err)
	}
	checkServing(t, live, r, []string{path})
	if errs := hook.get(); len(errs) != 2 || errs[1] != nil {
		t.Errorf("OnReload calls: %v, want a second one with nil", errs)
	}
	if g, _ := live.Generation(); g != 1 {
		t.Errorf("generation %d, want 1: nothing changed", g)
	}

	// Missing again: reported again, since it was cleared in between.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reload(); err == nil {
		t.Errorf("Reload with the file missing again: nil error")
	}
	if st := r.Status(); st.LastError == "" || st.Failures != 2 {
		t.Errorf("file missing again: last error %q, %d failures; want the error, 2", st.LastError, st.Failures)
	}
	if n := errorLines(); n != 2 {
		t.Errorf("%d error lines logged, want 2", n)
	}
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestReloaderBeforeSwap: a new set serves only once BeforeSwap took it;
// its error keeps the last good set serving, and the same files are tried
// again at the next reload.
func TestReloaderBeforeSwap(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "rules.yaml", ruleSet("v1", "allow"))
	var kept []string
	fail := true
	live, r, _ := newReloader(t, path, ReloaderOptions{BeforeSwap: func(_ context.Context, tab *Table) error {
		if fail {
			return errors.New("archive full")
		}
		if len(tab.Set().Sources) != 1 || string(tab.Set().Sources[0].Data) != ruleSet("v2", "deny") {
			t.Errorf("BeforeSwap: the table's sources are %q, want the file as read", tab.Set().Sources)
		}
		kept = append(kept, tab.Version())
		return nil
	}})
	writeRenamed(t, path, ruleSet("v2", "deny"))
	swapped, err := r.Reload()
	if swapped || err == nil || !strings.Contains(err.Error(), "archive full") {
		t.Fatalf("Reload with BeforeSwap failing = %v, %v; want no swap and its error", swapped, err)
	}
	if live.Table().Set().Rules[0].ID != "v1" {
		t.Fatalf("serving %s after BeforeSwap failed, want v1", live.Table().Set().Rules[0].ID)
	}
	fail = false
	if swapped, err := r.Reload(); !swapped || err != nil {
		t.Fatalf("Reload of the same files once BeforeSwap takes them = %v, %v; want a swap", swapped, err)
	}
	if len(kept) != 1 || kept[0] != live.Table().Version() || r.Status().LastError != "" {
		t.Errorf("kept %v, serving %s, last error %q", kept, live.Table().Version(), r.Status().LastError)
	}
}
