package compliance

import (
	"context"
	"errors"
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

// ErrRuleSetAltered is wrapped by the error for an archived copy whose
// files do not hash to its version: edited where it is kept.
var ErrRuleSetAltered = errors.New("archived rule set altered")

// VerifiedRuleSet reads a rule-set version from an archive and checks
// that its files hash to its version, returning them as rule sources.
func VerifiedRuleSet(ctx context.Context, a audit.RuleSetArchive, version string) (audit.RuleSet, []rules.Source, error) {
	rs, err := a.RuleSet(ctx, version)
	if err != nil {
		return rs, nil, err
	}
	srcs := make([]rules.Source, 0, len(rs.Files))
	for _, f := range rs.Files {
		srcs = append(srcs, rules.Source{Name: f.Name, Data: []byte(f.Content)})
	}
	if got := rules.Version(srcs...); got != version {
		return rs, nil, fmt.Errorf("rule set %s: its files hash to %s: %w", version, got, ErrRuleSetAltered)
	}
	return rs, srcs, nil
}

// ArchivedSet reads a rule-set version from an archive and parses it. A
// copy whose files do not hash to its version (edited in the store) is an
// error wrapping ErrRuleSetAltered, not a rule set.
func ArchivedSet(ctx context.Context, a audit.RuleSetArchive, version string) (*rules.Set, error) {
	_, srcs, err := VerifiedRuleSet(ctx, a, version)
	if err != nil {
		return nil, err
	}
	set, err := rules.Parse(srcs...)
	if err != nil {
		return nil, fmt.Errorf("archived rule set %s: %w", version, err)
	}
	return set, nil
}
