package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	Path        string    `json:"path"`
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
}

// ReloaderOptions configures a Reloader. The zero value means: debounce
// 100 ms, poll every 10 s as a fallback to file events, slog.Default, and
// the default bounds on reading the files.
type ReloaderOptions struct {
	Debounce time.Duration
	Poll     time.Duration
	Logger   *slog.Logger
	// Reader reads the rule files (its MaxFileSize bounds each). Its Warn
	// is not called: the Reloader logs a warning for each directory entry
	// it skips, when the entries skipped change.
	Reader Reader
	// OnReload, when set, is called after every reload attempt that found
	// changed files, with its error (nil when the new set was swapped in).
	OnReload func(err error)
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
	return Status{
		Path:        r.path,
		Version:     g.table.Version(),
		Generation:  g.n,
		LoadedAt:    g.loaded,
		Rules:       len(g.table.Set().Rules),
		Files:       g.table.Set().Files,
		NextExpiry:  g.table.NextExpiry(r.live.now()),
		LastError:   h.lastError,
		LastErrorAt: h.lastErrorAt,
		Reloads:     h.reloads,
		Failures:    h.failures,
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
func (r *Reloader) reload(ctx context.Context) (swapped, changed bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	srcs, err := r.readSources(ctx)
	version := ""
	if err != nil && ctx.Err() != nil {
		// Stopped by shutdown: nothing to say about the files.
		return false, false, err
	}
	if err != nil {
		if r.failing && r.failedVersion == "" && r.history.lastError == err.Error() {
			// The same read error as last time (the files are still
			// missing, say): already reported, counted and logged.
			return false, false, err
		}
	} else {
		version = Version(srcs...)
		if version == r.live.Table().Version() {
			if !r.failing {
				return false, false, nil
			}
			// The files are back to the set served, after an invalid set
			// or a failed read: the error shown no longer describes them.
			r.failing, r.failedVersion = false, ""
			r.history.lastError, r.history.lastErrorAt = "", time.Time{}
			r.publish()
			r.opts.Logger.Info("rule files match the served rule set again", "path", r.path, "version", version)
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
