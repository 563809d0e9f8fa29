package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"
)

// RuleSet is a rule-set version as the archive keeps it: the files that
// made it, by base name, so that a record's ruleset names the rules as
// they were when they decided. The version is the rules package's hash of
// the files, so a copy can be checked against its name.
type RuleSet struct {
	Version string        `json:"version"`
	Files   []RuleSetFile `json:"files"`
}

// RuleSetFile is one rule file of an archived rule set.
type RuleSetFile struct {
	Name    string `json:"name"`
	Content string `json:"content"`
}

// RuleSetArchive is a store that keeps every rule-set version that
// decided beside the decisions: a table, a file, an object.
type RuleSetArchive interface {
	// PutRuleSet stores a version; storing one already kept is no error
	// (a version names its content).
	PutRuleSet(ctx context.Context, rs RuleSet) error
	// RuleSet returns a kept version, or an error wrapping
	// ErrRuleSetNotFound.
	RuleSet(ctx context.Context, version string) (RuleSet, error)
}

// ErrRuleSetNotFound is wrapped by RuleSet's error for a version not kept.
var ErrRuleSetNotFound = errors.New("rule set not archived")

var versionPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)

// ValidVersion reports whether v is written as rule-set versions are (16
// lower-case hex digits), which archives require of a name.
func ValidVersion(v string) bool { return versionPattern.MatchString(v) }

// DirArchive keeps rule sets as VERSION.json files in a directory: the
// server's own copy in its data directory, written before a version
// serves.
type DirArchive string

// PutRuleSet implements RuleSetArchive: written to a temporary name,
// synced and renamed, so that a reader never sees half a file.
func (d DirArchive) PutRuleSet(_ context.Context, rs RuleSet) error {
	if !ValidVersion(rs.Version) {
		return fmt.Errorf("archive rule set: version %q is not 16 hex digits", rs.Version)
	}
	path := filepath.Join(string(d), rs.Version+".json")
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	data, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(string(d), 0o750); err != nil {
		return fmt.Errorf("archive rule set: %w", err)
	}
	f, err := os.CreateTemp(string(d), ".tmp-*")
	if err != nil {
		return fmt.Errorf("archive rule set: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err == nil {
		err = syncDir(string(d), (*os.File).Sync) // the name, too, before the version serves
	}
	if err != nil {
		return fmt.Errorf("archive rule set %s: %w", rs.Version, err)
	}
	return nil
}

// RuleSet implements RuleSetArchive.
func (d DirArchive) RuleSet(_ context.Context, version string) (RuleSet, error) {
	if !ValidVersion(version) {
		return RuleSet{}, fmt.Errorf("rule set %q: %w", version, ErrRuleSetNotFound)
	}
	data, err := os.ReadFile(filepath.Join(string(d), version+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return RuleSet{}, fmt.Errorf("rule set %s in %s: %w", version, string(d), ErrRuleSetNotFound)
	}
	if err != nil {
		return RuleSet{}, err
	}
	return DecodeRuleSet(version, data)
}

// Versions lists the versions kept in the directory.
func (d DirArchive) Versions() ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(string(d), "*.json"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range matches {
		if v := filepath.Base(m[:len(m)-len(".json")]); ValidVersion(v) {
			out = append(out, v)
		}
	}
	return out, nil
}

// DecodeRuleSet reads an archived rule set stored under version.
func DecodeRuleSet(version string, data []byte) (RuleSet, error) {
	var rs RuleSet
	if err := json.Unmarshal(data, &rs); err != nil {
		return rs, fmt.Errorf("archived rule set %s: %w", version, err)
	}
	if rs.Version != version {
		return rs, fmt.Errorf("archived rule set %s: it says it is version %q", version, rs.Version)
	}
	return rs, nil
}

// Archiver keeps every rule-set version that serves: first in the local
// directory, before the version decides anything (an error there keeps
// the last good set serving), then in each store that keeps an archive,
// retried in the background while a store is down.
type Archiver struct {
	local  DirArchive
	stores []RuleSetArchive
	log    *slog.Logger

	mu      sync.Mutex
	pending map[string]RuleSet // not yet in every store
	wake    chan struct{}
}

// NewArchiver returns an archiver writing to dir and then to stores.
func NewArchiver(dir string, stores []RuleSetArchive, log *slog.Logger) *Archiver {
	if log == nil {
		log = slog.Default()
	}
	return &Archiver{local: DirArchive(dir), stores: stores, log: log, pending: map[string]RuleSet{}, wake: make(chan struct{}, 1)}
}

// Keep archives rs: locally now (its error is returned), in the stores
// as soon as they take it.
func (a *Archiver) Keep(ctx context.Context, rs RuleSet) error {
	if err := a.local.PutRuleSet(ctx, rs); err != nil {
		return err
	}
	if len(a.stores) == 0 {
		return nil
	}
	a.mu.Lock()
	a.pending[rs.Version] = rs
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
	return nil
}

// PutRuleSet implements RuleSetArchive, as Keep.
func (a *Archiver) PutRuleSet(ctx context.Context, rs RuleSet) error { return a.Keep(ctx, rs) }

// Resume queues every version of the local directory that a store may
// not have yet (a store down at the last stop, or added since).
func (a *Archiver) Resume(ctx context.Context) error {
	versions, err := a.local.Versions()
	if err != nil {
		return err
	}
	for _, v := range versions {
		rs, err := a.local.RuleSet(ctx, v)
		if err != nil {
			a.log.Warn("rule-set archive: unreadable local copy", "version", v, "error", err.Error())
			continue
		}
		if err := a.Keep(ctx, rs); err != nil {
			return err
		}
	}
	return nil
}

// Run copies pending versions into the stores until ctx is done,
// retrying every retry while one fails.
func (a *Archiver) Run(ctx context.Context, retry time.Duration) {
	failing := false
	for {
		failed := a.putPending(ctx)
		if len(failed) > 0 && !failing {
			a.log.Warn("rule-set archive: a store does not take the rule set yet; retrying", "version", failed[0].version, "error", failed[0].err.Error())
		}
		if failing && len(failed) == 0 {
			a.log.Info("rule-set archive: every store has every version")
		}
		failing = len(failed) > 0
		var after <-chan time.Time
		if failing {
			after = time.After(retry)
		}
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
		case <-after:
		}
	}
}

// Drain tries once more, until ctx is done, to put every pending version
// into the stores (at shutdown, before they close), and returns the
// versions still missing from one.
func (a *Archiver) Drain(ctx context.Context) []string {
	var missing []string
	for _, f := range a.putPending(ctx) {
		missing = append(missing, f.version)
	}
	return missing
}

// putFailure is a version a store did not take, and why.
type putFailure struct {
	version string
	err     error
}

// putPending puts every pending version into the stores; those all took
// leave the pending set.
func (a *Archiver) putPending(ctx context.Context) []putFailure {
	a.mu.Lock()
	todo := make([]RuleSet, 0, len(a.pending))
	for _, rs := range a.pending {
		todo = append(todo, rs)
	}
	a.mu.Unlock()
	var failed []putFailure
	for _, rs := range todo {
		if err := a.putAll(ctx, rs); err != nil {
			failed = append(failed, putFailure{rs.Version, err})
			continue
		}
		a.mu.Lock()
		delete(a.pending, rs.Version)
		a.mu.Unlock()
	}
	return failed
}

// Pending is the number of versions not yet in every store.
func (a *Archiver) Pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending)
}

func (a *Archiver) putAll(ctx context.Context, rs RuleSet) error {
	var errs []error
	for _, s := range a.stores {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := s.PutRuleSet(cctx, rs); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	return errors.Join(errs...)
}

// RuleSet returns a version from the local directory, or else from the
// first store that has it.
func (a *Archiver) RuleSet(ctx context.Context, version string) (RuleSet, error) {
	rs, err := a.local.RuleSet(ctx, version)
	if err == nil || !errors.Is(err, ErrRuleSetNotFound) {
		return rs, err
	}
	for _, s := range a.stores {
		if rs, err2 := s.RuleSet(ctx, version); err2 == nil {
			return rs, nil
		} else if !errors.Is(err2, ErrRuleSetNotFound) {
			err = err2
		}
	}
	return RuleSet{}, err
}
