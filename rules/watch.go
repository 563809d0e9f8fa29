package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Status describes the rule set a Reloader serves, for /v1/rules and metrics.
type Status struct {
	// Path is what the Reloader was told to serve: a rule path, or the
	// address of a Fetcher's source.
	Path string `json:"path"`
	// Source is where the served set was read from: the rule path, or
	// what its Fetcher said (Fetched.Source).
	Source      string    `json:"source"`
	Version     string    `json:"version"`
	Generation  uint64    `json:"generation"`
	LoadedAt    time.Time `json:"loaded_at"`
	Rules       int       `json:"rules"`
	Files       []string  `json:"files"`
	NextExpiry  time.Time `json:"next_expiry,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Reloads     uint64    `json:"reloads"`
	Failures    uint64    `json:"failures"`
	// Bundle describes the signed bundle the served set came from; nil
	// for rule files.
	Bundle *BundleInfo `json:"bundle,omitempty"`
	// LastCheck is when a Fetcher's source was last asked for a new set,
	// whatever the answer; zero for rule files.
	LastCheck time.Time `json:"last_check,omitzero"`
}

// BundleInfo describes a signed bundle (see internal/bundle) a set came
// from.
type BundleInfo struct {
	Revision string    `json:"revision"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	// Digest identifies the bundle, the same on every cluster.
	Digest string `json:"digest"`
	// SignedBy are the ids of the keys whose signatures verified.
	SignedBy []string `json:"signed_by"`
	// AgeSeconds is how long ago the bundle was created, when Status was
	// read.
	AgeSeconds float64 `json:"age_seconds"`
}

// A Fetcher fetches the rule sets a Reloader serves from a source it polls
// rather than watches: a signed bundle on an HTTPS server or in an OCI
// registry (see NewFetchReloader). The Reloader calls it from one
// goroutine at a time.
type Fetcher interface {
	// Fetch returns the set the source offers now, or nil and no error
	// when the source offers what it offered at the last Fetch, whatever
	// became of that. An error means the source offered nothing that may
	// be served: it could not be reached, or what it offered was refused.
	Fetch(ctx context.Context) (*Fetched, error)
}

// Fetched is a rule set a Fetcher fetched.
type Fetched struct {
	Sources []Source
	// Source says where the set was read from, for Status.
	Source string
	// Bundle describes the bundle the set came from, for Status; nil if
	// none.
	Bundle *BundleInfo
	// Accept, when set, is called once the set compiled and is about to
	// be served, or was found to be the set served: the Fetcher may then
	// take it as the active one (and keep a copy). Its error is logged;
	// the set is served all the same.
	Accept func() error
}

// ReloaderOptions configures a Reloader. The zero value means: debounce
// 100 ms, poll every 10 s as a fallback to file events (a Fetcher every
// 30 s), slog.Default, and the default bounds on reading the files.
type ReloaderOptions struct {
	Debounce time.Duration
	// Poll is how often the rule files are read in case an event was
	// missed; for a Fetcher, how often its source is asked, less a random
	// part of up to a quarter, so that a fleet's replicas spread out.
	Poll   time.Duration
	Logger *slog.Logger
	// Reader reads the rule files (its MaxFileSize bounds each). Its Warn
	// is not called: the Reloader logs a warning for each directory entry
	// it skips, when the entries skipped change.
	Reader Reader
	// OnReload, when set, is called after every reload attempt that found
	// changed files, with its error (nil when the new set was swapped in).
	OnReload func(err error)
	// BeforeSwap, when set, is called with a new table before it serves
	// (the server archives its rule set beside the decision log). Its
	// error fails the reload: the last good set keeps serving, and the
	// next reload tries again.
	BeforeSwap func(ctx context.Context, t *Table) error
}

// Reloader keeps a Live in step with the rule files at a path. A new set is
// read, parsed, validated and compiled off the request path and swapped in
// only when all of that succeeded: an invalid set never replaces the last
// good one.
type Reloader struct {
	path string
	live *Live
	opts ReloaderOptions
	// read reads the rule files: rd.ReadSources, or a test's stand-in.
	read func(ctx context.Context, rd Reader, path string) ([]Source, error)
	// fetcher, when set, replaces reading the files at path.
	fetcher Fetcher

	// mu serializes reloads and guards the fields below. Status does not
	// take it: a reload of a large set holds it for a second or more, and
	// /readyz, /v1/rules and the metrics must not wait for that.
	mu      sync.Mutex
	history history // the working copy; published to pub when it changes
	// failing is set while history.lastError describes the files: the last
	// attempt could not read them, or read an invalid set, whose version
	// failedVersion then holds so that it is not parsed again ("" when the
	// files could not be read).
	failing       bool
	failedVersion string
	// skipped is what the last read skipped, as logged, so that a named
	// pipe left in the directory is logged once, not at every poll.
	skipped string

	pub atomic.Pointer[history] // what Status reports; never nil
}

// history is the part of a Status that reloads make; the rest describes
// the table the Live serves and is read from it.
type history struct {
	lastError   string
	lastErrorAt time.Time
	reloads     uint64
	failures    uint64
	lastCheck   time.Time
	// served says where the served set and the one before it came from
	// (Fetcher only): the table is swapped after publish, so for a moment
	// Status may read the new history and the old table, and must still
	// describe the table it read.
	served [2]servedFrom
}

// servedFrom is where the set of a version came from.
type servedFrom struct {
	version string
	source  string
	bundle  *BundleInfo
}

// NewReloader returns a Reloader for live, which serves the set loaded from
// path.
func NewReloader(path string, live *Live, opts ReloaderOptions) *Reloader {
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.Poll <= 0 {
		opts.Poll = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &Reloader{path: path, live: live, opts: opts,
		read: func(ctx context.Context, rd Reader, path string) ([]Source, error) { return rd.ReadSources(ctx, path) }}
	r.publish()
	return r
}

// NewFetchReloader returns a Reloader for live, which serves first, the
// set f fetched at start-up (whose Accept the caller has called): Run then
// polls f for newer sets. name is what Status reports as the Path.
func NewFetchReloader(name string, f Fetcher, first *Fetched, live *Live, opts ReloaderOptions) *Reloader {
	if opts.Poll <= 0 {
		opts.Poll = 30 * time.Second
	}
	r := NewReloader(name, live, opts)
	r.fetcher = f
	r.history.served[0] = servedFrom{version: live.Table().Version(), source: first.Source, bundle: first.Bundle}
	r.publish()
	return r
}

// publish makes the working history the one Status reports. r.mu must be
// held (or r not yet shared).
func (r *Reloader) publish() {
	h := r.history
	r.pub.Store(&h)
}

// Status returns the state of the served rule set. It never waits for a
// reload in progress. What it says of the rule set is read from the Live in
// one load, so it always describes the table being served.
func (r *Reloader) Status() Status {
	h := r.pub.Load()
	g := r.live.cur.Load()
	now := r.live.now()
	source, bundle := r.path, (*BundleInfo)(nil)
	for _, s := range h.served {
		if s.version == g.table.Version() && s.version != "" {
			source = s.source
			if s.bundle != nil {
				b := *s.bundle
				b.AgeSeconds = now.Sub(b.Created).Seconds()
				bundle = &b
			}
			break
		}
	}
	return Status{
		Path:        r.path,
		Source:      source,
		Version:     g.table.Version(),
		Generation:  g.n,
		LoadedAt:    g.loaded,
		Rules:       len(g.table.Set().Rules),
		Files:       g.table.Set().Files,
		NextExpiry:  g.table.NextExpiry(now),
		LastError:   h.lastError,
		LastErrorAt: h.lastErrorAt,
		Reloads:     h.reloads,
		Failures:    h.failures,
		Bundle:      bundle,
		LastCheck:   h.lastCheck,
	}
}

// Reload reads the rule files and, when they changed and are valid, swaps
// the new table in. It reports whether a new table was swapped in.
func (r *Reloader) Reload() (bool, error) {
	return r.reloadCtx(context.Background())
}

// reloadCtx is Reload, reading no further once ctx is done.
func (r *Reloader) reloadCtx(ctx context.Context) (bool, error) {
	swapped, changed, err := r.reload(ctx)
	// Called without the lock held, so that the hook may call Status.
	if changed && r.opts.OnReload != nil {
		r.opts.OnReload(err)
	}
	return swapped, err
}

// reload is Reload under the lock; changed reports whether the files
// differed from what was last read, which is when OnReload is called.
// The lock serializes reloads, reading and fetching included; Status and
// the request path never take it.
func (r *Reloader) reload(ctx context.Context) (swapped, changed bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var srcs []Source
	var fetched *Fetched
	if r.fetcher != nil {
		fetched, err = r.fetcher.Fetch(ctx)
		r.history.lastCheck = r.live.now()
		r.publish()
		if err == nil && fetched == nil {
			return false, false, nil // the source offers what it offered
		}
		if fetched != nil {
			srcs = fetched.Sources
		}
	} else {
		srcs, err = r.readSources(ctx)
	}
	version := ""
	if err != nil && ctx.Err() != nil {
		// Stopped by shutdown: nothing to say about the files.
		return false, false, err
	}
	if err != nil {
		if r.failing && r.failedVersion == "" && r.history.lastError == err.Error() {
			// The same read error as last time (the files are still
			// missing, say): already reported, counted and logged.
			if fetched != nil || r.fetcher != nil {
				r.publish()
			}
			return false, false, err
		}
	} else {
		version = Version(srcs...)
		if version == r.live.Table().Version() {
			accepted := r.acceptServed(fetched, version)
			if !r.failing {
				if accepted {
					r.publish()
				}
				return false, accepted, nil
			}
			// The files are back to the set served, after an invalid set
			// or a failed read: the error shown no longer describes them.
			r.failing, r.failedVersion = false, ""
			r.history.lastError, r.history.lastErrorAt = "", time.Time{}
			r.publish()
			if r.fetcher != nil {
				r.opts.Logger.Info("the source offers the served rule set again", "path", r.path, "version", version)
			} else {
				r.opts.Logger.Info("rule files match the served rule set again", "path", r.path, "version", version)
			}
			return false, true, nil
		}
		if r.failing && version == r.failedVersion {
			return false, false, nil
		}
	}
	var t *Table
	if err == nil {
		var set *Set
		if set, err = Parse(srcs...); err == nil {
			t, err = Compile(set)
		}
	}
	if err == nil && r.opts.BeforeSwap != nil {
		if err = r.opts.BeforeSwap(ctx, t); err != nil {
			err = fmt.Errorf("rule set %s: %w", t.Version(), err)
			version = "" // not the files' fault: tried again at the next reload
		}
	}
	r.history.reloads++
	if err != nil {
		r.failing, r.failedVersion = true, version
		r.history.failures++
		r.history.lastError = err.Error()
		r.history.lastErrorAt = r.live.now()
		r.publish()
		r.opts.Logger.Error("rule reload failed; still serving the last good rule set",
			"path", r.path, "version", r.live.Table().Version(), "error", err.Error())
		return false, true, err
	}
	if fetched != nil {
		r.accept(fetched)
		r.history.served[1] = r.history.served[0]
		r.history.served[0] = servedFrom{version: t.Version(), source: fetched.Source, bundle: fetched.Bundle}
	}
	// Published before the swap: the error is out of date already, and a
	// caller that sees the new table served must not see it.
	r.failing, r.failedVersion = false, ""
	r.history.lastError, r.history.lastErrorAt = "", time.Time{}
	r.publish()
	r.live.Swap(t)
	gen, _ := r.live.Generation()
	r.opts.Logger.Info("rules reloaded", "path", r.path, "version", t.Version(),
		"rules", len(t.Set().Rules), "generation", gen)
	return true, true, nil
}

// acceptServed takes a fetched set whose rules are those served (a bundle
// re-published with a later expiry, say, or the one served, from the
// source after a start from a kept copy): it is accepted without a swap,
// and Status describes it. It reports whether the set was a new bundle.
// r.mu must be held.
func (r *Reloader) acceptServed(f *Fetched, version string) bool {
	if f == nil {
		return false
	}
	cur := &r.history.served[0]
	isNew := f.Accept != nil
	r.accept(f)
	if cur.version == version {
		cur.source, cur.bundle = f.Source, f.Bundle
	}
	if isNew && f.Bundle != nil {
		r.opts.Logger.Info("rule bundle accepted; its rules are those served", "path", r.path,
			"revision", f.Bundle.Revision, "version", version)
	}
	return isNew
}

// accept calls f.Accept, logging its error. r.mu must be held.
func (r *Reloader) accept(f *Fetched) {
	if f.Accept == nil {
		return
	}
	if err := f.Accept(); err != nil {
		r.opts.Logger.Warn("rule set served, but not kept", "path", r.path, "error", err.Error())
	}
}

// readSources reads the rule files, logging what it skipped when that
// changed. r.mu must be held.
func (r *Reloader) readSources(ctx context.Context) ([]Source, error) {
	var skipped []Diagnostic
	rd := r.opts.Reader
	rd.Warn = func(d Diagnostic) { skipped = append(skipped, d) }
	srcs, err := r.read(ctx, rd, r.path)
	if err != nil {
		return nil, err // what was skipped is known again at the next read
	}
	var b strings.Builder
	for _, d := range skipped {
		b.WriteString(d.Error())
		b.WriteByte('\n')
	}
	if b.String() != r.skipped {
		r.skipped = b.String()
		for _, d := range skipped {
			r.opts.Logger.Warn("rule file skipped", "path", r.path, "file", d.Pos.File, "reason", d.Msg)
		}
	}
	return srcs, nil
}

// Run watches the rule path until ctx is done, reloading after changes.
// It watches the directory holding the rules (the path itself when it is a
// directory), which sees in-place edits, replacements by rename, and
// Kubernetes ConfigMap updates, where the kubelet swaps a ..data symlink.
// A slow poll backs the watch up in case an event is missed.
func (r *Reloader) Run(ctx context.Context) error {
	if r.fetcher != nil {
		return r.poll(ctx)
	}
	dir := r.path
	if st, err := os.Stat(r.path); err != nil || !st.IsDir() {
		dir = filepath.Dir(r.path)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch rules: %w", err)
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch rules in %s: %w", dir, err)
	}
	// A change made after the rules were first loaded but before the watch
	// was in place raised no event: catch it now rather than at the poll.
	_, _ = r.reloadCtx(ctx)
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	poll := time.NewTicker(r.opts.Poll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return errors.New("watch rules: watcher closed")
			}
			debounce.Reset(r.opts.Debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("watch rules: watcher closed")
			}
			r.opts.Logger.Warn("rule watch error; relying on polling", "error", err.Error())
		case <-debounce.C:
			_, _ = r.reloadCtx(ctx)
		case <-poll.C:
			_, _ = r.reloadCtx(ctx)
		}
	}
}

// poll asks the Fetcher for a new set now, then every Poll less a random
// part of up to a quarter, until ctx is done: so that a new set is picked
// up within one Poll, and a fleet's replicas, started together, do not ask
// the source together.
func (r *Reloader) poll(ctx context.Context) error {
	_, _ = r.reloadCtx(ctx)
	t := time.NewTimer(r.nextPoll())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_, _ = r.reloadCtx(ctx)
			t.Reset(r.nextPoll())
		}
	}
}

func (r *Reloader) nextPoll() time.Duration {
	return r.opts.Poll - rand.N(r.opts.Poll/4+1)
}
