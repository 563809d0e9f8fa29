package compliance

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/rules"
)

// ArchiveOf is set as the rule-set archive keeps it: its files by base
// name, as its version hashes them.
func ArchiveOf(set *rules.Set) audit.RuleSet {
	rs := audit.RuleSet{Version: set.Version, Files: make([]audit.RuleSetFile, 0, len(set.Sources))}
	for _, src := range set.Sources {
		rs.Files = append(rs.Files, audit.RuleSetFile{Name: filepath.Base(src.Name), Content: string(src.Data)})
	}
	return rs
}

// ArchivedSet reads a rule-set version from an archive and parses it. A
// copy whose files do not hash to its version (edited in the store) is an
// error, not a rule set.
func ArchivedSet(ctx context.Context, a audit.RuleSetArchive, version string) (*rules.Set, error) {
	rs, err := a.RuleSet(ctx, version)
	if err != nil {
		return nil, err
	}
	srcs := make([]rules.Source, 0, len(rs.Files))
	for _, f := range rs.Files {
		srcs = append(srcs, rules.Source{Name: f.Name, Data: []byte(f.Content)})
	}
	if got := rules.Version(srcs...); got != version {
		return nil, fmt.Errorf("archived rule set %s was altered: its files hash to %s", version, got)
	}
	set, err := rules.Parse(srcs...)
	if err != nil {
		return nil, fmt.Errorf("archived rule set %s: %w", version, err)
	}
	return set, nil
}
