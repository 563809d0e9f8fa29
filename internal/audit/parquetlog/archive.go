package parquetlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// ruleSetDir holds the rule-set archive beside the segments:
// _rulesets/<version>.json, an object each.
const ruleSetDir = "_rulesets"

// maxRuleSet bounds an archived rule set read back (the rules' own
// limit is 64 MiB a file; an archive of a set is its files together).
const maxRuleSet = 1 << 30

// PutRuleSet stores rs in st, unless it is there already.
func PutRuleSet(ctx context.Context, st Storage, rs audit.RuleSet) error {
	if !audit.ValidVersion(rs.Version) {
		return fmt.Errorf("archive rule set: version %q is not 16 hex digits", rs.Version)
	}
	name := ruleSetDir + "/" + rs.Version + ".json"
	if r, err := st.Open(ctx, name); err == nil {
		r.Close()
		return nil
	}
	data, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	if err := st.Put(ctx, name, data); err != nil {
		return fmt.Errorf("archive rule set %s in %s: %w", rs.Version, st, err)
	}
	return nil
}

// GetRuleSet reads a version from st.
func GetRuleSet(ctx context.Context, st Storage, version string) (audit.RuleSet, error) {
	if !audit.ValidVersion(version) {
		return audit.RuleSet{}, fmt.Errorf("rule set %q: %w", version, audit.ErrRuleSetNotFound)
	}
	r, err := st.Open(ctx, ruleSetDir+"/"+version+".json")
	if errors.Is(err, os.ErrNotExist) {
		return audit.RuleSet{}, fmt.Errorf("rule set %s in %s: %w", version, st, audit.ErrRuleSetNotFound)
	}
	if err != nil {
		return audit.RuleSet{}, err
	}
	defer r.Close()
	if r.Size() > maxRuleSet {
		return audit.RuleSet{}, fmt.Errorf("rule set %s in %s: %d bytes, more than an archive holds", version, st, r.Size())
	}
	data := make([]byte, r.Size())
	if _, err := r.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return audit.RuleSet{}, fmt.Errorf("rule set %s in %s: %w", version, st, err)
	}
	return audit.DecodeRuleSet(version, data)
}

// PutRuleSet implements audit.RuleSetArchive.
func (s *Log) PutRuleSet(ctx context.Context, rs audit.RuleSet) error {
	return PutRuleSet(ctx, s.st, rs)
}

// RuleSet implements audit.RuleSetArchive.
func (s *Log) RuleSet(ctx context.Context, version string) (audit.RuleSet, error) {
	return GetRuleSet(ctx, s.st, version)
}
